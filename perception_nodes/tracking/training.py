"""``racestack train tracker``: online training of 3DMOTFormer on the simulator's tracking sequences.

As in the paper, training runs the tracker itself: clips of consecutive frames are rolled out with
the model's *own* associations (births, coasting, deaths and the carried latents included), so the
tracks it learns from are the tracks it will see at run time. Gradients flow through the latents
from frame to frame over a clip. Clips are batched (padded, masked) for speed. Losses per frame:

- sigmoid focal loss on the gated edges: positive when the track's ground-truth identity (that of
  the detections it matched) is the detection's, only for the oldest such track;
- smooth-L1 on the velocity of every true detection (relative to the ego, scaled);
- binary cross-entropy of the confidence head: is the detection a real object (what the output
  scores use; an addition to the paper).

The first ``--teacher-epochs`` roll out with ground-truth associations instead (faster start).
The checkpoint with the best validation AMOTA (mean over the classes with at least 100 validation
boxes) is kept.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from perception_nodes.tracking.dataset import DEFAULT_OUT, Frame, TrackingSequence, load_sequences
from perception_nodes.tracking.evaluation import evaluate_method
from perception_nodes.tracking.factory import method_config
from perception_nodes.tracking.graph import VELOCITY_SCALE, Graph
from perception_nodes.tracking.model import DEFAULT_CHECKPOINT, ModelConfig, MOTFormer, save_checkpoint
from perception_nodes.tracking.state import EgoState
from perception_nodes.tracking.tracker import MOTFormerTracker, TrackerConfig
from racestack.paths import models_dir

TEACHER_LOGIT = 10.0
SELECTION_MIN_BOXES = 100


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "lite"
    epochs: int = 12
    clip_length: int = 8
    clip_stride: int = 4
    clips_per_epoch: int = 0  # 0: every clip once; else this many drawn at random
    batch_clips: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-2
    focal_gamma: float = 1.0
    focal_alpha: float = 0.5
    velocity_weight: float = 1.0
    confidence_weight: float = 0.5
    teacher_epochs: int = 1
    validation_every: int = 1
    seed: int = 0


class ModuleRunner:
    """The in-memory model as an inference runner (eval mode, no gradients) for validation."""

    def __init__(self, model: MOTFormer) -> None:
        self.model = model

    def __call__(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            outputs = self.model(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        return tuple(o.numpy() for o in outputs)


@dataclass
class ClipState:
    """One clip being rolled out: its tracker and the ground-truth identity of each live track."""

    frames: list[Frame]
    tracker: MOTFormerTracker
    track_gt: dict[int, int]


def sigmoid_focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float, alpha: float) -> torch.Tensor:
    probability = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    p_t = probability * labels + (1 - probability) * (1 - labels)
    weight = alpha * labels + (1 - alpha) * (1 - labels)
    return 2.0 * weight * ce * (1 - p_t) ** gamma


def edge_labels(tracker: MOTFormerTracker, track_gt: dict[int, int], det_gt: np.ndarray) -> np.ndarray:
    """(D, T) 1 where the detection continues the track: same identity, oldest track of that identity."""
    tracks = tracker.tracks
    if not len(tracks):
        return np.zeros((det_gt.size, 1), np.float32)
    gt = np.array([track_gt.get(int(i), -1) for i in tracks.ids])
    primary = np.zeros(len(tracks), bool)
    for identity in np.unique(gt[gt >= 0]):
        members = np.flatnonzero(gt == identity)
        primary[members[np.lexsort((tracks.ids[members], -tracks.hits[members]))[0]]] = True
    same = (det_gt[:, None] == gt[None, :]) & (det_gt[:, None] >= 0)
    return (same & primary[None, :]).astype(np.float32)


def velocity_targets(frame: Frame, det_gt: np.ndarray, ego: EgoState) -> tuple[np.ndarray, np.ndarray]:
    """Relative, scaled ground-truth velocities of the true detections, and which have one."""
    rows = {int(i): k for k, i in enumerate(frame.gt["track_id"])}
    has = np.array([int(i) in rows for i in det_gt]) & (det_gt >= 0)
    target = np.zeros((det_gt.size, 2), np.float32)
    if has.any():
        index = np.array([rows[int(i)] for i in det_gt[has]])
        velocity = np.stack([frame.gt["vx"][index], frame.gt["vy"][index]], axis=1).astype(np.float64)
        target[has] = ego.to_local(velocity - (ego.vx, ego.vy)) / VELOCITY_SCALE
    return target, has


def collate(graphs: list[Graph], latents: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Pad per-clip graphs into one batch (padding is masked out everywhere)."""
    d = max(g.det_feats.shape[1] for g in graphs)
    t = max(g.track_feats.shape[1] for g in graphs)

    def stack(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        out = np.zeros((len(graphs), *shape), np.float32)
        for b, g in enumerate(graphs):
            value = getattr(g, name)[0]
            out[(b, *tuple(slice(0, n) for n in value.shape))] = value
        return torch.from_numpy(out)

    return (
        stack("det_feats", (d, graphs[0].det_feats.shape[2])),
        stack("track_feats", (t, graphs[0].track_feats.shape[2])),
        pad_sequence(latents, batch_first=True),
        stack("edge_feats", (d, t, graphs[0].edge_feats.shape[3])),
        stack("edge_mask", (d, t)),
        stack("det_mask", (d, d)),
        stack("track_mask", (t, t)),
    )


def rollout_loss(
    model: MOTFormer, clips: list[ClipState], cfg: TrainConfig, teacher: bool
) -> tuple[torch.Tensor, dict]:
    """Roll the clips out frame by frame with the model's (or the teacher's) associations; summed loss."""
    total = torch.zeros(())
    stats = {"edges": 0.0, "velocity": 0.0, "confidence": 0.0, "positives": 0}
    length = len(clips[0].frames)
    for k in range(length):
        inputs = [clip.frames[k].map_detections() for clip in clips]
        active = [b for b, (dets, _) in enumerate(inputs) if len(dets)]
        for b, clip in enumerate(clips):
            if b not in active:
                frame = clip.frames[k]
                clip.tracker.step(inputs[b][0], frame.time, frame.ego)
        if not active:
            continue
        graphs, latents, labels, targets = [], [], [], []
        for b in active:
            clip, frame = clips[b], clips[b].frames[k]
            dets, det_gt = inputs[b]
            graphs.append(clip.tracker.graph(dets, frame.time, frame.ego))
            latents.append(torch.as_tensor(clip.tracker.track_latent()))
            labels.append(edge_labels(clip.tracker, clip.track_gt, det_gt))
            targets.append(velocity_targets(frame, det_gt, frame.ego))
        batch = collate(graphs, latents)
        affinity, velocity, det_latent, confidence = model(*batch)
        edge_mask = batch[4]
        label = torch.zeros_like(edge_mask)
        target = torch.zeros_like(velocity)
        has = torch.zeros(velocity.shape[:2])
        real = torch.zeros(velocity.shape[:2])
        present = torch.zeros(velocity.shape[:2])
        for i, (lab, (tgt, hv), b) in enumerate(zip(labels, targets, active, strict=True)):
            label[i, : lab.shape[0], : lab.shape[1]] = torch.from_numpy(lab)
            target[i, : tgt.shape[0]] = torch.from_numpy(tgt)
            has[i, : hv.shape[0]] = torch.from_numpy(hv.astype(np.float32))
            det_gt = inputs[b][1]
            real[i, : det_gt.size] = torch.from_numpy((det_gt >= 0).astype(np.float32))
            present[i, : det_gt.size] = 1.0
        label = label * edge_mask
        positives = float(label.sum())
        focal = sigmoid_focal_loss(affinity, label, cfg.focal_gamma, cfg.focal_alpha) * edge_mask
        edge_loss = focal.sum() / max(positives, 1.0)
        speed = F.smooth_l1_loss(velocity, target, reduction="none", beta=0.05).sum(-1)
        velocity_loss = (speed * has).sum() / has.sum().clamp(min=1.0)
        bce = F.binary_cross_entropy_with_logits(confidence, real, reduction="none")
        confidence_loss = (bce * present).sum() / present.sum().clamp(min=1.0)
        total = total + edge_loss + cfg.velocity_weight * velocity_loss + cfg.confidence_weight * confidence_loss
        stats["edges"] += float(edge_loss.detach()) / length
        stats["velocity"] += float(velocity_loss.detach()) / length
        stats["confidence"] += float(confidence_loss.detach()) / length
        stats["positives"] += int(positives)
        decisions = (label * 2 - 1) * TEACHER_LOGIT if teacher else affinity.detach()
        for i, b in enumerate(active):
            clip, frame = clips[b], clips[b].frames[k]
            dets, det_gt = inputs[b]
            n_det, n_track = graphs[i].edge_mask.shape[1:]
            clip.tracker.use_outputs(
                graphs[i],
                decisions[i, :n_det, :n_track].numpy(),
                velocity[i, :n_det].detach().numpy(),
                det_latent[i, :n_det],
                confidence[i, :n_det].detach().numpy(),
            )
            clip.tracker.step(dets, frame.time, frame.ego)
            for track_id, det in zip(clip.tracker.matched_ids, clip.tracker.matched_dets, strict=True):
                clip.track_gt[int(track_id)] = int(det_gt[det])
            for track_id, det in zip(clip.tracker.born_ids, clip.tracker.born_dets, strict=True):
                clip.track_gt[int(track_id)] = int(det_gt[det])
    return total / length, stats


def make_clips(sequences: list[TrackingSequence], cfg: TrainConfig) -> list[tuple[int, int]]:
    return [
        (index, start)
        for index, sequence in enumerate(sequences)
        for start in range(0, max(len(sequence) - cfg.clip_length, 0) + 1, cfg.clip_stride)
    ]


def train(
    sequences: list[TrackingSequence],
    validation: list[TrackingSequence],
    cfg: TrainConfig,
    out: Path,
    tracker_config: TrackerConfig,
    log=print,
) -> dict:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = MOTFormer(ModelConfig.preset(cfg.preset))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    clips = make_clips(sequences, cfg)
    per_epoch = min(cfg.clips_per_epoch, len(clips)) if cfg.clips_per_epoch else len(clips)
    steps_per_epoch = math.ceil(per_epoch / cfg.batch_clips)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=max(1, cfg.epochs * steps_per_epoch), pct_start=0.1
    )
    frames = [list(s.frames()) for s in sequences]
    best: dict = {}
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        teacher = epoch < cfg.teacher_epochs
        order = rng.permutation(len(clips))[:per_epoch]
        start = time.perf_counter()
        sums = {"loss": 0.0, "edges": 0.0, "velocity": 0.0, "confidence": 0.0}
        for step in range(steps_per_epoch):
            chosen = [clips[i] for i in order[step * cfg.batch_clips : (step + 1) * cfg.batch_clips]]
            states = [
                ClipState(
                    frames=frames[s][first : first + cfg.clip_length],
                    tracker=MOTFormerTracker(None, model.cfg.d_model, tracker_config),
                    track_gt={},
                )
                for s, first in chosen
            ]
            loss, stats = rollout_loss(model, states, cfg, teacher)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            sums["loss"] += float(loss.detach()) / steps_per_epoch
            sums["edges"] += stats["edges"] / steps_per_epoch
            sums["velocity"] += stats["velocity"] / steps_per_epoch
            sums["confidence"] += stats["confidence"] / steps_per_epoch
        record = {"epoch": epoch + 1, "teacher": teacher, "seconds": round(time.perf_counter() - start, 1), **sums}
        if validation and ((epoch + 1) % cfg.validation_every == 0 or epoch + 1 == cfg.epochs):
            model.eval()
            tracker = MOTFormerTracker(ModuleRunner(model), model.cfg.d_model, tracker_config)
            metrics = evaluate_method(tracker, validation).metrics
            summary = metrics.summary()
            score = selection_score(metrics)
            per_class = {c.name: round(c.amota, 4) for c in metrics.classes}
            record.update({"val_score": score, "val_amota": per_class, "val_ids": summary["ids"]})
            if score > best.get("score", -1.0):
                best = {"epoch": epoch + 1, "score": score, "amota": per_class, **summary}
                save_checkpoint(model, out, meta={"train": asdict(cfg), "validation": best})
        history.append(record)
        log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}))
    if not validation:
        save_checkpoint(model, out, meta={"train": asdict(cfg)})
    return {"best": best, "history": history}


