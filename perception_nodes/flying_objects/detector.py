"""The detector core: a YOLOv8 checkpoint or ONNX file behind one ``detect(image)`` call.

All backends share the same preprocessing and postprocessing (``preprocess``, ``postprocess``);
only the network call differs, and it goes through ``racestack.inference.create_runner``:
``torch`` runs ultralytics' DetectionModel, ``onnxruntime`` runs the ONNX file exported on demand
into the cache (or a user's ONNX file), ``tensorrt`` builds an engine from that ONNX file.
"""

from __future__ import annotations

import ast
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from perception_nodes.flying_objects.classes import global_class_ids
from perception_nodes.flying_objects.postprocess import Postprocessor, Thresholds
from perception_nodes.flying_objects.preprocess import Preprocessor, check_input_size
from racestack.errors import ModelFileError, ParameterError
from racestack.inference import NetworkSpec, check_model_file, create_runner
from racestack.objects import CLASS_ID

INPUT_NAME = "images"
OUTPUT_NAME = "output0"
OPSET = 17
PARITY_TOLERANCE = 1e-2  # raw head output: boxes in input pixels, scores in [0, 1]
# the CPU default: int8 at 672x896, the 640x480 image upscaled 1.4x (held-out mAP50 0.83, 0.79 on a second
# sample, 0.81 pooled; docs/detector.md)
DEFAULT_WEIGHTS = "detector_yolov8n/weights-int8-672x896.onnx"
DEFAULT_INPUT_SIZE = (672, 896)


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about itself: class names and, for ONNX, a fixed input size."""

    path: Path
    names: list[str]
    input_hw: tuple[int, int] | None = None

    @property
    def is_onnx(self) -> bool:
        return self.path.suffix.lower() == ".onnx"


@dataclass
class DetectorConfig:
    weights: str
    backend: str = "auto"
    device: str = "cpu"
    input_size: Sequence[int] = (320, 416)
    thresholds: Thresholds = field(default_factory=Thresholds)
    class_names: Sequence[str] = ()
    classes: Sequence[str] = ()
    threads: int | None = None
    spinning: bool = False


def read_model_info(path: str | Path) -> ModelInfo:
    """Class names (and ONNX input size) of a checkpoint; ModelFileError naming the path if unusable."""
    path = check_model_file(path, "detector model")
    try:
        if path.suffix.lower() == ".onnx":
            return _onnx_info(path)
        return ModelInfo(path=path, names=_checkpoint_names(path))
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(str(path), f"not a readable YOLOv8 checkpoint or ONNX file ({exc})") from exc


def _checkpoint_names(path: Path) -> list[str]:
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict):
        raise ModelFileError(str(path), "is not an ultralytics checkpoint (expected a dict)")
    names = getattr(checkpoint.get("ema") or checkpoint.get("model"), "names", None)
    if names is None:
        raise ModelFileError(str(path), "holds no ultralytics model with class names")
    return _names_list(names)


def _onnx_info(path: Path) -> ModelInfo:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    metadata = {p.key: p.value for p in model.metadata_props}
    names = _names_list(ast.literal_eval(metadata["names"])) if "names" in metadata else []
    shape = model.graph.input[0].type.tensor_type.shape
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in shape.dim]
    input_hw = (dims[2], dims[3]) if len(dims) == 4 and dims[2] > 0 and dims[3] > 0 else None
    return ModelInfo(path=path, names=names, input_hw=input_hw)


def _names_list(names: Any) -> list[str]:
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    return [str(n) for n in names]


def offline_yolo():
    """ultralytics' YOLO class with its network access switched off: nothing is ever downloaded.

    YOLO_OFFLINE turns off the online checks; the data-set check still probes GitHub for a plotting
    font (plots are off in training), so that lookup is limited to fonts already on the machine.
    """
    os.environ["YOLO_OFFLINE"] = "1"
    from ultralytics import YOLO
    from ultralytics.data import utils as data_utils

    data_utils.check_font = local_font
    return YOLO


def use_cpu_threads(model, threads: int = 0) -> None:
    """Have ``model``'s trainer and validator run torch on ``threads`` threads (0: every core).

    ultralytics sets torch to one thread fewer than the cores whenever it selects the CPU: one
    thread on a 2-core machine, which leaves half of it idle in training and validation.
    """
    count = threads or os.cpu_count() or 1

    def set_threads(_component) -> None:
        import torch

        torch.set_num_threads(count)

    for event in ("on_pretrain_routine_start", "on_val_start"):
        model.add_callback(event, set_threads)


def local_font(font: str = "Arial.ttf") -> Path | None:
    """ultralytics' font lookup without the download: the font if it is already in its config folder."""
    from ultralytics.utils import USER_CONFIG_DIR

    path = USER_CONFIG_DIR / Path(font).name
    return path if path.exists() else None


