"""What the planner publishes when the MPC has no safe answer: never silence, never an exception.

Order (issue 7, item 4): the previous plan shifted to the new time, while it is recent and still
clear of the opponents' forecast; otherwise a braking trajectory that holds the current lane inside
the track (steering by pure pursuit on the lane, decelerating at the braking limit).
"""

from __future__ import annotations

import numpy as np

from planning_nodes.mpc.model import NU, NX, STEER, YAW, V, rollout, step
from planning_nodes.opponents import Forecast, plan_collides
from planning_nodes.plan import BRAKING, SHIFTED, EgoState, Plan
from simulation.track import Track
from simulation.vehicles import VehicleParams


def pursuit_steer(x: float, y: float, yaw: float, target: np.ndarray, wheelbase: float) -> float:
    """Pure-pursuit wheel angle that puts the rear axle on an arc through ``target``."""
    dx, dy = target[0] - x, target[1] - y
    lateral = -np.sin(yaw) * dx + np.cos(yaw) * dy
    dist2 = max(dx * dx + dy * dy, 1e-6)
    return float(np.arctan(2.0 * wheelbase * lateral / dist2))


def shift_plan(plan: Plan, time: float, vehicle: VehicleParams, decel: float) -> Plan:
    """``plan`` re-timed to start at ``time``; past its end the car keeps its wheel angle and brakes."""
    steps = plan.states.shape[0]
    times = time + plan.dt * np.arange(steps)
    inside = int(np.sum(times <= plan.times[-1] + 1e-9))
    states = plan.sample(times[:inside])
    first = int(np.clip(np.floor((time - plan.time) / plan.dt + 1e-9), 0, steps - 2))
    inputs = plan.inputs[first : first + inside - 1]
    if inside < steps:
        tail_inputs = np.zeros((steps - inside, NU))
        tail_inputs[:, 1] = -decel
        tail = rollout(states[-1], tail_inputs, plan.dt, vehicle.wheelbase)
        tail[:, V] = np.maximum(tail[:, V], 0.0)
        states = np.vstack([states, tail[1:]])
        inputs = np.vstack([inputs, tail_inputs])
    info = {"shifted_by_s": float(time - plan.time)}
    return Plan(time, plan.dt, states, inputs, SHIFTED, info)


def braking_plan(
    ego: EgoState,
    track: Track,
    vehicle: VehicleParams,
    time: float,
    steps: int,
    dt: float,
    clearance: float,
) -> Plan:
    """Full braking on the current lane (offset clamped inside the track by ``clearance``)."""
    s0, d0, _ = track.project(np.array([[ego.x, ego.y]]))
    left, right = track.widths_at(s0)
    lane = float(np.clip(d0[0], -float(right[0]) + clearance, float(left[0]) - clearance))
    states = np.empty((steps + 1, NX))
    inputs = np.zeros((steps, NU))
    states[0] = ego.vector
    max_delta = vehicle.max_steer_rate * dt
    for k in range(steps):
        z = states[k]
        s, _, _ = track.project(z[None, :2])
        ahead = float(s[0]) + max(6.0, 0.6 * z[V])
        target = track.frenet_to_xy(ahead, lane)
        wanted = np.clip(
            pursuit_steer(z[0], z[1], z[YAW], target, vehicle.wheelbase), -vehicle.max_steer, vehicle.max_steer
        )
        inputs[k, 0] = np.clip(wanted - z[STEER], -max_delta, max_delta) / dt
        inputs[k, 1] = -min(vehicle.max_brake, z[V] / dt)
        states[k + 1] = step(z, inputs[k], dt, vehicle.wheelbase)
    return Plan(time, dt, states, inputs, BRAKING, {"lane_offset_m": lane})


class Fallback:
    """Chooses the shifted previous plan or the braking trajectory, and counts which."""

    def __init__(self, track: Track, vehicle: VehicleParams, clearance: float, max_shift_s: float = 0.5) -> None:
        self.track, self.vehicle = track, vehicle
        self.clearance, self.max_shift_s = clearance, max_shift_s

    def plan(
        self,
        previous: Plan | None,
        ego: EgoState,
        time: float,
        forecast: Forecast | None,
        steps: int,
        dt: float,
    ) -> Plan:
        if previous is not None and previous.kind != BRAKING and 0.0 <= time - previous.time <= self.max_shift_s:
            shifted = shift_plan(previous, time, self.vehicle, 0.5 * self.vehicle.max_brake)
            shifted.states[0] = ego.vector
            if forecast is None or not plan_collides(shifted, forecast, self.vehicle):
                return shifted
        return braking_plan(ego, self.track, self.vehicle, time, steps, dt, self.clearance)
