"""Kinematic bicycle model of the ego, discretized once, with the Jacobians the SCP linearizes along.

State ``z = [x, y, yaw, v, steer]`` (reference point: rear axle, as ``base_link``), input
``u = [steer_rate, accel]``. One step integrates with the inputs held constant using the midpoint
rule (steer, speed and yaw at mid-step), which is second-order accurate yet keeps every Jacobian
entry in closed form: at 80 m/s and dt = 0.1 s an explicit Euler step would misplace the car by
decimetres in a bend. All functions take stacked states ``(..., 5)`` so a whole horizon is one call. The
limits are the simulator's ``simulation.vehicles.VehicleParams``, so planner and plant agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NX, NU = 5, 2
X, Y, YAW, V, STEER = range(NX)
STEER_RATE, ACCEL = range(NU)


def step(z: np.ndarray, u: np.ndarray, dt: float, wheelbase: float) -> np.ndarray:
    """The state after ``dt`` with inputs held constant (midpoint rule); shapes (..., 5), (..., 2)."""
    steer_m = z[..., STEER] + 0.5 * dt * u[..., STEER_RATE]
    v_m = z[..., V] + 0.5 * dt * u[..., ACCEL]
    omega = v_m * np.tan(steer_m) / wheelbase
    yaw_m = z[..., YAW] + 0.5 * dt * omega
    out = np.empty(np.broadcast_shapes(z.shape, (*u.shape[:-1], NX)), dtype=np.float64)
    out[..., X] = z[..., X] + dt * v_m * np.cos(yaw_m)
    out[..., Y] = z[..., Y] + dt * v_m * np.sin(yaw_m)
    out[..., YAW] = z[..., YAW] + dt * omega
    out[..., V] = z[..., V] + dt * u[..., ACCEL]
    out[..., STEER] = z[..., STEER] + dt * u[..., STEER_RATE]
    return out


def rollout(z0: np.ndarray, inputs: np.ndarray, dt: float, wheelbase: float) -> np.ndarray:
    """States (N+1, 5) from z0 under inputs (N, 2), nonlinear."""
    states = np.empty((inputs.shape[0] + 1, NX))
    states[0] = z0
    for k in range(inputs.shape[0]):
        states[k + 1] = step(states[k], inputs[k], dt, wheelbase)
    return states


@dataclass
class Linearization:
    """``z[k+1] ≈ A_k z[k] + B_k u[k] + c_k`` for the rows that are not already linear.

    Only x, y and yaw depend nonlinearly on the state; speed and steering are exact integrators.
    ``jx``/``jy`` hold the partials of x+/y+ with respect to (yaw, v, steer, steer_rate, accel),
    ``jyaw`` those of yaw+ with respect to (v, steer, steer_rate, accel), each (N, k);
    ``offset`` (N, 3) makes the model exact at the linearization point.
    """

    jx: np.ndarray
    jy: np.ndarray
    jyaw: np.ndarray
    offset: np.ndarray

    def predict(self, z: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
        """The linear model's next states for states z (N, 5) and inputs u (N, 2)."""
        cols = np.column_stack([z[:, YAW], z[:, V], z[:, STEER], u[:, STEER_RATE], u[:, ACCEL]])
        out = np.empty_like(z)
        out[:, X] = z[:, X] + np.sum(self.jx * cols, axis=1) + self.offset[:, 0]
        out[:, Y] = z[:, Y] + np.sum(self.jy * cols, axis=1) + self.offset[:, 1]
        out[:, YAW] = z[:, YAW] + np.sum(self.jyaw * cols[:, 1:], axis=1) + self.offset[:, 2]
        out[:, V] = z[:, V] + dt * u[:, ACCEL]
        out[:, STEER] = z[:, STEER] + dt * u[:, STEER_RATE]
        return out


def linearize(z: np.ndarray, u: np.ndarray, dt: float, wheelbase: float) -> Linearization:
    """Closed-form Jacobians of ``step`` at states z (N, 5) and inputs u (N, 2)."""
    h = 0.5 * dt
    steer_m = z[:, STEER] + h * u[:, STEER_RATE]
    v_m = z[:, V] + h * u[:, ACCEL]
    tan_m = np.tan(steer_m)
    sec2 = 1.0 + tan_m**2
    omega = v_m * tan_m / wheelbase
    yaw_m = z[:, YAW] + h * omega
    cos_m, sin_m = np.cos(yaw_m), np.sin(yaw_m)
    # d omega / d (v, steer, steer_rate, accel)
    d_omega = np.column_stack(
        [tan_m / wheelbase, v_m * sec2 / wheelbase, h * v_m * sec2 / wheelbase, h * tan_m / wheelbase]
    )
    # d v_m / d (v, steer, steer_rate, accel)
    d_vm = np.zeros_like(d_omega)
    d_vm[:, 0], d_vm[:, 3] = 1.0, h
    # d yaw_m / d (yaw, v, steer, steer_rate, accel)
    d_yawm = np.column_stack([np.ones_like(yaw_m), h * d_omega])
    d_vm5 = np.column_stack([np.zeros_like(yaw_m), d_vm])
    jx = dt * (d_vm5 * cos_m[:, None] - (v_m * sin_m)[:, None] * d_yawm)
    jy = dt * (d_vm5 * sin_m[:, None] + (v_m * cos_m)[:, None] * d_yawm)
    jyaw = dt * d_omega
    nxt = step(z, u, dt, wheelbase)
    cols = np.column_stack([z[:, YAW], z[:, V], z[:, STEER], u[:, STEER_RATE], u[:, ACCEL]])
    offset = np.column_stack(
        [
            nxt[:, X] - z[:, X] - np.sum(jx * cols, axis=1),
            nxt[:, Y] - z[:, Y] - np.sum(jy * cols, axis=1),
            nxt[:, YAW] - z[:, YAW] - np.sum(jyaw * cols[:, 1:], axis=1),
        ]
    )
    return Linearization(jx=jx, jy=jy, jyaw=jyaw, offset=offset)
