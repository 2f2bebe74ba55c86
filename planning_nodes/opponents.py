"""Opponents for the planners: a forecast along the track and the MPC's convex keep-clear half-spaces.

Race cars follow the track, so a track's future is predicted in Frenet coordinates of the centre
line: constant speed along it and a lateral offset drifting with the current lateral speed (decaying
over ``lateral_tau``). Avoidance is non-convex (pass left, pass right or stay behind); each opponent
gets an overtaking state kept across cycles (``Manoeuvre``, keyed by ``track_id``) that becomes one
convex choice, a soft half-space per horizon step on the ego body's centre.
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


def forecast(
    table: np.ndarray,
    track: Track,
    times: np.ndarray,
    lateral_tau: float = 1.0,
    on_line: float = 0.6,
    ego: tuple[float, float, float] | None = None,
) -> Forecast:
    """Constant along-track speed; a car within ``on_line`` metres of the racing line keeps following
    it (race cars do), any other keeps its lateral offset, drifting with a decaying lateral speed.

    ``ego`` (s, d of its body centre, speed): a car with the ego alongside leaves it room (racing
    etiquette, see ``leave_room``) instead of following the racing line across the ego's path."""
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
    line0 = track.racing_offset_at(s0)
    following = np.abs(d0 - line0) < on_line
    lateral = np.where(
        following[:, None],
        track.racing_offset_at(s) + (d0 - line0)[:, None],
        d0[:, None] + v_lat[:, None] * drift[None, :],
    )
    if ego is not None:
        size = (table["length"].astype(np.float64), table["width"].astype(np.float64))
        lateral = leave_room(track, lateral, s0, d0, size, v_along, ego)
    d = np.clip(lateral, -right + half, left - half)
    center = track.frenet_to_xy(s, d)
    d_rate = np.gradient(d, times, axis=1) if times.size > 1 else np.zeros_like(d)
    yaw = track.heading_at(s) + np.arctan2(d_rate, np.maximum(v_along, 1.0)[:, None])
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


def leave_room(
    track: Track,
    lateral: np.ndarray,
    s0: np.ndarray,
    d0: np.ndarray,
    size: tuple[np.ndarray, np.ndarray],
    speed: np.ndarray,
    ego: tuple[float, float, float],
    room: float = 0.8,
) -> np.ndarray:
    """Forecast offsets (M, K) of cars that have the ego alongside or about to be: none moves towards
    the ego's side beyond its width plus ``room`` from the ego (or beyond where it is, if closer).

    Racing etiquette (a car alongside is left a car's width; the simulator's opponents drive by it).
    Without it a car on the racing line is forecast to cross the ego's path in the next bend, and a
    pass already alongside turns infeasible and ends in the braking fallback.
    """
    ego_s, ego_d, ego_speed = ego
    length, width = size
    along = np.asarray(track.wrap_ds(ego_s - s0))
    window = length + 10.0 + 1.5 * np.abs(ego_speed - speed)
    alongside = (np.abs(along) <= window) & (np.abs(ego_d - d0) >= 0.6 * width)
    clearance = width + room
    upper = np.where(ego_d > d0, np.maximum(ego_d - clearance, d0), np.inf)
    lower = np.where(ego_d <= d0, np.minimum(ego_d + clearance, d0), -np.inf)
    held = np.clip(lateral, lower[:, None], upper[:, None])
    return np.where(alongside[:, None], held, lateral)


@dataclass
class KeepClear:
    """Half-spaces ``normal · p >= offset`` on the rear-axle point p (plan frame), per slot and step.

    ``speed_cap`` (N,) is the speed the cars being followed allow at each step (inf: none).
    """

    normal: np.ndarray
    offset: np.ndarray
    speed_cap: np.ndarray
    choices: dict[int, str] = field(default_factory=dict)

    @classmethod
    def inactive(cls, slots: int, steps: int) -> KeepClear:
        return cls(np.zeros((slots, steps, 2)), -np.ones((slots, steps)), np.full(steps, np.inf))


@dataclass
class Manoeuvre:
    """What the ego does about one opponent, kept across cycles: pass on a side, or follow."""

    side: str
    cramped: int = 0  # consecutive cycles the chosen side has lacked room


