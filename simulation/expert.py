"""The privileged expert driver: racing line, grip-limited speed, safe overtakes, never off track.

It sees the true state of every car (hence "privileged"), plans a lateral offset profile d(s) on the
centre line ahead (the racing line, or beside a slower car it is passing, blended in from where the
car is now), drives it with a Stanley controller with curvature feed-forward, and picks the speed
that lets it brake for every bend of that plan and never close on a car it cannot pass. It issues
the same ``Command`` a planner would, so it obeys the vehicle's limits; it produces the training
data and is the planner's upper bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulation.scenario import ExpertSpec
from simulation.track import Track
from simulation.vehicles import Command, Traffic, VehicleParams, VehicleState

PLAN_STEP = 3.0  # m between plan samples
HARD_MARGIN = 0.4  # m between the body and a wall that the plan never gives up


@dataclass(frozen=True)
class Plan:
    """The expert's plan ahead of the car: Frenet samples on the centre line, map points, speeds.

    ``ahead`` is the distance along the centre line from where the plan was made.
    """

    s: np.ndarray
    d: np.ndarray
    xy: np.ndarray
    ahead: np.ndarray
    heading: np.ndarray
    curvature: np.ndarray
    speed: np.ndarray


class ExpertDriver:
    """Drives one car with full knowledge of the track and of every other car.

    It replans every ``replan_steps`` calls (the plan is cheap to follow, costly to make) and
    tracks the current plan at every physics step.
    """

    def __init__(
        self, track: Track, params: VehicleParams, spec: ExpertSpec | None = None, replan_steps: int = 5
    ) -> None:
        self.track = track
        self.params = params
        self.spec = spec or ExpertSpec()
        self.replan_steps = replan_steps
        self.lateral_accel = self.spec.lateral_accel_scale * params.max_lateral_accel
        self.brake = self.spec.brake_scale * params.max_brake
        half = params.width / 2.0 + self.spec.track_margin
        self._lower = -track.right_width + half
        self._upper = track.left_width - half
        hard = params.width / 2.0 + HARD_MARGIN  # what even a car alongside cannot push us past
        self._hard = (-track.right_width + hard, track.left_width - hard)
        self.passing: tuple[int, float] | None = None
        self.plan: Plan | None = None
        self._transition = (0.0, 0.0, 1.0)
        self._calls = 0

    # -- public ------------------------------------------------------------------------------

    def command(self, ego: VehicleState, traffic: list[Traffic], frenet: tuple[float, float] | None = None) -> Command:
        """The command for this physics step; ``frenet`` is the ego box centre's (s, d) if known."""
        if self.plan is None or self._calls % self.replan_steps == 0:
            self.plan = self.make_plan(ego, traffic, frenet)
        self._calls += 1
        steer, along = self._steer(ego, self.plan)
        return Command(steering_angle=steer, acceleration=self._accel(ego, self.plan, along))

    def make_plan(self, ego: VehicleState, traffic: list[Traffic], frenet: tuple[float, float] | None = None) -> Plan:
        """Plan the offsets and speeds ahead; start a pass when the plan runs into a slower car."""
        p = self.params
        if frenet is None:
            center = np.array([ego.x, ego.y]) + p.center_offset * np.array([np.cos(ego.yaw), np.sin(ego.yaw)])
            s_arr, d_arr, _ = self.track.project(center[None])
            frenet = (float(s_arr[0]), float(d_arr[0]))
        s_now, d_now = frenet
        passing = self.passing
        self._end_pass(s_now, d_now, ego.v, traffic)
        planned = self._planned_offset(s_now)
        if planned is None or abs(d_now - planned) > 1.5:
            self._start_transition(s_now, d_now, ego.v, traffic)
            planned = d_now
        elif passing != self.passing:
            self._start_transition(s_now, planned, ego.v, traffic)
        elif self.track.wrap_ds(s_now - self._transition[0]) > self._transition[2]:
            self._transition = (s_now, 0.0, 1.0)  # done; cleared long before it could wrap round
        plan, blocking = self._plan(s_now, d_now, ego.v, traffic)
        if self.passing is None and blocking and self._start_pass(blocking, s_now, d_now, ego.v, traffic):
            self._start_transition(s_now, planned, ego.v, traffic)
            plan, _ = self._plan(s_now, d_now, ego.v, traffic)
        return plan

    def _plan(self, s_now: float, d_now: float, v: float, traffic: list[Traffic]) -> tuple[Plan, list[Traffic]]:
        """The plan for the current goal, and the cars it would run into (slowest first)."""
        horizon = max(80.0, v**2 / (2.0 * self.brake) + 60.0)
        ahead = np.arange(-2.0 * PLAN_STEP, horizon + PLAN_STEP, PLAN_STEP)
        s = s_now + ahead
        d = self._keep_clear(ahead, self._plan_offsets(s, traffic), s_now, d_now, v, traffic)
        d = np.clip(d, self.track.center.interpolate(self._hard[0], s), self.track.center.interpolate(self._hard[1], s))
        xy = self.track.frenet_to_xy(s, d)
        heading, curvature = _polyline_heading_curvature(xy)
        speed, blocking = self._speed(np.maximum(ahead, 0.0), curvature, v, d, traffic, s_now)
        return Plan(np.mod(s, self.track.length), d, xy, ahead, heading, curvature, speed), blocking

    # -- lateral -----------------------------------------------------------------------------

    def _bounds(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.track.center.interpolate(self._lower, s), self.track.center.interpolate(self._upper, s)

    def _goal(self, s: np.ndarray, traffic: list[Traffic]) -> np.ndarray:
        """Where the car wants to be laterally: the racing line, or beside the car it passes."""
        goal = self.track.racing_offset_at(s)
        if self.passing is not None:
            lead = _by_id(traffic, self.passing[0])
            if lead is not None:
                goal = self._predicted_offset(lead, s) + self.passing[1]
        lower, upper = self._bounds(s)
        return np.clip(goal, lower, upper)

    def _predicted_offset(self, other: Traffic, s: np.ndarray) -> np.ndarray:
        """Where ``other`` will be laterally at ``s``: on the racing line if it drives it, else in its lane."""
        racing_there = float(self.track.racing_offset_at(other.s))
        if abs(other.d - racing_there) < 0.5:
            return self.track.racing_offset_at(s) + (other.d - racing_there)
        return np.full_like(np.asarray(s, dtype=np.float64), other.d)

    def _planned_offset(self, s: float) -> float | None:
        """The current plan's offset at ``s`` (None without a plan or beyond it)."""
        if self.plan is None:
            return None
        along = float(self.track.wrap_ds(s - self.plan.s[0])) + self.plan.ahead[0]
        if not self.plan.ahead[0] <= along <= self.plan.ahead[-1]:
            return None
        return float(np.interp(along, self.plan.ahead, self.plan.d))

    def _start_transition(self, s: float, d: float, v: float, traffic: list[Traffic]) -> None:
        """Blend from offset ``d`` at ``s`` into the goal over a speed-dependent distance."""
        goal = float(self._goal(np.array([s]), traffic)[0])
        self._transition = (s, d - goal, _blend_length(v, d - goal))

    def _plan_offsets(self, s: np.ndarray, traffic: list[Traffic]) -> np.ndarray:
        """The goal plus what is left of the current transition (a cosine fade), within the margins."""
        start, delta, length = self._transition
        ramp = np.clip(self.track.wrap_ds(s - start) / length, 0.0, 1.0)
        d = self._goal(s, traffic) + delta * (0.5 + 0.5 * np.cos(np.pi * ramp))
        lower, upper = self._bounds(s)
        return np.clip(d, lower, upper)

    def _keep_clear(
        self, ahead: np.ndarray, d: np.ndarray, s_now: float, d_now: float, v: float, traffic: list[Traffic]
    ) -> np.ndarray:
        """Never move toward a car beside us: until past it, the plan keeps a car width and 0.8 m from
        both its line now and its predicted line (or stays where it is if already closer), then
        relaxes smoothly.
        Cars in line ahead are left to the speed planning."""
        p = self.params
        for other in traffic:
            along = float(self.track.wrap_ds(other.s - s_now))
            if abs(along) > p.length + 10.0 or abs(other.d - d_now) < 0.6 * p.width:
                continue
            past = max(along, 0.0) + p.length + 10.0
            relax = 0.5 - 0.5 * np.cos(np.pi * np.clip((ahead - past) / _blend_length(v, 3.0), 0.0, 1.0))
            clearance = p.width + 0.8 - 10.0 * relax
            predicted = self._predicted_offset(other, s_now + ahead)
            if other.d > d_now:  # on our left: keep right of both where it is and where it may go
                d = np.minimum(d, np.maximum(np.minimum(predicted, other.d) - clearance, d_now))
            else:
                d = np.maximum(d, np.minimum(np.maximum(predicted, other.d) + clearance, d_now))
        return d

    def _steer(self, ego: VehicleState, plan: Plan) -> tuple[float, float]:
        """Steering from the plan's curvature plus feedback on the rear axle's lateral and heading
        errors (critically damped over a speed-dependent length); also the rear axle's distance
        along the plan (for the speed control)."""
        p = self.params
        rear = np.array([ego.x, ego.y])
        rel = plan.xy - rear
        i = min(int(np.argmin(rel[:, 0] ** 2 + rel[:, 1] ** 2)), len(plan.xy) - 2)
        if i > 0 and np.dot(rear - plan.xy[i], plan.xy[i] - plan.xy[i - 1]) < 0:
            i -= 1
        seg = plan.xy[i + 1] - plan.xy[i]
        seg_len = math.hypot(seg[0], seg[1])
        offset = rear - plan.xy[i]
        t = min(max(float(offset @ seg) / seg_len**2, 0.0), 1.0)
        lateral = float(seg[0] * offset[1] - seg[1] * offset[0]) / seg_len
        path_heading = plan.heading[i] + t * _wrap(plan.heading[i + 1] - plan.heading[i])
        heading_error = _wrap(ego.yaw - path_heading)
        preview = min(i + 1 + int(ego.v * 0.1 / PLAN_STEP), len(plan.curvature) - 1)
        length = max(12.0, 0.5 * ego.v)
        curvature = plan.curvature[preview] - lateral / length**2 - 2.0 * heading_error / length
        return math.atan(p.wheelbase * curvature), float(plan.ahead[i] + t * PLAN_STEP)

    def _accel(self, ego: VehicleState, plan: Plan, along: float) -> float:
        """Acceleration that meets the plan's speed a short preview ahead, plus a P term."""
        p = self.params
        preview = max(0.5 * ego.v, 5.0)
        target_now = float(np.interp(along, plan.ahead, plan.speed))
        target = float(np.interp(along + preview, plan.ahead, plan.speed))
        accel = (target**2 - ego.v**2) / (2.0 * preview) + 1.5 * (target_now - ego.v)
        return min(max(accel, -p.max_brake), p.max_accel)

    # -- longitudinal ------------------------------------------------------------------------

    def _speed(
        self, ahead: np.ndarray, curvature: np.ndarray, v: float, d: np.ndarray, traffic: list[Traffic], s_now: float
    ) -> tuple[np.ndarray, list[Traffic]]:
        """Speed at each plan sample (grip limit, braking feasibility, cars in the way) and the cars
        the plan would meet: where a car, moving on at its speed along its predicted line, would be
        at the same place as the ego at the same time."""
        p = self.params
        limit = np.minimum(p.max_speed, np.sqrt(self.lateral_accel / np.maximum(np.abs(curvature), 1e-9)))
        limit = np.minimum.accumulate((limit**2 + 2.0 * self.brake * ahead)[::-1])[::-1] - 2.0 * self.brake * ahead
        speed = np.sqrt(np.maximum(limit, 0.0))
        step = np.diff(ahead, prepend=ahead[0])
        times = np.cumsum(step / np.maximum(speed, 1.0))
        blocking = []
        for other in traffic:
            gap0 = float(self.track.wrap_ds(other.s - s_now))
            if gap0 < -p.length or gap0 > ahead[-1]:
                continue
            other_ahead = gap0 + other.v * times
            other_d = self._predicted_offset(other, s_now + other_ahead)
            meet = (np.abs(ahead - other_ahead) < p.length + 1.5) & (np.abs(d - other_d) < p.width + 0.6)
            if not meet.any():
                continue
            blocking.append(other)
            gap = gap0 - p.length
            room = max(gap - self.spec.follow_gap, 0.0)
            safe = np.sqrt(other.v**2 + 2.0 * self.brake * room)
            keep = other.v + 0.8 * (gap - self.spec.follow_gap - self.spec.time_gap * v)
            speed = np.minimum(speed, max(min(safe, keep), 0.0))
        return speed, sorted(blocking, key=lambda o: o.v)

    # -- overtaking --------------------------------------------------------------------------

    def _near(self, v: float) -> float:
        """Centre-to-centre distance below which a car ahead is too close to cut across its line."""
        return self.params.length + max(20.0, 0.6 * v)

    def _end_pass(self, s_now: float, d_now: float, v: float, traffic: list[Traffic]) -> None:
        """A pass ends once clear ahead of the passed car. When its side closes it is abandoned only
        while well behind that car; closer, the car keeps its side and follows (never cuts across)."""
        if self.passing is None:
            return
        lead = _by_id(traffic, self.passing[0])
        if lead is None:
            self.passing = None
            return
        behind = float(self.track.wrap_ds(lead.s - s_now))
        passed = behind < -self.params.length - 10.0
        closed = behind > self._near(v) and not self._side_free(lead, self.passing[1], s_now, traffic)
        if passed or closed:
            self.passing = None

    def _start_pass(
        self, blocking: list[Traffic], s_now: float, d_now: float, v: float, traffic: list[Traffic]
    ) -> bool:
        """Pass the nearest slower car in the way on a side that stays free; close behind it, only on
        the side the car is already on. False when no side will do."""
        p = self.params
        gaps = [(float(self.track.wrap_ds(o.s - s_now)) - p.length, o) for o in blocking]
        ahead = [o for gap, o in gaps if 0.0 < gap < self.spec.overtake_gap]
        if not ahead:
            return False
        lead = min(ahead, key=lambda o: float(self.track.wrap_ds(o.s - s_now)))
        offset = p.width + self.spec.side_clearance
        racing_there = float(self.track.racing_offset_at(lead.s))
        sides = sorted((offset, -offset), key=lambda side: abs(lead.d + side - racing_there))
        if float(self.track.wrap_ds(lead.s - s_now)) < self._near(v):
            sides = [side for side in sides if (side > 0) == (d_now > lead.d)]
        for side in sides:
            if self._side_free(lead, side, s_now, traffic):
                self.passing = (lead.instance_id, side)
                return True
        return False

    def _side_free(self, lead: Traffic, side: float, s_now: float, traffic: list[Traffic]) -> bool:
        """Beside ``lead`` on ``side`` fits the car within the margins for the whole pass, and no
        other car is in that lane nearby."""
        p = self.params
        window = s_now + np.arange(0.0, float(self.track.wrap_ds(lead.s - s_now)) + 80.0, 10.0)
        lane = self._predicted_offset(lead, window) + side
        lower, upper = self._bounds(window)
        if (lane < lower).any() or (lane > upper).any():
            return False
        lane_now = float(lane[0])
        for other in traffic:
            if other.instance_id == lead.instance_id:
                continue
            along = float(self.track.wrap_ds(other.s - s_now))
            if -p.length - 5.0 < along < 80.0 and abs(other.d - lane_now) < p.width + 0.8:
                return False
        return True


def _blend_length(v: float, shift: float) -> float:
    """Distance over which a lateral shift is blended in: gentle at speed and for wide shifts."""
    return max(35.0, 1.3 * v, 12.0 * abs(shift))


def _by_id(traffic: list[Traffic], instance_id: int) -> Traffic | None:
    return next((o for o in traffic if o.instance_id == instance_id), None)


def _polyline_heading_curvature(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heading (mean of the adjacent segments) and signed curvature at each point of an open polyline."""
    seg = np.diff(xy, axis=0)
    seg_heading = np.arctan2(seg[:, 1], seg[:, 0])
    length = np.hypot(seg[:, 0], seg[:, 1])
    turn = _wrap(np.diff(seg_heading))
    heading = np.concatenate([[seg_heading[0]], seg_heading[:-1] + turn / 2.0, [seg_heading[-1]]])
    curvature = turn / (0.5 * (length[1:] + length[:-1]))
    return heading, np.concatenate([[curvature[0]], curvature, [curvature[-1]]])


def _wrap(angle):
    return (angle + math.pi) % (2.0 * math.pi) - math.pi
