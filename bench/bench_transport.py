"""PointCloud2 transport between two processes, the conversion cost alone, and the cost of publishing
serialized bytes (rclpy's ``publish(bytes)`` against ``racestack.publishing.publish_serialized``).

A publisher process sends a 200,000-point cloud (x, y, z, intensity float32, 3.2 MB) at 10 Hz; this
process receives it and measures stamp -> callback with the numpy array ready. Targets (issue 2):
p50 <= 5 ms, p99 <= 15 ms, no drops at 10 Hz; numpy -> message -> numpy <= 2 ms.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from functools import partial

import numpy as np

from racestack.graph import FASTDDS_TRANSPORTS

POINTS = 200_000
FIELDS = ("x", "y", "z", "intensity")
TOPIC = "/bench/points"


def cloud_values(points: int = POINTS, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 30.0, size=(points, 4)).astype(np.float32)


def conversion_cost(repeats: int = 50) -> dict[str, float]:
    from racestack.pointcloud import read_points, xyz_to_cloud

    values = cloud_values()
    times = []
    for _ in range(repeats + 3):
        start = time.perf_counter()
        msg = xyz_to_cloud(values, FIELDS)
        points, _ = read_points(msg, FIELDS[:3], extra=FIELDS[3:])
        times.append((time.perf_counter() - start) * 1e3)
        assert points.shape == values.shape
    sample = np.array(times[3:])
    return {"p50": float(np.percentile(sample, 50)), "p99": float(np.percentile(sample, 99))}


def serialized_publish_cost(repeats: int = 200) -> dict[str, float]:
    """CPU ms per publish of a serialized 3.2 MB cloud, re-stamped in place, with nobody subscribed: what
    the publishing process pays before any transport (p50 of each way)."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import PointCloud2

    from racestack.cdr import set_header_stamp
    from racestack.node import sensor_qos
    from racestack.pointcloud import xyz_to_cloud
    from racestack.probe import Probe
    from racestack.publishing import publish_serialized

    data = bytearray(serialize_message(xyz_to_cloud(cloud_values(), FIELDS)))
    with Probe("bench_serialized_publisher") as probe:
        pub = probe.node.create_publisher(PointCloud2, "/bench/serialized_points", sensor_qos(1))
        ways = {  # the message each way takes (rclpy bytes only: a copy, made outside the timing), and the call
            "rclpy publish(bytes)": (bytes, pub.publish),
            "publish_serialized": (memoryview, partial(publish_serialized, pub)),
        }
        costs = {}
        for name, (view, publish) in ways.items():
            times = []
            for i in range(repeats):
                set_header_stamp(data, PointCloud2, i + 1)
                message = view(data)
                start = time.thread_time()
                publish(message)
                times.append((time.thread_time() - start) * 1e3)
            costs[name] = float(np.percentile(times[3:], 50))
    return costs


def publisher(count: int, rate: float, reliable: bool) -> None:
    """The peer process: publish ``count`` clouds at ``rate`` Hz, stamped when the array is ready."""
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import PointCloud2

    from racestack.contexts import close_private_node
    from racestack.node import result_qos, sensor_qos
    from racestack.pointcloud import xyz_to_cloud

    rclpy.init()
    node = Node("bench_cloud_publisher")
    pub = node.create_publisher(PointCloud2, TOPIC, result_qos(2) if reliable else sensor_qos(2))
    values = cloud_values()
    deadline = time.monotonic() + 20.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    period = 1.0 / rate
    next_time = time.monotonic()
    for i in range(count):
        values[0, 3] = i
        msg = xyz_to_cloud(values, FIELDS)
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = str(i)
        pub.publish(msg)
        next_time += period
        time.sleep(max(0.0, next_time - time.monotonic()))
    time.sleep(0.5)
    close_private_node(node, node.context)


def transport(count: int, rate: float, transports: str, reliable: bool) -> dict[str, float]:
    """Receive in this process (its own executor thread), the publisher in another process."""
    from sensor_msgs.msg import PointCloud2

    from racestack.node import result_qos, sensor_qos, stamp_to_ns
    from racestack.pointcloud import read_points
    from racestack.probe import Probe

    env = dict(os.environ, FASTDDS_BUILTIN_TRANSPORTS=transports)
    os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = transports
    latencies: list[float] = []
    received: list[int] = []

    def on_cloud(msg: PointCloud2) -> None:
        points, _ = read_points(msg, FIELDS[:3], extra=FIELDS[3:])
        now = time.time_ns()
        latencies.append((now - stamp_to_ns(msg.header.stamp)) / 1e6)
        received.append(int(msg.header.frame_id))
        assert points.shape[0] == POINTS

    qos = result_qos(2) if reliable else sensor_qos(1)
    with Probe("bench_cloud_subscriber") as probe:
        probe.collect(PointCloud2, TOPIC, qos=qos, keep=1, callback=on_cloud)
        peer = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_transport", "--role", "publisher", "--count", str(count),
             "--rate", str(rate)] + (["--reliable"] if reliable else []),
            env=env,
        )
        peer.wait(timeout=count / rate + 60)
        time.sleep(0.3)
    sample = np.array(latencies)
    return {
        "p50": float(np.percentile(sample, 50)) if sample.size else float("nan"),
        "p99": float(np.percentile(sample, 99)) if sample.size else float("nan"),
        "received": len(received),
        "sent": count,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", default="bench", choices=["bench", "publisher"])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--reliable", action="store_true")
    parser.add_argument(
        "--transports", default=f"{FASTDDS_TRANSPORTS},LARGE_DATA,DEFAULT", help="FASTDDS_BUILTIN_TRANSPORTS to compare"
    )
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    if args.role == "publisher":
        publisher(args.count, args.rate, args.reliable)
        return
    cost = conversion_cost()
    print(f"conversion numpy->msg->numpy, {POINTS} points: p50 {cost['p50']:.2f} ms, "
          f"p99 {cost['p99']:.2f} ms (target <= 2 ms)")
    from racestack.publishing import one_copy_publishing

    costs = serialized_publish_cost()
    print(
        f"publishing a serialized {POINTS}-point cloud (CPU p50 per publish, nobody subscribed): "
        + ", ".join(f"{name} {ms:.2f} ms" for name, ms in costs.items())
        + ("" if one_copy_publishing() else "  (rcl not found: publish_serialized fell back to rclpy's publish)")
    )
    for transports in args.transports.split(","):
        result = transport(args.count, args.rate, transports, reliable=args.reliable)
        drops = result["sent"] - result["received"]
        print(
            f"transport {transports:<10} {POINTS} points @ {args.rate:g} Hz, stamp->callback (array ready): "
            f"p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms, received {result['received']}/"
            f"{result['sent']} (drops {drops})"
            + ("  [targets p50 <= 5 ms, p99 <= 15 ms, no drops]" if transports == FASTDDS_TRANSPORTS else "")
        )


if __name__ == "__main__":
    main()
