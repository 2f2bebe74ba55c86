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
from planning_nodes.mpc.model import NU, NX, STEER, YAW, Linearization, V, X, Y
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
    "yaw_lin",
    "yaw_c",
    "speed_w",
    "speed_lin",
    "speed_c",
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
    "risk_lx",
    "risk_ly",
    "risk_cx",
    "risk_cy",
)


def weighted_values(stage: Stage, weights: np.ndarray) -> dict[str, Any]:
    """Parameter values of the problem for a stage and a weight vector (numpy or torch alike).

    Only arithmetic operators are used, so the same function feeds the differentiable QP with
    torch tensors when the weights are being learned. Squares of affine terms are expanded
    (``w(x - r)² = w·x² - 2wr·x + wr²``) so that cvxpy puts the weight straight into P instead of
    adding an auxiliary variable and an equality row per step (the large linear terms this gives
    are why OSQP runs at a relative tolerance of 1e-4, see ``osqp_settings``).
    """
    w = dict(zip(CostWeights.names(), weights, strict=True))
    s_lat = w["lateral"] ** 0.5
    # the risk curvature enters squared-free: w/2·h per axis (h may be 0, where a square root has no gradient)
    q = 0.5 * w["risk"] * stage.risk_curv
    return {
        "line_nx": s_lat * stage.line_normal[..., 0],
        "line_ny": s_lat * stage.line_normal[..., 1],
        "line_b": s_lat * stage.line_offset,
        "yaw_w": w["heading"],
        "yaw_lin": 2.0 * w["heading"] * stage.yaw_ref,
        "yaw_c": w["heading"] * stage.yaw_ref**2,
        "speed_w": w["speed"],
        "speed_lin": 2.0 * w["speed"] * stage.speed_ref,
        "speed_c": w["speed"] * stage.speed_ref**2,
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
        "risk_lx": 2.0 * q[..., 0] * stage.risk_point[..., 0],
        "risk_ly": 2.0 * q[..., 1] * stage.risk_point[..., 1],
        "risk_cx": q[..., 0] * stage.risk_point[..., 0] ** 2,
        "risk_cy": q[..., 1] * stage.risk_point[..., 1] ** 2,
    }


