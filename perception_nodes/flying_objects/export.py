"""``racestack export detector``: a YOLOv8 checkpoint -> the ONNX file the node runs with ONNX Runtime.

By default the file goes where the node looks for it (the cache, keyed by the checkpoint's hash
and the input size), so a node started afterwards skips the export. ``--out`` writes a file a
user can pass as ``weights`` instead. The export is checked against PyTorch on a real-looking
input: the largest difference of the raw head output is printed and must stay within tolerance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from perception_nodes.flying_objects.detector import export_onnx_file, network_spec
from perception_nodes.flying_objects.preprocess import Preprocessor, check_input_size
from racestack.inference import OnnxRunner, TorchRunner, check_model_file, onnx_path_for

DEFAULT_WEIGHTS = Path("models/detector_yolov8n/detector_yolov8n.pt")
BOX_TOLERANCE_PX = 0.05
SCORE_TOLERANCE = 1e-3


def check_image(input_hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A smooth random test image (noise alone would keep every score near zero)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(input_hw[0] // 16, input_hw[1] // 16, 3), dtype=np.uint8)
    return cv2.resize(coarse, (input_hw[1], input_hw[0]), interpolation=cv2.INTER_CUBIC)


def compare(checkpoint: Path, onnx_file: Path, input_hw: tuple[int, int]) -> tuple[float, float]:
    """(largest box difference in pixels, largest score difference) of ONNX Runtime vs PyTorch."""
    spec = network_spec(input_hw)
    tensor, _ = Preprocessor(input_hw)(check_image(input_hw))
    reference = TorchRunner(spec, checkpoint)(tensor)[0]
    candidate = OnnxRunner(spec, onnx_file)(tensor)[0]
    difference = np.abs(reference - candidate)
    return float(difference[:, :4].max()), float(difference[:, 4:].max())


def export(weights: Path, input_hw: tuple[int, int], out: Path | None = None) -> Path:
    checkpoint = check_model_file(weights, "detector checkpoint")
    target = out or onnx_path_for(network_spec(input_hw), checkpoint)
    target.parent.mkdir(parents=True, exist_ok=True)
    export_onnx_file(checkpoint, target, input_hw)
    return target


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="ultralytics .pt checkpoint")
    parser.add_argument("--input-size", type=int, nargs="+", default=[320, 416], help="[h w] or [s], multiples of 32")
    parser.add_argument("--out", type=Path, default=None, help="ONNX file to write (default: the node's cache)")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")


def run(args: argparse.Namespace) -> int:
    input_hw = check_input_size(args.input_size)
    path = export(args.weights, input_hw, args.out)
    print(f"detector ONNX ({input_hw[0]}x{input_hw[1]}): {path}")
    if args.no_check:
        return 0
    box_px, score = compare(Path(args.weights), path, input_hw)
    ok = box_px <= BOX_TOLERANCE_PX and score <= SCORE_TOLERANCE
    print(
        f"ONNX Runtime vs PyTorch: boxes differ by <= {box_px:.2e} px (tolerance {BOX_TOLERANCE_PX}), "
        f"scores by <= {score:.2e} (tolerance {SCORE_TOLERANCE}): {'ok' if ok else 'FAILED'}"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="racestack export detector", description=__doc__)
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