def selection_score(metrics, min_boxes: int = SELECTION_MIN_BOXES) -> float:
    """Mean AMOTA over the classes with enough validation boxes (a class seen a few times is noise)."""
    classes = [c for c in metrics.classes if c.gt >= min_boxes] or metrics.classes
    return float(np.mean([c.amota for c in classes])) if classes else 0.0


def split_validation(sequences: list[TrackingSequence], fraction: float) -> tuple[list, list]:
    """Every k-th sequence (by sorted name) goes to validation."""
    if fraction <= 0 or len(sequences) < 2:
        return sequences, []
    every = max(2, round(1.0 / fraction))
    validation = sequences[every - 1 :: every]
    return [s for s in sequences if s not in validation], validation


def configure(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    parser.add_argument("--data", type=Path, default=DEFAULT_OUT / "train", help="training sequences (*.npz)")
    parser.add_argument("--out", type=Path, default=models_dir() / DEFAULT_CHECKPOINT, help="checkpoint to write")
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    for name, value in asdict(defaults).items():
        kind = type(value)
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value)


def run(args: argparse.Namespace) -> int:
    # Small graphs: one thread is ~10x faster than several fighting over a loaded CPU.
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(**{name: getattr(args, name) for name in asdict(TrainConfig())})
    sequences = load_sequences(args.data)
    heldout = sorted(s.name for s in sequences if s.meta.get("heldout"))
    if heldout:
        raise SystemExit(f"{args.data} holds held-out scenarios ({', '.join(heldout)}); training must never use them")
    training, validation = split_validation(sequences, args.validation_fraction)
    print(f"training on {len(training)} sequences, validating on {len(validation)}; {cfg}", flush=True)
    result = train(training, validation, cfg, args.out, method_config("3dmotformer"))
    report = args.out.with_suffix(".json")
    report.write_text(json.dumps({"config": asdict(cfg), **result}, indent=2))
    print(f"checkpoint {args.out} (best validation: {result['best']}); log {report}")
    return 0
