"""Metrics of a recorded run, each computed only where its ground truth exists (no rclpy needed).

Frames are matched by header stamp: every racestack output keeps the stamp of the input it was
computed from, and the simulator stamps its ground truth with the sweep's stamp.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from racestack.objects import BEV_CLASSES, OBJECT_CLASSES

SCORED_BEV = ("track", "barrier", "vehicle")
OCCUPIED_BEV = ("barrier", "vehicle")
IOU_THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)
HORIZONS_S = (1.0, 2.0, 3.0)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if len(values) == 0:
        return {"p50": float("nan"), "p99": float("nan"), "n": 0}
    p50, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 99])
    return {"p50": float(p50), "p99": float(p99), "max": float(np.max(values)), "n": len(values)}


def confusion(predicted: np.ndarray, truth: np.ndarray, classes: int = len(BEV_CLASSES)) -> np.ndarray:
    """classes x classes counts (rows = truth); values outside [0, classes) are ignored."""
    valid = (truth >= 0) & (truth < classes) & (predicted >= 0) & (predicted < classes)
    index = truth[valid].astype(np.int64) * classes + predicted[valid].astype(np.int64)
    return np.bincount(index, minlength=classes * classes).reshape(classes, classes)


def segmentation_scores(matrix: np.ndarray) -> dict[str, float]:
    """Per-class IoU and the mIoU over track, barrier and vehicle from a confusion matrix."""
    inter = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - inter
    iou = np.divide(inter, union, out=np.full_like(inter, np.nan), where=union > 0)
    scores = {f"iou_{name}": float(iou[i]) for i, name in enumerate(BEV_CLASSES)}
    scores["miou"] = float(np.nanmean([scores[f"iou_{c}"] for c in SCORED_BEV]))
    return scores


def occupied(labels: np.ndarray) -> np.ndarray:
    return np.isin(labels, [BEV_CLASSES.index(c) for c in OCCUPIED_BEV])


def iou(predicted: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """(intersection, union) counts of two boolean masks, to be summed over frames."""
    return int(np.count_nonzero(predicted & truth)), int(np.count_nonzero(predicted | truth))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of (N, 4) and (M, 4) boxes given as (u_min, v_min, u_max, v_max)."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _corners(table: np.ndarray) -> np.ndarray:
    return np.stack([table["u_min"], table["v_min"], table["u_max"], table["v_max"]], axis=1).astype(np.float64)


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """COCO-style 101-point interpolated AP."""
    envelope = np.maximum.accumulate(np.concatenate([precision, [0.0]])[::-1])[::-1]
    grid = np.linspace(0, 1, 101)
    index = np.searchsorted(recall, grid, side="left")
    return float(np.mean(np.where(index < len(recall), envelope[np.minimum(index, len(envelope) - 1)], 0.0)))


def detection_map(frames: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """mAP50 and mAP50-95 over classes present in the ground truth; frames are (predicted, truth) 2D tables."""
    per_class: dict[str, list[float]] = {}
    for class_id in sorted({int(c) for _, truth in frames for c in truth["class_id"]}):
        aps = [_class_ap(frames, class_id, t) for t in IOU_THRESHOLDS]
        per_class[OBJECT_CLASSES[class_id] if class_id < len(OBJECT_CLASSES) else str(class_id)] = aps
    if not per_class:
        return {}
    result = {
        "map50": float(np.mean([aps[0] for aps in per_class.values()])),
        "map50_95": float(np.mean([np.mean(aps) for aps in per_class.values()])),
    }
    result.update({f"ap50_{name}": aps[0] for name, aps in per_class.items()})
    return result


def _class_ap(frames: Sequence[tuple[np.ndarray, np.ndarray]], class_id: int, threshold: float) -> float:
    scores, hits, total = [], [], 0
    for predicted, truth in frames:
        pred = predicted[predicted["class_id"] == class_id]
        gt = truth[truth["class_id"] == class_id]
        total += len(gt)
        if len(pred) == 0:
            continue
        order = np.argsort(-pred["score"], kind="stable")
        pred = pred[order]
        matched = np.zeros(len(gt), dtype=bool)
        overlaps = box_iou(_corners(pred), _corners(gt)) if len(gt) else np.zeros((len(pred), 0))
        for i in range(len(pred)):
            candidates = np.where(~matched & (overlaps[i] >= threshold))[0] if len(gt) else []
            hit = len(candidates) > 0
            if hit:
                matched[candidates[np.argmax(overlaps[i, candidates])]] = True
            hits.append(hit)
        scores.extend(pred["score"].tolist())
    if total == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.cumsum(np.asarray(hits, dtype=np.float64)[order])
    fp = np.cumsum(1.0 - np.asarray(hits, dtype=np.float64)[order])
    recall = tp / total
    precision = tp / np.maximum(tp + fp, 1e-9)
    return average_precision(recall, precision) if len(hits) else 0.0


def trajectory_l2(
    plans: Sequence[tuple[float, np.ndarray, np.ndarray]],
    actual_t: np.ndarray,
    actual_xy: np.ndarray,
    horizons: Sequence[float] = HORIZONS_S,
) -> dict[str, float]:
    """Mean L2 (m) between planned and actual positions ``h`` seconds after each plan's time.

    ``plans`` are (plan time, pose times, pose xy); ``actual_*`` the driven path (sorted by time).
    Plans whose horizon runs past the recording are left out of that horizon's mean.
    """
    result = {}
    for horizon in horizons:
        errors = []
        for t0, times, xy in plans:
            target = t0 + horizon
            if target > actual_t[-1] or target > times[-1] + 1e-6 or len(times) < 2:
                continue
            planned = [np.interp(target, times, xy[:, k]) for k in (0, 1)]
            driven = [np.interp(target, actual_t, actual_xy[:, k]) for k in (0, 1)]
            errors.append(float(np.hypot(planned[0] - driven[0], planned[1] - driven[1])))
        result[f"l2_{horizon:g}s"] = float(np.mean(errors)) if errors else float("nan")
    return result
