"""``racestack train ppn --config lite|paper``: train the segmentation and reconstruction networks.

Reads the export of ``racestack dataset bev`` (training scenarios only), trains on random crops
with left/right mirroring (a mirrored track is still a track; forward/backward is not, because the
history channels and future targets encode the direction of travel), writes each checkpoint with
its configuration, and ends with the held-out evaluation (``perception_nodes.ppn.evaluation``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from perception_nodes.ppn.config import PpnConfig, preset
from perception_nodes.ppn.dataset import load_frames
from perception_nodes.ppn.losses import class_weights, reconstruction_loss, segmentation_loss
from perception_nodes.ppn.models import KINDS, default_checkpoint, load_network, save_checkpoint
from perception_nodes.ppn.networks import build


class TrainingSet:
    """All stored frames in memory (compact dtypes), served as random mirrored crops."""

    def __init__(self, folder: Path, config: PpnConfig) -> None:
        files = sorted(folder.glob("*.npz"))
        if not files:
            raise SystemExit(f"no training data in {folder}: run `racestack dataset bev --config {config.name}` first")
        parts = [load_frames(f, config) for f in files]
        sweeps = config.bev.sweeps
        self.occupancy_in = np.concatenate([p["bev"][:, :sweeps].astype(np.uint8) for p in parts])
        self.features = np.concatenate([p["bev"][:, sweeps:].astype(np.float16) for p in parts])
        self.labels = np.concatenate([p["labels"].astype(np.int8) for p in parts])
        self.targets = np.concatenate([p["occupancy"] for p in parts])
        self.height = np.concatenate([p["height"].astype(np.float16) for p in parts])
        self.files = [f.name for f in files]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self, classes: int) -> torch.Tensor:
        return torch.from_numpy(np.bincount(self.labels.reshape(-1).astype(np.int64), minlength=classes))

    def batch(self, rng: np.random.Generator, size: int, crop: int) -> dict[str, torch.Tensor]:
        cells = self.labels.shape[-1]
        index = rng.integers(0, len(self), size)
        y0, x0 = rng.integers(0, cells - crop + 1, size), rng.integers(0, cells - crop + 1, size)
        mirror = rng.random(size) < 0.5
        out: dict[str, list[np.ndarray]] = {"bev": [], "labels": [], "occupancy": [], "height": []}
        for i, y, x, flip in zip(index, y0, x0, mirror, strict=True):
            window = (slice(y, y + crop), slice(x, x + crop))
            bev = np.concatenate(
                [self.occupancy_in[i][:, window[0], window[1]], self.features[i][:, window[0], window[1]]]
            )
            items = {
                "bev": bev.astype(np.float32),
                "labels": self.labels[i][window].astype(np.int64),
                "occupancy": self.targets[i][:, window[0], window[1]].astype(np.float32),
                "height": self.height[i][window].astype(np.float32),
            }
            for key, value in items.items():
                out[key].append(np.flip(value, axis=-2) if flip else value)
        return {key: torch.from_numpy(np.ascontiguousarray(np.stack(values))) for key, values in out.items()}


def learning_rate(peak: float, progress: float, warmup: float = 0.05) -> float:
    """Linear warm-up, then cosine decay to 2 % of the peak, over progress in [0, 1]."""
    if progress < warmup:
        return peak * (0.1 + 0.9 * progress / warmup)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - warmup) / (1.0 - warmup))))
    return peak * (0.02 + 0.98 * cosine)


def train_network(
    kind: str,
    config: PpnConfig,
    data: TrainingSet,
    steps: int,
    minutes: float = 0.0,
    log_every: int = 50,
    init: Path | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Train one network from scratch for ``steps`` steps, or for ``minutes`` of wall time when > 0.

    The schedule follows the fraction of the budget used, so a time budget ends with a decayed
    learning rate however loaded the machine is.
    """
    train = config.train
    torch.manual_seed(train.seed)
    rng = np.random.default_rng(train.seed)
    net = build(kind, config) if init is None else load_network(init, kind)[0]
    optimizer = torch.optim.AdamW(net.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    weights = class_weights(data.class_counts(len(config.classes)))
    net.train()
    start, history, step = time.perf_counter(), [], 0
    while True:
        elapsed = time.perf_counter() - start
        progress = elapsed / (60.0 * minutes) if minutes > 0 else step / steps
        if progress >= 1.0:
            break
        step += 1
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(train.lr, progress)
        batch = data.batch(rng, train.batch, train.crop)
        output = net(batch["bev"])
        if kind == "segmentation":
            loss = segmentation_loss(
                output, batch["labels"], weights, train.seg_loss, train.focal_gamma, train.dice_weight
            )
        else:
            loss = reconstruction_loss(
                output,
                batch["occupancy"],
                batch["height"],
                train.mssce_alpha,
                train.bce_weight,
                train.occupancy_pos_weight,
                train.motion_weight,
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
        if step % log_every == 0:
            recent = float(np.mean(history[-log_every:]))
            print(f"{kind} step {step}: loss {recent:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    record = {
        "steps": step,
        "batch": train.batch,
        "crop": train.crop,
        "final_loss": float(np.mean(history[-log_every:])),
        "seconds": round(time.perf_counter() - start),
        "class_weights": [round(float(w), 3) for w in weights],
        "frames": len(data),
        "initialized_from": str(init) if init else None,
        "data_files": data.files,
    }
    return net.eval(), record


TRAIN_OVERRIDES = ("seed", "batch", "lr", "crop", "motion_weight")  # command-line options of TrainConfig


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="lite", choices=("lite", "paper"))
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default datasets/ppn_<config>)")
    parser.add_argument("--net", default="both", choices=(*KINDS, "both"))
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per network (default: config)")
    parser.add_argument("--minutes", type=float, default=0.0, help="wall-time budget per network instead of steps")
    parser.add_argument("--out", type=Path, default=None, help="checkpoint folder (default models/ppn_<config>)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None, help="crops per step (default: config)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: config)")
    parser.add_argument("--crop", type=int, default=None, help="training crop, cells per side (default: config)")
    parser.add_argument(
        "--motion-weight", type=float, default=None, help="extra weight of the cells that change at a horizon"
    )
    parser.add_argument("--init", type=Path, default=None, help="continue from this checkpoint's weights")
    parser.add_argument("--eval-frames", type=int, default=80, help="frames per held-out scenario (0: skip)")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    config = preset(args.config)
    overrides = {name: getattr(args, name) for name in TRAIN_OVERRIDES if getattr(args, name) is not None}
    config = replace(config, train=replace(config.train, **overrides))
    if args.init is not None and args.net == "both":
        raise SystemExit("--init continues one network: give --net segmentation or --net reconstruction")
    data = TrainingSet(args.data or Path("datasets") / f"ppn_{config.name}", config)
    print(f"training on {len(data)} frames from {len(data.files)} runs", flush=True)
    steps = args.steps or config.train.steps
    kinds = KINDS if args.net == "both" else (args.net,)
    checkpoints = {}
    for kind in kinds:
        net, record = train_network(kind, config, data, steps, args.minutes, init=args.init)
        path = (args.out / f"{kind}.pt") if args.out else default_checkpoint(kind, config.name)
        save_checkpoint(path, kind, net, config, {"training": record})
        checkpoints[kind] = path
        print(f"saved {path}: {json.dumps({k: v for k, v in record.items() if k != 'data_files'})}", flush=True)
    if args.eval_frames and len(checkpoints) == len(KINDS):
        from perception_nodes.ppn.evaluation import evaluate, print_report

        report = evaluate(checkpoints, frames=args.eval_frames)
        print_report(report)
    return 0