class OpponentAvoidance:
    """An explicit overtaking state per opponent (keyed by ``track_id``), turned into MPC half-spaces.

    A pass is committed to a side once the ego closes in (two seconds of its speed advantage plus
    half a second of its speed), the side has room along the forecast and can be reached before the
    cars meet; from then on the ego keeps that side of the opponent until ``window`` metres past it,
    and the side is given up only after ``patience`` cycles without room (never while alongside).
    Following keeps a gap that is relaxed, step by step, to what braking can still reach, so a pass
    that turns into following does not make the cycle infeasible. A faster car closing from behind
    is kept clear of on the side the ego is on.
    """

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
        patience: int = 5,
        brake: float = 12.0,
        min_gap: float = 0.4,
    ) -> None:
        self.track, self.vehicle, self.slots = track, vehicle, slots
        self.lateral_margin, self.longitudinal_margin = lateral_margin, longitudinal_margin
        self.time_gap, self.window, self.bound_margin = time_gap, window, bound_margin
        self.lateral_accel = lateral_accel  # m/s² a side change may use when judging if a side is reachable
        self.patience, self.brake, self.min_gap = patience, brake, min_gap
        self.manoeuvres: dict[int, Manoeuvre] = {}

    @property
    def choices(self) -> dict[int, str]:
        return {key: m.side for key, m in self.manoeuvres.items()}

    def reset(self) -> None:
        self.manoeuvres.clear()

    def relevant(self, fc: Forecast, ego_s: float, ego_speed: float, reach: float) -> np.ndarray:
        """Indices of opponents to constrain, nearest first, at most ``slots``: beside or ahead within
        ``reach`` (m), and faster ones behind that come alongside within the horizon."""
        gap = np.asarray(self.track.wrap_ds(fc.s[:, 0] - ego_s))
        beside = (fc.length + self.vehicle.length) / 2.0
        closing = (fc.speed - ego_speed) * fc.times[-1]
        keep = np.flatnonzero((gap < reach) & ((gap > -beside) | (gap + closing > -beside)))
        return keep[np.argsort(np.abs(gap[keep]))][: self.slots]

    def build(
        self,
        fc: Forecast,
        ego_s: np.ndarray,
        ego_d: np.ndarray,
        ego_heading: np.ndarray,
        ego_speed: float,
        frame,
        speed_now: float | None = None,
        hold_back: bool = False,
    ) -> KeepClear:
        """Half-spaces for the horizon whose ego body centres sit at (ego_s, ego_d) (N,) on the centre line.

        ``fc`` must be forecast at the horizon's step times; ``ego_heading`` (N, 2) are unit vectors in
        ``map``; ``ego_speed`` is the pace the ego wants, ``speed_now`` (default: the same) the one it
        has; ``frame`` is the PlanFrame the result is expressed in; ``hold_back`` gives up every pass
        not yet alongside (following instead).
        """
        steps = ego_s.shape[0]
        out = KeepClear.inactive(self.slots, steps)
        if fc.count == 0:
            self.manoeuvres.clear()
            return out
        veh = self.vehicle
        speed_now = ego_speed if speed_now is None else speed_now
        reach = ego_speed * fc.times[-1] + 3.0 * veh.length
        rows = self.relevant(fc, float(ego_s[0]), speed_now, reach)
        manoeuvres = {}
        for slot, j in enumerate(rows):
            key = int(fc.track_id[j])
            manoeuvre = self._choose(fc, j, ego_s, ego_d, ego_speed, speed_now, self.manoeuvres.get(key), hold_back)
            if manoeuvre is None:
                continue
            manoeuvres[key] = manoeuvre
            normal_map, bound, active = self._halfspace(fc, j, manoeuvre.side, ego_s, float(ego_d[0]), speed_now)
            # the constraint holds on the body centre p + c·h; move it to the rear axle p
            bound = bound - veh.center_offset * np.sum(normal_map * ego_heading, axis=1)
            normal_local = frame.vectors_to_local(normal_map)
            bound_local = bound - normal_map @ np.array([frame.x, frame.y])
            out.normal[slot] = np.where(active[:, None], normal_local, 0.0)
            out.offset[slot] = np.where(active, bound_local, -1.0)
            out.choices[key] = manoeuvre.side
            if manoeuvre.side == FOLLOW:
                out.speed_cap = np.minimum(out.speed_cap, self._follow_speed(fc, j, ego_s, speed_now))
        self.manoeuvres = manoeuvres
        return out

    def _choose(
        self,
        fc: Forecast,
        j: int,
        ego_s: np.ndarray,
        ego_d: np.ndarray,
        ego_speed: float,
        speed_now: float,
        previous: Manoeuvre | None,
        hold_back: bool = False,
    ) -> Manoeuvre | None:
        """Keep a committed side while it has room (and always while alongside); else start a pass on
        a side with room that can be reached before the cars meet; else follow. A faster car behind:
        the side the ego is on (None while it is straight behind: its own choice)."""
        veh, track = self.vehicle, self.track
        gap0 = float(track.wrap_ds(fc.s[j, 0] - ego_s[0]))
        beside = (fc.length[j] + veh.length) / 2.0
        own_side = LEFT if ego_d[0] >= fc.d[j, 0] else RIGHT
        if gap0 <= -beside:
            return Manoeuvre(own_side) if abs(ego_d[0] - fc.d[j, 0]) >= 1.0 else None
        if gap0 < beside:
            return Manoeuvre(previous.side if previous is not None and previous.side != FOLLOW else own_side)
        if hold_back:
            return Manoeuvre(FOLLOW)
        wants_by = ego_speed > fc.speed[j] + 0.5
        left_w, right_w = track.widths_at(fc.s[j])
        need = veh.width + self.lateral_margin + self.bound_margin
        offset = (fc.width[j] + veh.width) / 2.0 + self.lateral_margin
        rooms = {
            LEFT: float(np.min(left_w - fc.d[j] - fc.width[j] / 2.0)),
            RIGHT: float(np.min(right_w + fc.d[j] - fc.width[j] / 2.0)),
        }
        lanes = {LEFT: fc.d[j, 0] + offset, RIGHT: fc.d[j, 0] - offset}
        closing = max(speed_now - fc.speed[j], 0.5)
        meet = min(max(gap0 - beside, 0.0) / closing, float(fc.times[-1]))
        reach = 0.5 * self.lateral_accel * meet**2 + 0.5
        # a car pulling away more than ``window`` ahead is not being passed, whatever pace the ego wants
        pulling_away = speed_now < fc.speed[j] - 1.0 and gap0 - beside > self.window
        keeps = wants_by and not pulling_away
        if previous is not None and previous.side in rooms and (keeps or gap0 < beside + self.window):
            cramped = previous.cramped + 1 if rooms[previous.side] < need else 0
            if cramped < self.patience and self._still_reachable(fc, j, previous.side, float(ego_d[0]), reach):
                return Manoeuvre(previous.side, cramped)
        commit = max(20.0, 0.5 * speed_now) + 2.0 * (ego_speed - fc.speed[j])
        if not keeps or gap0 - beside > commit:
            return Manoeuvre(FOLLOW)
        usable = [side for side in (LEFT, RIGHT) if rooms[side] >= need and abs(lanes[side] - ego_d[0]) <= reach]
        if not usable:
            return Manoeuvre(FOLLOW)
        return Manoeuvre(min(usable, key=lambda side: abs(lanes[side] - ego_d[0])))

    def _still_reachable(self, fc: Forecast, j: int, side: str, ego_d0: float, reach: float) -> bool:
        """Whether a committed side still has the ego at, or within ``reach`` of, the least separation
        its half-space ever asks (bodies ``min_gap`` apart). A car first seen at the BEV's edge and
        closed on at 30 m/s was otherwise chased with no side step until braking could no longer
        stop short of it (``racestack demo``, oval_pack)."""
        sign = 1.0 if side == LEFT else -1.0
        least = (fc.width[j] + self.vehicle.width) / 2.0 + self.min_gap
        return least - sign * (ego_d0 - fc.d[j, 0]) <= reach

    def _halfspace(self, fc: Forecast, j: int, choice: str, ego_s: np.ndarray, ego_d0: float, speed_now: float):
        """(normal (N, 2) map, bound (N,), active (N,)) on the ego body centre for one opponent.

        Following: a line across the track behind the opponent. A side: a lateral offset bound,
        ``±(d_ego - d_opponent) >= clearance`` in the centre line's frame where the ego is at each
        step (a line through the opponent would cut the track elsewhere in a bend). It holds from now
        until the ego is ``window`` metres past the opponent; the separation it asks for grows
        smoothly from the current one to the full clearance over the time a side step takes at
        ``lateral_accel``, so it never depends on where the guess puts the car along the track (the
        SCP would otherwise switch it on and off between iterations)."""
        veh, track = self.vehicle, self.track
        center = fc.center[j]
        if choice == FOLLOW:
            heading = track.heading_at(fc.s[j])
            tangent = np.column_stack([np.cos(heading), np.sin(heading)])
            gap = self._follow_gap(fc, j, ego_s, speed_now)
            bound = -np.sum(tangent * center, axis=1) + gap
            return -tangent, bound, np.ones(center.shape[0], dtype=bool)
        beside = (fc.length[j] + veh.length) / 2.0
        clearance = (fc.width[j] + veh.width) / 2.0 + self.lateral_margin
        sign = 1.0 if choice == LEFT else -1.0
        separation = sign * (ego_d0 - fc.d[j, 0])
        if separation < clearance:
            duration = 2.0 * np.sqrt((clearance - separation) / self.lateral_accel)
            ramp = np.clip(fc.times / duration, 0.0, 1.0)
            clearance = separation + (clearance - separation) * ramp * ramp * (3.0 - 2.0 * ramp)
        # where the barrier leaves less than the full clearance, ask what it leaves (never less
        # than a body gap of ``min_gap``): a squeezed but safe pass otherwise runs on slack, and the
        # slack's linearization in a bend rewards staying level with the other car
        left_w, right_w = track.widths_at(ego_s)
        edge = (left_w if choice == LEFT else right_w) - veh.width / 2.0 - self.bound_margin
        room = edge - sign * fc.d[j]
        floor = (fc.width[j] + veh.width) / 2.0 + self.min_gap
        clearance = np.minimum(clearance, np.maximum(room, floor))
        normal = sign * track.center.normal_at(ego_s)
        bound = np.sum(normal * track.point_at(ego_s), axis=1) + sign * fc.d[j] + clearance
        ahead = np.asarray(track.wrap_ds(fc.s[j] - ego_s))  # opponent ahead of the ego at each step
        return normal, bound, ahead > -(beside + self.window)

    def _follow_gap(self, fc: Forecast, j: int, ego_s: np.ndarray, speed_now: float) -> np.ndarray:
        """Centre-to-centre gap to keep behind opponent j per step: the wanted gap, or less where
        braking from now cannot open it yet (never less than touching plus half a metre)."""
        veh = self.vehicle
        beside = (fc.length[j] + veh.length) / 2.0
        wanted = beside + self.longitudinal_margin + self.time_gap * fc.speed[j]
        gap0 = float(self.track.wrap_ds(fc.s[j, 0] - ego_s[0]))
        t = fc.times
        slowing = np.minimum(t, max(speed_now - fc.speed[j], 0.0) / self.brake)
        reachable = gap0 + (fc.speed[j] - speed_now) * slowing + 0.5 * self.brake * slowing**2 - 0.5
        return np.minimum(wanted, np.maximum(reachable, beside + 0.5))

    def _follow_speed(self, fc: Forecast, j: int, ego_s: np.ndarray, speed_now: float) -> np.ndarray:
        """The speed that closes to the wanted gap behind opponent j (as the expert's follow law)."""
        veh = self.vehicle
        gap0 = float(self.track.wrap_ds(fc.s[j, 0] - ego_s[0]))
        wanted = (fc.length[j] + veh.length) / 2.0 + self.longitudinal_margin + self.time_gap * fc.speed[j]
        return np.full(fc.times.shape, fc.speed[j] + max(0.8 * (gap0 - wanted), 0.0))


