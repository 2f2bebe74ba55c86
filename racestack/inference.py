"""One inference interface behind every node's ``backend`` parameter: PyTorch, ONNX Runtime, TensorRT.

A network is described once by a ``NetworkSpec`` (how to load its checkpoint, its named inputs and
outputs, an example input for export). ``create_runner`` turns a checkpoint into a runner for the
chosen backend; ONNX files are exported on demand into a cache keyed by the checkpoint's hash, so
a fresh machine needs only the committed checkpoint. TensorRT engines: see racestack.engines.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from racestack.errors import ModelFileError, ParameterError

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")


@dataclass
class NetworkSpec:
    """How to load, export and call one network."""

    name: str
    input_names: Sequence[str]
    output_names: Sequence[str]
    load_torch: Callable[[Path], Any]
    example_inputs: Callable[[Any], tuple]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    opset: int = 17
    tolerance: float = 1e-4
    export_onnx: Callable[[Path, Path], None] | None = None
    dim_ranges: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    export_tag: str = ""  # part of the cached ONNX file's name: a change of the graph that the weights do not show


def cache_dir() -> Path:
    root = Path(os.environ.get("RACESTACK_CACHE", Path.home() / ".cache" / "racestack"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def file_digest(path: Path, length: int = 16) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def check_model_file(path: str | Path, what: str = "checkpoint", hint: str = "") -> Path:
    """The path if it is a readable file, else ModelFileError naming it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelFileError(str(path), f"{what} does not exist", hint)
    if not os.access(path, os.R_OK) or path.stat().st_size == 0:
        raise ModelFileError(str(path), f"{what} is empty or unreadable", hint)
    return path


