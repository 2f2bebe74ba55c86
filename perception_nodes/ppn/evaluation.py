"""Held-out evaluation of the PPN: ``python -m perception_nodes.ppn.evaluation [--config lite]``.

Runs the held-out scenarios (``config/scenarios/heldout/``, never used in training) through the
simulator, the BEV encoder and the networks (ONNX Runtime by default, as the nodes run them) and
prints: segmentation IoU per class and mIoU over track/barrier/vehicle; reconstruction occupancy
IoU over all cells and over the cells the current sweep did not see, against copying the last
observed occupancy; future occupancy IoU against a frozen scene; object extraction recall.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

from perception_nodes.object_extraction import extract_objects
from perception_nodes.ppn.config import PpnConfig, preset
from perception_nodes.ppn.dataset import BARRIER, Frame, scenario_frames
from perception_nodes.ppn.models import KINDS, default_checkpoint, read_checkpoint
from perception_nodes.ppn.pipeline import PpnPipeline, labels_from_logits

SCORED_CLASSES = ("track", "barrier", "vehicle")
RECALL_RANGE = 50.0
MATCH_DISTANCE = 1.0
MIN_VISIBLE_POINTS = 5


class Scores:
    """Running sums over frames."""

    def __init__(self, classes: int, horizons: int) -> None:
        self.confusion = np.zeros((classes, classes), dtype=np.int64)
        # per name: cells in both, in either, in the truth
        self.iou_sums = {name: np.zeros(3, dtype=np.int64) for name in self._iou_names(horizons)}
        self.height_error = np.zeros(2)
        self.recall = {key: np.zeros(2, dtype=np.int64) for key in ("all", "visible", "gt_labels_visible")}
        self.detections = np.zeros(2, dtype=np.int64)

    @staticmethod
    def _iou_names(horizons: int) -> list[str]:
        names = ["occupancy", "occupancy_unseen", "last_observed_unseen", "last_observed"]
        for h in range(horizons):
            names += [f"future_{h}", f"future_{h}_frozen", f"future_{h}_moving", f"future_{h}_moving_frozen"]
        return names

    def add_iou(self, name: str, predicted: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> None:
        if mask is not None:
            predicted, truth = predicted[mask], truth[mask]
        both = np.count_nonzero(predicted & truth)
        self.iou_sums[name] += (both, np.count_nonzero(predicted | truth), np.count_nonzero(truth))

    def iou(self, name: str) -> float:
        inter, union, _ = self.iou_sums[name]
        return float(inter / union) if union else float("nan")

    def cell_recall(self, name: str) -> float:
        """Share of the true cells predicted: whether the cars' future cells are found at all, which the
        IoU off the barriers hides under the cells next to the barriers."""
        inter, _, truth = self.iou_sums[name]
        return float(inter / truth) if truth else float("nan")


def _recall(detected: np.ndarray, cars: np.ndarray) -> tuple[int, int, int]:
    """(matched, total) GT cars within range matched by a detection centre, and detections matched."""
    if len(cars) == 0:
        return 0, 0, 0
    if len(detected) == 0:
        return 0, len(cars), 0
    gt = np.stack([cars["x"], cars["y"]], axis=1)
    det = np.stack([detected["x"], detected["y"]], axis=1)
    distance = np.linalg.norm(gt[:, None] - det[None], axis=2)
    matched_gt, used = 0, set()
    for g in np.argsort(distance.min(axis=1)):
        order = [d for d in np.argsort(distance[g]) if d not in used and distance[g, d] <= MATCH_DISTANCE]
        if order:
            used.add(order[0])
            matched_gt += 1
    return matched_gt, len(cars), len(used)


def score_frame(scores: Scores, frame: Frame, labels: np.ndarray, scene: np.ndarray, config: PpnConfig) -> None:
    """Add one frame: ``labels`` (H, W) predicted ids, ``scene`` (H, W, 4) reconstruction output."""
    classes = len(config.classes)
    scores.confusion += np.bincount(
        frame.labels.astype(np.int64).ravel() * classes + labels.astype(np.int64).ravel(), minlength=classes**2
    ).reshape(classes, classes)
    names = config.bev.channel_names()
    sweeps = config.bev.sweeps
    unseen = frame.bev[names.index("density")] == 0 if "density" in names else np.ones_like(frame.labels, bool)
    observed = frame.bev[:sweeps].max(axis=0) > 0
    truth = frame.occupancy[0]
    predicted = scene[..., 0] > 0.5
    scores.add_iou("occupancy", predicted, truth)
    scores.add_iou("occupancy_unseen", predicted, truth, unseen)
    scores.add_iou("last_observed_unseen", observed, truth, unseen)
    scores.add_iou("last_observed", observed, truth)
    off_barrier = frame.labels != BARRIER  # where the scene can change: cars, now or later
    for h in range(len(config.horizons)):
        future = scene[..., 2 + h] > 0.5
        scores.add_iou(f"future_{h}", future, frame.occupancy[1 + h])
        scores.add_iou(f"future_{h}_frozen", predicted, frame.occupancy[1 + h])
        scores.add_iou(f"future_{h}_moving", future, frame.occupancy[1 + h], off_barrier)
        scores.add_iou(f"future_{h}_moving_frozen", predicted, frame.occupancy[1 + h], off_barrier)
    scores.height_error += (np.abs(scene[..., 1] - frame.height)[truth].sum(), np.count_nonzero(truth))
    near = np.hypot(frame.cars["x"], frame.cars["y"]) <= RECALL_RANGE
    visible = near & (frame.car_points >= MIN_VISIBLE_POINTS)
    detected = extract_objects(labels, config.bev.grid)
    matched, total, used = _recall(detected, frame.cars[near])
    scores.recall["all"] += (matched, total)
    matched, total, _ = _recall(detected, frame.cars[visible])
    scores.recall["visible"] += (matched, total)
    oracle = extract_objects(frame.labels, config.bev.grid)
    matched, total, _ = _recall(oracle, frame.cars[visible])
    scores.recall["gt_labels_visible"] += (matched, total)
    in_range = np.hypot(detected["x"], detected["y"]) <= RECALL_RANGE if len(detected) else np.zeros(0, bool)
    scores.detections += (used, int(np.count_nonzero(in_range)))


def report_of(scores: Scores, config: PpnConfig, frames: int, scenarios: list[str]) -> dict:
    confusion = scores.confusion
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - inter
    iou = {name: float(inter[i] / union[i]) if union[i] else float("nan") for i, name in enumerate(config.classes)}
    recall = {k: float(v[0] / v[1]) if v[1] else float("nan") for k, v in scores.recall.items()}
    return {
        "scenarios": scenarios,
        "frames": frames,
        "segmentation": {
            "iou": iou,
            "miou_track_barrier_vehicle": float(np.mean([iou[c] for c in SCORED_CLASSES])),
            "vehicle_iou": iou["vehicle"],
        },
        "reconstruction": {
            "occupancy_iou": scores.iou("occupancy"),
            "occupancy_iou_unseen": scores.iou("occupancy_unseen"),
            "last_observed_iou_unseen": scores.iou("last_observed_unseen"),
            "last_observed_iou": scores.iou("last_observed"),
            "height_mae_occupied_m": float(scores.height_error[0] / max(scores.height_error[1], 1)),
            "future": {
                f"+{h}s": {
                    "iou": scores.iou(f"future_{i}"),
                    "frozen_scene_iou": scores.iou(f"future_{i}_frozen"),
                    "off_barrier_iou": scores.iou(f"future_{i}_moving"),
                    "off_barrier_frozen_scene_iou": scores.iou(f"future_{i}_moving_frozen"),
                    "off_barrier_recall": scores.cell_recall(f"future_{i}_moving"),
                    "off_barrier_frozen_scene_recall": scores.cell_recall(f"future_{i}_moving_frozen"),
                }
                for i, h in enumerate(config.horizons)
            },
        },
        "object_extraction": {
            "recall_within_50m": recall["all"],
            "recall_within_50m_visible": recall["visible"],
            "recall_gt_labels_visible": recall["gt_labels_visible"],
            "precision_within_50m": float(scores.detections[0] / scores.detections[1]) if scores.detections[1] else 1.0,
            "visible_means": f">= {MIN_VISIBLE_POINTS} LiDAR points on the car",
            "match": f"BEV centre distance <= {MATCH_DISTANCE} m",
        },
    }


def heldout_frames(
    name: str, config: PpnConfig, frames: int, stride: int, warmup: int, cache: Path | None
) -> list[Frame]:
    """The evaluation frames of one scenario, simulated, or read from ``cache`` when it holds this exact set."""
    if cache is None:
        return list(scenario_frames(name, config, frames, stride, warmup))
    path = cache / f"{Path(name).stem}_{config.name}_{frames}x{stride}+{warmup}.pkl"
    if path.is_file():
        with open(path, "rb") as handle:
            return pickle.load(handle)
    result = list(scenario_frames(name, config, frames, stride, warmup))
    cache.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(result, handle)
    return result


def evaluate(
    checkpoints: dict[str, Path],
    frames: int = 80,
    scenarios: list[str] | None = None,
    backend: str = "onnxruntime",
    stride: int = 10,
    warmup: int = 20,
    log=print,
    cache: Path | None = None,
) -> dict:
    from simulation.scenario import list_scenarios

    config = PpnConfig.from_dict(read_checkpoint(checkpoints["segmentation"], "segmentation")["config"])
    pipeline = PpnPipeline(checkpoints, backend, "cpu", log=lambda text: None)
    scenarios = scenarios or list_scenarios(heldout=True)
    if not scenarios:
        raise SystemExit("no held-out scenarios in config/scenarios/heldout/")
    scores = Scores(len(config.classes), len(config.horizons))
    total = 0
    for name in scenarios:
        for frame in heldout_frames(name, config, frames, stride, warmup, cache):
            bev = torch.from_numpy(frame.bev).unsqueeze(0)
            labels = labels_from_logits(pipeline.infer("segmentation", bev))
            scene = pipeline.reconstruction(bev)
            score_frame(scores, frame, labels, scene, config)
            total += 1
        log(f"evaluated {name}")
    return report_of(scores, config, total, [str(s) for s in scenarios])


def print_report(report: dict) -> None:
    seg, rec, ext = report["segmentation"], report["reconstruction"], report["object_extraction"]
    print(f"held-out evaluation: {report['frames']} frames of {', '.join(report['scenarios'])}")
    print("segmentation IoU: " + ", ".join(f"{k} {v:.3f}" for k, v in seg["iou"].items()))
    print(f"  mIoU (track, barrier, vehicle) {seg['miou_track_barrier_vehicle']:.3f}   target >= 0.75")
    print(f"  vehicle IoU {seg['vehicle_iou']:.3f}   target >= 0.6")
    print(
        f"reconstruction occupancy IoU {rec['occupancy_iou']:.3f} (last observed {rec['last_observed_iou']:.3f}); "
        f"unseen cells {rec['occupancy_iou_unseen']:.3f} vs last observed {rec['last_observed_iou_unseen']:.3f}"
        "   target: better than last observed"
    )
    print(f"  height MAE on occupied cells {rec['height_mae_occupied_m']:.3f} m")
    for horizon, values in rec["future"].items():
        print(
            f"  future occupancy {horizon}: IoU {values['iou']:.3f} (frozen scene {values['frozen_scene_iou']:.3f}); "
            f"off-barrier cells (cars) {values['off_barrier_iou']:.3f} "
            f"(frozen {values['off_barrier_frozen_scene_iou']:.3f}), recall {values['off_barrier_recall']:.3f} "
            f"(frozen {values['off_barrier_frozen_scene_recall']:.3f})"
        )
    print(
        f"object extraction recall within 50 m at <= 1 m: {ext['recall_within_50m']:.3f} "
        f"(visible cars {ext['recall_within_50m_visible']:.3f}; on GT labels {ext['recall_gt_labels_visible']:.3f}), "
        f"precision {ext['precision_within_50m']:.3f}   target >= 0.9"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perception_nodes.ppn.evaluation", description=__doc__)
    parser.add_argument("--config", default="lite", choices=("lite", "paper"))
    for kind in KINDS:
        parser.add_argument(f"--{kind}", type=Path, default=None, help=f"{kind} checkpoint (default: committed)")
    parser.add_argument("--frames", type=int, default=80, help="frames per held-out scenario (every 10th)")
    parser.add_argument("--scenarios", nargs="*", default=None)
    parser.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch"))
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--cache", type=Path, default=None, help="keep the simulated held-out frames here")
    parser.add_argument("--prepare", action="store_true", help="only simulate the held-out frames into --cache")
    args = parser.parse_args(argv)
    if args.prepare:
        from simulation.scenario import list_scenarios

        config = preset(args.config)
        for name in args.scenarios or list_scenarios(heldout=True):
            heldout_frames(name, config, args.frames, 10, 20, args.cache or Path("datasets/ppn_heldout"))
            print(f"prepared {name}", flush=True)
        return 0
    checkpoints = {k: getattr(args, k) or default_checkpoint(k, args.config) for k in KINDS}
    report = evaluate(checkpoints, args.frames, args.scenarios, args.backend, cache=args.cache)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
