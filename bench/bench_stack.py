"""The whole stack in real time on a recorded drive: per-node and end-to-end latency, dropped frames.

Records a simulator drive once (expert driving, every sensor and ground truth; cached under
``$RACESTACK_CACHE/bench``), then replays it at 10 Hz in real time through every node of the lite
graph (`racestack evaluate --mode realtime`). Target (issue 9): end to end (LiDAR stamp -> trajectory
published) p99 <= 100 ms and < 1 % dropped frames.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from racestack.bag_record import Recorder
from racestack.evaluation.runner import StackOptions, run_on_bag
from racestack.evaluation.scoring import score
from racestack.graph import graph_to_processes, load_graph_file, resolve_graph, use_stack_transports
from racestack.inference import cache_dir
from racestack.launcher import LaunchSession
from racestack.probe import Probe

SIM_TOPICS = (
    "/sensing/lidar/points", "/sensing/camera/image_raw", "/sensing/camera/camera_info", "/localization/odometry",
    "/map/racing_line", "/map/left_bound", "/map/right_bound", "/map/centerline", "/ground_truth/objects",
    "/ground_truth/flying_objects", "/ground_truth/bev/segmentation", "/ground_truth/camera/boxes",
)


def record_drive(path: Path, scenario: str, seconds: float) -> Path:
    """An expert drive recorded from the simulator node (lockstep on nothing: it runs at its rate)."""
    import tempfile

    from rosgraph_msgs.msg import Clock

    from racestack.node import stamp_to_ns

    graph = resolve_graph(load_graph_file("default"), sets={"simulator": {
        "scenario": scenario, "drive": "expert", "clock_mode": "realtime", "realtime_factor": 0.5,
        "duration": -1.0}}, disabled={s for s in load_graph_file("default")["slots"] if s != "simulator"})
    sim_time = [0.0]
    with tempfile.TemporaryDirectory(prefix="racestack-bench-") as run_dir, Probe("bench_stack_clock") as probe:
        session = LaunchSession(graph_to_processes(graph, run_dir), echo=lambda line: None)
        recorder = Recorder(path, topics=SIM_TOPICS, log=lambda text: None).start()
        probe.collect(Clock, "/clock", keep=1, callback=lambda m: sim_time.__setitem__(0, stamp_to_ns(m.clock) / 1e9))
        session.start()
        deadline = time.monotonic() + 600
        while sim_time[0] < 1.0 + seconds and time.monotonic() < deadline:
            time.sleep(0.2)
        recorder.stop()
        session.stop()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_stack")
    parser.add_argument("--scenario", default="oval_pack")
    parser.add_argument("--seconds", type=float, default=20.0, help="simulated seconds of the drive")
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--swap", action="append", default=[])
    parser.add_argument("--disable", action="append", default=[])
    args = parser.parse_args()
    use_stack_transports()
    bag = cache_dir() / "bench" / f"drive-{args.scenario}-{args.seconds:g}s"
    if not bag.exists():
        print(f"recording a {args.seconds:g} s expert drive of {args.scenario} into {bag} ...", flush=True)
        record_drive(bag, args.scenario, args.seconds)
    out = Path(f"reports/bench-stack-{time.strftime('%Y%m%d-%H%M%S')}")
    result = run_on_bag(bag, StackOptions(swap=args.swap, disable=args.disable), out, mode="realtime", rate=args.rate)
    card = score([bag, result.output_bag], result)
    e2e = card.latency.get("end_to_end", {})
    print(f"\nreal-time replay at {10 * args.rate:g} Hz of {bag.name} after {result.warmup} warm-up frames "
          f"(answered one at a time, not timed), graph {result.choices}")
    for topic, stats in card.latency.items():
        print(f"  {topic:<40} p50 {stats['p50']:7.1f} ms   p99 {stats['p99']:7.1f} ms   (n={stats['n']})")
    for node, values in sorted(card.nodes.items()):
        if "processing_ms_p50" in values:
            print(f"  node {node:<30} processing p50 {float(values['processing_ms_p50']):6.1f} ms   "
                  f"p99 {float(values['processing_ms_p99']):6.1f} ms")
    dropped = card.metrics.get("dropped_ratio", float("nan"))
    print(f"end to end (LiDAR stamp -> trajectory): p50 {e2e.get('p50', float('nan')):.1f} ms, "
          f"p99 {e2e.get('p99', float('nan')):.1f} ms (target <= 100 ms); dropped {dropped:.1%} (target < 1 %)")


if __name__ == "__main__":
    main()
