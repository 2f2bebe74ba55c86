"""``object_extraction`` node: BEV segmentation (+ the cloud, for heights) -> /perception/objects/detected.

The segmentation keeps the stamp of the sweep it came from, so the matching cloud is found by
exact stamp among the last few received; without one, boxes get the height prior.
"""

from __future__ import annotations

from collections import OrderedDict

from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from perception_nodes.object_extraction import ExtractionConfig, extract_objects
from racestack.errors import InputError
from racestack.grid import occupancy_to_grid
from racestack.node import RacestackNode, node_main, result_qos, sensor_qos, stamp_to_ns
from racestack.objects import objects_to_cloud, objects_to_markers
from racestack.params import Param
from racestack.pointcloud import SerializedCloud
from racestack.transforms import pose_matrix, transform_points
from racestack.utility_nodes import decode_cloud

CLOUD_CACHE = 5


class ObjectExtractionNode(RacestackNode):
    def __init__(self) -> None:
        super().__init__(
            "object_extraction",
            [
                Param("segmentation_topic", "/perception/bev/segmentation", "BEV class-id grid to read."),
                Param("cloud_topic", "/sensing/lidar/points", "Cloud for box heights; empty = height prior only."),
                Param("output_topic", "/perception/objects/detected", "Object table to publish."),
                Param("markers", True, "Also publish a MarkerArray on <output_topic>/markers."),
                Param(
                    "lidar_pose",
                    [1.5, 0.0, 1.2, 0.0, 0.0, 0.0],
                    "LiDAR pose in base_link [x, y, z, roll, pitch, yaw].",
                    check=lambda v: None if len(v) == 6 else "expected [x, y, z, roll, pitch, yaw]",
                ),
                Param("vehicle_label", 3, "BEV class id of vehicles.", min=0, max=127),
                Param("min_cells", 6, "Smallest component (cells) that becomes a box.", min=1),
                Param("default_height", 1.2, "Box height (m) when no point falls in a component.", min=0.1, max=10.0),
                Param("car_length", 4.9, "Typical vehicle length (m): longer components are split.", min=1.0),
                Param("car_width", 1.9, "Typical vehicle width (m), for the score.", min=0.5),
            ],
        )
        p = self.p
        self.config = ExtractionConfig(
            vehicle_label=p.vehicle_label,
            min_cells=p.min_cells,
            default_height=p.default_height,
            car_length=p.car_length,
            car_width=p.car_width,
        )
        self.lidar_matrix = pose_matrix(p.lidar_pose)
        self.clouds: OrderedDict[int, SerializedCloud] = OrderedDict()
        self.pub = self.create_publisher(PointCloud2, p.output_topic, result_qos())
        self.marker_pub = (
            self.create_publisher(MarkerArray, p.output_topic + "/markers", result_qos()) if p.markers else None
        )
        self.create_subscription(OccupancyGrid, p.segmentation_topic, self.on_segmentation, result_qos(2))
        if p.cloud_topic:
            self.create_cloud_subscription(p.cloud_topic, self.on_cloud, sensor_qos(depth=2))

    def on_cloud(self, msg: SerializedCloud) -> None:
        self.clouds[stamp_to_ns(msg.header.stamp)] = msg
        while len(self.clouds) > CLOUD_CACHE:
            self.clouds.popitem(last=False)

    def on_segmentation(self, msg: OccupancyGrid) -> None:
        if not self.accept_stamp("segmentation", msg.header.stamp, on_time_jump=self.clouds.clear):
            return
        with self.frame(msg.header.stamp):
            try:
                labels, grid = occupancy_to_grid(msg)
            except InputError as exc:
                self.reject_error(exc, self.p.segmentation_topic)
                return
            points = self._points_for(msg.header.stamp)
            table = extract_objects(labels, grid, points, self.config)
            header = Header(stamp=msg.header.stamp, frame_id=msg.header.frame_id or "base_link")
            self.pub.publish(objects_to_cloud(table, header))
            if self.marker_pub is not None:
                self.marker_pub.publish(objects_to_markers(table, header, "detected"))

    def _points_for(self, stamp):
        cloud = self.clouds.get(stamp_to_ns(stamp))
        if cloud is None:
            self.count("no_matching_cloud")
            return None
        points = decode_cloud(self, cloud, self.p.cloud_topic)
        return None if points is None else transform_points(self.lidar_matrix, points[:, :3])


main = node_main(ObjectExtractionNode)
