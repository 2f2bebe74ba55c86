"""Vehicle models: the ego's kinematic bicycle with actuator limits, and scripted opponents.

The ego is driven by a ``Command`` (the fields of /control/command). Its limits (steering angle and
rate, acceleration, braking, speed, lateral grip) live in ``VehicleParams``, which the MPC imports so
its model matches the simulator's. Opponents move in Frenet coordinates (s, d) of the centre line:
a lane (the racing line or a fixed offset), a speed profile, lane changes, braking events, and an
optional automatic overtake of slower cars ahead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from simulation.track import Track

RACING = "racing"
Lane = float | str  # an offset d from the centre line (m, left > 0) or RACING


@dataclass(frozen=True)
class VehicleParams:
    """Geometry and limits of a race car (defaults: IAC/A2RL-class, ≈4.9 x 1.9 x 1.2 m).

    ``base_link`` is the centre of the rear axle; the body box spans ``-rear_overhang`` to
    ``length - rear_overhang`` along x.
    """

    wheelbase: float = 3.0
    length: float = 4.9
    width: float = 1.9
    height: float = 1.2
    rear_overhang: float = 1.0
    max_steer: float = 0.35
    max_steer_rate: float = 1.0
    max_accel: float = 8.0
    max_brake: float = 15.0
    max_speed: float = 90.0
    max_lateral_accel: float = 25.0
    speed_gain: float = 2.0

    @property
    def center_offset(self) -> float:
        """x of the body box centre in base_link."""
        return self.length / 2.0 - self.rear_overhang


@dataclass(frozen=True)
class Command:
    """What /control/command carries. ``speed`` (optional) adds a P term toward that speed."""

    steering_angle: float = 0.0
    acceleration: float = 0.0
    speed: float | None = None
    steering_rate: float | None = None


@dataclass(frozen=True)
class VehicleState:
    """Pose of base_link in ``map``, speed, the actual front-wheel angle and the applied acceleration."""

    x: float
    y: float
    yaw: float
    v: float
    steer: float = 0.0
    accel: float = 0.0
    yaw_rate: float = 0.0
    lateral_accel: float = 0.0


def step_ego(state: VehicleState, command: Command, params: VehicleParams, dt: float) -> VehicleState:
    """One physics step of the kinematic bicycle (rear-axle reference), every limit enforced.

    Steering moves toward the command at most ``max_steer_rate``; acceleration is clipped to
    [-max_brake, max_accel]; speed to [0, max_speed]; the path curvature saturates where the lateral
    acceleration would exceed ``max_lateral_accel`` (the car understeers instead of exceeding grip).
    Non-finite command values count as 0 (a broken planner must not break the physics).
    """
    target = _clip(_finite(command.steering_angle), params.max_steer)
    steer = state.steer + _clip(target - state.steer, params.max_steer_rate * dt)
    accel = _finite(command.acceleration)
    if command.speed is not None and math.isfinite(command.speed):
        accel += params.speed_gain * (command.speed - state.v)
    accel = min(max(accel, -params.max_brake), params.max_accel)
    v_new = min(max(state.v + accel * dt, 0.0), params.max_speed)
    v_mid = 0.5 * (state.v + v_new)
    curvature = math.tan(steer) / params.wheelbase
    if v_mid > 1e-3:
        curvature = _clip(curvature, params.max_lateral_accel / v_mid**2)
    yaw_rate = v_mid * curvature
    heading = state.yaw + 0.5 * yaw_rate * dt
    return VehicleState(
        x=state.x + v_mid * math.cos(heading) * dt,
        y=state.y + v_mid * math.sin(heading) * dt,
        yaw=_wrap(state.yaw + yaw_rate * dt),
        v=v_new,
        steer=steer,
        accel=(v_new - state.v) / dt,
        yaw_rate=yaw_rate,
        lateral_accel=v_mid * yaw_rate,
    )


def _clip(value: float, bound: float) -> float:
    return min(max(value, -bound), bound)


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def box_corners(x, y, yaw, length, width) -> np.ndarray:
    """(..., 4, 2) corners of boxes centred at (x, y) with heading ``yaw`` (counter-clockwise order).

    All arguments broadcast (scalars or arrays of one shape).
    """
    arrays = (np.asarray(v, dtype=np.float64) for v in (x, y, yaw, length, width))
    x, y, yaw, length, width = np.broadcast_arrays(*arrays)
    signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
    lx = signs[:, 0] * (length[..., None] / 2.0)
    ly = signs[:, 1] * (width[..., None] / 2.0)
    c, s = np.cos(yaw)[..., None], np.sin(yaw)[..., None]
    return np.stack([x[..., None] + c * lx - s * ly, y[..., None] + s * lx + c * ly], axis=-1)


def boxes_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two convex quadrilaterals given as (4, 2) corners."""
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        axes = np.stack([-edges[:, 1], edges[:, 0]], axis=1)
        pa, pb = a @ axes.T, b @ axes.T
        if ((pa.max(axis=0) < pb.min(axis=0)) | (pb.max(axis=0) < pa.min(axis=0))).any():
            return False
    return True


