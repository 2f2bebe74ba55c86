"""Held-out evaluation of the three trackers: one command prints AMOTA, MOTA, IDS and step times.

    python -m perception_nodes.tracking.evaluation [--data datasets/tracking/heldout]

Every tracker sees exactly what the node would: the detections of each frame moved into ``map``
with the odometry pose, invalid rows dropped. Metrics: perception_nodes.tracking.metrics (nuScenes
AMOTA/AMOTP, CLEAR-MOT) against the ground truth the detector could see, within each class's
evaluation range (``EVAL_RANGE``, like nuScenes' class ranges; tracks beyond it are not scored);
tracks on objects the detector could not see are "don't care" (``without_dont_care``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception_nodes.tracking.dataset import DEFAULT_OUT, Frame, TrackingSequence, load_sequences
from perception_nodes.tracking.factory import create_tracker, method_config, motformer_runner
from perception_nodes.tracking.metrics import MAX_DISTANCE, TrackingMetrics, evaluate_tracking
from perception_nodes.tracking.state import EgoState
from perception_nodes.tracking.tracker import TRACKER_METHODS, Tracker
from racestack.objects import OBJECT_CLASSES

AMOTA_MARGIN = 0.03
# a class needs this many ground-truth boxes in the set to count in the means (AMOTA of 2 boxes is noise)
MIN_CLASS_BOXES = 100
# Evaluation range per class (m from the ego, as nuScenes' class_range): ground truth and tracks
# farther away are not scored. Cars: the lite BEV reach; flying objects: where a camera detection
# lifted to 3D can still be within the 2 m matching distance.
EVAL_RANGE = {"car": 50.0, "drone": 40.0, "bird": 40.0, "airplane": 40.0, "helicopter": 40.0, "other": 50.0}
_RANGE_BY_ID = np.array([EVAL_RANGE[name] for name in OBJECT_CLASSES])


@dataclass
class MethodResult:
    method: str
    metrics: TrackingMetrics
    step_ms: np.ndarray
    min_gt: int = 0

    def summary(self) -> dict[str, float]:
        return self.metrics.summary(self.min_gt)

    def row(self) -> str:
        s = self.summary()
        p50, p99 = np.percentile(self.step_ms, [50, 99]) if self.step_ms.size else (np.nan, np.nan)
        return (
            f"{self.method:<12} {s['amota']:6.3f} {s['amotp']:6.3f} {s['mota']:6.3f} {s['ids']:5d} "
            f"{s['frag']:5d} {s['fp']:6d} {s['fn']:6d} {s['recall']:6.3f} {p50:8.2f} {p99:8.2f}"
        )


HEADER = (
    f"{'method':<12} {'AMOTA':>6} {'AMOTP':>6} {'MOTA':>6} {'IDS':>5} {'FRAG':>5} {'FP':>6} {'FN':>6} "
    f"{'recall':>6} {'p50 ms':>8} {'p99 ms':>8}"
)


def run_tracker(tracker: Tracker, sequence: TrackingSequence, step_ms: list[float] | None = None) -> list[np.ndarray]:
    """The tracker's output table for every frame of a sequence (fresh state at the start)."""
    tracker.reset()
    outputs = []
    for frame in sequence.frames():
        dets, _ = frame.map_detections()
        start = time.perf_counter()
        outputs.append(tracker.step(dets, frame.time, frame.ego))
        if step_ms is not None:
            step_ms.append((time.perf_counter() - start) * 1e3)
    return outputs


def in_range(table: np.ndarray, ego: EgoState) -> np.ndarray:
    """The rows within their class's evaluation range of the ego (3D distance)."""
    distance = np.sqrt((table["x"] - ego.x) ** 2 + (table["y"] - ego.y) ** 2 + table["z"] ** 2)
    return table[distance <= _RANGE_BY_ID[np.clip(table["class_id"], 0, len(OBJECT_CLASSES) - 1)]]


def without_dont_care(tracks: np.ndarray, frame: Frame) -> np.ndarray:
    """Tracks minus those on a hidden object ("don't care", as in KITTI/MOTChallenge).

    An object out of the detector's view (occluded, outside the camera's field of view) is not
    scored; a track that keeps following it is then neither a miss nor a false positive, unless
    it also lies on a scored object.
    """
    hidden, shown = frame.gt[~frame.gt_visible], frame.gt[frame.gt_visible]
    if not (len(tracks) and len(hidden)):
        return tracks

    def near(objects: np.ndarray) -> np.ndarray:
        if not len(objects):
            return np.zeros(len(tracks), bool)
        distance = np.hypot(tracks["x"][:, None] - objects["x"][None], tracks["y"][:, None] - objects["y"][None])
        same = tracks["class_id"][:, None] == objects["class_id"][None]
        return ((distance < MAX_DISTANCE) & same).any(axis=1)

    return tracks[~near(hidden) | near(shown)]


