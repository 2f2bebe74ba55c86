"""``racestack train mpc``: learn the MPC's cost weights from the expert by differentiating the solve.

Each sample is one planning situation of a ``racestack dataset planning`` run: the MPC subproblem
linearized along the expert's next 3 s (teacher forcing), with the opponents' half-spaces and the
learned risk map of that moment. The loss is the imitation error of the MPC's solution (positions,
and speed) against what the expert did. Gradients come from the KKT system of the QP at its
solution (implicit differentiation, as OptNet; Clarabel's solution and duals give the active set),
mapped through cvxpy's DPP parameter tensors to the parameters and by autograd to the weights. The
weights (all but ``FIXED_WEIGHTS``) are optimized in log space with their geometric mean held fixed
(the cost's overall scale against the fixed slack penalties is not learned: otherwise it grows
until the soft constraints stop mattering) and each within x20 of its initial value. The learned
weights are written as named numbers (YAML) with the metrics.
"""

from __future__ import annotations

import argparse
import json
import time as wallclock
from dataclasses import dataclass, replace
from pathlib import Path

import clarabel
import numpy as np
import scipy.sparse as sp
import torch
import yaml
from scipy.sparse.linalg import splu

from planning_nodes.dataset import Run, load_runs
from planning_nodes.mpc.compiled import CompiledQP
from planning_nodes.mpc.model import NX, STEER, YAW, V
from planning_nodes.mpc.planner import MpcPlanner, PlannerConfig
from planning_nodes.mpc.problem import WEIGHTED_PARAMETERS, CostWeights, MpcProblem, Stage, weighted_values
from planning_nodes.mpc.references import PlanFrame
from planning_nodes.mpc.risk_field import RiskField
from planning_nodes.opponents import forecast, ground_objects
from planning_nodes.plan import EgoState
from racestack.objects import empty_objects
from simulation.vehicles import VehicleParams

SPEED_LOSS = 0.25  # (m/s)^2 counted like m^2 of position error
MAX_LOG_CHANGE = 3.0  # a learned weight stays within e^±3 (x20) of its initial value
# Not learned: the speed term carries the racing objective (lap time). The expert's speed is set by
# traffic and its own plan, so imitation drives this weight to its lower bound and the MPC, weighted
# so, drives 12 % slower than the expert in closed loop.
FIXED_WEIGHTS = ("speed",)
def solve_with_duals(qp: CompiledQP) -> tuple[np.ndarray, np.ndarray]:
    """Primal x and OSQP-convention duals y (Px + q + Aᵀy = 0) by Clarabel at tight tolerances."""
    P, q, _, A, lower, _ = qp.matrices()
    eq = qp.n_eq
    Ac = sp.vstack([A[:eq], -A[eq:]]).tocsc()
    bc = np.concatenate([lower[:eq], -lower[eq:]])
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    # the objective is ~5e4, so a relative gap of 1e-9 left complementarity at ~1e-5: duals and
    # slacks of near-active rows both ~1e-3, the active set misread and single gradients off by
    # 8-100 % (2 of 102 on a held-out stage set); these cost ~3 more iterations and put all within 2.2 %
    settings.tol_gap_rel, settings.tol_gap_abs, settings.tol_feas = 1e-14, 1e-12, 1e-11
    cones = [clarabel.ZeroConeT(eq), clarabel.NonnegativeConeT(qp.m - eq)]
    result = clarabel.DefaultSolver(sp.triu(P, format="csc"), q, Ac, bc, cones, settings).solve()
    if str(result.status) not in ("Solved", "AlmostSolved") or not np.all(np.isfinite(result.x)):
        raise ArithmeticError(f"QP not solved: {result.status}")
    z = np.array(result.z)
    return np.array(result.x), np.concatenate([z[:eq], -z[eq:]])


# -- the differentiable QP -------------------------------------------------------------------------


