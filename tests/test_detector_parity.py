"""The detector's own pipeline (ONNX Runtime and PyTorch backends) against ultralytics' predictor.

Same committed model, same simulator frames: every detection ultralytics reports must come out of
our pipeline with IoU >= 0.98, the same class and a score within 0.02 (issue 5). Detections whose
score sits within 0.02 of the threshold may legitimately appear on one side only. Two models: the
float checkpoint at the lite graph's 320x416 (our ONNX export and PyTorch), and the node's default,
the int8 ONNX file at 672x896 (ultralytics runs the same file through ONNX Runtime).
"""

from __future__ import annotations

import numpy as np
import pytest

from perception_nodes.flying_objects.classes import global_class_ids
from perception_nodes.flying_objects.dataset import render_samples
from perception_nodes.flying_objects.detector import DetectorConfig, FlyingObjectDetector, offline_yolo
from perception_nodes.flying_objects.postprocess import Thresholds
from racestack.paths import models_dir

MODELS = {
    "float": (models_dir() / "detector_yolov8n" / "weights.pt", (320, 416)),
    "int8": (models_dir() / "detector_yolov8n" / "weights-int8-672x896.onnx", (672, 896)),
}
CONFIDENCE = 0.25
IOU_MIN, SCORE_TOLERANCE = 0.98, 0.02


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [s.image for s in render_samples("circuit_b", 7, frames=12, every=4, flying_count=16)]


@pytest.fixture(scope="module")
def model(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def reference(frames, model):
    """ultralytics' own predictor: (boxes, scores, racestack class ids) per frame."""
    weights, input_hw = MODELS[model]
    model = offline_yolo()(str(weights), task="detect")
    ids = global_class_ids([model.names[i] for i in sorted(model.names)])
    results = model.predict(
        [f[:, :, ::-1] for f in frames],
        imgsz=input_hw,
        conf=CONFIDENCE,
        iou=0.7,
        max_det=100,
        device="cpu",
        verbose=False,
    )
    return [(r.boxes.xyxy.numpy(), r.boxes.conf.numpy(), ids[r.boxes.cls.numpy().astype(int)]) for r in results]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def unmatched(reference_side, candidate_side) -> tuple[int, list[str]]:
    """(matched count, problems) for the detections of ``reference_side`` against ``candidate_side``."""
    ref_boxes, ref_scores, ref_classes = reference_side
    boxes, scores, classes = candidate_side
    problems, matched = [], 0
    ious = iou_matrix(ref_boxes, boxes) if len(boxes) else np.zeros((len(ref_boxes), 0))
    for i in range(len(ref_boxes)):
        borderline = ref_scores[i] < CONFIDENCE + SCORE_TOLERANCE
        if ious.shape[1] == 0 or ious[i].max() < IOU_MIN:
            if not borderline:
                problems.append(f"box {ref_boxes[i]} score {ref_scores[i]:.3f} has no match (IoU >= {IOU_MIN})")
            continue
        j = int(ious[i].argmax())
        if classes[j] != ref_classes[i]:
            problems.append(f"box {ref_boxes[i]}: class {classes[j]} != {ref_classes[i]}")
        elif abs(scores[j] - ref_scores[i]) > SCORE_TOLERANCE:
            problems.append(f"box {ref_boxes[i]}: score {scores[j]:.3f} vs {ref_scores[i]:.3f}")
        else:
            matched += 1
    return matched, problems


@pytest.mark.parametrize(
    ("model", "backend"), [("float", "onnxruntime"), ("float", "torch"), ("int8", "onnxruntime")], indirect=["model"]
)
def test_pipeline_matches_ultralytics_predictor(frames, model, reference, backend):
    weights, input_hw = MODELS[model]
    detector = FlyingObjectDetector(
        DetectorConfig(
            weights=str(weights),
            backend=backend,
            input_size=input_hw,
            thresholds=Thresholds(CONFIDENCE, 0.7, 100),
        ),
        log=lambda _: None,
    )
    assert detector.backend == backend
    total, problems = 0, []
    for frame, expected in zip(frames, reference, strict=True):
        table = detector.detect(frame)
        ours = (
            np.stack([table["u_min"], table["v_min"], table["u_max"], table["v_max"]], axis=1),
            table["score"],
            table["class_id"],
        )
        matched, issues = unmatched(expected, ours)
        _, reverse = unmatched(ours, expected)
        total += matched
        problems += issues + [f"extra detection: {p}" for p in reverse]
    assert not problems, "\n".join(problems)
    assert total >= 15, f"only {total} detections compared: the frames or the model are too weak for a parity check"