def evaluate_method(tracker: Tracker, sequences: list[TrackingSequence], engine: str = "fast") -> MethodResult:
    step_ms: list[float] = []
    pairs = []
    for sequence in sequences:
        outputs = run_tracker(tracker, sequence, step_ms)
        frames = list(sequence.frames())
        gt = [in_range(f.scored_gt, f.ego) for f in frames]
        tracks = [in_range(without_dont_care(t, f), f.ego) for t, f in zip(outputs, frames, strict=True)]
        pairs.append((gt, tracks))
    return MethodResult(tracker.name, evaluate_tracking(pairs, engine=engine), np.asarray(step_ms))


def build_trackers(methods: list[str], checkpoint: Path | None, backend: str, threads: int) -> list[Tracker]:
    trackers = []
    for method in methods:
        runner, latent_dim = (None, 0)
        if method == "3dmotformer":
            runner, latent_dim = motformer_runner(checkpoint, backend=backend, threads=threads, log=lambda s: None)
        trackers.append(create_tracker(method, method_config(method), runner=runner, latent_dim=latent_dim))
    return trackers


def per_class_table(results: list[MethodResult]) -> list[str]:
    """AMOTA / IDS / boxes of each evaluated class, one line per method."""
    names = [c.name for c in results[0].metrics.classes] if results else []
    if not names:
        return []
    lines = [f"{'per class':<12} " + " ".join(f"{n + ' AMOTA/IDS':>20}" for n in names)]
    for r in results:
        cells = {c.name: f"{c.amota:.3f}/{c.ids} ({c.gt})" for c in r.metrics.classes}
        lines.append(f"{r.method:<12} " + " ".join(f"{cells.get(n, '-'):>20}" for n in names))
    return lines


def verdict(results: list[MethodResult]) -> str:
    by_name = {r.method: r.summary() for r in results}
    if "3dmotformer" not in by_name or "kalman" not in by_name:
        return ""
    ours, kalman = by_name["3dmotformer"], by_name["kalman"]
    margin = ours["amota"] - kalman["amota"]
    amota_ok = margin >= AMOTA_MARGIN
    ids_ok = ours["ids"] < kalman["ids"]
    return (
        f"3DMOTFormer AMOTA - Kalman AMOTA = {margin:+.3f} (target >= +{AMOTA_MARGIN:.2f}: "
        f"{'met' if amota_ok else 'NOT met'}); IDS {ours['ids']} vs {kalman['ids']} "
        f"(target lower: {'met' if ids_ok else 'NOT met'})"
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=DEFAULT_OUT / "heldout", help="folder of sequences (*.npz)")
    parser.add_argument("--methods", nargs="+", default=list(TRACKER_METHODS), choices=TRACKER_METHODS)
    parser.add_argument("--checkpoint", type=Path, help="3DMOTFormer checkpoint (default: the committed one)")
    parser.add_argument("--backend", default="onnxruntime", choices=("auto", "onnxruntime", "torch", "tensorrt"))
    parser.add_argument("--threads", type=int, default=1, help="inference threads (the node's default is 1)")
    parser.add_argument("--match", default="", help="only sequences whose file name contains this")
    parser.add_argument(
        "--engine", default="fast", choices=("fast", "motmetrics"), help="CLEAR-MOT engine (same numbers)"
    )
    parser.add_argument(
        "--min-class-boxes", type=int, default=MIN_CLASS_BOXES,
        help="classes with fewer ground-truth boxes are listed per class but left out of the means",
    )


def run(args: argparse.Namespace) -> int:
    sequences = [s for s in load_sequences(args.data) if args.match in s.name]
    if not sequences:
        raise SystemExit(f"no sequence in {args.data} matches '{args.match}'")
    frames = sum(len(s) for s in sequences)
    gt = sum(int(s.gt_visible.sum()) for s in sequences)
    print(f"{len(sequences)} sequences from {args.data}: {frames} frames, {gt} ground-truth boxes scored")
    print(HEADER, flush=True)
    results = []
    for tracker in build_trackers(args.methods, args.checkpoint, args.backend, args.threads):
        result = evaluate_method(tracker, sequences, args.engine)
        result.min_gt = args.min_class_boxes
        results.append(result)
        print(result.row(), flush=True)
    for line in per_class_table(results):
        print(line)
    rare = [c.name for c in results[0].metrics.classes if c.gt < args.min_class_boxes] if results else []
    if rare:
        print(f"left out of the means (< {args.min_class_boxes} boxes): {', '.join(rare)}")
    line = verdict(results)
    if line:
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perception_nodes.tracking.evaluation", description=__doc__)
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