# -- speed profiles ----------------------------------------------------------------------------


def speed_profile(
    curvature: np.ndarray,
    spacing: np.ndarray,
    max_speed: float,
    lateral_accel: float,
    accel: float,
    brake: float,
) -> np.ndarray:
    """Fastest closed-loop speed per vertex: lateral-grip limit, then braking and acceleration limits.

    ``spacing[i]`` is the distance from vertex i to i+1. Vectorized: the braking (acceleration)
    pass is a suffix (prefix) minimum of v²+2·b·s over two laps, so the loop closes correctly.
    """
    limit = np.minimum(max_speed, np.sqrt(lateral_accel / np.maximum(np.abs(curvature), 1e-9)))
    n = limit.size
    s = np.concatenate([[0.0], np.cumsum(np.tile(spacing, 3))[:-1]])
    v2 = np.tile(limit**2, 3)
    braking = np.minimum.accumulate((v2 + 2.0 * brake * s)[::-1])[::-1] - 2.0 * brake * s
    v2 = np.minimum(v2, braking)
    accelerating = np.minimum.accumulate(v2 - 2.0 * accel * s) + 2.0 * accel * s
    v2 = np.minimum(v2, accelerating)
    return np.sqrt(np.maximum(v2[n : 2 * n], 0.0))


# -- opponents ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaneChange:
    """At time ``at`` (s), move to ``lane`` over ``duration`` seconds (smooth cosine blend)."""

    at: float
    lane: Lane
    duration: float = 3.0


@dataclass(frozen=True)
class BrakeEvent:
    """At time ``at``, slow to ``speed`` with ``decel`` m/s², hold it for ``hold`` s, then resume."""

    at: float
    speed: float
    decel: float = 10.0
    hold: float = 2.0


@dataclass(frozen=True)
class OpponentSpec:
    """A scripted car. ``start_s`` is its arc length on the centre line at t = 0."""

    name: str
    start_s: float
    lane: Lane = RACING
    speed: float = 70.0
    speed_scale: float = 0.9
    start_speed: float | None = None
    max_accel: float = 6.0
    max_brake: float = 12.0
    lateral_accel: float = 20.0
    lane_changes: tuple[LaneChange, ...] = ()
    brakes: tuple[BrakeEvent, ...] = ()
    overtake: bool = False
    time_gap: float = 0.8
    min_gap: float = 8.0
    params: VehicleParams = field(default_factory=VehicleParams)


class Traffic(NamedTuple):
    """Another car as an opponent sees it: id, Frenet position of its box centre, speed."""

    instance_id: int
    s: float
    d: float
    v: float


@dataclass
class Opponent:
    """A scripted car's state in Frenet coordinates and the bookkeeping of its behaviours.

    (s, d) is the body-box centre; (x, y, yaw) the base_link pose in ``map`` like the ego's.
    """

    spec: OpponentSpec
    instance_id: int
    s: float
    d: float
    v: float
    lane: Lane
    lane_from: float = 0.0
    blend_start: float = -1.0
    blend_duration: float = 1.0
    passing: tuple[int, int] | None = None
    brake_until: float = -1.0
    brake_speed: float = 0.0
    brake_decel: float = 0.0
    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0
    vx: float = 0.0
    vy: float = 0.0
    curvature: float = 0.0
    cruise: float = -1.0
    laps: int = 0

    @property
    def params(self) -> VehicleParams:
        return self.spec.params

    def lane_offset(self, track: Track, s: float | np.ndarray, lane: Lane | None = None) -> np.ndarray:
        lane = self.lane if lane is None else lane
        if lane == RACING:
            return track.racing_offset_at(s)
        return np.full_like(np.asarray(s, dtype=np.float64), float(lane))

    def change_lane(self, lane: Lane, time: float, duration: float) -> None:
        self.lane_from = self.d
        self.lane = lane
        self.blend_start = time
        self.blend_duration = max(duration, 0.1)

    def target_d(self, track: Track, time: float, others: list[Traffic]) -> float:
        """Lateral offset it steers to now: beside the car it passes, or its lane (blended in a change)."""
        if self.passing is not None:
            lead_id, side = self.passing
            lead = next((o for o in others if o.instance_id == lead_id), None)
            if lead is not None:
                return _passing_offset(track, lead, side, self.params)
        goal = float(track.racing_offset_at(self.s)) if self.lane == RACING else float(self.lane)
        if self.blend_start < 0:
            return goal
        progress = (time - self.blend_start) / self.blend_duration
        if progress >= 1.0:
            self.blend_start = -1.0
            return goal
        w = 0.5 - 0.5 * math.cos(math.pi * max(progress, 0.0))
        return (1.0 - w) * self.lane_from + w * goal