def load_head(checkpoint: Path):
    """ultralytics' fused DetectionModel as a torch module returning only ``output0``."""
    import torch

    YOLO = offline_yolo()

    class Head(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            output = self.model(images)
            return output[0] if isinstance(output, tuple | list) else output

    return Head(YOLO(str(checkpoint), task="detect").model.float().fuse(verbose=False).eval())


def export_onnx_file(checkpoint: Path, out: Path, input_hw: tuple[int, int]) -> None:
    """ultralytics' ONNX export (static input, onnxslim), written to ``out``; nothing is downloaded."""
    YOLO = offline_yolo()

    with tempfile.TemporaryDirectory(prefix="racestack-detector-export-") as tmp:
        source = Path(tmp) / "model.pt"
        shutil.copyfile(checkpoint, source)
        exported = YOLO(str(source), task="detect").export(
            format="onnx",
            imgsz=list(input_hw),
            opset=OPSET,
            simplify=True,
            dynamic=False,
            device="cpu",
        )
        shutil.move(str(exported), out)


def network_spec(input_hw: tuple[int, int]) -> NetworkSpec:
    """The detector as racestack.inference sees it, for one fixed input size."""
    height, width = input_hw

    def example_inputs(_module: Any) -> tuple:
        import torch

        return (torch.zeros(1, 3, height, width),)

    return NetworkSpec(
        name=f"detector-{height}x{width}",
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        load_torch=load_head,
        example_inputs=example_inputs,
        opset=OPSET,
        tolerance=PARITY_TOLERANCE,
        export_onnx=partial(export_onnx_file, input_hw=input_hw),
    )


def to_numpy(value: Any) -> np.ndarray:
    """Runner outputs as numpy (TensorRT runners may hand back torch tensors)."""
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def keep_indices(global_ids: np.ndarray, classes: Sequence[str]) -> np.ndarray | None:
    """Model class indices whose racestack class is listed in ``classes`` (None = keep all)."""
    if not classes:
        return None
    unknown = [c for c in classes if c not in CLASS_ID]
    if unknown:
        raise ParameterError("classes", f"unknown class '{unknown[0]}' (known: {', '.join(CLASS_ID)})")
    wanted = np.array([CLASS_ID[c] for c in classes], dtype=np.int32)
    return np.flatnonzero(np.isin(global_ids, wanted))


class FlyingObjectDetector:
    """Image in, BOX2D table (racestack class ids, source-image pixels) out."""

    def __init__(self, config: DetectorConfig, log: Callable[[str], None] = print) -> None:
        info = read_model_info(config.weights)
        names = list(config.class_names) or info.names
        if not names:
            raise ParameterError("class_names", f"'{info.path}' carries no class names: set class_names")
        try:
            input_hw = check_input_size(config.input_size)
        except ValueError as exc:
            raise ParameterError("input_size", str(exc)) from exc
        if info.input_hw is not None and info.input_hw != input_hw:
            log(f"detector: '{info.path}' has a fixed input {info.input_hw}; input_size {input_hw} ignored")
            input_hw = info.input_hw
        if info.is_onnx and config.backend == "torch":
            raise ParameterError("backend", f"'torch' needs a .pt checkpoint, '{info.path}' is ONNX")
        self.info = info
        self.names = names
        self.input_hw = input_hw
        self.class_ids = global_class_ids(names)
        self.runner = create_runner(
            network_spec(input_hw),
            info.path,
            backend=config.backend,
            device=config.device,
            threads=config.threads,
            onnx_file=info.path if info.is_onnx else None,
            log=log,
            spinning=config.spinning,
        )
        self.backend = self.runner.backend
        self.preprocess = Preprocessor(input_hw)
        keep = keep_indices(self.class_ids, config.classes)
        self.postprocess = Postprocessor(self.class_ids, config.thresholds, keep)
        self.timing_ms = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}

    def infer(self, image: np.ndarray, bgr: bool = False):
        """Raw head output (1, 4 + nc, N) and the letterbox geometry, timing each stage."""
        start = time.perf_counter()
        tensor, geometry = self.preprocess(image, bgr)
        mid = time.perf_counter()
        output = to_numpy(self.runner(tensor)[0])
        self.timing_ms["preprocess"] = (mid - start) * 1e3
        self.timing_ms["inference"] = (time.perf_counter() - mid) * 1e3
        return output, geometry

    def detect(self, image: np.ndarray, bgr: bool = False) -> np.ndarray:
        output, geometry = self.infer(image, bgr)
        start = time.perf_counter()
        table = self.postprocess(output, geometry)
        self.timing_ms["postprocess"] = (time.perf_counter() - start) * 1e3
        return table

    def warmup(self, runs: int = 2) -> None:
        """First calls allocate and optimize: pay for them before the first real frame."""
        blank = np.full((*self.input_hw, 3), 114, dtype=np.uint8)
        for _ in range(runs):
            self.detect(blank)
