"""``racestack dataset <kind>``: export training data from simulator runs.

Each kind is written by the module that trains on it (it knows its format best); this command only
routes to it. Exporters expose ``configure(parser)`` and ``run(args) -> int`` like every racestack
command, drive ``simulation.Simulation`` headless, and must never use ``config/scenarios/heldout/``
for training data (``simulation.scenario.list_scenarios`` lists the training ones).
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

EXPORTERS: dict[str, tuple[str, str]] = {
    "bev": ("perception_nodes.ppn.dataset", "BEV inputs, segmentation labels, reconstruction targets"),
    "detector": ("perception_nodes.flying_objects.dataset", "YOLO-format flying-object images"),
    "tracking": ("perception_nodes.tracking.dataset", "tracking sequences (noisy detections + GT ids)"),
    "planning": ("planning_nodes.dataset", "expert trajectories and future occupancy"),
}


def exporter(kind: str) -> ModuleType:
    """The exporter module of ``kind``; a clear error when it is not part of this install yet."""
    module_name = EXPORTERS[kind][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise SystemExit(f"racestack dataset {kind}: exporter '{module_name}' is not available ({exc})") from exc
        raise
    missing = [name for name in ("configure", "run") if not hasattr(module, name)]
    if missing:
        raise SystemExit(f"racestack dataset {kind}: '{module_name}' lacks {', '.join(missing)}()")
    return module


def configure(parser: argparse.ArgumentParser) -> None:
    kinds = ", ".join(f"{k} ({text})" for k, (_, text) in EXPORTERS.items())
    parser.add_argument("kind", choices=sorted(EXPORTERS), help=f"what to export: {kinds}")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="the exporter's own options (see KIND --help)")


def run(args: argparse.Namespace) -> int:
    module = exporter(args.kind)
    parser = argparse.ArgumentParser(prog=f"racestack dataset {args.kind}", description=EXPORTERS[args.kind][1])
    module.configure(parser)
    return int(module.run(parser.parse_args(args.rest)) or 0)

