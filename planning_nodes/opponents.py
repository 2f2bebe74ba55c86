"""Opponents for the planners: a forecast along the track and the MPC's convex keep-clear half-spaces.

Race cars follow the track, so a track's future is predicted in Frenet coordinates of the centre
line: constant speed along it and a lateral offset drifting with the current lateral speed (decaying
over ``lateral_tau``). Avoidance is non-convex (pass left, pass right or stay behind); each opponent
gets one convex choice per cycle, kept while it stays feasible (hysteresis keyed by ``track_id``),
as a soft half-space per horizon step on the ego body's centre.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from racestack.objects import CLASS_ID
from simulation.track import Track
from simulation.vehicles import VehicleParams

GROUND_CLASSES = (CLASS_ID["car"], CLASS_ID["other"])
LEFT, RIGHT, FOLLOW = "left", "right", "follow"


@dataclass
class Forecast:
    """Predicted body centres of M opponents at K times (``map``)."""

    times: np.ndarray
    center: np.ndarray
    yaw: np.ndarray
    s: np.ndarray
    d: np.ndarray
    length: np.ndarray
    width: np.ndarray
    speed: np.ndarray
    track_id: np.ndarray

    @property
    def count(self) -> int:
        return int(self.length.shape[0])


def ground_objects(table: np.ndarray) -> np.ndarray:
    """Rows of an object table that are cars or other ground obstacles (not flying objects)."""
    return table[np.isin(table["class_id"], GROUND_CLASSES)]


def forecast(table: np.ndarray, track: Track, times: np.ndarray, lateral_tau: float = 1.0) -> Forecast:
    """Constant along-track speed, lateral offset drifting with a decaying lateral speed."""
    times = np.asarray(times, dtype=np.float64)
    xy = np.column_stack([table["x"], table["y"]]).astype(np.float64)
    m = xy.shape[0]
    if m == 0:
        empty = np.zeros((0, times.size))
        return Forecast(times, np.zeros((0, times.size, 2)), empty, empty, empty, *(np.zeros(0),) * 3, np.zeros(0, int))
    s0, d0, _ = track.project(xy)
    heading = track.heading_at(s0)
    tangent = np.column_stack([np.cos(heading), np.sin(heading)])
    velocity = np.column_stack([table["vx"], table["vy"]]).astype(np.float64)
    v_along = np.maximum(np.sum(velocity * tangent, axis=1), 0.0)
    v_lat = velocity[:, 0] * -tangent[:, 1] + velocity[:, 1] * tangent[:, 0]
    drift = lateral_tau * (1.0 - np.exp(-times / lateral_tau))
    s = s0[:, None] + v_along[:, None] * times[None, :]
    left, right = track.widths_at(s)
    half = table["width"].astype(np.float64)[:, None] / 2.0
    d = np.clip(d0[:, None] + v_lat[:, None] * drift[None, :], -right + half, left - half)
    center = track.frenet_to_xy(s, d)
    slip = np.arctan2(v_lat[:, None] * np.exp(-times / lateral_tau)[None, :], np.maximum(v_along, 1.0)[:, None])
    yaw = track.heading_at(s) + slip
    return Forecast(
        times=times,
        center=center,
        yaw=yaw,
        s=np.mod(s, track.length),
        d=d,
        length=table["length"].astype(np.float64),
        width=table["width"].astype(np.float64),
        speed=v_along,
        track_id=table["track_id"].astype(np.int64),
    )


@dataclass
class KeepClear:
    """Half-spaces ``normal · p >= offset`` on the rear-axle point p (plan frame), per slot and step."""

    normal: np.ndarray
    offset: np.ndarray
    choices: dict[int, str] = field(default_factory=dict)

    @classmethod
    def inactive(cls, slots: int, steps: int) -> KeepClear:
        return cls(np.zeros((slots, steps, 2)), -np.ones((slots, steps)))


class OpponentAvoidance:
    """Chooses a side (or following) per opponent and turns it into MPC half-spaces."""

    def __init__(
        self,
        track: Track,
        vehicle: VehicleParams,
        slots: int = 4,
        lateral_margin: float = 0.9,
        longitudinal_margin: float = 3.0,
        time_gap: float = 0.25,
        window: float = 8.0,
        bound_margin: float = 0.45,
        lateral_accel: float = 3.0,
    ) -> None:
        self.track, self.vehicle, self.slots = track, vehicle, slots
        self.lateral_margin, self.longitudinal_margin = lateral_margin, longitudinal_margin
        self.time_gap, self.window, self.bound_margin = time_gap, window, bound_margin
        self.lateral_accel = lateral_accel  # m/s² a side change may use when judging if a side is reachable
        self.choices: dict[int, str] = {}

    def reset(self) -> None:
        self.choices.clear()

    def relevant(self, fc: Forecast, ego_s: float, reach: float) -> np.ndarray:
        """Indices of opponents beside or ahead within ``reach`` (m), nearest first, at most ``slots``."""
        gap = np.asarray(self.track.wrap_ds(fc.s[:, 0] - ego_s))
        beside = (fc.length + self.vehicle.length) / 2.0
        keep = np.flatnonzero((gap > -beside) & (gap < reach))
        return keep[np.argsort(gap[keep])][: self.slots]

    def build(
        self,
        fc: Forecast,
        ego_s: np.ndarray,
        ego_d: np.ndarray,
        ego_heading: np.ndarray,
        ego_speed: float,
        frame,
    ) -> KeepClear:
        """Half-spaces for the horizon whose ego body centres sit at (ego_s, ego_d) (N,) on the centre line.

        ``fc`` must be forecast at the horizon's step times; ``ego_heading`` (N, 2) are unit vectors in
        ``map``; ``frame`` is the PlanFrame the result is expressed in.
        """
        steps = ego_s.shape[0]
        out = KeepClear.inactive(self.slots, steps)
        if fc.count == 0:
            self.choices.clear()
            return out
        veh = self.vehicle
        reach = ego_speed * fc.times[-1] + 3.0 * veh.length
        rows = self.relevant(fc, float(ego_s[0]), reach)
        offset_to_rear = veh.center_offset
        for slot, j in enumerate(rows):
            choice = self._choose(fc, j, ego_s, ego_d, ego_speed)
            normal_map, bound, active = self._halfspace(fc, j, choice, ego_s)
            # the constraint holds on the body centre p + c·h; move it to the rear axle p
            bound = bound - offset_to_rear * np.sum(normal_map * ego_heading, axis=1)
            normal_local = frame.vectors_to_local(normal_map)
            bound_local = bound - normal_map @ np.array([frame.x, frame.y])
            out.normal[slot] = np.where(active[:, None], normal_local, 0.0)
            out.offset[slot] = np.where(active, bound_local, -1.0)
            out.choices[int(fc.track_id[j])] = choice
        self.choices = dict(out.choices)
        return out

    def _choose(self, fc: Forecast, j: int, ego_s: np.ndarray, ego_d: np.ndarray, ego_speed: float) -> str:
        """Left, right or follow. A side needs room beside the opponent; a new side must also be
        reachable before the cars overlap; a side once chosen is kept while it has room."""
        veh, track = self.vehicle, self.track
        gap0 = float(track.wrap_ds(fc.s[j, 0] - ego_s[0]))
        if abs(gap0) < (fc.length[j] + veh.length) / 2.0:
            return LEFT if ego_d[0] >= fc.d[j, 0] else RIGHT
        left_w, right_w = track.widths_at(fc.s[j])
        need = veh.width + self.lateral_margin + self.bound_margin
        offset = (fc.width[j] + veh.width) / 2.0 + self.lateral_margin
        along = np.abs(track.wrap_ds(fc.s[j] - ego_s))
        overlap = np.flatnonzero(along < (fc.length[j] + veh.length) / 2.0 + self.window)
        k = int(overlap[0]) if overlap.size else int(np.argmin(along))
        sides = {
            LEFT: (np.min(left_w - fc.d[j] - fc.width[j] / 2.0), fc.d[j, k] + offset),
            RIGHT: (np.min(right_w + fc.d[j] - fc.width[j] / 2.0), fc.d[j, k] - offset),
        }
        with_room = [side for side, (room, _) in sides.items() if room >= need]
        previous = self.choices.get(int(fc.track_id[j]))
        if previous in with_room:
            return previous
        if ego_speed <= fc.speed[j] + 0.5:
            return FOLLOW
        reach = 0.5 * self.lateral_accel * fc.times[k] ** 2 + 0.5
        usable = [side for side in with_room if abs(sides[side][1] - ego_d[0]) <= reach]
        if not usable:
            return FOLLOW
        return min(usable, key=lambda side: abs(sides[side][1] - ego_d[0]))

    def _halfspace(self, fc: Forecast, j: int, choice: str, ego_s: np.ndarray):
        """(normal (N, 2) map, bound (N,), active (N,)) on the ego body centre for one opponent."""
        veh, track = self.vehicle, self.track
        heading = track.heading_at(fc.s[j])
        tangent = np.column_stack([np.cos(heading), np.sin(heading)])
        normal = np.column_stack([-tangent[:, 1], tangent[:, 0]])
        center = fc.center[j]
        if choice == FOLLOW:
            gap = (fc.length[j] + veh.length) / 2.0 + self.longitudinal_margin + self.time_gap * fc.speed[j]
            bound = -np.sum(tangent * center, axis=1) + gap
            return -tangent, bound, np.ones(center.shape[0], dtype=bool)
        clearance = (fc.width[j] + veh.width) / 2.0 + self.lateral_margin
        sign = 1.0 if choice == LEFT else -1.0
        bound = sign * np.sum(normal * center, axis=1) + clearance
        along = np.abs(track.wrap_ds(ego_s - fc.s[j]))
        active = along < (fc.length[j] + veh.length) / 2.0 + self.window
        return sign * normal, bound, active


def plan_collides(plan, fc: Forecast, vehicle: VehicleParams, margin: float = 0.3) -> bool:
    """Whether the plan's body overlaps a forecast opponent (boxes compared in the opponent's frame).

    ``fc`` must be forecast at offsets ``plan.times - plan.time``.
    """
    if fc.count == 0:
        return False
    states = plan.states[: fc.times.size]
    heading = np.column_stack([np.cos(states[:, 2]), np.sin(states[:, 2])])
    body = states[:, :2] + vehicle.center_offset * heading
    rel = body[None] - fc.center[:, : body.shape[0]]
    c, s = np.cos(fc.yaw[:, : body.shape[0]]), np.sin(fc.yaw[:, : body.shape[0]])
    along = c * rel[..., 0] + s * rel[..., 1]
    across = -s * rel[..., 0] + c * rel[..., 1]
    hit_along = np.abs(along) < (fc.length[:, None] + vehicle.length) / 2.0 + margin
    hit_across = np.abs(across) < (fc.width[:, None] + vehicle.width) / 2.0 + margin
    return bool(np.any(hit_along & hit_across))
