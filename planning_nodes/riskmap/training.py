"""``racestack train riskmap``: fit the risk-map transformer to the simulator's futures.

Samples come from ``racestack dataset planning`` runs: tokens at a stamp, and every opponent's true
footprint at the horizon's steps. The loss is the mixture negative log-likelihood of the true
future centres plus the binary cross-entropy of the rendered occupancy at sampled cells (near each
opponent and uniformly over the grid) against the true footprints, so the published probabilities
are calibrated where the MPC looks. Metrics (also for the model card) compare with the physics prior
alone (along-track forecast, uncertainty growing with time).
"""

from __future__ import annotations

import argparse
import json
import time as wallclock
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from planning_nodes.dataset import Run, load_runs
from planning_nodes.riskmap.features import (
    HISTORY_DT,
    HISTORY_STEPS,
    Pose,
    agent_inputs,
    bev_tokens,
    ego_token,
    select_agents,
    track_tokens,
)
from planning_nodes.riskmap.geometry import RISK_GRID, RISK_TIMES, severity
from planning_nodes.riskmap.model import (
    MAX_AGENTS,
    RiskMapNet,
    footprint_probability_torch,
    save_checkpoint,
)

NEAR_CELLS = 40
UNIFORM_CELLS = 96
PRIOR_SIGMA = ((0.3, 0.8), (0.3, 0.25))  # (base, per second) along and across, for the baseline


_PER_AGENT = {"agents", "mask", "prior", "prior_yaw", "length", "width", "severity", "future", "future_yaw"}