def default_threads() -> int:
    """Threads per process: RACESTACK_THREADS/OMP_NUM_THREADS (set by the launcher), else 0 = library default."""
    for var in ("RACESTACK_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def onnx_path_for(spec: NetworkSpec, checkpoint: Path) -> Path:
    tag = f"-{spec.export_tag}" if spec.export_tag else ""
    return cache_dir() / "onnx" / f"{spec.name}{tag}-{file_digest(checkpoint)}.onnx"


def export_onnx(spec: NetworkSpec, checkpoint: Path, out: Path | None = None, verify: bool = True) -> Path:
    """Export the checkpoint to ONNX (atomically) and check ONNX Runtime against PyTorch."""
    import torch

    out = out or onnx_path_for(spec, checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp.onnx")
    if spec.export_onnx is not None:
        spec.export_onnx(checkpoint, tmp)
    else:
        module = spec.load_torch(checkpoint).eval()
        inputs = spec.example_inputs(module)
        with torch.inference_mode():
            torch.onnx.export(
                module,
                inputs,
                str(tmp),
                input_names=list(spec.input_names),
                output_names=list(spec.output_names),
                dynamic_axes=spec.dynamic_axes or None,
                opset_version=spec.opset,
                dynamo=False,
            )
    os.replace(tmp, out)
    if verify and spec.export_onnx is None:
        difference = parity(spec, checkpoint, out)
        if difference > spec.tolerance:
            raise RuntimeError(f"{spec.name}: ONNX Runtime differs from PyTorch by {difference:.2e}")
    return out


def parity(spec: NetworkSpec, checkpoint: Path, onnx_file: Path) -> float:
    """Largest absolute difference between PyTorch and ONNX Runtime outputs on the example input."""
    module = spec.load_torch(checkpoint).eval()
    inputs = tuple(t.numpy() for t in spec.example_inputs(module))
    reference = TorchRunner(spec, checkpoint, "cpu")(*inputs)
    candidate = OnnxRunner(spec, onnx_file)(*inputs)
    return max(float(np.max(np.abs(a - b))) if a.size else 0.0 for a, b in zip(reference, candidate, strict=True))


class TorchRunner:
    """PyTorch in eval mode under inference_mode (the reference implementation)."""

    backend = "torch"

    def __init__(self, spec: NetworkSpec, checkpoint: Path, device: str = "cpu", threads: int = 0) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device(device)
        self.module = spec.load_torch(checkpoint).eval().to(self.device)

    def __call__(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        torch = self.torch
        with torch.inference_mode():
            inputs = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]
            outputs = self.module(*inputs)
            outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
            return tuple(o.detach().cpu().numpy() for o in outputs)


class OnnxRunner:
    """ONNX Runtime on the CPU (or CUDA when its provider is installed)."""

    backend = "onnxruntime"

    def __init__(
        self, spec: NetworkSpec, onnx_file: Path, device: str = "cpu", threads: int = 0, spinning: bool = False
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        # idle pool threads sleep instead of spinning where the stack's processes share a few cores;
        # a pool with cores of its own saves their wake-ups (the detector at 2 threads: 5 ms a frame)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            index = int(device.partition(":")[2] or 0)
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
        try:
            self.session = ort.InferenceSession(str(onnx_file), options, providers=providers)
        except Exception as exc:
            raise ModelFileError(str(onnx_file), f"ONNX Runtime cannot load it: {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = list(spec.output_names) or [o.name for o in self.session.get_outputs()]

    def __call__(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        feeds = dict(zip(self.input_names, arrays, strict=True))
        return tuple(self.session.run(self.output_names, feeds))


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def create_runner(
    spec: NetworkSpec,
    checkpoint: str | Path,
    backend: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
    onnx_file: str | Path | None = None,
    precision: str = "fp16",
    log: Callable[[str], None] = print,
    spinning: bool = False,
):
    """A runner for ``backend``; ``spinning``: ONNX Runtime's idle pool threads spin between operators.

    ``auto`` = TensorRT when a GPU, TensorRT and a built engine exist, else ONNX Runtime, else PyTorch.
    ``tensorrt`` without an engine for this GPU fails at start-up naming the file and the build command.
    """
    if backend not in BACKENDS:
        raise ParameterError("backend", f"'{backend}' is not one of {list(BACKENDS)}")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ParameterError("device", f"'{device}' is neither 'cpu' nor 'cuda[:N]'")
    if device.startswith("cuda") and not cuda_available():
        raise ParameterError("device", f"'{device}' requested but no CUDA device is available")
    threads = default_threads() if threads is None else threads
    checkpoint = check_model_file(checkpoint)
    runner = None
    if backend == "tensorrt" or (backend == "auto" and _tensorrt_usable(device)):
        runner = _tensorrt_runner(spec, checkpoint, device, precision, onnx_file, strict=backend == "tensorrt", log=log)
    if runner is None and backend in ("auto", "onnxruntime") and (backend == "onnxruntime" or _has_onnxruntime()):
        onnx = check_model_file(onnx_file, "ONNX file") if onnx_file else ensure_onnx(spec, checkpoint, log)
        runner = OnnxRunner(spec, onnx, device, threads, spinning)
    if runner is None:
        runner = TorchRunner(spec, checkpoint, device, threads)
    log(f"{spec.name}: backend {runner.backend} on {device} (asked: {backend})")
    return runner


def _tensorrt_runner(spec, checkpoint, device, precision, onnx_file, strict: bool, log):
    """A TensorRT runner; with ``strict`` a missing engine is a start-up error, else None (fall back)."""
    from racestack.engines import TensorRTRunner, engine_for

    if not device.startswith("cuda"):
        raise ParameterError("device", "backend 'tensorrt' needs a CUDA device (e.g. cuda:0)")
    onnx = Path(onnx_file) if onnx_file else ensure_onnx(spec, checkpoint, log)
    try:
        engine = engine_for(spec, onnx, device, precision, build=False, log=log)
    except ModelFileError as exc:
        if strict:
            raise
        log(f"{spec.name}: {exc}; falling back")
        return None
    return TensorRTRunner(spec, engine, device)


def _tensorrt_usable(device: str) -> bool:
    if not (device.startswith("cuda") and cuda_available()):
        return False
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def ensure_onnx(spec: NetworkSpec, checkpoint: Path, log: Callable[[str], None]) -> Path:
    """The cached ONNX file of ``checkpoint``, exported first if missing."""
    path = onnx_path_for(spec, checkpoint)
    if not path.is_file():
        log(f"{spec.name}: exporting {checkpoint} to {path}")
        export_onnx(spec, checkpoint, path)
    return path
