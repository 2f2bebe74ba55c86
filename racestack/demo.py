"""``racestack demo``: the whole stack closed loop in the simulator, recorded, scored and reported.

Every node of the default graph runs in its own process; the simulator (lockstep by default, so the
result does not depend on how loaded the machine is) drives the stack and the stack drives the car
for a lap-sized stretch; the run is recorded to a bag, scored, summarized and written as a report.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from racestack.bags import BagError
from racestack.evaluation.report import write_report
from racestack.evaluation.runner import EvaluationError, StackOptions, run_closed_loop
from racestack.evaluation.scoring import score
from racestack.evaluation_cli import options_of, print_summary
from racestack.graph import GraphError
from racestack.launcher import add_graph_arguments

DEFAULT_SCENARIO = "oval_pack"
DEFAULT_DURATION_S = 30.0


def closed_loop_latency(device: str = "cpu", seconds: float = 20.0, scenario: str = DEFAULT_SCENARIO) -> dict:
    """End-to-end latency of the full graph in real time (used by the GPU check): p50, p99, dropped."""
    import numpy as np

    sets = [f"{node}.device={device}" for node in ("bev_segmentation", "bev_reconstruction")]
    options = StackOptions(set_=sets)
    out = Path(f"reports/latency-{time.strftime('%Y%m%d-%H%M%S')}")
    result = run_closed_loop(options, scenario, seconds, out, clock="realtime", record_all=False, progress=False)
    values = result.latencies_ms()
    p50, p99 = np.percentile(values, [50, 99]) if values else (float("nan"), float("nan"))
    return {"p50": float(p50), "p99": float(p99), "dropped": result.dropped() / max(len(result.published), 1)}


def configure(parser: argparse.ArgumentParser) -> None:
    add_graph_arguments(parser)
    parser.add_argument("--scenario", default=DEFAULT_SCENARIO, help="scenario name or YAML (config/scenarios)")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="simulated seconds to drive")
    parser.add_argument("--clock", choices=("lockstep", "realtime"), default="lockstep")
    parser.add_argument("-o", "--out", default="", help="report folder (default reports/demo-<time>)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out or f"reports/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    options = options_of(args)
    print(f"racestack demo: scenario {args.scenario}, {args.duration:g} s simulated, clock {args.clock}, "
          f"graph {options.graph}; report in {out}", flush=True)
    start = time.monotonic()
    try:
        result = run_closed_loop(options, args.scenario, args.duration, out, clock=args.clock)
        card = score([result.output_bag], result)
    except (EvaluationError, BagError, GraphError, FileNotFoundError) as exc:
        print(f"racestack demo: {exc}", file=sys.stderr)
        return 2
    context = {"scenario": args.scenario, "simulated_s": args.duration, "clock": args.clock,
               "choices": result.choices, "wall_s": round(result.wall_s, 1), "bag": str(result.output_bag)}
    page = write_report([result.output_bag], card, out, f"racestack demo: {args.scenario}", context)
    print_summary(card, f"demo: {args.scenario}, {args.duration:g} s simulated in {result.wall_s:.0f} s wall")
    print(f"\nreport: {page}  (total {time.monotonic() - start:.0f} s)")
    return 1 if result.failures else 0
