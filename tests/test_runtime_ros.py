"""The node runtime and the launcher with real processes over real DDS.

Two utility nodes run as their own processes (started by the real launcher); this test process
publishes inputs and reads outputs and /diagnostics through a probe node.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from nav_msgs.msg import OccupancyGrid
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import PointCloud2
from support import DISCOVERY_S, REPO, diagnostics_values, launched, run_command

from racestack.image import array_to_image
from racestack.node import ns_to_stamp
from racestack.pointcloud import xyz_to_cloud

pytestmark = pytest.mark.ros

SLOTS = {
    "relay": {"name": "cloud_relay", "entry": "cloud_relay",
              "parameters": {"diagnostics_period": 0.2, "max_input_age": 0.0}},
    "stats": {"name": "topic_stats", "entry": "topic_stats", "parameters": {"diagnostics_period": 0.2}},
}
FIELDS = ("x", "y", "z", "intensity")


class Lines:
    """Collects the launched nodes' output lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)


@pytest.fixture(scope="module")
def stack():
    from racestack.probe import Probe

    lines = Lines()
    with launched(SLOTS, echo=lines) as session, Probe("runtime_test_probe") as probe:
        centroids = probe.collect(PointStamped, "/topic_stats/cloud_centroid")
        summaries = probe.collect(PointStamped, "/topic_stats/image_summary")
        diagnostics = probe.collect(DiagnosticArray, "/diagnostics", keep=200)
        assert probe.wait_for_subscribers("/sensing/lidar/points", 1, 30.0), "relay never subscribed"
        assert probe.wait_for_subscribers("/sensing/lidar/points_clean", 1, 30.0), "stats never subscribed"
        assert probe.wait_for(lambda: probe.node.count_publishers("/sensing/lidar/points_clean") > 0, DISCOVERY_S)
        # the chain is best effort: a cloud sent while a reader is still matching its writer is lost,
        # so clouds go out until one comes through both nodes
        primer = np.ones((10, 4), np.float32)
        assert probe.wait_for(lambda: _send(probe, _cloud(probe, primer), pause=0.2) or centroids.items, 60.0)
        time.sleep(0.5)
        with centroids.lock:
            centroids.items.clear()
        yield session, probe, centroids, summaries, diagnostics, lines


def _cloud(probe, values: np.ndarray, stamp_ns: int | None = None) -> PointCloud2:
    msg = xyz_to_cloud(values, FIELDS)
    msg.header.stamp = ns_to_stamp(stamp_ns) if stamp_ns else probe.node.get_clock().now().to_msg()
    msg.header.frame_id = "lidar"
    return msg


def _send(probe, msg, topic="/sensing/lidar/points", pause=0.05) -> None:
    probe.publish(topic, msg)
    time.sleep(pause)


def _handled(diagnostics, node: str) -> int:
    """Grows with every frame ``node`` takes in, accepted or rejected, as its diagnostics last said."""
    values = diagnostics_values(diagnostics.messages(), node)
    return int(values.get("frames", "0")) + int(values.get("rejected", "0"))


def _send_each(probe, diagnostics, node: str, messages: list, topic: str = "/sensing/lidar/points") -> None:
    """Sends the messages one at a time, each once ``node`` has taken in the one before: its input
    keeps only the newest frame (best effort, depth 1), so a burst loses all but the last on a busy
    machine. A message not taken in within 5 s was lost on the way and is sent again."""
    time.sleep(0.5)  # the diagnostics of earlier frames come once a period
    for msg in messages:
        before = _handled(diagnostics, node)
        for _ in range(3):
            probe.publish(topic, msg)
            if probe.wait_for(lambda b=before: _handled(diagnostics, node) > b, 5.0):
                break
        else:
            raise AssertionError(f"{node} took in none of three copies of a message on {topic}")


def _latest(probe, diagnostics, node: str, key: str, at_least: int, timeout: float = 5.0) -> int:
    def value() -> int:
        return int(diagnostics_values(diagnostics.messages(), node).get(key, "0"))

    probe.wait_for(lambda: value() >= at_least, timeout)
    return value()