class _Solve(torch.autograd.Function):
    """x*(θ) for a CompiledQP; backward by the adjoint of the active-set KKT system."""

    @staticmethod
    def forward(ctx, theta: torch.Tensor, qp: CompiledQP) -> torch.Tensor:
        qp._param_vec[:] = theta.detach().double().numpy()
        x, y = solve_with_duals(qp)
        lower, upper = qp.data()[4:]
        P, _, _, A, _, _ = qp.matrices()
        # an inequality is active where its dual exceeds its slack (complementarity): a fixed dual
        # threshold misread the interior-point solution's near-active rows, and the gradient was
        # off by 10-90 % on 28 of 34 held-out stages (on 4 of 34 with this rule, by under 5 %)
        active = np.isclose(lower, upper) | (np.abs(y) > np.abs(A @ x - lower))
        ctx.qp, ctx.x, ctx.y, ctx.active, ctx.P, ctx.A = qp, x, y, active, P, A
        return torch.from_numpy(x)

    @staticmethod
    def backward(ctx, grad_x: torch.Tensor):
        qp, x, y, active = ctx.qp, ctx.x, ctx.y, ctx.active
        n = x.size
        P_full = (ctx.P + sp.triu(ctx.P, k=1).T).tocsc()
        rows = np.flatnonzero(active)
        A_act = ctx.A.tocsr()[rows]
        kkt = sp.bmat([[P_full, A_act.T], [A_act, None]], format="csc")
        kkt = kkt + sp.diags(np.concatenate([np.full(n, 1e-9), np.full(rows.size, -1e-9)]))
        rhs = np.concatenate([grad_x.double().numpy(), np.zeros(rows.size)])
        v = splu(kkt.tocsc()).solve(rhs)
        v_x, v_y = v[:n], v[n:]
        lam = y[rows]
        # dL/dq = -v_x ; dL/dP = -v_x x^T (symmetric: off-diagonal entries count twice) ;
        # dL/dA_act = -(lam v_x^T + v_y x^T) ; dL/db_act = v_y with b = -offset on active rows
        p_rows, p_ptr = qp._p_pattern
        p_cols = np.repeat(np.arange(n), np.diff(p_ptr))
        g_p = -(v_x[p_rows] * x[p_cols] + x[p_rows] * v_x[p_cols])
        g_p[p_rows == p_cols] *= 0.5
        a_rows, a_ptr = qp._a_pattern
        a_cols = np.repeat(np.arange(n), np.diff(a_ptr))
        lam_full, vy_full = np.zeros(qp.m), np.zeros(qp.m)
        lam_full[rows], vy_full[rows] = lam, v_y
        g_a = -(lam_full[a_rows] * v_x[a_cols] + vy_full[a_rows] * x[a_cols])
        g_offset = -vy_full[qp._b_rows]
        g_q = np.concatenate([-v_x, [0.0]])
        grad = qp._q_map.T @ g_q + qp._p_map.T @ g_p + qp._a_map.T @ np.concatenate([g_a, g_offset])
        return torch.from_numpy(np.asarray(grad)), None