def make_opponent(spec: OpponentSpec, instance_id: int, track: Track) -> Opponent:
    s = float(np.mod(spec.start_s, track.length))
    opponent = Opponent(spec=spec, instance_id=instance_id, s=s, d=0.0, v=0.0, lane=spec.lane)
    opponent.d = float(opponent.lane_offset(track, s))
    opponent.v = float(spec.start_speed if spec.start_speed is not None else min(spec.speed, 30.0))
    opponent.v = min(opponent.v, lane_speed(track, opponent, s))
    update_pose(opponent, track, 0.0)
    return opponent


def lane_speed(track: Track, opponent: Opponent, s: float) -> float:
    """The opponent's cruise speed at ``s``: its scaled grip-limited speed ahead, capped by ``speed``.

    Looks ahead over its braking distance so it slows before a bend, not in it.
    """
    spec = opponent.spec
    horizon = opponent.v**2 / (2.0 * spec.max_brake) + 10.0
    ahead = s + np.linspace(0.0, horizon, 24)
    d = opponent.lane_offset(track, ahead)
    k = np.abs(track.lane_curvature_at(ahead, d))
    limit = spec.speed_scale * np.sqrt(spec.lateral_accel / np.maximum(k, 1e-9))
    reachable = np.sqrt(limit**2 + 2.0 * spec.max_brake * (ahead - s))
    return float(min(spec.speed, reachable.min()))


def update_pose(opponent: Opponent, track: Track, d_rate: float) -> None:
    """Map pose and velocity (rear axle = base_link convention) from the Frenet state."""
    x, y, heading, curvature = track.frenet_point(opponent.s, opponent.d)
    s_rate = opponent.v * max(1.0 - curvature * opponent.d, 0.05)
    yaw = _wrap(heading + math.atan2(d_rate, max(s_rate, 1e-3)))
    c, s = math.cos(yaw), math.sin(yaw)
    back = opponent.params.center_offset
    opponent.yaw, opponent.vx, opponent.vy = yaw, opponent.v * c, opponent.v * s
    opponent.x, opponent.y = x - back * c, y - back * s
    opponent.curvature = curvature


def step_opponent(
    opponent: Opponent, track: Track, time: float, dt: float, others: list[Traffic], replan: bool = True
) -> None:
    """Advance one physics step (``time`` is the time at its end); ``others``: every other car, ego included.

    ``replan`` refreshes the look-ahead cruise speed and the overtake decision (every few steps).
    """
    spec = opponent.spec
    for change in spec.lane_changes:
        if time - dt < change.at <= time:
            opponent.passing = None
            opponent.change_lane(change.lane, time, change.duration)
    for event in spec.brakes:
        if time - dt < event.at <= time:
            opponent.brake_until = event.at + max(opponent.v - event.speed, 0.0) / event.decel + event.hold
            opponent.brake_speed, opponent.brake_decel = event.speed, min(event.decel, spec.max_brake)
    if replan or opponent.cruise < 0:
        opponent.cruise = lane_speed(track, opponent, opponent.s)
        if spec.overtake:
            _manage_overtake(opponent, track, time, others, opponent.cruise)
    target_v = opponent.cruise
    decel = spec.max_brake
    if time <= opponent.brake_until:
        target_v, decel = min(target_v, opponent.brake_speed), opponent.brake_decel
    goal = _hold_line(opponent, track, opponent.target_d(track, time, others), others)
    leader = _leader(opponent, track, others, goal)
    if leader is not None:
        gap, leader_v = leader
        desired = spec.min_gap + spec.time_gap * opponent.v
        safe = math.sqrt(leader_v**2 + 1.6 * spec.max_brake * max(gap - 2.0, 0.0))
        target_v = min(target_v, max(leader_v + 0.5 * (gap - desired), 0.0), safe)
        decel = spec.max_brake
    accel = min(max(2.0 * (target_v - opponent.v), -decel), spec.max_accel)
    v_new = max(opponent.v + accel * dt, 0.0)
    v_mid = 0.5 * (opponent.v + v_new)
    d_old = opponent.d
    opponent.d = d_old + _clip(goal - d_old, (0.08 * v_mid + 1.0) * dt)
    s_new = opponent.s + v_mid * dt / max(1.0 - opponent.curvature * opponent.d, 0.05)
    if s_new >= track.length:
        opponent.laps += 1
    opponent.s = s_new % track.length
    opponent.v = v_new
    update_pose(opponent, track, (opponent.d - d_old) / dt)