def test_messages_flow_through_two_node_processes(stack) -> None:
    session, probe, centroids, _, diagnostics, _ = stack
    rng = np.random.default_rng(3)
    sent = []
    for _ in range(5):
        values = rng.normal(10.0, 1.0, size=(20000, 4)).astype(np.float32)
        msg = _cloud(probe, values)
        sent.append((msg.header.stamp.sec, msg.header.stamp.nanosec, values[:, :3].mean(axis=0)))
        _send(probe, msg, pause=0.15)
    assert probe.wait_for(lambda: len(centroids.items) >= 5, 10.0), f"got {len(centroids.items)} centroids"
    by_stamp = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in centroids.messages()}
    for sec, nanosec, mean in sent:
        out = by_stamp[(sec, nanosec)]
        assert out.header.frame_id == "lidar"
        np.testing.assert_allclose([out.point.x, out.point.y, out.point.z], mean, rtol=1e-4)
    assert _latest(probe, diagnostics, "cloud_relay", "frames", 5) >= 5  # diagnostics come once a period
    relay = diagnostics_values(diagnostics.messages(), "cloud_relay")
    assert float(relay["processing_ms_p50"]) > 0
    assert session.running() == ["cloud_relay", "topic_stats"]  # launch order, restarts included


def test_a_poller_takes_what_arrived_with_its_reception_time(stack) -> None:
    """The benchmarks' reader without an executor: every relayed cloud, its bytes, and a reception
    time between its sending and its taking."""
    from racestack.cdr import header_stamp_ns
    from racestack.node import sensor_qos

    _, probe, _, _, _, _ = stack
    take = probe.poller(PointCloud2, "/sensing/lidar/points_clean", sensor_qos(10))
    assert probe.wait_for(lambda: probe.node.count_subscribers("/sensing/lidar/points_clean") >= 2, DISCOVERY_S)
    taken: list[tuple[bytes, int]] = []
    sent = {}
    for _ in range(3):  # a reader still matching its writer loses a best-effort message: send until one arrives
        for _ in range(3):
            msg = _cloud(probe, np.full((50, 4), 2.0, np.float32))
            sent[header_stamp_ns(serialize_message(msg), PointCloud2)] = time.time_ns()
            _send(probe, msg, pause=0.2)
        taken += take()
        if taken:
            break
    after = time.time_ns()
    assert taken, "no relayed cloud reached the poller"
    for data, received_ns in taken:
        stamp = header_stamp_ns(data, PointCloud2)
        assert stamp in sent and sent[stamp] <= received_ns <= after
        assert deserialize_message(data, PointCloud2).width == 50
    assert take() == []