class WeightedQP:
    """The MPC subproblem as a function of the cost weights (torch), for one stage at a time."""

    def __init__(self, problem: MpcProblem) -> None:
        self.problem = problem
        self.qp = problem.qp
        self._columns = {}
        for name in WEIGHTED_PARAMETERS:
            param = problem.params[name]
            col = self.qp._param_cols[param.id]
            self._columns[name] = torch.arange(col, col + max(param.size, 1))

    def states(self, stage: Stage, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(states (N+1, 5), inputs (N, 2)) of the QP's solution, differentiable in ``weights``."""
        self.qp.set_parameters(self.problem.values(stage, CostWeights()))
        base = torch.from_numpy(self.qp._param_vec.copy())
        torch_stage = _torch_stage(stage)
        values = weighted_values(torch_stage, weights)
        index = torch.cat([self._columns[k] for k in values])
        flat = torch.cat([torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in values.values()])
        theta = base.index_put((index,), flat)
        x = _Solve.apply(theta, self.qp)
        return self.problem.trajectory(x, stage.z0)


def _torch_stage(stage: Stage) -> Stage:
    fields = {}
    for name in (
        "risk_grad",
        "risk_curv",
        "risk_point",
        "line_normal",
        "line_offset",
        "yaw_ref",
        "speed_ref",
        "u_prev",
    ):
        fields[name] = torch.from_numpy(np.asarray(getattr(stage, name), dtype=np.float64))
    return replace(stage, **fields)


# -- samples ---------------------------------------------------------------------------------------


@dataclass
class Sample:
    stage: Stage
    expert: np.ndarray  # (N+1, 5) expert states in the plan frame


def expert_window(run: Run, frame: int, steps: int) -> tuple[np.ndarray, np.ndarray, PlanFrame]:
    """The expert's states (N+1, 5) and inputs (N, 2) from ``frame`` on, in the plan frame there."""
    ego = run.ego[frame : frame + steps + 1]
    frame_pose = PlanFrame(float(ego[0, 0]), float(ego[0, 1]), float(ego[0, 2]))
    states = np.zeros((steps + 1, NX))
    states[:, :2] = frame_pose.to_local(ego[:, :2])
    states[:, YAW] = np.unwrap(ego[:, 2]) - ego[0, 2]
    states[:, V] = ego[:, 3]
    states[:, STEER] = ego[:, 4]
    dt = 1.0 / run.rate
    inputs = np.column_stack([np.diff(states[:, STEER]) / dt, np.diff(states[:, V]) / dt])
    return states, inputs, frame_pose


def build_samples(runs: list[Run], config: PlannerConfig, risk_checkpoint: str | None, stride: int) -> list[Sample]:
    """Stages along the expert (teacher forcing) with opponents and, when a checkpoint is given, risk maps."""
    from planning_nodes.riskmap.features import Pose, bev_tokens
    from planning_nodes.riskmap.training import history_at

    vehicle = VehicleParams()
    runner = _risk_runner(risk_checkpoint)
    samples = []
    for run in runs:
        if abs(run.rate - 1.0 / config.dt) > 1e-6:
            raise ValueError(f"run {run.name} is sampled at {run.rate} Hz; the MPC step needs {1 / config.dt} Hz")
        # the grip bound from the expert's own bends as they are: its smoothing is for the jinks of
        # the planner's previous solution, and would blunt the expert's apexes (held-out imitation
        # loss of the hand-set weights 62 -> 70 with the closed loop's window)
        planner = MpcPlanner(run.track, vehicle, replace(config, bend_window=1))
        predictor = _predictor(runner, run.track)
        start = round(1.0 * run.rate)
        for f in range(start, run.frames - config.horizon - 1, stride):
            states, inputs, frame_pose = expert_window(run, f, config.horizon)
            ego = EgoState(*run.ego[f, :3], run.ego[f, 3], run.ego[f, 4], run.ego[f, 5])
            table = _objects(run, f)
            fc = forecast(ground_objects(table), run.track, planner.step_times) if table.size else None
            risk = None
            if predictor is not None:
                context = np.concatenate([run.bev[f], bev_tokens(None)[:, 4:]], axis=1)
                values = predictor.predict_from_history(
                    history_at(run, f), Pose(*run.ego[f, :3]), *run.ego[f, 3:6], context
                )
                risk = RiskField(values, _risk_grid(), _risk_times(), vehicle.length, vehicle.width)
            planner.previous_command = np.array([(run.ego[f, 4] - run.ego[f - 1, 4]) * run.rate, run.ego[f, 5]])
            z0 = states[0].copy()
            z0[:3] = 0.0
            stage = planner._stage(z0, states, inputs, frame_pose, fc, risk, ego)
            samples.append(Sample(stage, states))
    return samples


def _objects(run: Run, frame: int) -> np.ndarray:
    rows = run.objects[frame]
    present = np.all(np.isfinite(rows), axis=1)
    table = empty_objects(int(present.sum()))
    for i, key in enumerate(("x", "y", "yaw", "vx", "vy", "length", "width")):
        table[key] = rows[present, i]
    table["track_id"] = np.flatnonzero(present) + 1
    return table


def _risk_runner(checkpoint: str | None):
    if not checkpoint:
        return None
    from planning_nodes.riskmap.model import RISKMAP_SPEC
    from racestack.inference import TorchRunner

    return TorchRunner(RISKMAP_SPEC, Path(checkpoint), "cpu")


def _predictor(runner, track):
    if runner is None:
        return None
    from planning_nodes.riskmap.predictor import RiskPredictor

    return RiskPredictor(runner, track)


def _risk_grid():
    from planning_nodes.riskmap.geometry import RISK_GRID

    return RISK_GRID


def _risk_times():
    from planning_nodes.riskmap.geometry import RISK_TIMES

    return RISK_TIMES


# -- loss, fitting, evaluation ---------------------------------------------------------------------


def imitation_loss(states: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
    """Mean over the horizon of squared position error (m²) plus SPEED_LOSS x squared speed error."""
    position = ((states[1:, :2] - expert[1:, :2]) ** 2).sum(dim=1)
    speed = (states[1:, V] - expert[1:, V]) ** 2
    return (position + SPEED_LOSS * speed).mean()


def evaluate(layer: WeightedQP, samples: list[Sample], weights: CostWeights) -> dict[str, float]:
    """Mean imitation loss and L2 position error at 1/2/3 s over samples (solves only)."""
    w = torch.tensor(weights.as_array())
    losses, errors, failed = [], [], 0
    for sample in samples:
        try:
            states, _ = layer.states(sample.stage, w)
        except ArithmeticError:
            failed += 1
            continue
        expert = torch.from_numpy(sample.expert)
        losses.append(float(imitation_loss(states, expert)))
        errors.append(np.linalg.norm(states.detach().numpy()[:, :2] - sample.expert[:, :2], axis=1))
    e = np.array(errors)
    steps = e.shape[1] - 1 if e.size else 0
    out = {"imitation_loss": float(np.mean(losses)) if losses else float("nan"), "samples": float(len(losses))}
    for seconds in (1, 2, 3):
        k = round(seconds * steps / 3)
        out[f"l2_{seconds}s_m"] = float(e[:, k].mean()) if e.size else float("nan")
    out["failed"] = float(failed)
    return out


def fit(
    layer: WeightedQP,
    samples: list[Sample],
    initial: CostWeights,
    epochs: int,
    lr: float,
    seed: int,
    regularization: float = 1e-3,
    max_minutes: float = 18.0,
) -> CostWeights:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    log_w0 = torch.log(torch.tensor(initial.as_array()))
    log_w = log_w0.clone().requires_grad_(True)
    learned = torch.tensor([name not in FIXED_WEIGHTS for name in CostWeights.names()])
    optimizer = torch.optim.Adam([log_w], lr=lr)
    start = wallclock.perf_counter()
    for epoch in range(epochs):
        total, count = 0.0, 0
        for i in rng.permutation(len(samples)):
            sample = samples[i]
            try:
                states, _ = layer.states(sample.stage, torch.exp(log_w))
            except ArithmeticError:
                continue
            loss = imitation_loss(states, torch.from_numpy(sample.expert))
            loss = loss + regularization * ((log_w - log_w0) ** 2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # fixed overall scale (the slack penalties set it) and bounded ratios
                log_w[learned] -= log_w[learned].mean() - log_w0[learned].mean()
                log_w.copy_(torch.clamp(log_w, log_w0 - MAX_LOG_CHANGE, log_w0 + MAX_LOG_CHANGE))
                log_w[~learned] = log_w0[~learned]
            total, count = total + float(loss), count + 1
        weights = CostWeights.from_array(torch.exp(log_w).detach().numpy())
        print(f"epoch {epoch + 1}/{epochs}: imitation loss {total / max(count, 1):.3f}  {weights}", flush=True)
        if wallclock.perf_counter() - start > 60.0 * max_minutes:
            print(f"stopping: time budget of {max_minutes} min spent")
            break
    return CostWeights.from_array(torch.exp(log_w).detach().numpy())


# -- command ---------------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="datasets/planning", help="dataset folder (train/, heldout/)")
    parser.add_argument("--out", default="models/mpc_weights/weights.yaml", help="weights file to write")
    parser.add_argument("--risk-checkpoint", default="models/riskmap/riskmap.pt", help="'' to learn without risk maps")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--stride", type=int, default=15, help="use every n-th frame of a run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=15.0)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    config = PlannerConfig()
    runs = load_runs(Path(args.data) / "train")
    order = rng.permutation(len(runs))
    n_val = max(1, len(runs) // 7)
    risk = args.risk_checkpoint if args.risk_checkpoint and Path(args.risk_checkpoint).is_file() else None
    train = build_samples([runs[i] for i in order[n_val:]], config, risk, args.stride)
    val = build_samples([runs[i] for i in order[:n_val]], config, risk, args.stride)
    print(f"mpc weights: {len(train)} training and {len(val)} validation samples (risk maps: {risk or 'none'})")
    layer = WeightedQP(MpcProblem(VehicleParams(), config.horizon, config.dt, config.opponent_slots, config.slack))
    initial = CostWeights()
    learned = fit(layer, train, initial, args.epochs, args.lr, args.seed, max_minutes=args.max_minutes)
    report = {"validation": {"initial": evaluate(layer, val, initial), "learned": evaluate(layer, val, learned)}}
    heldout = Path(args.data) / "heldout"
    if heldout.is_dir() and any(heldout.glob("*.npz")):
        held = build_samples(load_runs(heldout), config, risk, args.stride)
        report["heldout"] = {"initial": evaluate(layer, held, initial), "learned": evaluate(layer, held, learned)}
    command = "racestack train mpc " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
    write_weights(Path(args.out), learned, initial, report, command)
    print(json.dumps(report, indent=2))
    return 0


def write_weights(path: Path, learned: CostWeights, initial: CostWeights, report: dict, command: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "weights": {k: round(v, 6) for k, v in learned.as_dict().items()},
        "initial": initial.as_dict(),
        "metrics": report,
        "command": command,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
