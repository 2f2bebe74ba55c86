"""The MPC's subproblem as a nonlinear programme in CasADi, solved by IPOPT: the benchmark's peer.

Same horizon, same nonlinear bicycle model (``model.step``, here symbolic), same cost terms and
weights, same soft constraints with the same slack penalties, same data (a ``Stage``). The SCP
converged on a stage and IPOPT on that stage must reach the same optimum; bench/bench_planner.py
prints both costs and times. The NLP is built once; each solve only sets its parameters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import casadi as ca
import numpy as np

from planning_nodes.mpc.model import NU, NX
from planning_nodes.mpc.problem import CostWeights, SlackWeights, Stage
from simulation.vehicles import VehicleParams


@dataclass
class PeerResult:
    ok: bool
    status: str
    states: np.ndarray
    inputs: np.ndarray
    cost: float
    solve_ms: float
    iterations: int


def _step(z, u, dt: float, wheelbase: float):
    steer_m = z[4] + 0.5 * dt * u[0]
    v_m = z[3] + 0.5 * dt * u[1]
    omega = v_m * ca.tan(steer_m) / wheelbase
    yaw_m = z[2] + 0.5 * dt * omega
    return ca.vertcat(
        z[0] + dt * v_m * ca.cos(yaw_m),
        z[1] + dt * v_m * ca.sin(yaw_m),
        z[2] + dt * omega,
        z[3] + dt * u[1],
        z[4] + dt * u[0],
    )


class CasadiPeer:
    """IPOPT on the nonlinear MPC with a stage's data as parameters."""

    def __init__(
        self,
        vehicle: VehicleParams,
        horizon: int = 30,
        dt: float = 0.1,
        opponent_slots: int = 4,
        slack: SlackWeights | None = None,
        tolerance: float = 1e-8,
    ) -> None:
        self.horizon, self.dt, self.slots = horizon, dt, opponent_slots
        slack = slack or SlackWeights()
        n, m = horizon, opponent_slots
        opti = ca.Opti()
        z, u = opti.variable(NX, n + 1), opti.variable(NU, n)
        ts, os = opti.variable(n), opti.variable(n)
        p = {
            "z0": opti.parameter(NX),
            "jerk0": opti.parameter(),
            "track_n": opti.parameter(n, 2),
            "track_lo": opti.parameter(n),
            "track_hi": opti.parameter(n),
            "line_n": opti.parameter(n, 2),
            "line_b": opti.parameter(n),
            "yaw_ref": opti.parameter(n),
            "speed_ref": opti.parameter(n),
            "risk_g": opti.parameter(n, 2),
            "risk_h": opti.parameter(n, 2),
            "risk_p": opti.parameter(n, 2),
            "opp_nx": opti.parameter(m, n),
            "opp_ny": opti.parameter(m, n),
            "opp_b": opti.parameter(m, n),
            "accel_max": opti.parameter(n),
            "speed_max": opti.parameter(n),
            "w": opti.parameter(len(CostWeights.names())),
        }
        w = dict(zip(CostWeights.names(), ca.vertsplit(p["w"]), strict=True))
        opti.subject_to(z[:, 0] == p["z0"])
        for k in range(n):
            opti.subject_to(z[:, k + 1] == _step(z[:, k], u[:, k], dt, vehicle.wheelbase))
        px, py = z[0, 1:].T, z[1, 1:].T
        yaw, speed, steer = z[2, 1:].T, z[3, 1:].T, z[4, 1:].T
        track_proj = p["track_n"][:, 0] * px + p["track_n"][:, 1] * py
        opti.subject_to(
            [
                ts >= 0,
                steer <= vehicle.max_steer,
                -steer <= vehicle.max_steer,
                os >= 0,
                speed >= 0,
                speed <= p["speed_max"],
                vehicle.max_steer_rate >= u[0, :].T,
                vehicle.max_steer_rate >= -u[0, :].T,
                -vehicle.max_brake <= u[1, :].T,
                p["accel_max"] >= u[1, :].T,
                track_proj >= p["track_lo"] - ts,
                track_proj <= p["track_hi"] + ts,
            ]
        )
        for j in range(m):
            opti.subject_to(p["opp_nx"][j, :].T * px + p["opp_ny"][j, :].T * py >= p["opp_b"][j, :].T - os)
        lateral = p["line_n"][:, 0] * px + p["line_n"][:, 1] * py - p["line_b"]
        dx, dy = px - p["risk_p"][:, 0], py - p["risk_p"][:, 1]
        cost = (
            w["lateral"] * ca.sumsqr(lateral)
            + w["heading"] * ca.sumsqr(yaw - p["yaw_ref"])
            + w["speed"] * ca.sumsqr(speed - p["speed_ref"])
            + w["steer"] * ca.sumsqr(steer)
            + w["steer_rate"] * ca.sumsqr(u[0, :])
            + w["accel"] * ca.sumsqr(u[1, :])
            + w["jerk"] * (ca.sumsqr(u[1, 1:] - u[1, :-1]) + (u[1, 0] - p["jerk0"]) ** 2)
            + w["risk"] * ca.sum1(p["risk_g"][:, 0] * px + p["risk_g"][:, 1] * py)
            + 0.5 * w["risk"] * ca.sum1(p["risk_h"][:, 0] * dx**2 + p["risk_h"][:, 1] * dy**2)
            + slack.track_linear * ca.sum1(ts)
            + slack.track_quadratic * ca.sumsqr(ts)
            + slack.opponent_linear * ca.sum1(os)
            + slack.opponent_quadratic * ca.sumsqr(os)
        )
        opti.minimize(cost)
        opti.solver("ipopt", {"print_time": False}, {"print_level": 0, "tol": tolerance, "sb": "yes"})
        self.opti, self.p, self.z, self.u, self.cost = opti, p, z, u, cost
        self.track_slack, self.opp_slack = ts, os

    def solve(
        self, stage: Stage, weights: CostWeights, warm: tuple[np.ndarray, np.ndarray] | None = None
    ) -> PeerResult:
        opti = self.opti
        self._set(stage, weights)
        if warm is not None:
            opti.set_initial(self.z, warm[0].T)
            opti.set_initial(self.u, warm[1].T)
        start = time.perf_counter()
        try:
            sol = opti.solve()
            ok, status = True, str(opti.stats()["return_status"])
            states, inputs = np.asarray(sol.value(self.z).T), np.asarray(sol.value(self.u).T)
        except RuntimeError:
            ok, status = False, str(opti.stats()["return_status"])
            states, inputs = np.empty((0, NX)), np.empty((0, NU))
        solve_ms = (time.perf_counter() - start) * 1e3
        iterations = int(opti.stats().get("iter_count", -1))
        # IPOPT's own objective is not the cost of its trajectory: it relaxes bounds by 1e-8
        # (bound_relax_factor), the slacks end at -1e-8, and at penalties of 1000-2000 per step that
        # credited -9e-4 to a stage whose whole cost was 0.02
        cost = self._objective(stage, states, inputs) if ok else float("nan")
        return PeerResult(ok, status, states, inputs, cost, solve_ms, iterations)

    def evaluate(self, stage: Stage, weights: CostWeights, states: np.ndarray, inputs: np.ndarray) -> float:
        """The objective at a trajectory, with every slack at the least value its constraints allow."""
        self._set(stage, weights)
        return self._objective(stage, states, inputs)

    def _objective(self, stage: Stage, states: np.ndarray, inputs: np.ndarray) -> float:
        """``evaluate`` with the stage's parameters already set (as after a solve)."""
        p = states[1:, :2]
        proj = np.sum(stage.track_normal * p, axis=1)
        track = np.maximum(0.0, np.maximum(stage.track_low - proj, proj - stage.track_high))
        reach = stage.opp_normal[..., 0] * p[:, 0] + stage.opp_normal[..., 1] * p[:, 1]
        opp = np.max(np.maximum(0.0, stage.opp_offset - reach), axis=0, initial=0.0)
        substitutions = [self.z == states.T, self.u == inputs.T, self.track_slack == track, self.opp_slack == opp]
        return float(self.opti.value(self.cost, substitutions))

    def _set(self, stage: Stage, weights: CostWeights) -> None:
        values = {
            "z0": stage.z0,
            "jerk0": stage.u_prev[1],
            "track_n": stage.track_normal,
            "track_lo": stage.track_low,
            "track_hi": stage.track_high,
            "line_n": stage.line_normal,
            "line_b": stage.line_offset,
            "yaw_ref": stage.yaw_ref,
            "speed_ref": stage.speed_ref,
            "risk_g": stage.risk_grad,
            "risk_h": stage.risk_curv,
            "risk_p": stage.risk_point,
            "opp_nx": stage.opp_normal[:, :, 0],
            "opp_ny": stage.opp_normal[:, :, 1],
            "opp_b": stage.opp_offset,
            "accel_max": stage.accel_max,
            "speed_max": stage.speed_max,
            "w": weights.as_array(),
        }
        for name, value in values.items():
            self.opti.set_value(self.p[name], value)