def test_serialized_bytes_published_from_a_reused_buffer_reach_a_node_with_each_stamp(stack) -> None:
    """``publish_serialized`` hands rcl the caller's buffer, not a copy: one cloud buffer, re-stamped in
    place between publishes and passed as bytearray, memoryview, numpy array and bytes, reaches the
    relay process once per stamp, each time with the stamp it had when it was published."""
    from racestack.cdr import set_header_stamp
    from racestack.publishing import one_copy_publishing, publish_serialized

    _, probe, centroids, _, _, _ = stack
    assert one_copy_publishing(), "rcl's library was not found in this process"
    publisher = probe.publisher(PointCloud2, "/sensing/lidar/points")
    buffer = bytearray(serialize_message(_cloud(probe, np.full((1000, 4), 3.0, np.float32))))
    views = (lambda b: b, memoryview, lambda b: np.frombuffer(b, np.uint8), bytes)
    stamps = []
    for view in views:
        stamps.append(probe.now_ns())
        set_header_stamp(buffer, PointCloud2, stamps[-1])
        publish_serialized(publisher, view(buffer))
        time.sleep(0.15)
    keys = {(s // 1_000_000_000, s % 1_000_000_000) for s in stamps}

    def arrived() -> set:
        return keys & {(m.header.stamp.sec, m.header.stamp.nanosec) for m in centroids.messages()}

    assert probe.wait_for(lambda: arrived() == keys, 10.0), f"{len(arrived())} of {len(keys)} stamps came through"
    for msg in centroids.messages():
        if (msg.header.stamp.sec, msg.header.stamp.nanosec) in keys:
            np.testing.assert_allclose([msg.point.x, msg.point.y, msg.point.z], 3.0)


def test_publishing_serialized_bytes_on_a_destroyed_publisher_raises(probe) -> None:
    from rclpy.impl.implementation_singleton import rclpy_implementation

    from racestack.publishing import publish_serialized

    publisher = probe.node.create_publisher(PointCloud2, "/racestack_test/destroyed", 1)
    probe.node.destroy_publisher(publisher)
    with pytest.raises(rclpy_implementation.InvalidHandle):
        publish_serialized(publisher, serialize_message(PointCloud2()))


def test_a_polled_subscription_never_wakes_the_executor(stack) -> None:
    """Messages waiting on a polled subscription (``PolledGroup``) stay for ``take_all`` and cost the
    probe's executor thread nothing. With the subscription's QoS events in its wait set, the executor
    woke on every message and spun for as long as one was untaken (the bench's replayer at 52 % of a
    core)."""
    from racestack.node import sensor_qos

    _, probe, _, _, _, _ = stack
    take = probe.poller(PointCloud2, "/sensing/lidar/points_clean", sensor_qos(10))
    assert probe.wait_for(lambda: probe.node.count_subscribers("/sensing/lidar/points_clean") >= 2, DISCOVERY_S)
    spinner = psutil.Process().pid, probe._thread.native_id

    def spinner_cpu_s() -> float:
        return next(t.user_time + t.system_time for t in psutil.Process(spinner[0]).threads() if t.id == spinner[1])

    before = spinner_cpu_s()
    for _ in range(6):
        _send(probe, _cloud(probe, np.full((50, 4), 2.0, np.float32)), pause=0.25)
    spent = spinner_cpu_s() - before
    assert take(), "no relayed cloud waited on the polled subscription"
    assert spent < 0.3, f"the probe's executor thread used {spent:.2f} s of CPU in 1.5 s with clouds left untaken"


def test_bad_clouds_are_rejected_counted_and_logged_once(stack) -> None:
    _, probe, centroids, _, diagnostics, lines = stack
    good = np.ones((100, 4), np.float32)
    bad = []
    for _ in range(3):
        broken = _cloud(probe, good)
        broken.row_step += 16
        bad.append(broken)
        missing_x = xyz_to_cloud(good, ("a", "y", "z", "intensity"))
        missing_x.header.stamp = probe.node.get_clock().now().to_msg()
        bad.append(missing_x)
        bad.append(_cloud(probe, np.zeros((0, 4), np.float32)))
        bad.append(_cloud(probe, np.full((50, 4), np.nan, np.float32)))
    _send_each(probe, diagnostics, "cloud_relay", bad)
    for reason, count in (("layout", 3), ("missing_field", 3), ("empty", 6)):
        assert _latest(probe, diagnostics, "cloud_relay", f"rejected.{reason}", count) == count, reason
    assert lines.count("dropped input on /sensing/lidar/points: layout") == 1
    assert lines.count("dropped input on /sensing/lidar/points: missing_field") == 1
    assert lines.count("dropped input on /sensing/lidar/points: empty") == 1
    before = len(centroids.items)
    _send(probe, _cloud(probe, good))
    assert probe.wait_for(lambda: len(centroids.items) > before, 5.0), "relay stopped working after bad input"


def test_nan_points_are_removed_and_counted(stack) -> None:
    _, probe, centroids, _, diagnostics, _ = stack
    values = np.ones((1000, 4), np.float32)
    values[:10, 0] = np.nan
    before = len(centroids.items)
    _send(probe, _cloud(probe, values))
    assert probe.wait_for(lambda: len(centroids.items) > before, 5.0)
    assert centroids.messages()[-1].point.x == pytest.approx(1.0)
    assert _latest(probe, diagnostics, "cloud_relay", "nan_points", 10) >= 10


def test_unknown_image_encoding_is_rejected(stack) -> None:
    _, probe, _, summaries, diagnostics, lines = stack
    images = []
    for encoding in ("yuv422", "8UC3"):
        image = array_to_image(np.zeros((4, 4, 2 if encoding == "yuv422" else 3), np.uint8), encoding)
        image.encoding = "nv12_custom" if encoding == "8UC3" else encoding
        image.header.stamp = probe.node.get_clock().now().to_msg()
        images.append(image)
    _send_each(probe, diagnostics, "topic_stats", images, "/sensing/camera/image_raw")
    assert _latest(probe, diagnostics, "topic_stats", "rejected.encoding", 2) == 2
    assert lines.count("dropped input on /sensing/camera/image_raw: encoding") == 1
    good = array_to_image(np.full((6, 8, 3), 7, np.uint8), "rgb8")
    good.header.stamp = probe.node.get_clock().now().to_msg()
    _send(probe, good, "/sensing/camera/image_raw")
    assert probe.wait_for(lambda: len(summaries.items) >= 1, 5.0)
    summary = summaries.messages()[-1].point
    assert (summary.x, summary.y, summary.z) == (8.0, 6.0, 7.0)


def test_out_of_order_stamps_rejected_and_time_jump_resets(stack) -> None:
    _, probe, centroids, _, diagnostics, _ = stack
    base = probe.node.get_clock().now().nanoseconds
    values = np.ones((10, 4), np.float32)
    stamps = (base + 2_000_000_000, base + 1_900_000_000, base + 2_000_000_000)
    _send_each(probe, diagnostics, "cloud_relay", [_cloud(probe, values, stamp) for stamp in stamps])
    assert _latest(probe, diagnostics, "cloud_relay", "rejected.out_of_order", 1) == 1
    assert _latest(probe, diagnostics, "cloud_relay", "rejected.duplicate", 1) == 1
    before = len(centroids.items)
    _send(probe, _cloud(probe, values, base - 30_000_000_000))
    assert _latest(probe, diagnostics, "cloud_relay", "time_jumps", 1) == 1
    assert probe.wait_for(lambda: len(centroids.items) > before, 5.0), "frame after a time jump was dropped"


def test_a_publisher_whose_qos_cannot_match_is_warned_about_and_counted() -> None:
    from racestack.node import sensor_qos
    from racestack.probe import Probe

    topic = "/qos_test/segmentation"
    slots = {"objects": {"name": "object_extraction", "entry": "object_extraction",
                         "parameters": {"diagnostics_period": 0.2, "segmentation_topic": topic, "cloud_topic": ""}}}
    lines = Lines()
    with launched(slots, echo=lines), Probe("qos_test_probe") as probe:
        diagnostics = probe.collect(DiagnosticArray, "/diagnostics", keep=50)
        probe.publisher(OccupancyGrid, topic, sensor_qos())
        assert _latest(probe, diagnostics, "object_extraction", "incompatible_qos_publishers", 1, 30.0) >= 1
        warning = f"a publisher on {topic} offers QoS this subscription cannot take (RELIABILITY)"
        assert probe.wait_for(lambda: lines.count(warning) >= 1, 10.0), "\n".join(lines.lines[-20:])
        assert lines.count(warning) == 1


def test_invalid_parameter_is_reported_as_a_node_failure() -> None:
    lines = Lines()
    slots = {"relay": {"name": "cloud_relay", "entry": "cloud_relay", "parameters": {"max_input_age": -1.0}},
             "stats": SLOTS["stats"]}
    with launched(slots, echo=lines, heard=False) as session:
        assert session.wait(duration_s=30.0) == 1
        report = "\n".join(session.failures)
    assert "node 'cloud_relay' exited with code 2" in report
    assert "parameter 'max_input_age'" in report
    assert "below the minimum" in report or "out of range" in report


def test_killed_node_is_reported() -> None:
    lines = Lines()
    with launched(SLOTS, echo=lines) as session:
        time.sleep(3.0)
        victim = next(n for n in session.nodes if n.spec.name == "topic_stats")
        os.kill(victim.popen.pid, signal.SIGKILL)
        assert session.wait(duration_s=10.0) == 1
        assert "node 'topic_stats' exited with code -9" in session.failures[0]


def test_a_crashed_node_is_reported_with_the_stack_it_died_in(tmp_path) -> None:
    """CI once quoted only the outermost frames of a node's SIGSEGV: the report holds the whole dump."""
    script = tmp_path / "crashing_node"
    script.write_text(
        f"#!{sys.executable}\nimport os, signal\nfrom racestack.process import own_process\n"
        "def deep(level):\n"
        "    if level:\n"
        "        deep(level - 1)\n"
        "    print('about to crash', flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGSEGV)\n"
        "own_process()\ndeep(12)\n"
    )
    script.chmod(0o755)
    with launched({"crash": {"name": "crashing_node", "executable": str(script)}}, heard=False) as session:
        assert session.wait(duration_s=30.0) == 1
        report = "\n".join(session.failures)
    assert "node 'crashing_node' exited with code -11" in report, report
    assert "about to crash" in report and "Segmentation fault" in report, report
    assert "line 8 in deep" in report and report.count("in deep") == 13, report
    assert "Extension modules" not in report, report


def test_racestack_launch_stops_everything_on_sigint_within_5s() -> None:
    cli = subprocess.Popen(
        [sys.executable, "-m", "racestack.cli", "launch", "smoke"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    parent = psutil.Process(cli.pid)
    deadline = time.monotonic() + 30.0
    children: list[psutil.Process] = []
    while time.monotonic() < deadline and len(children) < 2:
        children = parent.children()
        time.sleep(0.2)
    assert len(children) == 2, "launcher did not start both nodes"
    time.sleep(3.0)
    start = time.monotonic()
    cli.send_signal(signal.SIGINT)
    output, _ = cli.communicate(timeout=10.0)
    _, alive = psutil.wait_procs(children, timeout=max(0.1, 5.0 - (time.monotonic() - start)))
    elapsed = time.monotonic() - start
    assert not alive, f"still running after SIGINT: {[p.pid for p in alive]}"
    assert elapsed <= 5.0, f"stop took {elapsed:.1f} s"
    assert cli.returncode == 0, output
    assert "stopped (clean)" in output


def test_sigint_during_startup_stops_a_process_started_with_sigint_ignored() -> None:
    """A script's background job inherits an ignored SIGINT; racestack must still stop on it at once."""
    node = subprocess.Popen(
        [sys.executable, "-m", "racestack.entry", "cloud_relay"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    time.sleep(0.3)  # still importing: before rclpy installs its own handler
    node.send_signal(signal.SIGINT)
    try:
        output, _ = node.communicate(timeout=30.0)
    except subprocess.TimeoutExpired:
        node.kill()
        pytest.fail("SIGINT was ignored during start-up")
    assert node.returncode in (0, 130, -signal.SIGINT), output  # stopped: cleanly, by its handler or the signal


def test_a_process_stuck_at_exit_leaves_with_its_stacks() -> None:
    """The exit watchdog ends a racestack process whose clean-up hangs, naming where it hung."""
    code = (
        "import time\nfrom racestack.process import exit_if_stuck, own_process\n"
        "own_process()\nexit_if_stuck(1.0)\ntime.sleep(60)\n"
    )
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and time.monotonic() - start < 20
    assert "Timeout" in result.stderr and "line 5" in result.stderr, result.stderr


def test_a_process_that_crashes_prints_its_stacks() -> None:
    """A racestack process killed by a fatal signal says where it was (CI once saw only exit -11)."""
    code = (
        "import os, signal\nfrom racestack.process import own_process\n"
        "own_process()\nos.kill(os.getpid(), signal.SIGSEGV)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == -signal.SIGSEGV
    assert "Segmentation fault" in result.stderr and 'File "<string>", line 4' in result.stderr, result.stderr


def test_a_node_whose_constructor_fails_leaves_with_code_2_untouched() -> None:
    """A start-up error ends the process at once with code 2: the half-built node is not torn down
    (CI saw that die of SIGSEGV after the error was printed), and nothing else runs after it."""
    code = (
        "from rclpy.node import Node\nfrom racestack.errors import StartupError\n"
        "from racestack.node import node_main\n"
        "class Broken(Node):\n"
        "    def __init__(self):\n"
        "        super().__init__('broken')\n"
        "        self.create_timer(0.1, lambda: None)\n"
        "        raise StartupError(\"model file 'x.pt' does not exist\")\n"
        "    def destroy_node(self):\n"
        "        print('destroyed', flush=True)\n"
        "        super().destroy_node()\n"
        "node_main(Broken)()\nprint('after the exit', flush=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "start-up error: model file 'x.pt'" in result.stderr
    assert "destroyed" not in result.stdout and "after the exit" not in result.stdout, result.stdout


def test_the_exit_watchdog_never_ends_a_library_caller() -> None:
    from racestack.process import exit_if_stuck

    exit_if_stuck(0.5)  # this pytest process is not owned by a racestack entry point
    time.sleep(1.5)


def test_a_stuck_process_is_asked_for_its_stacks() -> None:
    """SIGUSR1 makes a racestack process print every thread's stack and go on (tests use it on a hang)."""
    code = (
        "import time\nfrom racestack.process import own_process\n"
        "own_process()\nprint('ready', flush=True)\ntime.sleep(60)\n"
    )
    with pytest.raises(AssertionError, match="still running after 3 s") as failure:
        run_command([sys.executable, "-c", code], timeout=3.0, cwd=REPO)
    assert "ready" in str(failure.value) and "most recent call first" in str(failure.value)
    assert 'File "<string>", line 5' in str(failure.value)


def test_a_node_never_heard_from_is_restarted_once_and_named() -> None:
    """A process whose messages reach no one (here: one that never publishes) is restarted, then named."""
    from racestack.graph import ProcessSpec
    from racestack.liveness import Heartbeats, restart_silent
    from racestack.probe import Probe

    silent = ProcessSpec(name="mute", cmd=[sys.executable, "-c", "import time; time.sleep(120)"],
                         env=dict(os.environ), required=True, params_file="")
    lines = Lines()
    with launched({"relay": SLOTS["relay"]}, echo=lines) as session, Probe("liveness_probe") as probe:
        heartbeats = Heartbeats(probe)
        session.specs.append(silent)
        session.start(only=["mute"])
        first_pid = next(n.popen.pid for n in session.nodes if n.spec.name == "mute")
        assert restart_silent(session, heartbeats, ["cloud_relay", "mute"], timeout_s=10.0) == ["mute"]
        restarted = [n for n in session.nodes if n.spec.name == "mute"]
        assert len(restarted) == 1 and restarted[0].popen.pid != first_pid and restarted[0].popen.poll() is None
        assert lines.count("nothing from mute reaches other processes") == 1
        assert session.running() == ["cloud_relay", "mute"]


def test_unmatched_links_name_the_side_that_has_not_matched() -> None:
    from racestack.liveness import unmatched_links

    reports = {
        "seg": {"matched_publishers./points": "1", "matched_subscribers./seg": "1"},
        "objects": {"matched_publishers./seg": "0", "matched_publishers./points": "1"},
        "risk": {"matched_publishers./seg": "1"},
    }
    assert unmatched_links(reports, {"/points": 2}) == [
        ("objects", "objects has matched 0 of 1 publishers of /seg"),
        ("seg", "seg has matched 1 of 2 subscribers of /seg"),
    ]
    reports["objects"]["matched_publishers./seg"] = "1"
    reports["seg"]["matched_subscribers./seg"] = "2"
    assert unmatched_links(reports, {"/points": 1}) == [
        ("replayer", "the replayer has matched 1 of 2 subscribers of /points")]
    assert unmatched_links(reports, {"/points": 2}) == []


def test_nodes_report_their_matched_links(stack) -> None:
    from racestack.liveness import Heartbeats, unmatched_links

    _, probe, *_ = stack
    heartbeats = Heartbeats(probe)
    assert probe.wait_for(lambda: set(heartbeats.values()) >= {"cloud_relay", "topic_stats"}, 10.0)
    relay = heartbeats.values()["cloud_relay"]
    assert int(relay["matched_subscribers./sensing/lidar/points_clean"]) >= 1
    assert int(heartbeats.values()["topic_stats"]["matched_publishers./sensing/lidar/points_clean"]) == 1
    assert unmatched_links(heartbeats.values()) == []
