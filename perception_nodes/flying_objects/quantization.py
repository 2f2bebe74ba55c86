"""Static int8 quantization of the detector's ONNX graph for ONNX Runtime on the CPU.

On a CPU with AVX-512 VNNI (the AMD EPYC these figures come from; the Intel host of 2026-12-07 has it
too) ONNX Runtime runs int8 convolutions about twice as fast as float32: the yolov8n graph at 608x800
takes 34 ms instead of 59 ms on two threads, which is what lets the upscaled input that reaches mAP50
0.8 (672x896, 43 ms) fit the 60 ms budget (docs/detector.md).

What is quantized: convolutions (per-channel int8 weights), the SiLU activations (Sigmoid, Mul),
residual Adds, the SPPF MaxPools and the upsampling Resizes, with uint8 activations whose ranges
come from calibration frames letterboxed exactly as the node does it. What stays float:

- the Detect head's decode (the DFL softmax, the anchor offsets, the multiplication by the stride,
  the class sigmoid) and the last convolution of each branch: box coordinates span 0-800
  pixels, and 256 levels would make them 3 px coarse, more than the median object is wide;
- Concat and Split: a quantized Concat forces one scale onto all its inputs; at 608x800 that saved
  1-2 ms and cost 0.005 of the val split's mAP50.

``racestack quantize detector --weights W.pt --data D.yaml --input-size H W --out F.onnx`` writes a
quantized ONNX file that the node loads as its ``weights`` (the file's fixed input size and class
names win); ``--weights`` may also be a float ONNX file.
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

QUANTIZED_OPS = ("Conv", "Sigmoid", "Mul", "Add", "MaxPool", "Resize")
HEAD_FEATURE_BLOCK = re.compile(r"/cv[23]\.\d+/cv[23]\.\d+\.[01]/")
MODULE_PREFIX = re.compile(r"^/model\.(\d+)/")
CALIBRATION_IMAGES = 64


def head_prefix(node_names: Iterable[str]) -> str:
    """'/model.N/' of the last module (the Detect head) in an ultralytics export."""
    indices = [int(m.group(1)) for name in node_names if (m := MODULE_PREFIX.match(name))]
    if not indices:
        raise ValueError("not an ultralytics detector export: no '/model.N/' node names")
    return f"/model.{max(indices)}/"


def float_nodes(node_names: list[str]) -> list[str]:
    """The head's nodes outside the first two conv blocks of its box (cv2) and class (cv3) branches."""
    prefix = head_prefix(node_names)
    return [n for n in node_names if n.startswith(prefix) and not HEAD_FEATURE_BLOCK.search(n)]


class CalibrationFrames:
    """ONNX Runtime's calibration reader over BGR frames, preprocessed as the node does."""

    def __init__(self, frames: Iterable[np.ndarray], input_hw: tuple[int, int], input_name: str) -> None:
        from perception_nodes.flying_objects.preprocess import Preprocessor

        self._frames: Iterator[np.ndarray] = iter(frames)
        self._preprocess = Preprocessor(input_hw)
        self._input_name = input_name
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        frame = next(self._frames, None)
        if frame is None:
            return None
        self.count += 1
        tensor, _ = self._preprocess(frame, bgr=True)
        return {self._input_name: tensor.copy()}


def calibration_paths(
    data_yaml: Path, split: str = "train", count: int = CALIBRATION_IMAGES, seed: int = 0
) -> list[Path]:
    """``count`` images of a split of a YOLO data set, drawn with ``seed`` (the same set on every run)."""
    from perception_nodes.flying_objects.evaluation import split_images

    images = split_images(data_yaml, split)
    if not images:
        raise ValueError(f"{data_yaml}: the '{split}' split has no images")
    random.Random(seed).shuffle(images)
    return images[:count]


def read_frames(paths: Iterable[Path]) -> Iterator[np.ndarray]:
    for path in paths:
        frame = cv2.imread(str(path))
        if frame is None:
            raise ValueError(f"cannot read calibration image {path}")
        yield frame


def quantize_onnx(source: Path, out: Path, frames: Iterable[np.ndarray]) -> int:
    """Write the int8 model of the float ONNX file ``source`` to ``out``; returns the frames used."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(source))
    (graph_input,) = model.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    if len(dims) != 4 or not all(d.dim_value for d in dims[2:]):
        raise ValueError(f"{source}: needs a fixed input size (1, 3, h, w), got {[d.dim_value for d in dims]}")
    input_hw = (dims[2].dim_value, dims[3].dim_value)
    frames = list(frames)
    if not frames:
        raise ValueError("quantization needs at least one calibration frame")
    reader = CalibrationFrames(frames, input_hw, graph_input.name)
    with tempfile.TemporaryDirectory(prefix="racestack-quantize-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        names = [node.name for node in onnx.load(str(prepared)).graph.node]
        out.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(
            str(prepared),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_exclude=float_nodes(names),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, "CalibMovingAverage": True},
        )
    return reader.count


def float_onnx(weights: Path, input_hw: tuple[int, int]) -> Path:
    """The float ONNX file to quantize: ``weights`` itself, or its export at ``input_hw`` (cached)."""
    from perception_nodes.flying_objects.detector import network_spec
    from racestack.inference import check_model_file, ensure_onnx

    weights = check_model_file(weights, "detector weights")
    if weights.suffix == ".onnx":
        return weights
    return ensure_onnx(network_spec(input_hw), weights, print)


def configure(parser: argparse.ArgumentParser) -> None:
    from perception_nodes.flying_objects.detector import DEFAULT_INPUT_SIZE

    parser.add_argument(
        "--weights", type=Path, default=Path("models/detector_yolov8n/weights.pt"), help=".pt or float .onnx"
    )
    parser.add_argument("--data", type=Path, required=True, help="YOLO data.yaml whose images calibrate the ranges")
    parser.add_argument("--split", default="train", help="split to draw the calibration images from")
    parser.add_argument("--count", type=int, default=CALIBRATION_IMAGES, help="calibration images")
    parser.add_argument("--seed", type=int, default=0, help="which images are drawn")
    parser.add_argument(
        "--input-size", type=int, nargs=2, default=list(DEFAULT_INPUT_SIZE), help="network input h w (.pt only)"
    )
    parser.add_argument("--out", type=Path, required=True, help="where the int8 ONNX file goes")


def run(args: argparse.Namespace) -> int:
    source = float_onnx(args.weights, tuple(args.input_size))
    used = quantize_onnx(source, args.out, read_frames(calibration_paths(args.data, args.split, args.count, args.seed)))
    print(f"int8 model of {source} calibrated on {used} '{args.split}' images of {args.data}: {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perception_nodes.flying_objects.quantization", description=__doc__)
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
