"""``racestack ablate``: the same scenarios (closed loop) or bags (replayed) under several graph variants.

``--swap tracker=3dmotformer,kalman,greedy`` makes one variant per listed implementation (the
others slots keep their defaults), ``--disable NODE`` one variant without that node; every variant
runs on every scenario or bag, and one table compares them (means over the runs).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from racestack.bags import BagError
from racestack.evaluation.runner import MODES, EvaluationError, StackOptions, run_closed_loop, run_on_bag
from racestack.evaluation.scoring import Scorecard, score
from racestack.graph import GraphError

COLUMNS = (
    ("tracking.amota", "AMOTA"),
    ("tracking.car.amota", "car AMOTA"),  # the flying classes, few and far, pull the mean down
    ("tracking.mota", "MOTA"),
    ("tracking.ids", "IDS"),
    ("segmentation.miou", "seg mIoU"),
    ("detection.map50", "det mAP50"),
    ("closed_loop.collisions", "collisions"),
    ("closed_loop.track_limit_violations", "track limits"),
    ("closed_loop.distance", "distance m"),
    ("planning.l2_1s_to_driven", "L2@1s"),
    ("planning.l2_3s_to_driven", "L2@3s"),
)
LATENCY_COLUMNS = (
    ("/perception/bev/segmentation", "seg ms p50/p99"),
    ("/perception/bev/reconstruction", "recon ms p50/p99"),
    ("/perception/objects/tracked", "tracks ms p50/p99"),
    ("end_to_end", "e2e ms p50/p99"),
)


@dataclass
class Variant:
    name: str
    swap: list[str] = field(default_factory=list)
    disable: list[str] = field(default_factory=list)


def variants_of(swaps: list[str], disables: list[str]) -> list[Variant]:
    """The baseline, then one variant per alternative implementation or disabled node."""
    variants = [Variant("baseline")]
    for item in swaps:
        slot, sep, choices = item.partition("=")
        if not sep or not choices:
            raise GraphError(f"--swap expects SLOT=IMPL[,IMPL...], got '{item}'")
        variants += [Variant(f"{slot}={impl}", swap=[f"{slot}={impl}"]) for impl in choices.split(",") if impl]
    variants += [Variant(f"without {node}", disable=[node]) for node in disables]
    return variants


def mean(values: list[float]) -> float:
    finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def row_of(cards: list[Scorecard]) -> dict[str, float | str]:
    row: dict[str, float | str] = {}
    for key, _ in COLUMNS:
        row[key] = mean([c.metrics.get(key, float("nan")) for c in cards])
    for key, _ in LATENCY_COLUMNS:
        p50 = mean([c.latency.get(key, {}).get("p50", float("nan")) for c in cards])
        p99 = mean([c.latency.get(key, {}).get("p99", float("nan")) for c in cards])
        row[key] = f"{p50:.0f}/{p99:.0f}" if math.isfinite(p50) else "-"
    return row


def table(rows: dict[str, dict[str, float | str]]) -> str:
    headers = ["variant", *(h for _, h in COLUMNS), *(h for _, h in LATENCY_COLUMNS)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for name, row in rows.items():
        cells = [f"{row[k]:.3g}" if isinstance(row[k], float) else str(row[k]) for k, _ in COLUMNS]
        cells = ["-" if c == "nan" else c for c in cells]
        lines.append("| " + " | ".join([name, *cells, *(str(row[k]) for k, _ in LATENCY_COLUMNS)]) + " |")
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--graph", default="default")
    parser.add_argument("--swap", action="append", default=[], metavar="SLOT=IMPL[,IMPL...]")
    parser.add_argument("--disable", action="append", default=[], metavar="NODE")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE", help="for every variant")
    parser.add_argument("--scenarios", default="oval_pack,circuit_heldout_a",
                        help="comma-separated scenarios, run closed loop (ignored with --bags)")
    parser.add_argument("--bags", nargs="*", default=[], help="evaluate these bags instead of scenarios")
    parser.add_argument("--duration", type=float, default=20.0, help="simulated seconds per closed-loop run")
    parser.add_argument("--mode", choices=MODES, default="lockstep", help="bag replay mode")
    parser.add_argument("--clock", choices=MODES, default="lockstep", help="simulator clock")
    parser.add_argument("-o", "--out", default="", help="folder for runs and the table")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out or f"reports/ablation-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        variants = variants_of(args.swap, args.disable)
    except GraphError as exc:
        print(f"racestack ablate: {exc}", file=sys.stderr)
        return 2
    inputs = args.bags or [s for s in args.scenarios.split(",") if s]
    rows, failures = {}, 0
    for variant in variants:
        options = StackOptions(args.graph, variant.swap, args.set, variant.disable)
        cards = []
        for source in inputs:
            folder = out / variant.name.replace(" ", "_").replace("=", "-") / Path(source).stem
            print(f"== {variant.name} on {source}", flush=True)
            try:
                if args.bags:
                    result = run_on_bag(source, options, folder, args.mode)
                    cards.append(score([Path(source), result.output_bag], result))
                else:
                    result = run_closed_loop(options, source, args.duration, folder, clock=args.clock,
                                             record_all=False)
                    cards.append(score([result.output_bag], result))
                failures += bool(result.failures)
            except (EvaluationError, BagError, GraphError, FileNotFoundError) as exc:
                print(f"racestack ablate: {variant.name} on {source}: {exc}", file=sys.stderr)
                failures += 1
        rows[variant.name] = row_of(cards)
    text = table(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.md").write_text(f"# Ablation on {', '.join(map(str, inputs))}\n\n{text}\n")
    (out / "ablation.json").write_text(json.dumps(rows, indent=2))
    print(f"\n{text}\n\ntable: {out / 'ablation.md'}")
    return 1 if failures else 0
