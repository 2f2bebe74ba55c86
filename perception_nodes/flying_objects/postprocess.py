"""YOLOv8 head output -> boxes in source-image pixels: decode, class-aware NMS, rescale.

The raw output ``output0`` is [1, 4 + nc, N] (cx, cy, w, h in input pixels, then per-class
scores). Candidates are cut by the confidence threshold first, so NMS sees a few dozen boxes; the
greedy NMS loop runs once per *kept* box with vectorized IoU, matching torchvision's ordering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception_nodes.flying_objects.preprocess import Letterbox
from racestack.objects import BOX2D_DTYPE

MAX_WH = 7680.0


@dataclass(frozen=True)
class Thresholds:
    confidence: float = 0.25
    iou: float = 0.7
    max_detections: int = 100
    max_candidates: int = 30000


def decode(
    output: np.ndarray, thresholds: Thresholds, keep_classes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes xyxy (K, 4) in input pixels, scores (K,), model class indices (K,)) after NMS."""
    prediction = output[0] if output.ndim == 3 else output
    class_scores = prediction[4:]
    best = class_scores.argmax(axis=0)
    scores = np.take_along_axis(class_scores, best[None], axis=0)[0]
    keep = scores > thresholds.confidence
    if keep_classes is not None:
        keep &= np.isin(best, keep_classes)
    index = np.flatnonzero(keep)
    if index.size > thresholds.max_candidates:
        index = index[np.argsort(-scores[index], kind="stable")[: thresholds.max_candidates]]
    centre_w_h = prediction[:4, index].T.astype(np.float32)
    boxes = np.empty_like(centre_w_h)
    boxes[:, :2] = centre_w_h[:, :2] - centre_w_h[:, 2:] / 2
    boxes[:, 2:] = centre_w_h[:, :2] + centre_w_h[:, 2:] / 2
    scores, classes = scores[index].astype(np.float32), best[index]
    offset = (classes[:, None] * MAX_WH).astype(np.float32)
    kept = nms(boxes + offset, scores, thresholds.iou, thresholds.max_detections)
    return boxes[kept], scores[kept], classes[kept]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int = 0) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, best score first (ties keep the earlier box).

    ``limit`` stops after that many kept boxes (the same first ones a full run would keep).
    """
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept = []
    while order.size and (limit <= 0 or len(kept) < limit):
        best, rest = order[0], order[1:]
        kept.append(best)
        top_left = np.maximum(boxes[best, :2], boxes[rest, :2])
        bottom_right = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.clip(bottom_right - top_left, 0.0, None).prod(axis=1)
        iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def rescale(boxes: np.ndarray, geometry: Letterbox) -> np.ndarray:
    """Boxes from network-input pixels to source-image pixels, clipped to the image."""
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] = (out[:, [0, 2]] - geometry.left) / geometry.gain_x
    out[:, [1, 3]] = (out[:, [1, 3]] - geometry.top) / geometry.gain_y
    height, width = geometry.source_hw
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
    return out


def to_table(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """A BOX2D_DTYPE table (racestack.objects) from source-pixel boxes and global class ids."""
    table = np.empty(boxes.shape[0], dtype=BOX2D_DTYPE)
    table["u_min"], table["v_min"] = boxes[:, 0], boxes[:, 1]
    table["u_max"], table["v_max"] = boxes[:, 2], boxes[:, 3]
    table["score"], table["class_id"] = scores, class_ids
    return table


class Postprocessor:
    """Raw head output + letterbox geometry -> BOX2D table in racestack class ids."""

    def __init__(self, class_ids: np.ndarray, thresholds: Thresholds, keep_classes: np.ndarray | None = None):
        self.class_ids = np.asarray(class_ids, dtype=np.int32)
        self.thresholds = thresholds
        self.keep_classes = keep_classes

    def __call__(self, output: np.ndarray, geometry: Letterbox) -> np.ndarray:
        expected = 4 + self.class_ids.size
        if output.ndim != 3 or output.shape[1] != expected:
            raise ValueError(f"expected a head output [1, {expected}, N], got {list(output.shape)}")
        boxes, scores, classes = decode(output, self.thresholds, self.keep_classes)
        return to_table(rescale(boxes, geometry), scores, self.class_ids[classes])
