"""Planner nodes in their own processes over real DDS: answers with the input's stamp, bad input
rejected and counted, start-up errors naming the culprit.

The track comes from a file (``track_file``) or from latched /map Paths published by the test.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import Image, JointState, PointCloud2
from support import DISCOVERY_S, diagnostics_values, launched

from planning_nodes.messages import COMMAND_NAMES, RISK_ENCODING, xy_to_path
from planning_nodes.node_common import MAP_TOPICS
from racestack.node import latched_qos, ns_to_stamp, stamp_to_ns
from racestack.objects import empty_objects, objects_to_cloud
from simulation.track import oval_track

pytestmark = pytest.mark.ros

ODOMETRY, OBJECTS = "/localization/odometry", "/perception/objects/tracked"
COMMAND, TRAJECTORY, RISK = "/control/command", "/planning/trajectory", "/planning/risk_map"
COMMON = {"diagnostics_period": 0.3, "max_input_age": 1.0}


@pytest.fixture(scope="module")
def track():
    return oval_track(length=1600.0, turn_radius=170.0, width=12.0)


@pytest.fixture(scope="module")
def track_file(track, tmp_path_factory):
    return str(track.save(tmp_path_factory.mktemp("track") / "oval.npz"))


class Lines(list):
    def __call__(self, line: str) -> None:
        self.append(line)

    def __bool__(self) -> bool:
        return True


def odometry(track, stamp_ns: int, s: float = 60.0, speed: float = 40.0, x_offset: float = 0.0) -> Odometry:
    point = track.racing.point_at(s)
    yaw = float(track.racing.heading_at(s))
    msg = Odometry()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id, msg.child_frame_id = "map", "base_link"
    msg.pose.pose.position.x = float(point[0]) + x_offset
    msg.pose.pose.position.y = float(point[1])
    msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
    msg.twist.twist.linear.x = speed
    return msg


def opponents(track, stamp_ns: int, s: float = 110.0, nan_row: bool = False) -> PointCloud2:
    table = empty_objects(2 if nan_row else 1)
    xy = track.frenet_to_xy(np.array([s]), np.array([float(track.racing_offset_at(s))]))[0]
    yaw = float(track.heading_at(s))
    table["x"], table["y"], table["yaw"] = xy[0], xy[1], yaw
    table["vx"], table["vy"] = 30.0 * math.cos(yaw), 30.0 * math.sin(yaw)
    table["length"], table["width"], table["height"] = 4.9, 1.9, 1.2
    table["track_id"] = [7, 8][: table.size]
    if nan_row:
        table["x"][1] = np.nan
    msg = objects_to_cloud(table)
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), "map"
    return msg


def stamped(collector, stamp_ns: int):
    return next((m for m in reversed(collector.messages()) if stamp_to_ns(m.header.stamp) == stamp_ns), None)


def wait_ready(probe, lines, topics: list[tuple[type, str]], output: str) -> None:
    publishers = [probe.publisher(kind, topic) for kind, topic in topics]
    assert probe.wait_for(lambda: all(p.get_subscription_count() > 0 for p in publishers), 120.0), lines[-20:]
    assert probe.wait_for(lambda: probe.node.count_publishers(output) > 0, DISCOVERY_S), lines[-20:]
    time.sleep(0.5)


def test_mpc_planner_answers_each_frame_and_rejects_bad_input(probe, track_file, track):
    lines = Lines()
    params = {**COMMON, "track_file": track_file, "use_risk_map": False, "trigger": "odometry"}
    commands = probe.collect(JointState, COMMAND, keep=50)
    paths = probe.collect(Path, TRAJECTORY, keep=50)
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics", keep=50)
    with launched({"planner": {"name": "mpc_planner", "entry": "mpc_planner", "parameters": params}}, echo=lines):
        wait_ready(probe, lines, [(Odometry, ODOMETRY), (PointCloud2, OBJECTS)], COMMAND)
        now = probe.now_ns()
        probe.publish(OBJECTS, opponents(track, now))
        time.sleep(0.2)
        for k in range(3):
            stamp = now + k * 100_000_000
            probe.publish(ODOMETRY, odometry(track, stamp, s=60.0 + 4.0 * k))
            assert probe.wait_for(lambda stamp=stamp: stamped(commands, stamp) is not None, 30.0), lines[-30:]
        command = stamped(commands, stamp)
        assert list(command.name) == list(COMMAND_NAMES)
        assert all(math.isfinite(v) for v in command.position)
        path = stamped(paths, stamp)
        assert path.header.frame_id == "map" and len(path.poses) == 31
        pose_stamps = [stamp_to_ns(p.header.stamp) for p in path.poses]
        assert pose_stamps[0] == stamp and np.allclose(np.diff(pose_stamps), 100_000_000)
        # bad input: a NaN pose, an out-of-order and a stale stamp are dropped and counted
        nan_stamp = probe.now_ns()
        probe.publish(ODOMETRY, odometry(track, nan_stamp, x_offset=float("nan")))
        time.sleep(0.1)
        probe.publish(ODOMETRY, odometry(track, nan_stamp - 200_000_000))
        time.sleep(1.3)
        probe.publish(ODOMETRY, odometry(track, nan_stamp + 1_000_000))
        time.sleep(0.1)
        stamp = probe.now_ns()
        probe.publish(ODOMETRY, odometry(track, stamp, s=80.0))
        assert probe.wait_for(lambda: stamped(commands, stamp) is not None, 30.0), lines[-30:]

        def counted() -> bool:
            values = diagnostics_values(diagnostics.messages(), "mpc_planner")
            return int(values.get("rejected.nan", 0)) >= 1 and int(values.get("rejected.stale", 0)) >= 1

        assert probe.wait_for(counted, 10.0), diagnostics_values(diagnostics.messages(), "mpc_planner")
        assert diagnostics_values(diagnostics.messages(), "mpc_planner")["use_risk_map"] == "False"


def test_mpc_planner_reads_the_track_from_map_paths(probe, track):
    lines = Lines()
    params = {**COMMON, "use_risk_map": False, "trigger": "odometry"}
    commands = probe.collect(JointState, COMMAND, keep=20)
    header_stamp = ns_to_stamp(0)
    geometry = {
        "centerline": track.centerline,
        "left_bound": track.left_bound,
        "right_bound": track.right_bound,
        "racing_line": track.racing_line,
    }
    for name in MAP_TOPICS:
        probe.publish(f"/map/{name}", xy_to_path(geometry[name], header_stamp), latched_qos())
    with launched({"planner": {"name": "mpc_planner", "entry": "mpc_planner", "parameters": params}}, echo=lines):
        wait_ready(probe, lines, [(Odometry, ODOMETRY)], COMMAND)
        # frames before the latched paths have arrived are rejected (no_track): send until answered
        answered = False
        for _ in range(30):
            stamp = probe.now_ns()
            probe.publish(ODOMETRY, odometry(track, stamp))
            if probe.wait_for(lambda stamp=stamp: stamped(commands, stamp) is not None, 2.0):
                answered = True
                break
        assert answered, lines[-30:]
        assert any("track from /map" in line for line in lines)


def test_mpc_planner_names_a_missing_weights_file(probe, track_file):
    lines = Lines()
    params = {**COMMON, "track_file": track_file, "weights_file": "/nonexistent/weights.yaml"}
    with launched(
        {"planner": {"name": "mpc_planner", "entry": "mpc_planner", "parameters": params, "required": False}},
        echo=lines,
    ) as session:
        assert probe.wait_for(lambda: any("start-up error" in line for line in lines), 60.0), lines[-20:]
        assert any("/nonexistent/weights.yaml" in line for line in lines)
        del session


def test_risk_map_node_publishes_the_stamped_map(probe, track_file, track):
    lines = Lines()
    params = {**COMMON, "track_file": track_file, "backend": "onnxruntime"}
    maps = probe.collect(Image, RISK, keep=20)
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics", keep=50)
    with launched({"risk_map": {"name": "risk_map", "entry": "risk_map", "parameters": params}}, echo=lines):
        wait_ready(probe, lines, [(Odometry, ODOMETRY), (PointCloud2, OBJECTS)], RISK)
        stamp = probe.now_ns()
        for k in range(3):
            stamp = probe.now_ns()
            probe.publish(ODOMETRY, odometry(track, stamp, s=60.0 + 4.0 * k))
            time.sleep(0.05)
            probe.publish(OBJECTS, opponents(track, stamp, s=110.0 + 3.0 * k, nan_row=True))
            assert probe.wait_for(lambda stamp=stamp: stamped(maps, stamp) is not None, 60.0), lines[-30:]
        msg = stamped(maps, stamp)
        assert msg.encoding == RISK_ENCODING and msg.header.frame_id == "base_link"
        values = np.frombuffer(bytes(msg.data), np.float32).reshape(msg.height, msg.width, -1)
        assert np.all((values >= 0.0) & (values <= 1.0)) and values.max() > 0.05

        def counted() -> bool:
            return int(diagnostics_values(diagnostics.messages(), "risk_map").get("objects_dropped", 0)) >= 3

        assert probe.wait_for(counted, 10.0)


def test_pure_pursuit_answers_each_frame(probe, track_file, track):
    lines = Lines()
    params = {**COMMON, "track_file": track_file, "trigger": "odometry"}
    commands = probe.collect(JointState, COMMAND, keep=20)
    with launched({"planner": {"name": "pure_pursuit", "entry": "pure_pursuit", "parameters": params}}, echo=lines):
        wait_ready(probe, lines, [(Odometry, ODOMETRY)], COMMAND)
        stamp = probe.now_ns()
        probe.publish(ODOMETRY, odometry(track, stamp))
        assert probe.wait_for(lambda: stamped(commands, stamp) is not None, 30.0), lines[-30:]
        values = dict(zip(stamped(commands, stamp).name, stamped(commands, stamp).position, strict=True))
        assert abs(values["steering_angle"]) < 0.35 and values["speed"] > 0.0
