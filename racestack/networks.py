"""Every network of the stack, by name: its NetworkSpec and its committed checkpoint.

``racestack export``, ``racestack build-engines`` and the GPU check iterate over this table, so a
new network plugs into export, engines and parity checks by adding one line.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from racestack.inference import NetworkSpec, ensure_onnx
from racestack.paths import models_dir


@dataclass(frozen=True)
class NetworkEntry:
    factory: str
    checkpoint: str
    args: tuple[Any, ...] = field(default_factory=tuple)

    def spec(self) -> NetworkSpec:
        module, _, name = self.factory.partition(":")
        target = getattr(importlib.import_module(module), name)
        return target(*self.args) if callable(target) and not isinstance(target, NetworkSpec) else target


NETWORKS: dict[str, NetworkEntry] = {
    "ppn_segmentation": NetworkEntry(
        "perception_nodes.ppn.models:network_spec", "ppn_lite/segmentation.pt", ("segmentation",)
    ),
    "ppn_reconstruction": NetworkEntry(
        "perception_nodes.ppn.models:network_spec", "ppn_lite/reconstruction.pt", ("reconstruction",)
    ),
    "detector": NetworkEntry(
        "perception_nodes.flying_objects.detector:network_spec", "detector_yolov8n/weights.pt", ((416, 416),)
    ),
    "tracker_3dmotformer": NetworkEntry(
        "perception_nodes.tracking.model:NETWORK_SPEC", "tracker_3dmotformer/tracker_3dmotformer.pt"
    ),
    "riskmap": NetworkEntry("planning_nodes.riskmap.model:RISKMAP_SPEC", "riskmap/riskmap.pt"),
}


def resolve_networks(names: list[str], checkpoint: str = "") -> list[tuple[NetworkSpec, Path]]:
    """(spec, checkpoint) for the named networks ('all' = every one)."""
    chosen = list(NETWORKS) if not names or names == ["all"] else names
    unknown = [n for n in chosen if n not in NETWORKS]
    if unknown:
        raise SystemExit(f"unknown network '{unknown[0]}' (known: {', '.join(NETWORKS)})")
    if checkpoint and len(chosen) != 1:
        raise SystemExit("--checkpoint needs exactly one network")
    return [
        (NETWORKS[n].spec(), Path(checkpoint) if checkpoint else models_dir() / NETWORKS[n].checkpoint)
        for n in chosen
    ]


# what the default graph's nodes load with their committed checkpoints (the detector node exports
# its own input size itself)
GRAPH_NETWORKS = ("ppn_segmentation", "ppn_reconstruction", "tracker_3dmotformer", "riskmap")


def prepare_onnx_files(log: Callable[[str], None], names: tuple[str, ...] = GRAPH_NETWORKS) -> None:
    """Export into the cache, one after the other, the ONNX files the nodes would otherwise export
    all at once as they start on a fresh machine: four exports together on two cores held the nodes'
    start-up for tens of seconds, with their DDS participants already up but not served."""
    for spec, checkpoint in resolve_networks(list(names)):
        if checkpoint.is_file():
            ensure_onnx(spec, checkpoint, log)
