"""TensorRT engines: built once per machine from the ONNX files, cached, never on the hot path.

The cache key is the ONNX file's hash, the TensorRT version, the GPU (name and compute capability),
the precision and the dynamic-shape ranges: an engine built for another GPU or TensorRT version has
another key, is detected, and is rebuilt rather than loaded. FP16 uses the builder flag on TensorRT 10
and a strongly typed FP16 ONNX (FP32 inputs/outputs) on TensorRT 11, which removed weak typing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from racestack.errors import ModelFileError
from racestack.inference import NetworkSpec, cache_dir, file_digest

PRECISIONS = ("fp16", "fp32")
DEFAULT_DIM_RANGE = (1, 32, 256)
WORKSPACE_BYTES = 4 << 30


@dataclass(frozen=True)
class Machine:
    """What an engine is only valid for."""

    tensorrt: str
    gpu: str
    capability: str


def current_machine(device: str) -> Machine:
    import tensorrt as trt
    import torch

    index = torch.device(device).index or 0
    major, minor = torch.cuda.get_device_capability(index)
    return Machine(tensorrt=trt.__version__, gpu=torch.cuda.get_device_name(index), capability=f"{major}.{minor}")


def engine_key(
    network: str, onnx_digest: str, precision: str, machine: Machine, dim_ranges: dict[str, Sequence[int]]
) -> dict[str, Any]:
    """Everything an engine depends on; any change means another engine file."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
    return {
        "network": network,
        "onnx_sha256": onnx_digest,
        "precision": precision,
        "tensorrt": machine.tensorrt,
        "gpu": machine.gpu,
        "capability": machine.capability,
        "dim_ranges": {k: list(v) for k, v in sorted(dim_ranges.items())},
    }


def engine_path(key: dict[str, Any], root: Path | None = None) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return (root or cache_dir() / "engines") / f"{key['network']}-{key['precision']}-{digest}.engine"


def stale_engines(key: dict[str, Any], root: Path | None = None) -> list[dict[str, Any]]:
    """Cached engines of the same network, ONNX and precision built for another GPU or TensorRT."""
    folder = root or cache_dir() / "engines"
    found = []
    for sidecar in sorted(folder.glob(f"{key['network']}-{key['precision']}-*.json")):
        other = json.loads(sidecar.read_text())
        same_model = other.get("onnx_sha256") == key["onnx_sha256"]
        if same_model and any(other.get(k) != key[k] for k in ("tensorrt", "gpu", "capability")):
            found.append(other)
    return found


def dim_ranges_of(spec: NetworkSpec, onnx_file: Path) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) of every named dynamic dimension of the ONNX inputs."""
    import onnx

    model = onnx.load(str(onnx_file), load_external_data=False)
    names = {
        dim.dim_param
        for tensor in model.graph.input
        for dim in tensor.type.tensor_type.shape.dim
        if dim.dim_param
    }
    return {name: tuple(spec.dim_ranges.get(name, DEFAULT_DIM_RANGE)) for name in sorted(names)}


def engine_for(
    spec: NetworkSpec,
    onnx_file: Path,
    device: str,
    precision: str,
    build: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """The engine valid for this machine; stale ones are rebuilt, missing ones built only if ``build``."""
    ranges = dim_ranges_of(spec, onnx_file)
    key = engine_key(spec.name, file_digest(onnx_file, 64), precision, current_machine(device), ranges)
    path = engine_path(key)
    if path.is_file() and path.with_suffix(".json").is_file():
        return path
    stale = stale_engines(key)
    for other in stale:
        log(
            f"{spec.name}: cached engine was built for {other['gpu']} / TensorRT {other['tensorrt']}; "
            f"not loading it, rebuilding for {key['gpu']} / TensorRT {key['tensorrt']}"
        )
    if not (build or stale):
        raise ModelFileError(
            str(path),
            f"no TensorRT {precision} engine for {key['gpu']} / TensorRT {key['tensorrt']}",
            hint=f"build it once with: racestack build-engines {spec.name} --device {device} --precision {precision}",
        )
    return build_engine(spec, onnx_file, key, path, ranges, log)


def build_engine(
    spec: NetworkSpec,
    onnx_file: Path,
    key: dict[str, Any],
    path: Path,
    ranges: dict[str, tuple[int, int, int]],
    log: Callable[[str], None] = print,
) -> Path:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    weak_fp16 = key["precision"] == "fp16" and hasattr(trt.BuilderFlag, "FP16")
    source = onnx_file
    flags = 0
    if key["precision"] == "fp16" and not weak_fp16:
        source = fp16_onnx(onnx_file)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelFileError(str(source), f"TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if weak_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    timing_file = path.parent / f"timing-{key['gpu'].replace(' ', '_')}-{key['tensorrt']}.cache"
    timing = config.create_timing_cache(timing_file.read_bytes() if timing_file.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    _add_profile(builder, network, config, onnx_file, ranges)
    log(f"{spec.name}: building TensorRT {key['precision']} engine on {key['gpu']} (this can take minutes)")
    start = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{spec.name}: TensorRT failed to build an engine from {source}")
    path.parent.mkdir(parents=True, exist_ok=True)
    timing_file.write_bytes(bytes(config.get_timing_cache().serialize()))
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(bytes(serialized))
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(key, indent=2, sort_keys=True))
    log(f"{spec.name}: engine {path.name} built in {time.monotonic() - start:.0f} s")
    return path


def _add_profile(builder, network, config, onnx_file: Path, ranges: dict[str, tuple[int, int, int]]) -> None:
    """One optimization profile covering every dynamic input dimension's (min, opt, max)."""
    if not ranges:
        return
    import onnx

    symbols = {
        tensor.name: [dim.dim_param for dim in tensor.type.tensor_type.shape.dim]
        for tensor in onnx.load(str(onnx_file), load_external_data=False).graph.input
    }
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        bounds = []
        for which in range(3):
            dims = [
                ranges[symbols[tensor.name][axis]][which] if size < 0 else size for axis, size in enumerate(shape)
            ]
            bounds.append(tuple(dims))
        profile.set_shape(tensor.name, *bounds)
    config.add_optimization_profile(profile)


