"""Two small nodes that exercise the runtime end to end: a validating cloud relay and a statistics echo.

Useful on a vehicle too: ``cloud_relay`` cleans a driver's cloud (drops NaNs, keeps x/y/z/intensity)
and ``topic_stats`` shows what arrives, both with the usual diagnostics.
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import Image, PointCloud2

from racestack.errors import InputError
from racestack.image import image_to_array
from racestack.node import RacestackNode, node_main, result_qos, sensor_qos
from racestack.params import Param
from racestack.pointcloud import SerializedCloud, read_points, xyz_to_cloud

CLOUD_FIELDS = ("x", "y", "z", "intensity")


def decode_cloud(node: RacestackNode, msg: PointCloud2 | SerializedCloud, topic: str) -> np.ndarray | None:
    """(N, 4) finite x, y, z, intensity of a cloud, or None after rejecting it (counted, logged)."""
    try:
        points, nan_count = read_points(msg, CLOUD_FIELDS[:3], extra=CLOUD_FIELDS[3:])
    except InputError as exc:
        node.reject_error(exc, topic)
        return None
    if nan_count:
        node.count("nan_points", nan_count)
        node.warn_limited("nan_points", f"{nan_count} non-finite points removed from a cloud on {topic}")
    if points.shape[0] == 0:
        node.reject("empty", "cloud has no finite points", topic)
        return None
    return points


class CloudRelay(RacestackNode):
    """Republishes a cloud as packed float32 x, y, z, intensity, keeping the input header."""

    def __init__(self) -> None:
        super().__init__(
            "cloud_relay",
            [
                Param("input_topic", "/sensing/lidar/points", "Cloud to read."),
                Param("output_topic", "/sensing/lidar/points_clean", "Cloud to publish."),
            ],
        )
        self.pub = self.create_publisher(PointCloud2, self.p.output_topic, result_qos(2))
        self.create_cloud_subscription(self.p.input_topic, self.on_cloud, sensor_qos())

    def on_cloud(self, msg: SerializedCloud) -> None:
        if not self.accept_stamp("cloud", msg.header.stamp):
            return
        with self.frame(msg.header.stamp):
            points = decode_cloud(self, msg, self.p.input_topic)
            if points is None:
                return
            self.pub.publish(xyz_to_cloud(points, CLOUD_FIELDS, header=msg.header))


class TopicStats(RacestackNode):
    """Echoes statistics: a cloud's centroid (with its stamp) and an image's size and mean value."""

    def __init__(self) -> None:
        super().__init__(
            "topic_stats",
            [
                Param("cloud_topic", "/sensing/lidar/points_clean", "Cloud to summarize."),
                Param("image_topic", "/sensing/camera/image_raw", "Image to summarize."),
                Param(
                    "image_encodings",
                    ["rgb8", "bgr8", "mono8", "mono16"],
                    "Accepted image encodings; others are rejected and counted.",
                ),
            ],
        )
        self.cloud_pub = self.create_publisher(PointStamped, "~/cloud_centroid", result_qos())
        self.image_pub = self.create_publisher(PointStamped, "~/image_summary", result_qos())
        self.create_cloud_subscription(self.p.cloud_topic, self.on_cloud, sensor_qos())
        self.create_subscription(Image, self.p.image_topic, self.on_image, sensor_qos())

    def on_cloud(self, msg: SerializedCloud) -> None:
        with self.frame(msg.header.stamp):
            points = decode_cloud(self, msg, self.p.cloud_topic)
            if points is None:
                return
            centroid = points[:, :3].mean(axis=0)
            out = PointStamped(header=msg.header)
            out.point.x, out.point.y, out.point.z = map(float, centroid)
            self.cloud_pub.publish(out)

    def on_image(self, msg: Image) -> None:
        with self.frame(msg.header.stamp):
            try:
                pixels = image_to_array(msg, expect=tuple(self.p.image_encodings))
            except InputError as exc:
                self.reject_error(exc, self.p.image_topic)
                return
            out = PointStamped(header=msg.header)
            out.point.x, out.point.y = float(pixels.shape[1]), float(pixels.shape[0])
            out.point.z = float(pixels.mean())
            self.image_pub.publish(out)


cloud_relay_main = node_main(CloudRelay)
topic_stats_main = node_main(TopicStats)