def plan_collides(plan, fc: Forecast, vehicle: VehicleParams, margin: float = 0.3) -> bool:
    """Whether the plan's body overlaps a forecast opponent (boxes compared in the opponent's frame).

    ``fc`` must be forecast at offsets ``plan.times - plan.time``.
    """
    return body_overlaps(plan.states[: fc.times.size], fc, vehicle, margin)


def body_overlaps(states: np.ndarray, fc: Forecast, vehicle: VehicleParams, margin: float = 0.3) -> bool:
    """Whether the ego body at ``states`` (K <= forecast steps, ``map``) overlaps an opponent's at the
    same step."""
    if fc.count == 0:
        return False
    heading = np.column_stack([np.cos(states[:, 2]), np.sin(states[:, 2])])
    body = states[:, :2] + vehicle.center_offset * heading
    rel = body[None] - fc.center[:, : body.shape[0]]
    c, s = np.cos(fc.yaw[:, : body.shape[0]]), np.sin(fc.yaw[:, : body.shape[0]])
    along = c * rel[..., 0] + s * rel[..., 1]
    across = -s * rel[..., 0] + c * rel[..., 1]
    hit_along = np.abs(along) < (fc.length[:, None] + vehicle.length) / 2.0 + margin
    hit_across = np.abs(across) < (fc.width[:, None] + vehicle.width) / 2.0 + margin
    return bool(np.any(hit_along & hit_across))
