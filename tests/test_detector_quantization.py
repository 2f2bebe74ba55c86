"""Static int8 quantization of the detector (``perception_nodes.flying_objects.quantization``).

The committed checkpoint is exported at the lite input size, quantized with simulator frames of a
training scenario, and run through the node's pipeline on frames of a held-out scenario: the int8
model must find what the float model finds, while its weights are int8 and the head's box decode
stays float (box coordinates in pixels need more than 256 levels).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from perception_nodes.flying_objects.dataset import render_samples
from perception_nodes.flying_objects.detector import DetectorConfig, FlyingObjectDetector
from perception_nodes.flying_objects.postprocess import Thresholds
from perception_nodes.flying_objects.quantization import calibration_paths, float_nodes, float_onnx, quantize_onnx
from racestack.paths import models_dir

WEIGHTS = models_dir() / "detector_yolov8n" / "weights.pt"
INPUT_HW = (320, 416)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """(float ONNX, int8 ONNX) of the committed checkpoint at 320x416."""
    source = float_onnx(WEIGHTS, INPUT_HW)
    calibration = [s.image[:, :, ::-1] for s in render_samples("circuit_a", 3, frames=16, every=5, flying_count=16)]
    out = tmp_path_factory.mktemp("int8") / "int8.onnx"
    assert quantize_onnx(source, out, calibration) == 16
    return source, out


def detections(weights: Path, frames: list[np.ndarray]) -> list[np.ndarray]:
    detector = FlyingObjectDetector(
        DetectorConfig(weights=str(weights), backend="onnxruntime", thresholds=Thresholds(0.25, 0.7, 100)),
        log=lambda _: None,
    )
    return [detector.detect(frame) for frame in frames]


def corners(table: np.ndarray) -> np.ndarray:
    return np.stack([table["u_min"], table["v_min"], table["u_max"], table["v_max"]], axis=1).astype(np.float64)


def best_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def test_int8_model_finds_what_the_float_model_finds(models):
    source, int8 = models
    frames = [s.image for s in render_samples("heldout/circuit_heldout_b", None, frames=10, every=6, flying_count=30)]
    confident = matched = 0
    for reference, quantized in zip(detections(source, frames), detections(int8, frames), strict=True):
        for row in reference[reference["score"] >= 0.5]:
            confident += 1
            same = quantized[quantized["class_id"] == row["class_id"]]
            box = corners(row[None])[0]
            matched += bool(len(same)) and best_iou(box, corners(same)).max() >= 0.8
    assert confident >= 10, f"only {confident} confident float detections: too weak a comparison"
    assert matched >= 0.9 * confident, f"the int8 model matches {matched} of {confident} confident float detections"


def test_weights_are_int8_and_the_box_decode_stays_float(models):
    import onnx

    source, int8 = models
    graph = onnx.load(str(int8)).graph
    initializers = {i.name: i for i in graph.initializer}
    int8_weights = [
        n
        for n in graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in initializers
        and initializers[n.input[0]].data_type == onnx.TensorProto.INT8
    ]
    convs = sum(n.op_type == "Conv" for n in onnx.load(str(source)).graph.node)
    assert len(int8_weights) == convs - 7, f"{len(int8_weights)} int8 weight tensors for {convs} convolutions"
    float_names = set(float_nodes([n.name for n in onnx.load(str(source)).graph.node]))
    producers = {output: node for node in graph.node for output in node.output}
    kept = {n.name: n.op_type for n in graph.node if n.name in float_names}
    assert set(kept) == float_names, f"float nodes lost: {sorted(float_names - set(kept))[:5]}"
    float_ops = list(kept.values())
    # the last conv of each of the 3 x 2 branches and the DFL conv, the DFL softmax, the class sigmoid
    assert float_ops.count("Conv") == 7 and "Softmax" in float_ops and "Sigmoid" in float_ops
    requantized = [
        q.name
        for q in graph.node
        if q.op_type == "QuantizeLinear"
        and producers.get(q.input[0]) is not None
        and producers[q.input[0]].name in float_names
    ]
    assert not requantized, f"head decode outputs quantized: {requantized[:5]}"
    assert producers[graph.output[0].name].name in float_names
    assert int8.stat().st_size < 0.35 * source.stat().st_size


def test_calibration_images_are_a_fixed_draw_from_the_split(tmp_path):
    folder = tmp_path / "images" / "train"
    folder.mkdir(parents=True)
    for i in range(20):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), np.full((8, 8, 3), i, np.uint8))
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {tmp_path}\ntrain: images/train\nnames: [drone]\n")
    first = calibration_paths(data, "train", 8, seed=0)
    assert len(first) == 8 and len(set(first)) == 8
    assert first == calibration_paths(data, "train", 8, seed=0)
    assert first != calibration_paths(data, "train", 8, seed=1)
    with pytest.raises(ValueError, match="no 'val' split"):
        calibration_paths(data, "val")


def test_command_writes_a_file_the_node_loads(tmp_path):
    from racestack.cli import main

    folder = tmp_path / "images" / "train"
    folder.mkdir(parents=True)
    for i, sample in enumerate(render_samples("circuit_a", 5, frames=4, every=5, flying_count=8)):
        cv2.imwrite(str(folder / f"{i}.jpg"), sample.image[:, :, ::-1])
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {tmp_path}\ntrain: images/train\nnames: [drone, bird, airplane, helicopter]\n")
    out = tmp_path / "int8.onnx"
    args = ["--weights", str(WEIGHTS), "--data", str(data), "--count", "3", "--input-size", "256", "320"]
    assert main(["quantize", "detector", *args, "--out", str(out)]) == 0
    detector = FlyingObjectDetector(DetectorConfig(weights=str(out), backend="onnxruntime"), log=lambda _: None)
    assert detector.input_hw == (256, 320)
    assert detector.names == ["drone", "bird", "airplane", "helicopter"]


def test_refuses_no_frames_and_a_dynamic_input(models, tmp_path):
    import onnx

    source, _ = models
    with pytest.raises(ValueError, match="at least one calibration frame"):
        quantize_onnx(source, tmp_path / "none.onnx", [])
    model = onnx.load(str(source))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    dynamic = tmp_path / "dynamic.onnx"
    onnx.save(model, str(dynamic))
    with pytest.raises(ValueError, match="fixed input size"):
        quantize_onnx(dynamic, tmp_path / "out.onnx", [np.zeros((480, 640, 3), np.uint8)])
