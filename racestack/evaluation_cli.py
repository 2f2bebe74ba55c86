"""``racestack evaluate BAG``: replay a bag through the stack and compute every metric it supports."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from racestack.bags import BagError
from racestack.evaluation.report import write_report
from racestack.evaluation.runner import MODES, WARMUP_FRAMES, EvaluationError, StackOptions, run_on_bag
from racestack.evaluation.scoring import Scorecard, score
from racestack.graph import GraphError
from racestack.launcher import add_graph_arguments


def options_of(args: argparse.Namespace) -> StackOptions:
    return StackOptions(args.graph, args.swap or [], args.set or [], args.disable or [], args.transport)


def print_summary(card: Scorecard, title: str) -> None:
    """The summary table: metrics, latencies per output and node, and what was skipped."""
    from racestack.evaluation.report import summary_rows

    rows = summary_rows(card)
    width = max((len(k) for k, _ in rows), default=10)
    print(f"\n{title}\n" + "-" * (width + 16))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for key, reason in sorted(card.skipped.items()):
        print(f"skipped {key}: {reason}")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="rosbag2 folder or file (MCAP or sqlite3)")
    add_graph_arguments(parser)
    parser.set_defaults(graph="default")
    parser.add_argument("--mode", choices=MODES, default="lockstep",
                        help="lockstep: each frame waits for the stack's answer (deterministic); "
                             "realtime: the bag's timing, measuring drops and latency")
    parser.add_argument("--rate", type=float, default=1.0, help="replay rate in real-time mode")
    parser.add_argument("--timeout", type=float, default=5.0, help="lockstep: seconds to wait for an answer")
    parser.add_argument("--warmup-frames", type=int, default=WARMUP_FRAMES,
                        help="realtime: first frames answered one at a time, before the clock starts (not scored)")
    parser.add_argument("--trigger", default="", help="topic whose messages are the frames (default: the LiDAR)")
    parser.add_argument("--answer", default="", help="output that answers a frame (default: the last slot's)")
    parser.add_argument("--score-only", action="store_true",
                        help="do not run the stack: score the outputs already in the bag (e.g. a demo bag)")
    parser.add_argument("-o", "--out", default="", help="report folder (default reports/evaluate-<bag>-<time>)")


def run(args: argparse.Namespace) -> int:
    bag = Path(args.bag)
    out = Path(args.out or f"reports/evaluate-{bag.stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        if args.score_only:
            result, bags = None, [bag]
        else:
            result = run_on_bag(bag, options_of(args), out, args.mode, args.trigger, args.answer, args.rate,
                                args.timeout, warmup_frames=args.warmup_frames)
            bags = [bag, result.output_bag]
        card = score(bags, result)
    except (EvaluationError, BagError, GraphError, FileNotFoundError) as exc:
        print(f"racestack evaluate: {exc}", file=sys.stderr)
        return 2
    context = {"bag": str(bag), "mode": "score only" if result is None else result.mode}
    if result is not None:
        context.update(trigger=result.trigger, answer=result.answer, choices=result.choices,
                       lockstep_timeouts=result.timeouts, resent=result.resent, warmup_frames=result.warmup,
                       wall_s=round(result.wall_s, 1))
    page = write_report(bags, card, out, f"racestack evaluation of {bag.name}", context)
    print_summary(card, f"evaluation of {bag} ({context['mode']})")
    print(f"\nreport: {page}")
    return 1 if result is not None and result.failures else 0
