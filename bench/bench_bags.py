"""Bag tools: reading speed, CDR check cost, recording without drops, replay pacing.

Targets (set with the bag tools, docs/bags.md): reading an uncompressed bag >= 200 MB/s; the CDR
structural check of a 3.2 MB cloud <= 1 ms (replay checks every message before publishing it); recording
200,000-point clouds (3.2 MB) at 10 Hz from another process with no drops; replay publishes each
message within p99 <= 5 ms of its schedule at 10 Hz.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

POINTS = 200_000
FIELDS = ("x", "y", "z", "intensity")
TOPIC = "/bench/bag_points"
TYPE = "sensor_msgs/msg/PointCloud2"


def cloud_bytes(index: int, stamp_ns: int) -> bytes:
    from rclpy.serialization import serialize_message

    from racestack.node import ns_to_stamp
    from racestack.pointcloud import xyz_to_cloud

    values = np.random.default_rng(index).normal(0.0, 30.0, size=(POINTS, 4)).astype(np.float32)
    cloud = xyz_to_cloud(values, FIELDS)
    cloud.header.stamp = ns_to_stamp(stamp_ns)
    return serialize_message(cloud)


def write_bag(path: Path, storage: str, count: int, rate: float) -> None:
    from racestack.bags import BagWriter

    start = time.time_ns()
    with BagWriter(path, storage) as writer:
        writer.add_topic(TOPIC, TYPE)
        for i in range(count):
            t = start + int(i * 1e9 / rate)
            writer.write(TOPIC, t, cloud_bytes(i % 4, t))


def read_speed(path: Path) -> float:
    """MB/s of message data yielded by racestack.bags (cold-ish: first read after writing)."""
    from racestack.bags import Bag

    start = time.perf_counter()
    total = 0
    with Bag(path) as bag:
        for message in bag.messages():
            total += len(message.data)
    return total / 1e6 / (time.perf_counter() - start)


def check_cost(repeats: int = 50) -> tuple[float, float]:
    """(CDR check ms, full rclpy deserialization ms) for one 3.2 MB cloud, medians."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2

    from racestack.cdr import cdr_problem

    data = cloud_bytes(0, time.time_ns())
    checks, full = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        assert cdr_problem(data, PointCloud2) is None
        checks.append(time.perf_counter() - start)
    for _ in range(max(repeats // 5, 3)):
        start = time.perf_counter()
        deserialize_message(data, PointCloud2)
        full.append(time.perf_counter() - start)
    return float(np.median(checks) * 1e3), float(np.median(full) * 1e3)


def publisher(count: int, rate: float) -> None:
    """The peer process: ``count`` pre-serialized clouds at ``rate`` Hz, reliable, once recorded."""
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import PointCloud2

    from racestack.contexts import close_private_node
    from racestack.node import result_qos

    rclpy.init()
    node = Node("bench_bag_publisher")
    pub = node.create_publisher(PointCloud2, TOPIC, result_qos(5))
    frames = [cloud_bytes(i, 0) for i in range(4)]
    deadline = time.monotonic() + 30.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    next_time = time.monotonic()
    for i in range(count):
        pub.publish(frames[i % 4])
        next_time += 1.0 / rate
        time.sleep(max(0.0, next_time - time.monotonic()))
    time.sleep(1.0)
    close_private_node(node, node.context)


def record_from_peer(path: Path, count: int, rate: float) -> tuple[int, float]:
    """(messages recorded, seconds) while a publisher process sends ``count`` clouds."""
    from racestack.bag_record import Recorder

    with Recorder(path, [TOPIC], log=lambda text: None) as recorder:
        peer = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_bags", "--role", "publisher", "--count", str(count),
             "--rate", str(rate)]
        )  # fmt: skip
        peer.wait(timeout=count / rate + 90)
    summary = recorder.stop()
    return summary.counts.get(TOPIC, 0), summary.duration_s


def replay_pacing(path: Path) -> tuple[float, float, int]:
    """(p50, p99 ms late vs schedule, messages) of a paced replay (nobody subscribed)."""
    from racestack.bag_replay import BagReplayer

    with BagReplayer(path, log=lambda text: None) as replayer:
        stats = replayer.play()
    late = np.array(stats.lateness_ms)
    return float(np.percentile(late, 50)), float(np.percentile(late, 99)), int(sum(stats.published.values()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", default="bench", choices=["bench", "publisher"])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10.0)
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    if args.role == "publisher":
        publisher(args.count, args.rate)
        return
    check_ms, full_ms = check_cost()
    print(
        f"CDR check of a {POINTS}-point cloud: {check_ms:.3f} ms "
        f"(target <= 1 ms; a full deserialization takes {full_ms:.1f} ms)"
    )
    with tempfile.TemporaryDirectory(prefix="racestack-bench-bags-") as tmp:
        for storage in ("mcap", "sqlite3"):
            path = Path(tmp) / storage
            write_bag(path, storage, args.count, args.rate)
            print(f"read {storage:<7}: {read_speed(path):.0f} MB/s (target >= 200 MB/s)")
        p50, p99, sent = replay_pacing(Path(tmp) / "mcap")
        print(
            f"replay {sent} clouds @ {args.rate:g} Hz: lateness vs schedule p50 {p50:.2f} ms, p99 {p99:.2f} ms "
            "(target p99 <= 5 ms)"
        )
        recorded, seconds = record_from_peer(Path(tmp) / "recorded", args.count, args.rate)
        print(
            f"record {POINTS}-point clouds @ {args.rate:g} Hz from another process: {recorded}/{args.count} "
            f"stored in {seconds:.1f} s (target: no drops)"
        )


if __name__ == "__main__":
    main()
