"""``racestack ablate``: the same scenarios (closed loop) or bags (replayed) under several graph variants.

``--swap tracker=3dmotformer,kalman,greedy`` makes one variant per listed implementation (the
others slots keep their defaults), ``--disable NODE`` one variant without that node; every variant
runs on every scenario or bag, and one table compares them (means over the runs).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
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
# events are summed over the runs (one collision in eight runs reads "1", not "0.125"); the rest are means
COUNTS = {"tracking.ids", "closed_loop.collisions", "closed_loop.track_limit_violations"}
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


def finite(values: list) -> list[float]:
    return [v for v in values if isinstance(v, int | float) and math.isfinite(v)]


def mean(values: list) -> float:
    kept = finite(values)
    return sum(kept) / len(kept) if kept else float("nan")


def row_of(cards: list[Scorecard], runs: int) -> dict[str, float | str]:
    """One variant's row: ``runs`` asked for, ``len(cards)`` scored (a failed run has no card)."""
    row: dict[str, float | str] = {"runs": f"{len(cards)}/{runs}"}
    for key, _ in COLUMNS:
        values = finite([c.metrics.get(key) for c in cards])
        row[key] = float(sum(values)) if key in COUNTS and values else mean(values)
    for key, _ in LATENCY_COLUMNS:
        p50 = mean([c.latency.get(key, {}).get("p50", float("nan")) for c in cards])
        p99 = mean([c.latency.get(key, {}).get("p99", float("nan")) for c in cards])
        row[key] = f"{p50:.0f}/{p99:.0f}" if math.isfinite(p50) else "-"
    return row


def _cell(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return "-" if math.isnan(value) else f"{value:.3g}"


def table(rows: dict[str, dict[str, float | str]]) -> str:
    """Markdown: one line per variant (the first column names it: variant, or variant / source)."""
    keys = ["runs", *(k for k, _ in COLUMNS), *(k for k, _ in LATENCY_COLUMNS)]
    headers = ["variant", "runs", *(h for _, h in COLUMNS), *(h for _, h in LATENCY_COLUMNS)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for name, row in rows.items():
        lines.append("| " + " | ".join([name, *(_cell(row.get(k, float("nan"))) for k in keys)]) + " |")
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
    parser.add_argument("--keep-bags", action="store_true",
                        help="keep each run's recorded bag (~0.6 GB per 10 s closed-loop run); metrics.json stays")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out or f"reports/ablation-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        variants = variants_of(args.swap, args.disable)
    except GraphError as exc:
        print(f"racestack ablate: {exc}", file=sys.stderr)
        return 2
    inputs = args.bags or [s for s in args.scenarios.split(",") if s]
    rows, per_run, failures = {}, {}, 0
    for variant in variants:
        options = StackOptions(args.graph, variant.swap, args.set, variant.disable)
        cards = []
        for source in inputs:
            folder = out / variant.name.replace(" ", "_").replace("=", "-") / Path(source).stem
            print(f"== {variant.name} on {source}", flush=True)
            card, failed = _run_one(args, options, source, folder, variant.name)
            failures += failed
            if card is not None:
                cards.append(card)
                per_run[f"{variant.name} / {Path(source).stem}"] = row_of([card], 1)
                (folder / "metrics.json").write_text(json.dumps(card.as_dict(), indent=2, default=str))
        rows[variant.name] = row_of(cards, len(inputs))
    text = table(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.md").write_text(
        f"# Ablation on {', '.join(map(str, inputs))}\n\nMeans over the runs; IDS, collisions and track limits "
        f"are totals.\n\n{text}\n\n## Each run\n\n{table(per_run)}\n"
    )
    (out / "ablation.json").write_text(json.dumps({"variants": rows, "runs": per_run}, indent=2))
    print(f"\n{text}\n\ntable: {out / 'ablation.md'} (each run's row there too)")
    if failures:
        print(f"racestack ablate: {failures} run(s) failed; their variants' rows cover fewer runs (column runs)",
              file=sys.stderr)
    return 1 if failures else 0


def _run_one(
    args: argparse.Namespace, options: StackOptions, source: str, folder: Path, label: str
) -> tuple[Scorecard | None, bool]:
    """One variant on one scenario or bag: its scorecard (None when the run failed, said on stderr)
    and whether anything failed (also a node that died while the run went on)."""
    try:
        if args.bags:
            result = run_on_bag(source, options, folder, args.mode)
            card = score([Path(source), result.output_bag], result)
        else:
            result = run_closed_loop(options, source, args.duration, folder, clock=args.clock, record_all=False)
            card = score([result.output_bag], result)
        if not args.keep_bags:
            shutil.rmtree(result.output_bag, ignore_errors=True)
    except (EvaluationError, BagError, GraphError, FileNotFoundError) as exc:
        print(f"racestack ablate: {label} on {source}: {exc}", file=sys.stderr)
        return None, True
    return card, bool(result.failures)