def fp16_onnx(onnx_file: Path) -> Path:
    """An FP16 copy of the model with FP32 inputs and outputs (for strongly typed builds)."""
    import onnx
    from onnxconverter_common import float16

    out = onnx_file.with_suffix(".fp16.onnx")
    if not out.is_file():
        model = float16.convert_float_to_float16(onnx.load(str(onnx_file)), keep_io_types=True)
        onnx.save(model, str(out))
    return out


class TensorRTRunner:
    """A TensorRT engine on its own CUDA stream; I/O as torch CUDA tensors, one sync to hand back numpy."""

    backend = "tensorrt"

    def __init__(self, spec: NetworkSpec, engine_file: Path, device: str = "cuda:0", warmup: int = 3) -> None:
        import tensorrt as trt
        import torch

        self.torch = torch
        self.device = torch.device(device)
        torch.cuda.set_device(self.device)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(engine_file).read_bytes())
        if self.engine is None:
            raise ModelFileError(str(engine_file), "TensorRT cannot deserialize it (other version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device=self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.input_names = [n for n in spec.input_names if n in inputs] or inputs
        self.output_names = [n for n in spec.output_names if n in names and n not in inputs] or [
            n for n in names if n not in inputs
        ]
        self.dtypes = {n: _torch_dtype(torch, trt, self.engine.get_tensor_dtype(n)) for n in names}
        self._outputs: dict[str, Any] = {}
        self._warmup(warmup)

    def _warmup(self, runs: int) -> None:
        """First inferences are slow (lazy kernel loading): pay that at start-up, at the profile's opt shape."""
        zeros = []
        for name in self.input_names:
            shape = tuple(self.engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                shape = tuple(self.engine.get_tensor_profile_shape(name, 0)[1])
            zeros.append(self.torch.zeros(shape, dtype=self.dtypes[name], device=self.device))
        for _ in range(runs):
            self.run_torch(*zeros)
        self.stream.synchronize()

    def run_torch(self, *tensors) -> tuple:
        """Enqueue on the runner's stream; returns CUDA tensors without synchronizing."""
        torch = self.torch
        with torch.cuda.stream(self.stream):
            keep = []
            for name, tensor in zip(self.input_names, tensors, strict=True):
                tensor = tensor.to(self.device, self.dtypes[name], non_blocking=True).contiguous()
                keep.append(tensor)
                self.context.set_input_shape(name, tuple(tensor.shape))
                self.context.set_tensor_address(name, tensor.data_ptr())
            outputs = []
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                buffer = self._outputs.get(name)
                if buffer is None or tuple(buffer.shape) != shape:
                    buffer = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
                    self._outputs[name] = buffer
                self.context.set_tensor_address(name, buffer.data_ptr())
                outputs.append(buffer)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            self._keep = keep
        return tuple(outputs)

    def __call__(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        torch = self.torch
        outputs = self.run_torch(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        self.stream.synchronize()
        return tuple(o.float().cpu().numpy() if o.dtype == torch.float16 else o.cpu().numpy() for o in outputs)


def _torch_dtype(torch, trt, dtype):
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int64: torch.int64,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    return table[dtype]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("networks", nargs="*", default=["all"], help="network names (racestack export --list)")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--precision", choices=[*PRECISIONS, "both"], default="fp16")
    parser.add_argument("--checkpoint", default="", help="checkpoint to build from (one network only)")


def run(args: argparse.Namespace) -> int:
    from racestack.inference import cuda_available, export_onnx, onnx_path_for
    from racestack.networks import resolve_networks

    if not cuda_available():
        print("racestack build-engines: no CUDA device here; engines are built on the GPU that runs them")
        return 2
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        print("racestack build-engines: TensorRT is not installed (pip install '.[tensorrt]')")
        return 2
    precisions = PRECISIONS if args.precision == "both" else (args.precision,)
    entries = resolve_networks(args.networks, args.checkpoint)
    for index, (spec, checkpoint) in enumerate(entries, 1):
        onnx_file = onnx_path_for(spec, checkpoint)
        if not onnx_file.is_file():
            print(f"[{index}/{len(entries)}] {spec.name}: exporting ONNX", flush=True)
            export_onnx(spec, checkpoint, onnx_file)
        for precision in precisions:
            print(f"[{index}/{len(entries)}] {spec.name} {precision}", flush=True)
            path = engine_for(spec, onnx_file, args.device, precision, build=True)
            print(f"    -> {path}", flush=True)
    return 0
