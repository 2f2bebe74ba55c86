"""The simulator node in its own process over real DDS: lockstep, topics, commands, start-up errors.

The test process plays the stack: a probe node answers each LiDAR frame with a /control/command
stamped like the frame (after a random delay), the way the planner does.
"""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid, Odometry, Path
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2
from support import diagnostics_values, launched

from racestack.node import latched_qos, stamp_to_ns
from racestack.objects import cloud_to_objects

pytestmark = pytest.mark.ros

RATE = 20.0
PERIOD_NS = 50_000_000
SCENARIO = """
name: node_test
seed: 3
rate: 20.0
duration: 3600.0
track: {type: oval}
ego: {start_s: 0.0, speed: 20.0}
opponents:
  - {gap: 40.0, speed: 25.0}
  - {gap: 90.0, lane: -3.0, speed: 25.0}
flying_objects: {count: 2}
sensors:
  lidar: {beams: 32, vertical_fov: [-20.0, 10.0], columns: 360, rate: 10.0}
  camera: {width: 160, height: 120, fx: 80.0, fy: 80.0, cx: 80.0, cy: 60.0, rate: 10.0}
  scenery: {trees_per_km: 5.0, tree_line_per_km: 10.0, grandstands: false}
"""


class Answerer:
    """Answers LiDAR frames with commands after a random delay; can be paused."""

    def __init__(self, probe, acceleration: float = 2.0) -> None:
        self.probe = probe
        self.acceleration = acceleration
        self.enabled = True
        self.closed = False
        self.answered: dict[int, float] = {}
        self.rng = random.Random(4)
        self.lock = threading.Lock()

    def __call__(self, msg: PointCloud2) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        if not self.enabled or stamp in self.answered:
            return
        delay = self.rng.uniform(0.0, 0.15)
        threading.Timer(delay, self._answer, args=(msg.header,)).start()

    def _answer(self, header) -> None:
        command = JointState(header=header)
        command.name = ["steering_angle", "steering_rate", "acceleration"]
        command.position = [0.0, 0.0, self.acceleration]
        with self.lock:
            if self.closed:
                return
            self.answered[stamp_to_ns(header.stamp)] = time.monotonic()
            self.probe.publish("/control/command", command)

    def close(self) -> None:
        with self.lock:
            self.closed = True


@pytest.fixture(scope="module")
def simulator(tmp_path_factory):
    from racestack.probe import Probe

    scenario = tmp_path_factory.mktemp("sim") / "node_test.yaml"
    scenario.write_text(SCENARIO)
    params = {
        "scenario": str(scenario),
        "clock_mode": "lockstep",
        "drive": "command",
        "lockstep_timeout": 0.5,
        "command_timeout": 0.25,
        "bev_cells": 64,
        "bev_resolution": 0.5,
        "diagnostics_period": 0.25,
    }
    lines: list[str] = []
    slots = {"simulator": {"name": "simulator", "entry": "simulator", "parameters": params}}
    with launched(slots, echo=lines.append) as session, Probe("sim_test_probe") as probe:
        answerer = Answerer(probe)
        probe.publisher(JointState, "/control/command")  # the stack's command publisher exists from the start
        topics = {
            "odometry": probe.collect(Odometry, "/localization/odometry"),
            "lidar": probe.collect(PointCloud2, "/sensing/lidar/points", keep=5, callback=answerer),
            "clock": probe.collect(Clock, "/clock", keep=50),
            "objects": probe.collect(PointCloud2, "/ground_truth/objects", keep=5),
            "flying": probe.collect(PointCloud2, "/ground_truth/flying_objects", keep=5),
            "bev": probe.collect(OccupancyGrid, "/ground_truth/bev/segmentation", keep=5),
            "image": probe.collect(Image, "/sensing/camera/image_raw", keep=5),
            "info": probe.collect(CameraInfo, "/sensing/camera/camera_info", keep=5),
            "boxes": probe.collect(PointCloud2, "/ground_truth/camera/boxes", keep=5),
            "diagnostics": probe.collect(DiagnosticArray, "/diagnostics", keep=50),
        }
        ok = probe.wait_for(lambda: len(topics["odometry"].snapshot()) >= 10, 180.0)
        assert ok, "simulator produced no frames:\n" + "\n".join(lines[-30:])
        yield session, probe, answerer, topics, lines
        answerer.close()


def _stamps(collector) -> list[int]:
    return [stamp_to_ns(m.header.stamp) for m in collector.messages()]


def _diagnostic(topics, key: str) -> int:
    return int(diagnostics_values(topics["diagnostics"].messages(), "simulator").get(key, "-1"))


def test_lockstep_never_skips_a_frame(simulator):
    _, probe, answerer, topics, _ = simulator
    start = len(topics["odometry"].snapshot())
    assert probe.wait_for(lambda: len(topics["odometry"].snapshot()) >= start + 40, 120.0)
    received = topics["odometry"].snapshot()
    stamps = [stamp_to_ns(r.msg.header.stamp) for r in received]
    unique = sorted(set(stamps))
    assert stamps == unique, "every frame once, in order"
    assert np.all(np.diff(unique) == PERIOD_NS), "consecutive frames, none skipped"
    assert unique[0] == 1_000_000_000, "the first frame (sim time 1 s) was not lost"
    # Every frame after an answered LiDAR frame arrived after the answer was sent.
    arrival = {stamp_to_ns(r.msg.header.stamp): r.mono_ns / 1e9 for r in received}
    with answerer.lock:
        answered = dict(answerer.answered)
    checked = 0
    for stamp, sent in answered.items():
        following = stamp + PERIOD_NS
        if following in arrival and stamp != unique[0]:
            assert arrival[following] >= sent, "the simulator stepped before the stack answered"
            checked += 1
    assert checked >= 10
    assert probe.wait_for(lambda: _diagnostic(topics, "lockstep_timeouts") == 0, 5.0)


