"""The MPC's convex subproblem: built once as a DPP-parametrized cvxpy problem, then only re-valued.

Every cycle of the sequential convex programme (SCP) changes numbers, never structure: the
linearized dynamics, the track half-spaces, the racing-line normals, the risk model and the
opponents' half-spaces are all ``cp.Parameter``s. Products of a weight and a per-step quantity are
precomputed into their own parameters (``cp.multiply(param, x - param)`` is not DPP and would
re-canonicalize on every solve), so cvxpy canonicalizes once and each solve is a parameter
substitution plus a warm-started OSQP (or Clarabel) call.

Everything lives in the *plan frame*: ``base_link`` at the stamp of the input the plan answers, so
the numbers stay small and the risk map (also in ``base_link``) needs no transform.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import cvxpy as cp
import numpy as np

from planning_nodes.mpc.compiled import CompiledQP
from planning_nodes.mpc.model import NU, NX, STEER, Linearization, V
from simulation.vehicles import VehicleParams

SOLVERS = ("OSQP", "CLARABEL")
OK_STATUSES = (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)


@dataclass(frozen=True)
class CostWeights:
    """The learned MPC cost: each weight multiplies one interpretable, unit-normalized term per step.

    lateral: (m from the racing line)^2 · heading: (rad from the racing line's heading)^2 ·
    speed: (m/s below/above the speed profile)^2 · steer: rad^2 · steer_rate: (rad/s)^2 ·
    accel: (m/s^2)^2 · jerk: (m/s^3 · dt)^2 between consecutive accelerations · risk: the risk
    map's value (P(occupied) x severity, in [0, 1]) along the path.
    """

    lateral: float = 1.0
    heading: float = 10.0
    speed: float = 0.5
    steer: float = 10.0
    steer_rate: float = 50.0
    accel: float = 0.02
    jerk: float = 0.05
    risk: float = 40.0

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, f.name) for f in fields(self)], dtype=np.float64)

    @classmethod
    def from_array(cls, values) -> CostWeights:
        return cls(**{f.name: float(v) for f, v in zip(fields(cls), values, strict=True)})

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class SlackWeights:
    """Penalties of the soft constraints (fixed, not learned: they encode rules, not style)."""

    track_linear: float = 2000.0
    track_quadratic: float = 2000.0
    opponent_linear: float = 1000.0
    opponent_quadratic: float = 1000.0


@dataclass
class Stage:
    """One cycle's numbers, in the plan frame, for steps k = 1..N unless said otherwise.

    track_normal (N, 2), track_low/track_high (N,): ``low <= n·p <= high`` keeps the footprint
    inside the barriers (soft). line_normal (N, 2), line_offset (N,): lateral error to the racing
    line is ``n·p - offset``. risk_grad (N, 2), risk_curv (N, 2) >= 0, risk_point (N, 2): the
    convex local model of the risk map around the previous solution. opp_normal (M, N, 2),
    opp_offset (M, N): ``n·p >= offset`` keeps clear of opponent j at step k (soft; zero normals
    and an offset of -1 disable a slot). accel_max (N,): per-step acceleration bound. speed_max (N,):
    the grip limit as a speed bound (hard; always reachable by braking from the current speed).
    """

    z0: np.ndarray
    u_prev: np.ndarray
    lin: Linearization
    track_normal: np.ndarray
    track_low: np.ndarray
    track_high: np.ndarray
    line_normal: np.ndarray
    line_offset: np.ndarray
    yaw_ref: np.ndarray
    speed_ref: np.ndarray
    risk_grad: np.ndarray
    risk_curv: np.ndarray
    risk_point: np.ndarray
    opp_normal: np.ndarray
    opp_offset: np.ndarray
    accel_max: np.ndarray
    speed_max: np.ndarray


@dataclass
class Solution:
    """What one solve returned; ``ok`` is False for anything but an (inaccurate) optimum."""

    ok: bool
    status: str
    states: np.ndarray
    inputs: np.ndarray
    cost: float
    solve_ms: float
    track_slack: float
    opponent_slack: float


WEIGHTED_PARAMETERS = (
    "line_nx",
    "line_ny",
    "line_b",
    "yaw_w",
    "yaw_b",
    "speed_w",
    "speed_b",
    "steer_w",
    "steer_rate_w",
    "accel_w",
    "jerk_w",
    "jerk_sw",
    "jerk_b0",
    "risk_gx",
    "risk_gy",
    "risk_qx",
    "risk_qy",
    "risk_bx",
    "risk_by",
)


def weighted_values(stage: Stage, weights: np.ndarray) -> dict[str, Any]:
    """Parameter values of the problem for a stage and a weight vector (numpy or torch alike).

    Only arithmetic operators are used, so the same function feeds cvxpylayers with torch tensors
    when the weights are being learned.
    """
    w = dict(zip(CostWeights.names(), weights, strict=True))
    s_lat, s_head, s_speed = w["lateral"] ** 0.5, w["heading"] ** 0.5, w["speed"] ** 0.5
    # sqrt of the data separately: d sqrt(w·h)/dw is undefined where the curvature h is 0
    q = (0.5 * w["risk"]) ** 0.5 * stage.risk_curv**0.5
    return {
        "line_nx": s_lat * stage.line_normal[..., 0],
        "line_ny": s_lat * stage.line_normal[..., 1],
        "line_b": s_lat * stage.line_offset,
        "yaw_w": s_head,
        "yaw_b": s_head * stage.yaw_ref,
        "speed_w": s_speed,
        "speed_b": s_speed * stage.speed_ref,
        "steer_w": w["steer"],
        "steer_rate_w": w["steer_rate"],
        "accel_w": w["accel"],
        "jerk_w": w["jerk"],
        "jerk_sw": w["jerk"] ** 0.5,
        "jerk_b0": w["jerk"] ** 0.5 * stage.u_prev[..., 1],
        "risk_gx": w["risk"] * stage.risk_grad[..., 0],
        "risk_gy": w["risk"] * stage.risk_grad[..., 1],
        "risk_qx": q[..., 0],
        "risk_qy": q[..., 1],
        "risk_bx": q[..., 0] * stage.risk_point[..., 0],
        "risk_by": q[..., 1] * stage.risk_point[..., 1],
    }


def stage_values(stage: Stage) -> dict[str, np.ndarray]:
    """Parameter values that do not depend on the weights."""
    lin = stage.lin
    return {
        "z0": stage.z0,
        "jx": lin.jx.T,
        "jy": lin.jy.T,
        "jyaw": lin.jyaw.T,
        "offset": lin.offset.T,
        "track_nx": stage.track_normal[:, 0],
        "track_ny": stage.track_normal[:, 1],
        "track_lo": stage.track_low,
        "track_hi": stage.track_high,
        "opp_nx": stage.opp_normal[:, :, 0],
        "opp_ny": stage.opp_normal[:, :, 1],
        "opp_b": stage.opp_offset,
        "accel_max": stage.accel_max,
        "speed_max": stage.speed_max,
    }


class MpcProblem:
    """The LTV-MPC QP of one SCP iteration, canonicalized once."""

    def __init__(
        self,
        limits: VehicleParams,
        horizon: int = 30,
        dt: float = 0.1,
        opponent_slots: int = 4,
        slack: SlackWeights | None = None,
    ) -> None:
        self.limits, self.horizon, self.dt, self.opponent_slots = limits, horizon, dt, opponent_slots
        self.slack = slack or SlackWeights()
        n, m = horizon, opponent_slots
        P = cp.Parameter
        self.params: dict[str, cp.Parameter] = {
            "z0": P(NX, name="z0"),
            "jx": P((5, n), name="jx"),
            "jy": P((5, n), name="jy"),
            "jyaw": P((4, n), name="jyaw"),
            "offset": P((3, n), name="offset"),
            "track_nx": P(n, name="track_nx"),
            "track_ny": P(n, name="track_ny"),
            "track_lo": P(n, name="track_lo"),
            "track_hi": P(n, name="track_hi"),
            "opp_nx": P((m, n), name="opp_nx"),
            "opp_ny": P((m, n), name="opp_ny"),
            "opp_b": P((m, n), name="opp_b"),
            "accel_max": P(n, name="accel_max"),
            "speed_max": P(n, nonneg=True, name="speed_max"),
            "line_nx": P(n, name="line_nx"),
            "line_ny": P(n, name="line_ny"),
            "line_b": P(n, name="line_b"),
            "yaw_w": P(nonneg=True, name="yaw_w"),
            "yaw_b": P(n, name="yaw_b"),
            "speed_w": P(nonneg=True, name="speed_w"),
            "speed_b": P(n, name="speed_b"),
            "steer_w": P(nonneg=True, name="steer_w"),
            "steer_rate_w": P(nonneg=True, name="steer_rate_w"),
            "accel_w": P(nonneg=True, name="accel_w"),
            "jerk_w": P(nonneg=True, name="jerk_w"),
            "jerk_sw": P(nonneg=True, name="jerk_sw"),
            "jerk_b0": P(name="jerk_b0"),
            "risk_gx": P(n, name="risk_gx"),
            "risk_gy": P(n, name="risk_gy"),
            "risk_qx": P(n, nonneg=True, name="risk_qx"),
            "risk_qy": P(n, nonneg=True, name="risk_qy"),
            "risk_bx": P(n, name="risk_bx"),
            "risk_by": P(n, name="risk_by"),
        }
        self.z = cp.Variable((NX, n + 1), name="z")
        self.u = cp.Variable((NU, n), name="u")
        # attribute-free variables: cvxpy would otherwise substitute new ones during canonicalization
        self.track_slack = cp.Variable(n, name="track_slack")
        self.opp_slack = cp.Variable(n, name="opp_slack")  # one per step, shared by the slots
        self.problem = cp.Problem(cp.Minimize(self._objective()), self._constraints())
        for param in self.params.values():
            param.value = np.zeros(param.shape)
        self.qp = CompiledQP(self.problem)

    # -- construction ---------------------------------------------------------------------------

    def _constraints(self) -> list:
        p, z, u, lim = self.params, self.z, self.u, self.limits
        now, nxt = z[:, :-1], z[:, 1:]
        cols = (now[2], now[3], now[4], u[0], u[1])
        px, py = nxt[0], nxt[1]
        return [
            z[:, 0] == p["z0"],
            self.track_slack >= 0.0,
            self.opp_slack >= 0.0,
            nxt[0] == now[0] + sum(cp.multiply(p["jx"][i], c) for i, c in enumerate(cols)) + p["offset"][0],
            nxt[1] == now[1] + sum(cp.multiply(p["jy"][i], c) for i, c in enumerate(cols)) + p["offset"][1],
            nxt[2] == now[2] + sum(cp.multiply(p["jyaw"][i], c) for i, c in enumerate(cols[1:])) + p["offset"][2],
            nxt[3] == now[3] + self.dt * u[1],
            nxt[4] == now[4] + self.dt * u[0],
            nxt[V] >= 0.0,
            nxt[V] <= p["speed_max"],
            cp.abs(nxt[STEER]) <= lim.max_steer,
            cp.abs(u[0]) <= lim.max_steer_rate,
            u[1] >= -lim.max_brake,
            u[1] <= p["accel_max"],
            cp.multiply(p["track_nx"], px) + cp.multiply(p["track_ny"], py) >= p["track_lo"] - self.track_slack,
            cp.multiply(p["track_nx"], px) + cp.multiply(p["track_ny"], py) <= p["track_hi"] + self.track_slack,
            cp.multiply(p["opp_nx"], cp.vstack([px] * self.opponent_slots))
            + cp.multiply(p["opp_ny"], cp.vstack([py] * self.opponent_slots))
            >= p["opp_b"] - cp.vstack([self.opp_slack] * self.opponent_slots),
        ]

    def _objective(self) -> cp.Expression:
        p, z, u, sw = self.params, self.z, self.u, self.slack
        px, py, yaw, speed, steer = z[0, 1:], z[1, 1:], z[2, 1:], z[3, 1:], z[4, 1:]
        lateral = cp.multiply(p["line_nx"], px) + cp.multiply(p["line_ny"], py) - p["line_b"]
        risk_lin = cp.sum(cp.multiply(p["risk_gx"], px) + cp.multiply(p["risk_gy"], py))
        risk_quad = cp.sum_squares(cp.multiply(p["risk_qx"], px) - p["risk_bx"]) + cp.sum_squares(
            cp.multiply(p["risk_qy"], py) - p["risk_by"]
        )
        return (
            cp.sum_squares(lateral)
            + cp.sum_squares(p["yaw_w"] * yaw - p["yaw_b"])
            + cp.sum_squares(p["speed_w"] * speed - p["speed_b"])
            + p["steer_w"] * cp.sum_squares(steer)
            + p["steer_rate_w"] * cp.sum_squares(u[0])
            + p["accel_w"] * cp.sum_squares(u[1])
            + p["jerk_w"] * cp.sum_squares(cp.diff(u[1]))
            + cp.square(p["jerk_sw"] * u[1, 0] - p["jerk_b0"])
            + risk_lin
            + risk_quad
            + sw.track_linear * cp.sum(self.track_slack)
            + sw.track_quadratic * cp.sum_squares(self.track_slack)
            + sw.opponent_linear * cp.sum(self.opp_slack)
            + sw.opponent_quadratic * cp.sum_squares(self.opp_slack)
        )

    # -- use ------------------------------------------------------------------------------------

    def values(self, stage: Stage, weights: CostWeights) -> dict[cp.Parameter, Any]:
        named = {**stage_values(stage), **weighted_values(stage, weights.as_array())}
        return {self.params[name]: value for name, value in named.items()}

    def solve(
        self,
        stage: Stage,
        weights: CostWeights,
        solver: str = "OSQP",
        time_limit_s: float = 0.0,
        eps: float = 1e-4,
        warm: tuple[np.ndarray, np.ndarray] | None = None,
        max_iter: int = 4000,
        accept_residual: float = 0.0,
    ) -> Solution:
        """Solve one SCP iteration on the compiled data; never raises on solver trouble."""
        self.qp.set_parameters(self.values(stage, weights))
        if solver == "OSQP":
            warm_x = None if warm is None else self.qp.pack({self.z: warm[0].T, self.u: warm[1].T})
            result = self.qp.solve_osqp(osqp_settings(eps, time_limit_s, max_iter), warm_x, accept_residual)
        elif solver == "CLARABEL":
            result = self.qp.solve_clarabel(clarabel_settings(eps, time_limit_s))
        else:
            raise ValueError(f"solver '{solver}' is not one of {SOLVERS}")
        if not result.ok:
            return _failed(result.status, result.solve_ms)
        return Solution(
            ok=True,
            status=result.status,
            states=self.qp.variable(result.x, self.z).T,
            inputs=self.qp.variable(result.x, self.u).T,
            cost=result.objective,
            solve_ms=result.solve_ms,
            track_slack=float(np.max(self.qp.variable(result.x, self.track_slack), initial=0.0)),
            opponent_slack=float(np.max(self.qp.variable(result.x, self.opp_slack), initial=0.0)),
        )

    def solve_reference(self, stage: Stage, weights: CostWeights, solver: str = "CLARABEL") -> Solution:
        """The same subproblem through cvxpy's own ``solve`` (slow path, for checks)."""
        for param, value in self.values(stage, weights).items():
            param.value = value
        start = time.perf_counter()
        try:
            self.problem.solve(solver=solver)
            status = str(self.problem.status)
        except cp.SolverError as exc:
            status = f"solver_error: {exc}"
        solve_ms = (time.perf_counter() - start) * 1e3
        if status not in OK_STATUSES:
            return _failed(status, solve_ms)
        return Solution(
            ok=True,
            status=status,
            states=np.asarray(self.z.value.T),
            inputs=np.asarray(self.u.value.T),
            cost=float(self.problem.value),
            solve_ms=solve_ms,
            track_slack=float(np.max(self.track_slack.value, initial=0.0)),
            opponent_slack=float(np.max(self.opp_slack.value, initial=0.0)),
        )


def osqp_settings(eps: float, time_limit_s: float, max_iter: int = 4000) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "eps_abs": eps,
        "eps_rel": eps,
        "max_iter": max_iter,
        "polishing": False,
        "adaptive_rho": True,
        "check_termination": 10,
    }
    if time_limit_s > 0:
        settings["time_limit"] = time_limit_s
    return settings


def clarabel_settings(eps: float, time_limit_s: float) -> dict[str, Any]:
    settings: dict[str, Any] = {"tol_gap_abs": eps * 1e-2, "tol_gap_rel": eps * 1e-2, "tol_feas": eps * 1e-2}
    if time_limit_s > 0:
        settings["time_limit"] = time_limit_s
    return settings


def _failed(status: str, solve_ms: float) -> Solution:
    return Solution(False, status, np.empty((0, NX)), np.empty((0, NU)), math.inf, solve_ms, 0.0, 0.0)
