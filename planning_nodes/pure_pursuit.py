"""Pure pursuit on the racing line: the simplest planner with the MPC's contract (a baseline).

Steering: the arc through the racing-line point a speed-dependent look-ahead away. Speed: the
racing line's grip-limited profile (the MPC's reference), capped to keep a time gap behind the
nearest car ahead on the line (the only use of the object list; it never steers around anyone).
The published trajectory is the racing line ahead, timed by the commanded speeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planning_nodes.mpc.fallback import pursuit_steer
from planning_nodes.mpc.model import NU, NX, rollout
from planning_nodes.mpc.references import RaceReference
from planning_nodes.opponents import ground_objects
from planning_nodes.plan import PURSUIT, EgoState, Plan
from simulation.track import Track
from simulation.vehicles import VehicleParams


@dataclass(frozen=True)
class PursuitConfig:
    lookahead_time: float = 0.6
    min_lookahead: float = 8.0
    speed_gain: float = 1.5
    follow_gap: float = 10.0
    time_gap: float = 0.6
    horizon: int = 30
    dt: float = 0.1
    grip_scale: float = 0.9


class PurePursuit:
    """Steer toward a look-ahead point on the racing line, drive its speed profile, follow cars ahead."""

    def __init__(self, track: Track, vehicle: VehicleParams, config: PursuitConfig | None = None) -> None:
        self.track, self.vehicle = track, vehicle
        self.config = config or PursuitConfig()
        self.reference = RaceReference(track, vehicle, self.config.grip_scale)

    def plan(self, ego: EgoState, objects: np.ndarray | None, time: float) -> Plan:
        cfg, veh = self.config, self.vehicle
        inputs = np.zeros((cfg.horizon, NU))
        state = ego.vector
        states = np.empty((cfg.horizon + 1, NX))
        states[0] = state
        cap = self._follow_speed(ego, objects)
        for k in range(cfg.horizon):
            steer, target_speed = self._control(states[k], cap)
            inputs[k, 0] = np.clip((steer - states[k, 4]) / cfg.dt, -veh.max_steer_rate, veh.max_steer_rate)
            accel = cfg.speed_gain * (target_speed - states[k, 3])
            inputs[k, 1] = np.clip(accel, -veh.max_brake, veh.max_accel)
            states[k + 1] = rollout(states[k], inputs[k : k + 1], cfg.dt, veh.wheelbase)[1]
        return Plan(time, cfg.dt, states, inputs, PURSUIT, {"speed_cap": cap})

    def _control(self, z: np.ndarray, cap: float) -> tuple[float, float]:
        cfg, veh, racing = self.config, self.vehicle, self.track.racing
        s, _, _ = racing.project(z[None, :2])
        ahead = float(s[0]) + max(cfg.min_lookahead, cfg.lookahead_time * z[3])
        target = racing.point_at(ahead)
        steer = float(np.clip(pursuit_steer(z[0], z[1], z[2], target, veh.wheelbase), -veh.max_steer, veh.max_steer))
        speed = float(racing.interpolate(self.reference.speed, s[0]))
        return steer, min(speed, cap)

    def _follow_speed(self, ego: EgoState, objects: np.ndarray | None) -> float:
        """Highest speed that keeps ``follow_gap + time_gap·v`` to the nearest car ahead in our lane."""
        if objects is None or objects.size == 0:
            return np.inf
        table = ground_objects(objects)
        if table.size == 0:
            return np.inf
        veh, cfg, track = self.vehicle, self.config, self.track
        center = np.array([[ego.x, ego.y]]) + veh.center_offset * np.array([[np.cos(ego.yaw), np.sin(ego.yaw)]])
        s_ego, d_ego, _ = track.project(center)
        s_obj, d_obj, _ = track.project(np.column_stack([table["x"], table["y"]]))
        gap = np.asarray(track.wrap_ds(s_obj - s_ego[0])) - (table["length"] + veh.length) / 2.0
        lane = np.abs(d_obj - d_ego[0]) < (table["width"] + veh.width) / 2.0 + 0.5
        ahead = lane & (gap > -veh.length)
        if not ahead.any():
            return np.inf
        j = int(np.argmin(np.where(ahead, gap, np.inf)))
        speed_obj = float(np.hypot(table["vx"][j], table["vy"][j]))
        room = gap[j] - cfg.follow_gap - cfg.time_gap * ego.v
        return max(speed_obj + 0.8 * room, 0.0)
