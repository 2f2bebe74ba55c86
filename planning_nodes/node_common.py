"""What the planner nodes share: the track (file or latched /map Paths), odometry by stamp, objects.

A mixin over ``RacestackNode`` so ``mpc_planner`` and ``pure_pursuit`` (and ``risk_map``) read their
inputs the same way and reject the same bad input the same way.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import PointCloud2

from planning_nodes.messages import odometry_to_ego, track_from_paths
from planning_nodes.plan import EgoState
from racestack.errors import InputError, ModelFileError
from racestack.node import RacestackNode, latched_qos, result_qos, sensor_qos, stamp_to_ns
from racestack.objects import cloud_to_objects, valid_objects
from racestack.params import Param
from simulation.track import Track, load_track

MAP_TOPICS = ("centerline", "left_bound", "right_bound", "racing_line")

INPUT_PARAMS: tuple[Param, ...] = (
    Param("track_file", "", "Track file (.npz from Track.save or a track .yaml); empty: the latched /map/* Paths."),
    Param("odometry_topic", "/localization/odometry", "Ego odometry (pose in map, twist in base_link)."),
    Param("objects_topic", "/perception/objects/tracked", "Tracked objects table in map (or /ground_truth/objects)."),
    Param("odometry_tolerance", 0.06, "Largest stamp difference (s) between a frame and the odometry used.", min=0.0),
    Param("objects_timeout", 0.5, "Objects older than this (s) before a frame are ignored.", min=0.0),
)


class PlannerInputs:
    """Track, odometry buffer and latest objects; call ``setup_inputs`` from the node's __init__."""

    track: Track | None
    _odometry: OrderedDict
    _objects: tuple[int, np.ndarray] | None
    _map_msgs: dict[str, Path]

    def setup_inputs(
        self: RacestackNode, on_track: Callable[[Track], None], on_frame: Callable | None = None, trigger: str = ""
    ) -> None:
        """Subscribe the inputs; ``on_frame(stamp)`` runs after the ``trigger`` input (odometry|objects) is stored."""
        self.track = None
        self._odometry = OrderedDict()
        self._objects = None
        self._map_msgs = {}
        self._on_track = on_track
        self._on_frame_cb, self._trigger = on_frame, trigger
        if self.p.track_file:
            try:
                track = load_track(self.p.track_file)
            except Exception as exc:
                raise ModelFileError(self.p.track_file, f"cannot load the track: {exc}") from exc
            self._set_track(track)
        else:
            for name in MAP_TOPICS:
                self.create_subscription(
                    Path, f"/map/{name}", lambda msg, name=name: self._on_map(name, msg), latched_qos()
                )
        # a second of poses: a node busy for a while (its first inference, a new track) loses none
        self.create_subscription(Odometry, self.p.odometry_topic, self._on_odometry, sensor_qos(50))
        self.create_subscription(PointCloud2, self.p.objects_topic, self._on_objects, result_qos(2))

    def _set_track(self, track: Track) -> None:
        self.track = track
        self._on_track(track)

    def _on_map(self: RacestackNode, name: str, msg: Path) -> None:
        self._map_msgs[name] = msg
        if len(self._map_msgs) < len(MAP_TOPICS):
            return
        try:
            track = track_from_paths(*(self._map_msgs[n] for n in MAP_TOPICS))
        except (InputError, ValueError) as exc:
            self.reject("layout", f"/map paths do not form a track: {exc}", "/map")
            return
        self.get_logger().info(f"track from /map: {len(track.centerline)} points, {track.length:.0f} m")
        self._set_track(track)

    def _on_odometry(self: RacestackNode, msg: Odometry) -> None:
        if not self.accept_stamp("odometry", msg.header.stamp, self._reset_inputs):
            return
        try:
            ego = odometry_to_ego(msg, self.vehicle.wheelbase)
        except InputError as exc:
            self.reject_error(exc, self.p.odometry_topic)
            return
        stamp = stamp_to_ns(msg.header.stamp)
        self._odometry[stamp] = ego
        while len(self._odometry) > 50:
            self._odometry.popitem(last=False)
        if self._trigger == "odometry" and self._on_frame_cb is not None:
            self._on_frame_cb(msg.header.stamp)

    def _on_objects(self: RacestackNode, msg: PointCloud2) -> None:
        if not self.accept_stamp("objects", msg.header.stamp):
            return
        try:
            table = cloud_to_objects(msg)
        except InputError as exc:
            self.reject_error(exc, self.p.objects_topic)
            return
        keep = valid_objects(table)
        if not keep.all():
            self.count("objects_dropped", int((~keep).sum()))
            self.warn_limited("objects_dropped", f"{int((~keep).sum())} invalid object rows dropped")
        self._objects = (stamp_to_ns(msg.header.stamp), table[keep])
        if self._trigger == "objects" and self._on_frame_cb is not None:
            self._on_frame_cb(msg.header.stamp)

    def ego_at(self: RacestackNode, stamp_ns: int) -> EgoState | None:
        """The odometry nearest to ``stamp_ns`` within ``odometry_tolerance``; None (rejected) otherwise."""
        if not self._odometry:
            self.reject("no_odometry", "no odometry received yet")
            return None
        stamps = np.fromiter(self._odometry.keys(), dtype=np.int64)
        best = int(stamps[np.argmin(np.abs(stamps - stamp_ns))])
        if abs(best - stamp_ns) > self.p.odometry_tolerance * 1e9:
            self.reject("no_odometry", f"no odometry within {self.p.odometry_tolerance} s of the frame")
            return None
        return self._odometry[best]

    def objects_at(self, stamp_ns: int) -> np.ndarray | None:
        if self._objects is None or stamp_ns - self._objects[0] > self.p.objects_timeout * 1e9:
            return None
        return self._objects[1]

    def _reset_inputs(self) -> None:
        self._odometry.clear()
        self._objects = None