def stage_values(stage: Stage) -> dict[str, np.ndarray]:
    """Parameter values that do not depend on the weights.

    The initial state enters through ``offset``'s first column (its products with the Jacobians
    are data, not parameter products), so the problem stays DPP.
    """
    lin, z0 = stage.lin, np.asarray(stage.z0, dtype=np.float64)
    offset = np.zeros((NX, lin.offset.shape[0]))
    offset[:3] = lin.offset.T
    held = z0[[YAW, V, STEER]]
    offset[X, 0] += z0[X] + lin.jx[0, :3] @ held
    offset[Y, 0] += z0[Y] + lin.jy[0, :3] @ held
    offset[YAW, 0] += z0[YAW] + lin.jyaw[0, :2] @ held[1:]
    offset[V, 0] = z0[V]
    offset[STEER, 0] = z0[STEER]
    return {
        "jx": lin.jx.T,
        "jy": lin.jy.T,
        "jyaw": lin.jyaw.T,
        "offset": offset,
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
            "jx": P((5, n), name="jx"),
            "jy": P((5, n), name="jy"),
            "jyaw": P((4, n), name="jyaw"),
            "offset": P((NX, n), name="offset"),
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
            "yaw_lin": P(n, name="yaw_lin"),
            "yaw_c": P(n, name="yaw_c"),
            "speed_w": P(nonneg=True, name="speed_w"),
            "speed_lin": P(n, name="speed_lin"),
            "speed_c": P(n, name="speed_c"),
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
            "risk_lx": P(n, name="risk_lx"),
            "risk_ly": P(n, name="risk_ly"),
            "risk_cx": P(n, name="risk_cx"),
            "risk_cy": P(n, name="risk_cy"),
        }
        # one variable per state and input (steps 1..N; z0 is a parameter): a quadratic term on a
        # whole variable goes straight into P, one on a slice would cost an auxiliary variable per step
        self.states = tuple(cp.Variable(n, name=name) for name in ("x", "y", "yaw", "v", "steer"))
        self.inputs = tuple(cp.Variable(n, name=name) for name in ("steer_rate", "accel"))
        # attribute-free variables: cvxpy would otherwise substitute new ones during canonicalization
        self.track_slack = cp.Variable(n, name="track_slack")
        self.opp_slack = cp.Variable(n, name="opp_slack")  # one per step, shared by the slots
        self.problem = cp.Problem(cp.Minimize(self._objective()), self._constraints())
        for param in self.params.values():
            param.value = np.zeros(param.shape)
        self.qp = CompiledQP(self.problem)

    # -- construction ---------------------------------------------------------------------------

    def _previous(self, i: int) -> cp.Expression:
        """State i at steps 0..N-1, with 0 for step 0: z0's part is folded into ``offset`` (a
        parameter times z0, itself a parameter, would not be DPP)."""
        return cp.hstack([np.zeros(1), self.states[i][:-1]])

    def _constraints(self) -> list:
        p, lim = self.params, self.limits
        px, py, yaw, speed, steer = self.states
        steer_rate, accel = self.inputs
        cols = (self._previous(YAW), self._previous(V), self._previous(STEER), steer_rate, accel)
        return [
            self.track_slack >= 0.0,
            self.opp_slack >= 0.0,
            px == self._previous(X) + sum(cp.multiply(p["jx"][i], c) for i, c in enumerate(cols)) + p["offset"][X],
            py == self._previous(Y) + sum(cp.multiply(p["jy"][i], c) for i, c in enumerate(cols)) + p["offset"][Y],
            yaw == self._previous(YAW) + sum(cp.multiply(p["jyaw"][i], c) for i, c in enumerate(cols[1:]))
            + p["offset"][YAW],
            speed == self._previous(V) + self.dt * accel + p["offset"][V],
            steer == self._previous(STEER) + self.dt * steer_rate + p["offset"][STEER],
            speed >= 0.0,
            speed <= p["speed_max"],
            cp.abs(steer) <= lim.max_steer,
            cp.abs(steer_rate) <= lim.max_steer_rate,
            accel >= -lim.max_brake,
            accel <= p["accel_max"],
            cp.multiply(p["track_nx"], px) + cp.multiply(p["track_ny"], py) >= p["track_lo"] - self.track_slack,
            cp.multiply(p["track_nx"], px) + cp.multiply(p["track_ny"], py) <= p["track_hi"] + self.track_slack,
            cp.multiply(p["opp_nx"], cp.vstack([px] * self.opponent_slots))
            + cp.multiply(p["opp_ny"], cp.vstack([py] * self.opponent_slots))
            >= p["opp_b"] - cp.vstack([self.opp_slack] * self.opponent_slots),
        ]

    def _objective(self) -> cp.Expression:
        p, sw = self.params, self.slack
        px, py, yaw, speed, steer = self.states
        steer_rate, accel = self.inputs
        lateral = cp.multiply(p["line_nx"], px) + cp.multiply(p["line_ny"], py) - p["line_b"]
        risk = (
            p["risk_gx"] @ px
            + p["risk_gy"] @ py
            + cp.sum(cp.multiply(p["risk_qx"], cp.square(px)) + cp.multiply(p["risk_qy"], cp.square(py)))
            - p["risk_lx"] @ px
            - p["risk_ly"] @ py
            + cp.sum(p["risk_cx"] + p["risk_cy"])
        )
        return (
            cp.sum_squares(lateral)
            + p["yaw_w"] * cp.sum_squares(yaw) - p["yaw_lin"] @ yaw + cp.sum(p["yaw_c"])
            + p["speed_w"] * cp.sum_squares(speed) - p["speed_lin"] @ speed + cp.sum(p["speed_c"])
            + p["steer_w"] * cp.sum_squares(steer)
            + p["steer_rate_w"] * cp.sum_squares(steer_rate)
            + p["accel_w"] * cp.sum_squares(accel)
            + p["jerk_w"] * cp.sum_squares(cp.diff(accel))
            + cp.square(p["jerk_sw"] * accel[0] - p["jerk_b0"])
            + risk
            + sw.track_linear * cp.sum(self.track_slack)
            + sw.track_quadratic * cp.sum_squares(self.track_slack)
            + sw.opponent_linear * cp.sum(self.opp_slack)
            + sw.opponent_quadratic * cp.sum_squares(self.opp_slack)
        )  # fmt: skip

    def trajectory(self, x, z0) -> tuple[Any, Any]:
        """(states (N+1, 5), inputs (N, 2)) from a primal vector (numpy or torch) and the initial state."""
        cols = self.qp._var_cols
        n = self.horizon
        states = [x[cols[v.id] : cols[v.id] + n] for v in self.states]
        inputs = [x[cols[v.id] : cols[v.id] + n] for v in self.inputs]
        if isinstance(x, np.ndarray):
            return np.vstack([np.asarray(z0, dtype=np.float64), np.column_stack(states)]), np.column_stack(inputs)
        import torch

        z0 = torch.as_tensor(np.asarray(z0), dtype=x.dtype)
        return torch.cat([z0[None], torch.stack(states, dim=1)]), torch.stack(inputs, dim=1)

    def warm_vector(self, states: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """A primal vector for a warm start from a guess (N+1, 5) / (N, 2); other variables zero."""
        values = {v: states[1:, i] for i, v in enumerate(self.states)}
        values.update({v: inputs[:, i] for i, v in enumerate(self.inputs)})
        return self.qp.pack(values)

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
            warm_x = None if warm is None else self.warm_vector(*warm)
            result = self.qp.solve_osqp(osqp_settings(eps, time_limit_s, max_iter), warm_x, accept_residual)
        elif solver == "CLARABEL":
            result = self.qp.solve_clarabel(clarabel_settings(eps, time_limit_s))
        else:
            raise ValueError(f"solver '{solver}' is not one of {SOLVERS}")
        if not result.ok:
            return _failed(result.status, result.solve_ms)
        states, inputs = self.trajectory(result.x, stage.z0)
        return Solution(
            ok=True,
            status=result.status,
            states=states,
            inputs=inputs,
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
            states=np.vstack([stage.z0, np.column_stack([v.value for v in self.states])]),
            inputs=np.column_stack([v.value for v in self.inputs]),
            cost=float(self.problem.value),
            solve_ms=solve_ms,
            track_slack=float(np.max(self.track_slack.value, initial=0.0)),
            opponent_slack=float(np.max(self.opp_slack.value, initial=0.0)),
        )


def osqp_settings(eps: float, time_limit_s: float, max_iter: int = 4000) -> dict[str, Any]:
    """OSQP at absolute tolerance ``eps`` and relative ``eps / 10`` (the expanded squares give linear
    terms of ~10² against a cost of ~10²–10³: a relative 1e-3 would leave a cost error of several %)."""
    settings: dict[str, Any] = {
        "eps_abs": eps,
        "eps_rel": 0.1 * eps,
        "max_iter": max_iter,
        "polishing": False,
        "adaptive_rho": True,
        "check_termination": 10,
        "rho": 1.0,
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
