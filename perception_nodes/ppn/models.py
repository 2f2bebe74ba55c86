"""PPN checkpoints (weights + the configuration they were trained with) and their NetworkSpecs.

A checkpoint is a ``torch.save`` dictionary: ``kind`` (segmentation | reconstruction), ``config``
(PpnConfig as a dict), ``state_dict`` and ``metrics``. The NetworkSpecs let racestack.inference
export ONNX on demand and run any backend from the same file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from perception_nodes.ppn.config import PpnConfig
from perception_nodes.ppn.networks import ReconstructionOutput, build
from racestack.errors import ModelFileError
from racestack.inference import NetworkSpec, check_model_file
from racestack.paths import models_dir

KINDS = ("segmentation", "reconstruction")
OUTPUT_NAMES = {"segmentation": "logits", "reconstruction": "scene"}
# Exported graphs of the same weights that differ: ONNX files cached before the reconstruction
# output went channels last must not be taken for the new layout.
EXPORT_TAGS = {"segmentation": "", "reconstruction": "hwc"}


def default_checkpoint(kind: str, config_name: str = "lite") -> Path:
    return models_dir() / f"ppn_{config_name}" / f"{kind}.pt"


def save_checkpoint(
    path: Path, kind: str, net: torch.nn.Module, config: PpnConfig, metrics: dict[str, Any] | None = None
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    payload = {"kind": kind, "config": config.to_dict(), "state_dict": state, "metrics": metrics or {}}
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def read_checkpoint(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The checkpoint dictionary; ModelFileError naming the path when missing, corrupt or of another kind."""
    path = check_model_file(path, "PPN checkpoint", "train one with `racestack train ppn`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(str(path), f"not a readable PyTorch checkpoint ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(payload, dict) or not {"kind", "config", "state_dict"} <= set(payload):
        raise ModelFileError(str(path), "not a PPN checkpoint (needs kind, config and state_dict)")
    if kind is not None and payload["kind"] != kind:
        raise ModelFileError(str(path), f"holds a {payload['kind']} network, expected {kind}")
    return payload


def load_network(path: str | Path, kind: str | None = None) -> tuple[torch.nn.Module, PpnConfig]:
    """The trained network (eval mode, CPU) and its configuration."""
    payload = read_checkpoint(path, kind)
    try:
        config = PpnConfig.from_dict(payload["config"])
        net = build(payload["kind"], config)
        net.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelFileError(str(path), f"weights do not fit the stored configuration: {exc}") from exc
    return net.eval(), config


def deployed(path: Path, kind: str) -> torch.nn.Module:
    """The module a node runs: segmentation logits, or reconstruction probabilities + height."""
    net, _ = load_network(path, kind)
    return net if kind == "segmentation" else ReconstructionOutput(net).eval()


def network_spec(kind: str) -> NetworkSpec:
    if kind not in KINDS:
        raise ValueError(f"unknown PPN network '{kind}'")

    def example_inputs(module: torch.nn.Module) -> tuple[torch.Tensor]:
        net = module if kind == "segmentation" else module.net
        bev = net.ppn_config.bev
        generator = torch.Generator().manual_seed(0)
        x = (torch.rand(1, bev.channels, bev.cells, bev.cells, generator=generator) > 0.8).float()
        return (x,)

    return NetworkSpec(
        name=f"ppn_{kind}",
        input_names=["bev"],
        output_names=[OUTPUT_NAMES[kind]],
        load_torch=lambda path: deployed(path, kind),
        example_inputs=example_inputs,
        tolerance=2e-3,
        export_tag=EXPORT_TAGS[kind],
    )