def _hold_line(opponent: Opponent, track: Track, goal: float, others: list[Traffic]) -> float:
    """The lateral goal, limited so as not to squeeze a car alongside or about to be (racing etiquette).

    Cars in line ahead or behind (laterally within 0.6 car widths) are left to the following logic.
    """
    p = opponent.params
    clearance = p.width + 0.8
    half = track.length / 2.0
    for other in others:
        along = (other.s - opponent.s + half) % track.length - half
        window = p.length + 10.0 + 1.5 * abs(other.v - opponent.v)
        if abs(along) > window or abs(other.d - opponent.d) < 0.6 * p.width:
            continue
        if other.d > opponent.d and goal > other.d - clearance:
            goal = min(goal, max(other.d - clearance, opponent.d))
        elif other.d <= opponent.d and goal < other.d + clearance:
            goal = max(goal, min(other.d + clearance, opponent.d))
    return goal


def _leader(
    opponent: Opponent, track: Track, others: list[Traffic], goal: float
) -> tuple[float, float] | None:
    """(box-to-box gap, speed) of the nearest car ahead in our lateral band, now or where we are going."""
    best = None
    band = opponent.params.width + 0.6
    for other in others:
        ahead = (other.s - opponent.s + track.length / 2.0) % track.length - track.length / 2.0
        if ahead <= 0 or min(abs(other.d - opponent.d), abs(other.d - goal)) > band:
            continue
        gap = ahead - opponent.params.length
        if best is None or gap < best[0]:
            best = (gap, other.v)
    return best


def _passing_offset(track: Track, lead: Traffic, side: int, params: VehicleParams) -> float:
    left, right = track.widths_at(lead.s)
    room = params.width / 2.0 + 0.8
    return min(max(lead.d + side * (params.width + 1.5), -float(right) + room), float(left) - room)


def _manage_overtake(opponent: Opponent, track: Track, time: float, others: list[Traffic], cruise: float) -> None:
    """Pull out beside a slower car ahead when that side is free; back to its lane once past."""
    params = opponent.params
    if opponent.passing is not None:
        lead = next((o for o in others if o.instance_id == opponent.passing[0]), None)
        behind = float(track.wrap_ds(lead.s - opponent.s)) if lead is not None else 0.0
        squeezed = lead is not None and behind > params.length + 2.0 and abs(
            _passing_offset(track, lead, opponent.passing[1], params) - lead.d
        ) < params.width + 1.0
        if lead is None or behind < -params.length - 12.0 or squeezed:
            opponent.passing = None
            opponent.change_lane(opponent.spec.lane, time, 3.0)
        return
    ahead = [o for o in others if 0.0 < float(track.wrap_ds(o.s - opponent.s)) < 45.0 + params.length]
    blocking = [o for o in ahead if abs(o.d - opponent.d) < params.width + 0.6 and o.v < cruise - 2.0]
    if not blocking:
        return
    lead = min(blocking, key=lambda o: float(track.wrap_ds(o.s - opponent.s)))
    left, right = track.widths_at(lead.s)
    room = params.width / 2.0 + 0.8
    sides = sorted((1, -1), key=lambda side: -(float(left) - lead.d if side > 0 else lead.d + float(right)))
    if float(track.wrap_ds(lead.s - opponent.s)) < params.length + 30.0:
        sides = [side for side in sides if (side > 0) == (opponent.d > lead.d)]  # never cut across it
    for side in sides:
        lane = lead.d + side * (params.width + 1.5)
        if not -float(right) + room <= lane <= float(left) - room:
            continue
        blocked = any(
            abs(float(track.wrap_ds(o.s - opponent.s))) < 30.0 and abs(o.d - lane) < params.width + 0.6
            for o in others
            if o.instance_id != lead.instance_id
        )
        if not blocked:
            opponent.passing = (lead.instance_id, side)
            return
