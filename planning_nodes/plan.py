"""A planned trajectory and the command it implies: what every planner returns and every node publishes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from planning_nodes.mpc.model import ACCEL, STEER, STEER_RATE, YAW, V

MPC, SHIFTED, BRAKING, PURSUIT = "mpc", "shifted", "braking", "pure_pursuit"


@dataclass(frozen=True)
class EgoState:
    """The ego in ``map``: rear-axle position, heading, speed, front-wheel angle, applied acceleration."""

    x: float
    y: float
    yaw: float
    v: float
    steer: float = 0.0
    accel: float = 0.0

    @property
    def vector(self) -> np.ndarray:
        return np.array([self.x, self.y, self.yaw, self.v, self.steer])


@dataclass
class Plan:
    """States (N+1, 5) in ``map`` at ``time + k·dt`` and inputs (N, 2) = (steer_rate, accel).

    ``kind`` says where it came from (mpc, shifted, braking, pure_pursuit); ``info`` carries
    solver figures for diagnostics.
    """

    time: float
    dt: float
    states: np.ndarray
    inputs: np.ndarray
    kind: str
    info: dict[str, float | str] = field(default_factory=dict)

    @property
    def times(self) -> np.ndarray:
        return self.time + self.dt * np.arange(self.states.shape[0])

    def command(self, lead: float | None = None) -> dict[str, float]:
        """The /control/command fields: wheel angle and speed ``lead`` s ahead (default: one step)."""
        at = self.sample(np.array([self.time + (self.dt if lead is None else lead)]))[0]
        return {
            "steering_angle": float(at[STEER]),
            "steering_rate": float(self.inputs[0, STEER_RATE]),
            "speed": float(at[V]),
            "acceleration": float(self.inputs[0, ACCEL]),
        }

    def sample(self, times: np.ndarray) -> np.ndarray:
        """States linearly interpolated at ``times`` (clamped to the plan's span), yaw unwrapped."""
        rel = np.clip((np.asarray(times) - self.time) / self.dt, 0.0, self.states.shape[0] - 1)
        i0 = np.minimum(np.floor(rel).astype(np.int64), self.states.shape[0] - 2)
        w = (rel - i0)[:, None]
        states = self.states.copy()
        states[:, YAW] = np.unwrap(states[:, YAW])
        return states[i0] * (1.0 - w) + states[i0 + 1] * w