@dataclass
class Samples:
    """Stacked tensors of N samples (see ``RiskMapNet.forward`` for the inputs)."""

    agents: torch.Tensor
    mask: torch.Tensor
    ego: torch.Tensor
    bev: torch.Tensor
    track: torch.Tensor
    prior: torch.Tensor
    prior_yaw: torch.Tensor
    length: torch.Tensor
    width: torch.Tensor
    severity: torch.Tensor
    future: torch.Tensor
    future_yaw: torch.Tensor

    def __len__(self) -> int:
        return int(self.agents.shape[0])

    def batch(self, index: torch.Tensor) -> Samples:
        """The samples at ``index``, agent slots trimmed to the most any of them uses (>= 1)."""
        agents = max(1, int(self.mask[index].sum(dim=1).max()))
        parts = []
        for name in self.__dataclass_fields__:
            value = getattr(self, name)[index]
            parts.append(value[:, :agents] if name in _PER_AGENT else value)
        return Samples(*parts)

    def inputs(self) -> tuple[torch.Tensor, ...]:
        return (self.agents, self.mask, self.ego, self.bev, self.track, self.prior, self.prior_yaw)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="datasets/planning", help="dataset folder (train/, heldout/)")
    parser.add_argument("--out", default="models/riskmap/riskmap.pt", help="checkpoint to write")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stride", type=int, default=2, help="use every n-th frame of a run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=18.0, help="stop training after this wall time")


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    runs = load_runs(Path(args.data) / "train")
    order = rng.permutation(len(runs))
    n_val = max(1, len(runs) // 7)
    val_runs = [runs[i] for i in order[:n_val]]
    train_runs = [runs[i] for i in order[n_val:]]
    train = build_samples(train_runs, args.stride)
    val = build_samples(val_runs, args.stride)
    print(f"riskmap: {len(train)} training samples from {len(train_runs)} runs, {len(val)} validation samples")
    model = RiskMapNet()
    best = fit(model, train, val, args.epochs, args.batch, args.lr, args.seed, args.max_minutes)
    model.load_state_dict(best)
    report = {"validation": evaluate(model, val, args.seed)}
    heldout = Path(args.data) / "heldout"
    if heldout.is_dir() and any(heldout.glob("*.npz")):
        report["heldout"] = evaluate(model, build_samples(load_runs(heldout), args.stride), args.seed)
    extra = {
        "metrics": report,
        "command": "racestack train riskmap " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
    }
    save_checkpoint(model, Path(args.out), extra)
    Path(args.out).with_suffix(".metrics.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


# -- samples ---------------------------------------------------------------------------------------


def build_samples(runs: list[Run], stride: int = 2) -> Samples:
    rows = [sample_at(run, f) for run in runs for f in valid_frames(run, stride)]
    if not rows:
        raise ValueError("no usable samples (runs too short for history + 3 s of future?)")
    return Samples(*(torch.from_numpy(np.stack([r[i] for r in rows])) for i in range(len(rows[0]))))


def valid_frames(run: Run, stride: int) -> range:
    per_history = round(HISTORY_DT * run.rate)
    per_step = round((RISK_TIMES[1] - RISK_TIMES[0]) * run.rate)
    first = HISTORY_STEPS * per_history
    last = run.frames - 1 - per_step * (len(RISK_TIMES) - 1)
    return range(first, max(first, last + 1), stride)


def history_at(run: Run, frame: int) -> np.ndarray:
    """(M, HISTORY_STEPS + 1, 7) object states, oldest first, ending at ``frame``."""
    per_history = round(HISTORY_DT * run.rate)
    idx = frame - per_history * np.arange(HISTORY_STEPS, -1, -1)
    return np.transpose(run.objects[idx], (1, 0, 2))


def sample_at(run: Run, frame: int) -> tuple[np.ndarray, ...]:
    ego = run.ego[frame]
    pose = Pose(float(ego[0]), float(ego[1]), float(ego[2]))
    history = history_at(run, frame)
    rows = select_agents(history, pose, MAX_AGENTS)
    inputs = agent_inputs(history[rows], pose, run.track)
    per_step = round((RISK_TIMES[1] - RISK_TIMES[0]) * run.rate)
    future_idx = frame + per_step * np.arange(len(RISK_TIMES))
    future = run.objects[future_idx][:, rows]  # (T, m, 7)
    future_xy = pose.to_local(future[..., :2]).transpose(1, 0, 2)
    future_yaw = (future[..., 2] - pose.yaw).T
    velocity_ego = np.array([ego[3], 0.0])
    sev = severity(velocity_ego, inputs.velocity) if rows.size else np.zeros(0)
    m = rows.size
    return (
        _pad(inputs.tokens, MAX_AGENTS),
        _pad(np.ones(m, np.float32), MAX_AGENTS),
        ego_token(float(ego[3]), float(ego[4]), float(ego[5])),
        np.concatenate([run.bev[frame], bev_tokens(None)[:, 4:]], axis=1).astype(np.float32),
        track_tokens(run.track, pose),
        _pad(inputs.prior.astype(np.float32), MAX_AGENTS),
        _pad(_unwrap(inputs.prior_yaw).astype(np.float32), MAX_AGENTS),
        _pad(inputs.length.astype(np.float32), MAX_AGENTS, 1.0),
        _pad(inputs.width.astype(np.float32), MAX_AGENTS, 1.0),
        _pad(sev.astype(np.float32), MAX_AGENTS),
        _pad(future_xy.astype(np.float32), MAX_AGENTS),
        _pad(_unwrap(future_yaw).astype(np.float32), MAX_AGENTS),
    )


def _unwrap(yaw: np.ndarray) -> np.ndarray:
    return (yaw + np.pi) % (2 * np.pi) - np.pi


def _pad(values: np.ndarray, size: int, fill: float = 0.0) -> np.ndarray:
    out = np.full((size, *values.shape[1:]), fill, dtype=np.float32)
    out[: values.shape[0]] = values
    return out


# -- loss and training -----------------------------------------------------------------------------


def sample_cells(s: Samples, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Cells (B, T, C, 2) near each opponent's true footprint and uniform on the grid, and labels (B, T, C)."""
    b, m, t = s.future.shape[:3]
    g = RISK_GRID
    near = torch.rand(b, m, t, NEAR_CELLS, 2, generator=generator) * 2.0 - 1.0
    scale = torch.stack([s.length / 2.0 + 6.0, s.width / 2.0 + 4.0], dim=-1)[:, :, None, None, :]
    near = s.future[:, :, :, None, :] + near * scale
    near = near.permute(0, 2, 1, 3, 4).reshape(b, t, m * NEAR_CELLS, 2)
    uniform = torch.rand(b, t, UNIFORM_CELLS, 2, generator=generator)
    uniform = uniform * torch.tensor([g.x_max - g.x_min, g.y_max - g.y_min]) + torch.tensor([g.x_min, g.y_min])
    cells = torch.cat([near, uniform], dim=2)
    cells = torch.floor((cells - torch.tensor([g.x_min, g.y_min])) / g.resolution) * g.resolution
    cells = cells + torch.tensor([g.x_min, g.y_min]) + g.resolution / 2.0
    inside = _inside_boxes(cells, s)
    return cells, inside


def _inside_boxes(cells: torch.Tensor, s: Samples) -> torch.Tensor:
    rel = cells[:, None] - s.future[:, :, :, None, :]  # (B, M, T, C, 2)
    c, sn = torch.cos(s.future_yaw)[..., None], torch.sin(s.future_yaw)[..., None]
    along = c * rel[..., 0] + sn * rel[..., 1]
    across = -sn * rel[..., 0] + c * rel[..., 1]
    hit = (along.abs() <= s.length[:, :, None, None] / 2.0) & (across.abs() <= s.width[:, :, None, None] / 2.0)
    hit = hit & (s.mask[:, :, None, None] > 0.5)
    return hit.any(dim=1).float()


def occupancy(cells, mean, sigma, yaw, weight, s: Samples) -> torch.Tensor:
    """P(occupied) (B, T, C) at cells (B, T, C, 2) from predictions (see RiskMapNet.forward)."""
    p = footprint_probability_torch(
        cells[:, None, None, ..., 0],  # (B, 1, 1, T, C)
        cells[:, None, None, ..., 1],
        mean[..., None, :],  # (B, M, K, T, 1, 2)
        sigma[..., None, :],
        yaw[..., None],
        s.length[:, :, None, None, None],
        s.width[:, :, None, None, None],
    )
    per_agent = (weight[..., None, None] * p).sum(dim=2) * s.mask[:, :, None, None]
    return 1.0 - torch.prod(1.0 - per_agent.clamp(0.0, 1.0 - 1e-6), dim=1)


def mixture_nll(mean, sigma, yaw, weight, s: Samples) -> torch.Tensor:
    """Mean over real agents of -log Σ_k w_k Π_t N(future_t | mean_kt, Σ_kt), per horizon step."""
    rel = s.future[:, :, None] - mean
    c, sn = torch.cos(yaw), torch.sin(yaw)
    along = (c * rel[..., 0] + sn * rel[..., 1]) / sigma[..., 0]
    across = (-sn * rel[..., 0] + c * rel[..., 1]) / sigma[..., 1]
    log_n = -0.5 * (along**2 + across**2) - torch.log(sigma[..., 0] * sigma[..., 1]) - np.log(2 * np.pi)
    log_mix = torch.logsumexp(torch.log(weight + 1e-9) + log_n.sum(dim=-1), dim=-1)
    steps = mean.shape[3]
    return -(log_mix * s.mask).sum() / s.mask.sum().clamp(min=1.0) / steps


def loss_fn(model: RiskMapNet, s: Samples, generator: torch.Generator) -> torch.Tensor:
    mean, sigma, yaw, weight = model(*s.inputs())
    cells, labels = sample_cells(s, generator)
    p = occupancy(cells, mean, sigma, yaw, weight, s).clamp(1e-6, 1 - 1e-6)
    bce = torch.nn.functional.binary_cross_entropy(p, labels)
    return mixture_nll(mean, sigma, yaw, weight, s) + 20.0 * bce


def fit(
    model: RiskMapNet,
    train: Samples,
    val: Samples,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
    max_minutes: float,
) -> dict:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * max(1, len(train) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    best, best_loss = {k: v.clone() for k, v in model.state_dict().items()}, np.inf
    start = wallclock.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total = 0.0
        for i in range(0, len(train) - batch + 1, batch):
            loss = loss_fn(model, train.batch(order[i : i + batch]), generator)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total += float(loss) * batch
        val_loss = validation_loss(model, val, seed)
        print(f"epoch {epoch + 1}/{epochs}: train {total / len(train):.4f}, validation {val_loss:.4f}", flush=True)
        if val_loss < best_loss:
            best, best_loss = {k: v.clone() for k, v in model.state_dict().items()}, val_loss
        if wallclock.perf_counter() - start > 60.0 * max_minutes:
            print(f"stopping after {epoch + 1} epochs: time budget of {max_minutes} min spent")
            break
    return best


@torch.no_grad()
def validation_loss(model: RiskMapNet, val: Samples, seed: int) -> float:
    model.eval()
    generator = torch.Generator().manual_seed(seed + 1)
    losses = [
        float(loss_fn(model, val.batch(torch.arange(i, min(i + 64, len(val)))), generator))
        for i in range(0, len(val), 64)
    ]
    return float(np.mean(losses))


# -- evaluation ------------------------------------------------------------------------------------


def prior_predictions(s: Samples) -> tuple[torch.Tensor, ...]:
    """The physics prior as a one-mode prediction with uncertainty growing linearly in time."""
    t = torch.tensor(RISK_TIMES, dtype=torch.float32)
    (a0, a1), (c0, c1) = PRIOR_SIGMA
    sigma = torch.stack([a0 + a1 * t, c0 + c1 * t], dim=-1).expand(*s.prior.shape[:2], 1, len(RISK_TIMES), 2)
    return s.prior[:, :, None], sigma, s.prior_yaw[:, :, None], torch.ones(*s.prior.shape[:2], 1)


@torch.no_grad()
def evaluate(model: RiskMapNet, s: Samples, seed: int = 0) -> dict:
    """Occupancy BCE and average precision at sampled cells, mixture NLL, ADE/FDE; model vs prior."""
    model.eval()
    generator = torch.Generator().manual_seed(seed + 7)
    out: dict[str, dict[str, float]] = {"model": {}, "prior": {}}
    scores: dict[str, list] = {"model": [], "prior": []}
    labels_all = []
    nll: dict[str, list] = {"model": [], "prior": []}
    errors: dict[str, list] = {"model": [], "prior": []}
    for i in range(0, len(s), 64):
        b = s.batch(torch.arange(i, min(i + 64, len(s))))
        cells, labels = sample_cells(b, generator)
        labels_all.append(labels.flatten())
        for name, pred in (("model", model(*b.inputs())), ("prior", prior_predictions(b))):
            mean, sigma, yaw, weight = pred
            scores[name].append(occupancy(cells, mean, sigma, yaw, weight, b).flatten())
            nll[name].append(float(mixture_nll(mean, sigma, yaw, weight, b)) * float(b.mask.sum()))
            best = mean[torch.arange(mean.shape[0])[:, None], torch.arange(mean.shape[1]), weight.argmax(-1)]
            dist = torch.linalg.norm(best - b.future, dim=-1)[b.mask > 0.5]
            errors[name].append(dist)
    labels = torch.cat(labels_all).numpy()
    agents = float(s.mask.sum())
    for name in out:
        p = torch.cat(scores[name]).clamp(1e-6, 1 - 1e-6).numpy()
        dist = torch.cat(errors[name]).numpy()
        out[name] = {
            "occupancy_bce": float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))),
            "occupancy_ap": average_precision(labels, p),
            "nll_per_step": float(np.sum(nll[name]) / max(agents, 1.0)),
            "ade_m": float(dist.mean()) if dist.size else float("nan"),
            "fde_3s_m": float(dist[:, -1].mean()) if dist.size else float("nan"),
        }
    out["samples"] = {"count": float(len(s)), "agents": agents}
    return out


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve (step-wise, as sklearn's average_precision_score)."""
    order = np.argsort(-scores, kind="stable")
    hits = labels[order]
    positives = hits.sum()
    if positives == 0:
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float(np.sum(precision * hits) / positives)
