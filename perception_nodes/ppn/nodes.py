"""ROS nodes of the PPN: ``bev_segmentation`` and ``bev_reconstruction`` (one network per process,
each building its own BEV on its own device) and ``ppn_sequential`` (both in one process).

Each subscribes to the cloud (sensor QoS) and to odometry (for motion-compensated stacking) and
publishes with the cloud's header stamp, in ``base_link``. docs/ppn.md lists the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from nav_msgs.msg import OccupancyGrid, Odometry
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from perception_nodes.ppn.models import default_checkpoint
from perception_nodes.ppn.pipeline import PpnPipeline
from perception_nodes.ppn.poses import PoseBuffer, odometry_sample
from racestack.cdr import CdrError
from racestack.errors import ParameterError
from racestack.grid import serialized_occupancy
from racestack.image import serialized_image
from racestack.node import (
    RacestackNode,
    create_polled_subscription,
    node_main,
    result_qos,
    sensor_qos,
    stamp_to_ns,
    take_all,
)
from racestack.params import Param
from racestack.pointcloud import SerializedCloud
from racestack.publishing import publish_serialized
from racestack.utility_nodes import decode_cloud

ODOMETRY_DEPTH = 10  # 200 ms of 50 Hz odometry: a sweep's work many times over

OUTPUT_TOPICS = {
    "segmentation": "/perception/bev/segmentation",
    "reconstruction": "/perception/bev/reconstruction",
}


def _pose_check(value: list) -> str | None:
    return None if len(value) == 6 else "expected [x, y, z, roll, pitch, yaw]"


def ppn_params(kinds: Sequence[str]) -> list[Param]:
    params = [
        Param(
            "config",
            "lite",
            "PPN configuration whose committed checkpoints are the defaults.",
            choices=("lite", "paper"),
        ),
        Param("backend", "auto", "Inference backend.", choices=("auto", "tensorrt", "onnxruntime", "torch")),
        Param("device", "cpu", "Device for the BEV encoder and the network(s): cpu or cuda[:N]."),
        Param(
            "lidar_pose",
            [1.5, 0.0, 1.2, 0.0, 0.0, 0.0],
            "LiDAR pose in base_link [x, y, z, roll, pitch, yaw].",
            check=_pose_check,
        ),
        Param("cloud_topic", "/sensing/lidar/points", "Input point cloud."),
        Param(
            "odometry_topic",
            "/localization/odometry",
            "Ego odometry for motion-compensated stacking; empty = sensor assumed static.",
        ),
        Param("odometry_tolerance", 0.15, "Largest gap (s) bridged when looking up a sweep's pose.", min=0.0, max=2.0),
        Param("frame_id", "base_link", "Frame of the published maps."),
        Param("bev.cells", 0, "Expected grid cells per side; 0 = whatever the checkpoint was trained on.", min=0),
        Param("bev.resolution", 0.0, "Expected cell size (m); 0 = whatever the checkpoint was trained on.", min=0.0),
    ]
    for kind in kinds:
        params.append(
            Param(f"{kind}_model", "", f"{kind.capitalize()} checkpoint; empty = models/ppn_<config>/{kind}.pt.")
        )
        params.append(Param(f"{kind}_topic", OUTPUT_TOPICS[kind], f"Output topic of the {kind} network."))
    return params


class PpnNode(RacestackNode):
    """Cloud + odometry in, BEV built once per sweep, the configured networks run one after the other."""

    def __init__(self, name: str, kinds: Sequence[str]) -> None:
        super().__init__(name, ppn_params(kinds))
        p = self.p
        checkpoints = {kind: getattr(p, f"{kind}_model") or str(default_checkpoint(kind, p.config)) for kind in kinds}
        self.pipeline = PpnPipeline(checkpoints, p.backend, p.device, p.lidar_pose, log=self.get_logger().info)
        bev = self.pipeline.config.bev
        for param, trained in (("bev.cells", bev.cells), ("bev.resolution", bev.resolution)):
            asked = getattr(p, param)
            if asked and asked != trained:
                raise ParameterError(param, f"{asked} differs from the checkpoint's {trained}")
        self.grid = bev.grid
        self.kinds = tuple(kinds)
        self.poses = PoseBuffer(tolerance_s=p.odometry_tolerance)
        self.pipeline.warm_up()
        self.publishers_ = {
            "segmentation": self.create_publisher(OccupancyGrid, p.segmentation_topic, result_qos())
            if "segmentation" in kinds
            else None,
            "reconstruction": self.create_publisher(Image, p.reconstruction_topic, result_qos())
            if "reconstruction" in kinds
            else None,
        }
        # Odometry is read only when a sweep comes, all that has arrived at once (take_all): through
        # the executor, one message per wake-up, it fell a second behind a 25 ms network (every sweep
        # encoded without its history), and each wake-up cost 0.25 ms of the frame. The queue holds
        # what comes in during one sweep.
        self.odometry = (
            create_polled_subscription(self, Odometry, p.odometry_topic, sensor_qos(depth=ODOMETRY_DEPTH), raw=True)
            if p.odometry_topic
            else None
        )
        self.create_cloud_subscription(p.cloud_topic, self.on_cloud, sensor_qos(), frame_input=True)
        self.add_diagnostics(self._diagnostics)
        self.get_logger().info(
            f"{name}: {', '.join(kinds)} on {p.device} ({self.pipeline.backends}), "
            f"BEV {bev.cells}x{bev.cells} at {bev.resolution} m, {bev.sweeps} sweeps"
        )

    def _diagnostics(self) -> dict[str, str]:
        values = {f"backend.{kind}": backend for kind, backend in self.pipeline.backends.items()}
        values["device"] = self.p.device
        values["stacked_sweeps"] = str(self.pipeline.encoder.history_length + 1)
        return values

    def _reset(self) -> None:
        self.pipeline.encoder.reset()
        self.poses.clear()

    def add_odometry(self, data: bytes) -> None:
        """One serialized odometry message into the pose buffer; a malformed or non-finite one is rejected."""
        try:
            sample = odometry_sample(data)
        except CdrError as exc:
            self.reject("layout", f"serialized odometry: {exc}", self.p.odometry_topic)
            return
        if not all(math.isfinite(value) for value in sample):
            self.reject("nan", "odometry with a non-finite pose, twist or stamp", self.p.odometry_topic)
            return
        self.poses.add(*sample)

    def sweep_pose(self, stamp) -> tuple[float, float, float] | None:
        if self.odometry is None:
            return (0.0, 0.0, 0.0)
        for data, _ in take_all(self.odometry):
            self.add_odometry(data)
        pose = self.poses.pose_at(stamp_to_ns(stamp) / 1e9)
        if pose is None:
            self.count("odometry_missing")
            self.warn_limited("odometry", "no odometry near the sweep's stamp: stacking only the current sweep")
        return pose

    def on_cloud(self, msg: SerializedCloud) -> None:
        if not self.accept_stamp("cloud", msg.header.stamp, on_time_jump=self._reset):
            return
        with self.frame(msg.header.stamp):
            points = decode_cloud(self, msg, self.p.cloud_topic)
            if points is None:
                return
            bev = self.pipeline.encode(points, self.sweep_pose(msg.header.stamp))
            header = Header(stamp=msg.header.stamp, frame_id=self.p.frame_id)
            for kind in self.kinds:
                self.publish(kind, bev, header)

    def publish(self, kind: str, bev, header: Header) -> None:
        """Published serialized: a 1 MB map as a message object costs rclpy three copies (0.4 ms), bytes
        through rclpy one more (``publish_serialized``)."""
        if kind == "segmentation":
            labels = self.pipeline.segmentation(bev)
            publish_serialized(self.publishers_[kind], serialized_occupancy(labels, self.grid, header))
        else:
            scene = self.pipeline.reconstruction(bev)
            publish_serialized(self.publishers_[kind], serialized_image(scene, "32FC4", header))


class SegmentationNode(PpnNode):
    def __init__(self) -> None:
        super().__init__("bev_segmentation", ("segmentation",))


class ReconstructionNode(PpnNode):
    def __init__(self) -> None:
        super().__init__("bev_reconstruction", ("reconstruction",))


class SequentialNode(PpnNode):
    """Both networks in one process on one BEV: the baseline of the paper's parallel speed-up."""

    def __init__(self) -> None:
        super().__init__("ppn_sequential", ("segmentation", "reconstruction"))


segmentation_main = node_main(SegmentationNode)
reconstruction_main = node_main(ReconstructionNode)
sequential_main = node_main(SequentialNode)
