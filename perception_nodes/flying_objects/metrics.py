"""COCO-style mean average precision with an ignore size, for detections of tiny objects.

Ultralytics' validator counts every ground-truth box. The simulator labels flying objects down to
4 pixels, far below what a stride-8 detector at a 416-pixel input can resolve, so this module also
scores with the COCO area-range rule: ground truth smaller than ``min_size`` pixels (largest side,
in source-image pixels) is *ignored*: a detection matched to it is neither a true nor a false
positive, and an unmatched detection that small is ignored too. With ``min_size`` 0 nothing is
ignored. AP is the 101-point interpolated area under the precision envelope (as COCO and
ultralytics compute it), per class, averaged over classes that have ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IOU_THRESHOLDS = np.round(np.linspace(0.5, 0.95, 10), 2)


@dataclass(frozen=True)
class ImageResult:
    """Detections and ground truth of one image; boxes are (N, 4) x0, y0, x1, y1 in pixels."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    truth_boxes: np.ndarray
    truth_classes: np.ndarray


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def largest_side(boxes: np.ndarray) -> np.ndarray:
    return np.max(boxes[:, 2:] - boxes[:, :2], axis=1) if len(boxes) else np.zeros(0)


def match(result: ImageResult, class_id: int, threshold: float, min_size: float) -> tuple[np.ndarray, ...]:
    """(scores, true-positive flags) of the image's counted detections of one class, and its counted GT."""
    own = result.classes == class_id
    order = np.argsort(-result.scores[own], kind="stable")
    boxes, scores = result.boxes[own][order], result.scores[own][order]
    truth = result.truth_boxes[result.truth_classes == class_id]
    ignored_truth = largest_side(truth) < min_size
    overlaps = iou(boxes, truth) if len(boxes) and len(truth) else np.zeros((len(boxes), len(truth)))
    taken = np.zeros(len(truth), dtype=bool)
    positive = np.zeros(len(boxes), dtype=bool)
    counted = np.ones(len(boxes), dtype=bool)
    for i in range(len(boxes)):
        free = (~taken) & (overlaps[i] >= threshold)
        for wanted in (free & ~ignored_truth, free & ignored_truth):
            if wanted.any():
                j = int(np.argmax(np.where(wanted, overlaps[i], -1.0)))
                taken[j] = True
                positive[i] = not ignored_truth[j]
                counted[i] = not ignored_truth[j]
                break
        else:
            counted[i] = largest_side(boxes[i : i + 1])[0] >= min_size
    return scores[counted], positive[counted], int((~ignored_truth).sum())


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """101-point interpolated AP of a precision/recall curve (recall ascending), as ultralytics does."""
    recall = np.concatenate(([0.0], recall, [recall[-1] if len(recall) else 1.0], [1.0]))
    envelope = np.flip(np.maximum.accumulate(np.flip(np.concatenate(([1.0], precision, [0.0, 0.0])))))
    grid = np.linspace(0.0, 1.0, 101)
    return float(np.trapezoid(np.interp(grid, recall, envelope), grid))


def class_ap(results: list[ImageResult], class_id: int, threshold: float, min_size: float) -> float | None:
    """AP of one class at one IoU threshold; None when the class has no counted ground truth."""
    parts = [match(r, class_id, threshold, min_size) for r in results]
    positives = sum(p[2] for p in parts)
    if positives == 0:
        return None
    scores = np.concatenate([p[0] for p in parts])
    if scores.size == 0:
        return 0.0
    flags = np.concatenate([p[1] for p in parts])[np.argsort(-scores, kind="stable")]
    true_positives = np.cumsum(flags)
    recall = true_positives / positives
    precision = true_positives / np.arange(1, len(flags) + 1)
    return average_precision(recall, precision)


def mean_ap(results: list[ImageResult], class_ids: list[int], min_size: float = 0.0) -> dict:
    """mAP50, mAP50-95 and per-class AP50 over the classes with counted ground truth."""
    table = {c: [class_ap(results, c, t, min_size) for t in IOU_THRESHOLDS] for c in class_ids}
    present = {c: aps for c, aps in table.items() if aps[0] is not None}
    if not present:
        return {"map50": 0.0, "map50_95": 0.0, "ap50_per_class": {}, "objects": 0}
    return {
        "map50": float(np.mean([aps[0] for aps in present.values()])),
        "map50_95": float(np.mean([np.mean(aps) for aps in present.values()])),
        "ap50_per_class": {c: round(aps[0], 4) for c, aps in present.items()},
        "objects": int(
            sum((largest_side(r.truth_boxes[r.truth_classes == c]) >= min_size).sum() for r in results for c in present)
        ),
    }
