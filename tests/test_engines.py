"""Engine cache keys (CPU-testable): a changed ONNX, precision, GPU or TensorRT means another engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from racestack.engines import Machine, engine_key, engine_path, stale_engines
from racestack.errors import ModelFileError, ParameterError
from racestack.inference import create_runner

H100 = Machine(tensorrt="10.16.1", gpu="NVIDIA H100 80GB HBM3", capability="9.0")
RANGES = {"D": (1, 50, 256)}


def _path(tmp_path: Path, **changes) -> Path:
    args = {"network": "tracker", "onnx_digest": "aa", "precision": "fp16", "machine": H100, "dim_ranges": RANGES}
    args.update(changes)
    return engine_path(engine_key(**args), tmp_path)


def test_key_changes_with_every_input(tmp_path: Path) -> None:
    base = _path(tmp_path)
    assert base == _path(tmp_path)
    variants = [
        _path(tmp_path, onnx_digest="bb"),
        _path(tmp_path, precision="fp32"),
        _path(tmp_path, machine=Machine("11.4.0", H100.gpu, H100.capability)),
        _path(tmp_path, machine=Machine(H100.tensorrt, "NVIDIA H200", "9.0")),
        _path(tmp_path, dim_ranges={"D": (1, 50, 512)}),
    ]
    assert len({base, *variants}) == 1 + len(variants)
    assert base.name.startswith("tracker-fp16-") and base.suffix == ".engine"


def test_engine_for_another_gpu_or_version_is_detected_as_stale(tmp_path: Path) -> None:
    old = engine_key("tracker", "aa", "fp16", Machine("10.13.0", "NVIDIA A100", "8.0"), RANGES)
    path = engine_path(old, tmp_path)
    path.write_bytes(b"engine")
    path.with_suffix(".json").write_text(json.dumps(old))
    other_model = engine_key("tracker", "zz", "fp16", Machine("10.13.0", "NVIDIA A100", "8.0"), RANGES)
    engine_path(other_model, tmp_path).with_suffix(".json").write_text(json.dumps(other_model))
    current = engine_key("tracker", "aa", "fp16", H100, RANGES)
    stale = stale_engines(current, tmp_path)
    assert [s["gpu"] for s in stale] == ["NVIDIA A100"]
    assert stale_engines(old, tmp_path) == []


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision"):
        engine_key("x", "aa", "int8", H100, {})


def test_tensorrt_backend_needs_a_gpu(tmp_path: Path) -> None:
    from perception_nodes.tracking.model import NETWORK_SPEC

    checkpoint = tmp_path / "missing.pt"
    with pytest.raises(ModelFileError, match=str(checkpoint)):
        create_runner(NETWORK_SPEC, checkpoint, backend="onnxruntime")
    checkpoint.write_bytes(b"x")
    with pytest.raises(ParameterError, match="'device'"):
        create_runner(NETWORK_SPEC, checkpoint, backend="tensorrt", device="cuda:0")
    with pytest.raises(ParameterError, match="'backend'"):
        create_runner(NETWORK_SPEC, checkpoint, backend="tflite")
