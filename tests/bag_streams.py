"""A publisher process for the bag tests: a few topics with distinct QoS, every message saved.

``python tests/bag_streams.py OUT.pkl --rounds N`` publishes a latched map at once, waits for a
subscriber (the recorder) on every stream, and for the file named by ``--go`` if given, then
publishes N rounds of cloud, odometry, text and a best-effort status, and pickles ``[(topic,
serialized bytes), ...]`` in publish order for byte comparisons.
While it waits for ``--go`` it sends best-effort messages on ``READY``: the caller gives the go once
one has reached its process, since a matched reader is not yet one that best-effort data reaches
(after a module of node tests, all four statuses sent 0.5 s after the recorder's side matched were lost).
Without a subscriber on every stream within 30 s it publishes nothing more and exits 3.
Messages go out pre-serialized: a message object would be serialized again by the middleware,
whose padding bytes differ from ``serialize_message``'s, so only bytes compare exactly end to end.
"""

from __future__ import annotations

import argparse
import pathlib
import pickle
import time
from collections.abc import Callable
from typing import NoReturn

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.serialization import serialize_message
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String

from racestack.node import latched_qos, ns_to_stamp, result_qos, sensor_qos
from racestack.pointcloud import xyz_to_cloud
from racestack.process import leave, own_process

CLOUD, ODOM, TEXT, STATUS, MAP = (
    "/bagtest/points",
    "/bagtest/odom",
    "/bagtest/text",
    "/bagtest/status",
    "/bagtest/map",
)
READY = "/bagtest/ready"  # not a stream: the delivery check before the go
STREAMS = (CLOUD, ODOM, TEXT, STATUS)
ALL_TOPICS = (*STREAMS, MAP)
POINTS = 20_000
NO_SUBSCRIBER = 3  # exit code: the recorder was never discovered (the caller starts a new process)


def track_path(stamp_ns: int) -> Path:
    path = Path()
    path.header.frame_id = "map"
    path.header.stamp = ns_to_stamp(stamp_ns)
    for i in range(50):
        pose = PoseStamped()
        pose.header.frame_id = "map"
        pose.pose.position.x = float(np.cos(i / 8.0) * 100.0)
        pose.pose.position.y = float(np.sin(i / 8.0) * 60.0)
        path.poses.append(pose)
    return path


def round_messages(k: int, stamp_ns: int) -> list[tuple[str, object]]:
    rng = np.random.default_rng(k)
    points = rng.normal(0.0, 20.0, size=(POINTS, 4)).astype(np.float32)
    cloud = xyz_to_cloud(points, ("x", "y", "z", "intensity"))
    cloud.header.stamp = ns_to_stamp(stamp_ns)
    cloud.header.frame_id = "lidar"
    odom = Odometry()
    odom.header.stamp = ns_to_stamp(stamp_ns)
    odom.header.frame_id = "map"
    odom.pose.pose.position.x = float(k)
    odom.twist.twist.linear.x = 30.0 + k
    return [
        (CLOUD, cloud),
        (ODOM, odom),
        (TEXT, String(data=f"frame {k}: ünïcödé ✓")),
        (STATUS, String(data=f"status {k}")),
    ]


def wait_until(ready: Callable[[], bool], timeout_s: float, meanwhile: Callable[[], None] = lambda: None) -> bool:
    """Polls ``ready`` until it holds (True) or ``timeout_s`` has passed (False), calling ``meanwhile``
    between polls."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            return False
        meanwhile()
        time.sleep(0.02)
    return True


def run_publisher(name: str, main: Callable[[Node], int]) -> NoReturn:
    """Runs a publisher script's ``main`` on a fresh node and ends the process without deleting the
    node's DDS participant, which Fast DDS can block in for ever, GIL held. The node stays referenced
    here until the exit: one freed when ``main``'s frame ended had its writers' deletion hang (a CI
    run's publisher past 90 s, and 3 of ~19 runs of ``big_clouds.py``, stacks at the call)."""
    own_process()  # SIGUSR1 prints its stacks (tests.support.stuck)
    rclpy.init()
    node = Node(name)
    leave(main(node))


def main(node: Node, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--go", help="publish the streams once this file exists (the caller saw them matched)")
    args = parser.parse_args(argv)
    qos = {CLOUD: result_qos(5), ODOM: result_qos(5), TEXT: result_qos(5), STATUS: sensor_qos(5)}
    types = {CLOUD: PointCloud2, ODOM: Odometry, TEXT: String, STATUS: String}
    pubs = {topic: node.create_publisher(types[topic], topic, qos[topic]) for topic in STREAMS}
    map_pub = node.create_publisher(Path, MAP, latched_qos())
    sent: list[tuple[str, bytes]] = []
    track = serialize_message(track_path(time.time_ns()))
    map_pub.publish(track)
    sent.append((MAP, track))
    if not wait_until(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 30.0):
        unmatched = [topic for topic, p in pubs.items() if p.get_subscription_count() == 0]
        print(f"no subscriber on {unmatched} after 30 s: no stream published", flush=True)
        return NO_SUBSCRIBER
    if args.go:
        ready = node.create_publisher(String, READY, sensor_qos(1))
        if not wait_until(pathlib.Path(args.go).exists, 30.0, lambda: ready.publish(String(data="ready"))):
            print(f"no go from the caller ({args.go}) within 30 s: no stream published", flush=True)
            return NO_SUBSCRIBER
    else:
        time.sleep(0.5)
    for k in range(args.rounds):
        for topic, msg in round_messages(k, time.time_ns()):
            data = serialize_message(msg)
            pubs[topic].publish(data)
            sent.append((topic, data))
            time.sleep(0.002)
        time.sleep(1.0 / args.rate)
    for topic in (CLOUD, ODOM, TEXT):
        pubs[topic].wait_for_all_acked(Duration(seconds=10))
    with open(args.out, "wb") as handle:
        pickle.dump(sent, handle)
    time.sleep(0.3)
    return 0


if __name__ == "__main__":
    run_publisher("bag_stream_publisher", main)
