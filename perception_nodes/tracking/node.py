"""The ``tracker`` node: 3D detections (one or more base_link object tables) -> tracks in ``map``.

Each detection topic gets its own tracker (its own clock: a LiDAR and a camera stream have
different stamps) sharing one id counter, so ids are unique across streams. Detections are moved
into ``map`` with the odometry pose at their stamp (the latest pose before it, extrapolated with
the twist). Every input frame publishes all live tracks predicted to its stamp (those of the other
streams by constant velocity) with the input's stamp, and markers beside them.

Bad input: rows with NaN or non-positive sizes are dropped and counted (``invalid_detections``);
a stamp older than the last one of its stream is rejected (``out_of_order``) and leaves the tracks
untouched; a jump back in time of more than 1 s on any stream (a bag loop) resets every tracker
and the pose buffer.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from nav_msgs.msg import Odometry
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from perception_nodes.tracking.baselines import KalmanConfig
from perception_nodes.tracking.factory import create_tracker, method_config, motformer_runner
from perception_nodes.tracking.state import Detections, EgoState
from perception_nodes.tracking.tracker import TRACKER_METHODS, IdSource, Tracker
from racestack.errors import InputError, ParameterError
from racestack.node import RacestackNode, node_main, result_qos, sensor_qos, stamp_to_ns, take_all
from racestack.objects import cloud_to_objects, objects_to_cloud, objects_to_markers, valid_objects
from racestack.params import Param

ODOMETRY_STREAM = "odometry"


def _non_empty(value: list) -> str | None:
    return None if value and all(value) else "needs at least one topic and no empty names"


PARAMS = (
    Param("method", "3dmotformer", "Tracking method.", choices=TRACKER_METHODS),
    Param(
        "detection_topics",
        ["/perception/objects/detected", "/perception/flying_objects"],
        "3D detection object tables (base_link or the odometry's child frame); one tracker each.",
        check=_non_empty,
    ),
    Param(
        "publish_on",
        "first",
        "Which detection frames publish the tracks: the first topic's (the LiDAR objects, the stack's "
        "trigger; the others' tracks join them) or every topic's (one publication per input frame).",
        choices=("first", "every"),
    ),
    Param("odometry_topic", "/localization/odometry", "Ego pose in map; empty: detections are already in map."),
    Param("output_topic", "/perception/objects/tracked", "Tracks (object table in map)."),
    Param("markers_topic", "/perception/objects/tracked/markers", "Track markers; empty disables them."),
    Param("map_frame", "map", "Frame of the published tracks."),
    Param("checkpoint", "", "3DMOTFormer checkpoint; empty: models/tracker_3dmotformer/tracker_3dmotformer.pt."),
    Param("backend", "auto", "3dmotformer inference backend.", choices=("auto", "tensorrt", "onnxruntime", "torch")),
    Param("device", "cpu", "cpu or cuda[:N] for 3dmotformer."),
    Param("association", "", "greedy or hungarian; empty: the method's default.", choices=("", "greedy", "hungarian")),
    Param("affinity_threshold", 0.3, "3dmotformer: minimum edge affinity for a match.", min=0.0, max=1.0),
    Param(
        "score_source",
        "",
        "Track scores from the detections or the model's confidence; empty: model for 3dmotformer.",
        choices=("", "detection", "model"),
    ),
    Param("max_age", 8, "Frames a car (or other) track may coast unmatched before it is deleted.", min=0, max=1000),
    Param("flying_max_age", 3, "Frames a flying-object track may coast unmatched.", min=0, max=1000),
    Param("min_hits", 1, "Matches a track needs before it is published.", min=1, max=1000),
    Param("birth_score", 0.0, "Detections below this score do not start tracks.", min=0.0, max=1.0),
    Param("coast_score_factor", 0.5, "Output score factor per coasted frame.", min=0.0, max=1.0),
    Param("new_score_factor", 0.5, "Output score factor of a track seen once.", min=0.0, max=1.0),
    Param("max_odometry_gap", 0.3, "Largest gap (s) between a detection stamp and the last pose before it.", min=0.0),
)


class OdometryBuffer:
    """Recent ego poses; the pose at a stamp is the last one before it, extrapolated with the twist."""

    def __init__(self, seconds: float = 2.0) -> None:
        self.seconds = seconds
        self._rows: deque[tuple[float, float, float, float, float, float, float]] = deque()

    def add(self, t: float, x: float, y: float, yaw: float, vx: float, vy: float, yaw_rate: float) -> None:
        if self._rows and t <= self._rows[-1][0]:
            self._rows.clear()
        self._rows.append((t, x, y, yaw, vx, vy, yaw_rate))
        while self._rows and self._rows[0][0] < t - self.seconds:
            self._rows.popleft()

    def clear(self) -> None:
        self._rows.clear()

    def pose_at(self, t: float, max_gap: float) -> EgoState | None:
        if not self._rows:
            return None
        times = np.fromiter((r[0] for r in self._rows), float, len(self._rows))
        index = int(np.searchsorted(times, t, side="right")) - 1
        index = max(index, 0)
        t0, x, y, yaw, vx, vy, yaw_rate = self._rows[index]
        gap = t - t0
        if abs(gap) > max_gap:
            return None
        return EgoState(x + vx * gap, y + vy * gap, yaw + yaw_rate * gap, vx, vy)


class TrackerNode(RacestackNode):
    def __init__(self) -> None:
        super().__init__("tracker", PARAMS)
        p = self.p
        if p.score_source == "model" and p.method != "3dmotformer":
            raise ParameterError("score_source", f"'model' needs method 3dmotformer, not {p.method}")
        overrides = {"association": p.association, "score_source": p.score_source}
        self.config = method_config(
            p.method,
            max_age=p.max_age,
            flying_max_age=p.flying_max_age,
            birth_score=p.birth_score,
            min_hits=p.min_hits,
            coast_score_factor=p.coast_score_factor,
            new_score_factor=p.new_score_factor,
            affinity_threshold=p.affinity_threshold,
            **{k: v for k, v in overrides.items() if v},
        )
        association = self.config.association
        self.runner, self.latent_dim, self.backend = None, 0, "numpy"
        if p.method == "3dmotformer":
            self.runner, self.latent_dim = motformer_runner(
                p.checkpoint or None, backend=p.backend, device=p.device, log=self.get_logger().info
            )
            self.backend = self.runner.backend
        self.ids = IdSource()
        self.trackers: dict[str, Tracker] = {topic: self._new_tracker() for topic in p.detection_topics}
        self.odometry = OdometryBuffer()
        self.pub = self.create_publisher(PointCloud2, p.output_topic, result_qos())
        self.marker_pub = self.create_publisher(MarkerArray, p.markers_topic, result_qos()) if p.markers_topic else None
        for topic in p.detection_topics:
            self.create_subscription(PointCloud2, topic, lambda msg, t=topic: self.on_detections(msg, t), result_qos(2))
        self.odometry_sub = (
            self.create_subscription(Odometry, p.odometry_topic, self.on_odometry, sensor_qos(depth=20))
            if p.odometry_topic
            else None
        )
        self.add_diagnostics(self._diagnostics)
        self.get_logger().info(f"tracking {p.detection_topics} with {p.method} ({association}, {self.backend})")

    def _new_tracker(self) -> Tracker:
        return create_tracker(self.p.method, self.config, self.ids, self.runner, self.latent_dim, KalmanConfig())

    def _diagnostics(self) -> dict[str, str]:
        live = sum(len(t.tracks) for t in self.trackers.values())
        return {
            "method": self.p.method,
            "backend": self.backend,
            "live_tracks": str(live),
            "ids": str(self.ids.next_id),
        }

    # -- inputs --------------------------------------------------------------------------------

    def on_odometry(self, msg: Odometry) -> None:
        if not self.accept_stamp(ODOMETRY_STREAM, msg.header.stamp, on_time_jump=self._reset_all):
            return
        pose, twist = msg.pose.pose, msg.twist.twist
        q = pose.orientation
        yaw = float(np.arctan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z)))
        values = (pose.position.x, pose.position.y, yaw, twist.linear.x, twist.linear.y, twist.angular.z)
        if not np.isfinite(values).all():
            self.reject("nan", "odometry with a non-finite value", self.p.odometry_topic)
            return
        c, s = np.cos(yaw), np.sin(yaw)
        vx, vy = c * twist.linear.x - s * twist.linear.y, s * twist.linear.x + c * twist.linear.y
        t = stamp_to_ns(msg.header.stamp) / 1e9
        self.odometry.add(t, pose.position.x, pose.position.y, yaw, vx, vy, twist.angular.z)

    def _reset_all(self) -> None:
        """A jump back in time on any stream (the stamp guard forgets every stream's last stamp)."""
        self.odometry.clear()
        for tracker in self.trackers.values():
            tracker.reset()

    def _take_pending_odometry(self) -> None:
        """Odometry that has arrived goes in before a detection frame is placed: rclpy's executor
        serves subscriptions in creation order, so detections ready in the same wake-up as their pose
        would otherwise be placed with an older pose, extrapolated (and two replays of a bag differ)."""
        if self.odometry_sub is not None:
            for msg, _ in take_all(self.odometry_sub):
                self.on_odometry(msg)

    def on_detections(self, msg: PointCloud2, topic: str) -> None:
        self._take_pending_odometry()
        tracker = self.trackers[topic]
        if not self.accept_stamp(topic, msg.header.stamp, on_time_jump=self._reset_all):
            return
        with self.frame(msg.header.stamp):
            try:
                table = cloud_to_objects(msg)
            except InputError as exc:
                self.reject_error(exc, topic)
                return
            valid = valid_objects(table)
            invalid = int(valid.size - np.count_nonzero(valid))
            if invalid:
                self.count("invalid_detections", invalid)
                self.warn_limited("invalid", f"{invalid} detections with NaN or non-positive sizes dropped on {topic}")
            t = stamp_to_ns(msg.header.stamp) / 1e9
            ego = self._ego_at(t)
            if ego is None:
                self.reject("no_odometry", f"no pose within {self.p.max_odometry_gap} s of the stamp", topic)
                return
            tracks = tracker.step(Detections.from_table(ego.to_map(table[valid])), t, ego)
            if self.p.publish_on == "every" or topic == self.p.detection_topics[0]:
                others = [o.output(t) for o in self.trackers.values() if o is not tracker and o.time is not None]
                self._publish(np.concatenate([tracks, *others]), msg.header)

    def _ego_at(self, t: float) -> EgoState | None:
        if not self.p.odometry_topic:
            return EgoState()
        return self.odometry.pose_at(t, self.p.max_odometry_gap)

    def _publish(self, tracks: np.ndarray, input_header: Header) -> None:
        header = Header(stamp=input_header.stamp, frame_id=self.p.map_frame)
        self.pub.publish(objects_to_cloud(tracks, header))
        if self.marker_pub is not None:
            self.marker_pub.publish(objects_to_markers(tracks, header, namespace="tracks"))


main = node_main(TrackerNode)