def test_lockstep_times_out_when_the_stack_is_silent(simulator):
    _, probe, answerer, topics, _ = simulator
    answerer.enabled = False
    try:
        before = len(set(_stamps(topics["odometry"])))
        assert probe.wait_for(lambda: _diagnostic(topics, "lockstep_timeouts") >= 3, 30.0)
        after = sorted(set(_stamps(topics["odometry"])))
        assert len(after) > before + 3, "frames keep coming, one time-out at a time"
        assert np.all(np.diff(after) == PERIOD_NS)
        assert _diagnostic(topics, "command_fallbacks") >= 1, "a silent stack makes the car brake"
    finally:
        answerer.enabled = True


def test_commands_drive_the_car(simulator):
    _, probe, answerer, topics, _ = simulator
    answerer.acceleration = 6.0
    first = topics["odometry"].messages()[-1]
    assert probe.wait_for(lambda: stamp_to_ns(topics["odometry"].messages()[-1].header.stamp)
                          >= stamp_to_ns(first.header.stamp) + 40 * PERIOD_NS, 120.0)
    last = topics["odometry"].messages()[-1]
    elapsed = (stamp_to_ns(last.header.stamp) - stamp_to_ns(first.header.stamp)) / 1e9
    gained = last.twist.twist.linear.x - first.twist.twist.linear.x
    assert 0.5 * 6.0 * elapsed < gained <= 6.0 * elapsed + 0.5
    bad = JointState(name=["steering_angle", "acceleration"], position=[float("nan"), 1.0])
    bad.header.stamp = last.header.stamp
    probe.publish("/control/command", bad)
    assert probe.wait_for(lambda: _diagnostic(topics, "rejected.nan") >= 1, 10.0)


def test_topics_follow_the_contract(simulator):
    _, probe, _, topics, _ = simulator
    assert probe.wait_for(lambda: all(len(topics[k].snapshot()) >= 2 for k in ("image", "boxes", "bev", "flying")), 60)
    odometry = topics["odometry"].messages()[-1]
    assert (odometry.header.frame_id, odometry.child_frame_id) == ("map", "base_link")
    cloud = topics["lidar"].messages()[-1]
    assert cloud.header.frame_id == "lidar"
    assert [f.name for f in cloud.fields][:4] == ["x", "y", "z", "intensity"]
    lidar_stamps = sorted(set(_stamps(topics["lidar"])))
    assert all(np.diff(lidar_stamps) % (2 * PERIOD_NS) == 0), "a 10 Hz LiDAR fires every second 20 Hz frame"
    objects = cloud_to_objects(topics["objects"].messages()[-1])
    assert sorted(objects["track_id"].tolist()) == [1, 2]
    assert topics["objects"].messages()[-1].header.frame_id == "map"
    grid = topics["bev"].messages()[-1]
    assert (grid.info.width, grid.info.height, grid.info.resolution) == (64, 64, 0.5)
    assert grid.header.frame_id == "base_link" and grid.info.origin.position.x == -16.0
    assert set(np.frombuffer(grid.data, np.int8).tolist()) >= {0, 1}
    image, info = topics["image"].messages()[-1], topics["info"].messages()[-1]
    assert (image.encoding, image.width, image.height) == ("rgb8", 160, 120)
    assert image.header.frame_id == info.header.frame_id == "camera_optical"
    assert stamp_to_ns(image.header.stamp) == stamp_to_ns(info.header.stamp)
    # /clock and odometry are separate topics, so the probe may take a frame's odometry first.
    newest = max(_stamps(topics["odometry"]))
    assert probe.wait_for(lambda: max(stamp_to_ns(m.clock) for m in topics["clock"].messages()) >= newest, 10.0)
    # The track is latched: a subscriber that joins now still gets it.
    paths = {name: probe.collect(Path, f"/map/{name}", qos=latched_qos())
             for name in ("centerline", "left_bound", "right_bound", "racing_line")}
    assert probe.wait_for(lambda: all(len(c.snapshot()) == 1 for c in paths.values()), 20.0)
    centerline = paths["centerline"].messages()[0]
    assert centerline.header.frame_id == "map" and len(centerline.poses) == 2400


def test_bad_scenario_stops_the_node_naming_the_key(tmp_path):
    scenario = tmp_path / "broken.yaml"
    scenario.write_text("track: {type: oval}\nopponents:\n  - {gap: 10, lane: left}\n")
    lines: list[str] = []
    slots = {"simulator": {"name": "simulator", "entry": "simulator", "parameters": {"scenario": str(scenario)}}}
    with launched(slots, echo=lines.append, heard=False) as session:
        assert session.wait(120.0) == 1
    text = "\n".join(session.failures)
    assert "exited with code 2" in text
    assert "broken.yaml: opponents[0].lane: expected a number" in text
