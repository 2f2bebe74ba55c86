"""A fresh publisher process for the stalled-reader test: best-effort clouds of a sensor's size.

A long-lived process's shared-memory segment also holds what its other writers sent, so only a
fresh writer shows what the segment itself has room for.
``python tests/big_clouds.py TOPIC GO`` waits for a subscriber and prints "matched", waits for the
file GO, publishes two 6.4 MB clouds 0.1 s apart, prints their stamps, and stays a few seconds so
that a reader can still take them. Without a subscriber or GO within 30 s it exits 3.
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np
from bag_streams import run_publisher, wait_until
from rclpy.node import Node
from sensor_msgs.msg import PointCloud2

from racestack.node import ns_to_stamp, sensor_qos
from racestack.pointcloud import xyz_to_cloud

POINTS = 400_000  # x, y, z, intensity float32: 6.4 MB, an Ouster OS1-64 sweep's size
WAIT_S = 30.0
STAY_S = 3.0


def main(node: Node, topic: str, go: pathlib.Path) -> int:
    publisher = node.create_publisher(PointCloud2, topic, sensor_qos(5))  # best effort: nothing sent again
    if not wait_until(lambda: publisher.get_subscription_count() > 0, WAIT_S):
        print("no subscriber", flush=True)
        return 3
    print("matched", flush=True)
    if not wait_until(go.exists, WAIT_S):
        print("no go", flush=True)
        return 3
    stamps = []
    for k in (1, 2):
        cloud = xyz_to_cloud(np.full((POINTS, 4), k, np.float32), ("x", "y", "z", "intensity"))
        stamps.append(time.time_ns())
        cloud.header.stamp = ns_to_stamp(stamps[-1])
        publisher.publish(cloud)
        time.sleep(0.1)
    print(" ".join(map(str, stamps)), flush=True)
    time.sleep(STAY_S)
    return 0


if __name__ == "__main__":
    run_publisher("big_cloud_publisher", lambda node: main(node, sys.argv[1], pathlib.Path(sys.argv[2])))
