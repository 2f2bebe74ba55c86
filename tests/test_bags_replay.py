"""racestack record / replay over real DDS: real processes, real bag files, raw CDR compared byte for byte."""

from __future__ import annotations

import itertools
import pickle
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from bag_streams import ALL_TOPICS, CLOUD, MAP, NO_SUBSCRIBER, ODOM, READY, STATUS, STREAMS, TEXT, wait_until
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String
from support import DISCOVERY_S, diagnostics_values, launched, run_command, stuck

from racestack.bag_record import DEFAULT_EXCLUDE, Recorder
from racestack.bag_replay import MATCH_SETTLE_S, BagReplayer
from racestack.bags import Bag, BagWriter, qos_profile
from racestack.cdr import header_stamp_ns, message_class
from racestack.node import ns_to_stamp, result_qos, sensor_qos
from racestack.pointcloud import cloud_to_array, xyz_to_cloud
from racestack.probe import Probe

pytestmark = pytest.mark.ros

HERE = Path(__file__).resolve().parent
RACESTACK = [sys.executable, "-m", "racestack.cli"]
OUSTER = "ouster_os1_64_bag"
OUSTER_TOPIC = "/os1_cloud_node/points"
LIDAR = "/sensing/lidar/points"
ODOMETRY = "/localization/odometry"


def run_racestack(*args: str, timeout: float = 90.0) -> subprocess.CompletedProcess:
    return run_command([*RACESTACK, *args], timeout)


def start_racestack(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*RACESTACK, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def interrupt(proc: subprocess.Popen, timeout: float = 30.0) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise stuck(proc, f"still running {timeout:.0f} s after SIGINT") from None
    return proc.returncode, out


@dataclass
class RawSink:
    """Raw subscriptions on a probe: what arrived, with the publisher's source timestamps."""

    items: list[tuple[str, bytes, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, topic: str, data: bytes, info: dict) -> None:
        with self.lock:
            self.items.append((topic, data, int(info["source_timestamp"])))

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [data for t, data, _ in self.items if t == topic]

    def count(self) -> int:
        with self.lock:
            return len(self.items)

    def by_source_time(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return [(t, d) for t, d, _ in sorted(self.items, key=lambda item: item[2])]


def subscribe_raw(probe: Probe, topics: dict[str, str], best_effort=(), latched=()) -> RawSink:
    sink = RawSink()
    for topic, msgtype in topics.items():
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_ALL,
            reliability=ReliabilityPolicy.BEST_EFFORT if topic in best_effort else ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if topic in latched else DurabilityPolicy.VOLATILE,
        )
        probe.node.create_subscription(
            message_class(msgtype), topic, lambda data, info, t=topic: sink.add(t, data, info), qos, raw=True
        )
    return sink


def collect_clock(probe: Probe):
    return probe.collect(Clock, "/clock", QoSProfile(history=HistoryPolicy.KEEP_ALL))


def clock_ns(collector) -> list[int]:
    return [m.clock.sec * 1_000_000_000 + m.clock.nanosec for m in collector.messages()]


def stored(path: Path) -> list[tuple[str, bytes]]:
    with Bag(path) as bag:
        assert bag.problems == [], [str(p) for p in bag.problems]
        return [(m.topic, m.data) for m in bag.messages()]


def per_topic(items: list[tuple[str, bytes]]) -> dict[str, list[bytes]]:
    """Each topic's payloads in their order."""
    topics: dict[str, list[bytes]] = {}
    for topic, data in items:
        topics.setdefault(topic, []).append(data)
    return topics


def assert_same_streams(sent: list[tuple[str, bytes]], got: list[tuple[str, bytes]]) -> None:
    """Every topic's messages stored as published and in its order: DDS keeps the order of each
    writer, not across writers (a 2 ms later odometry can arrive before a cloud on a loaded machine)."""
    sent_on, got_on = per_topic(sent), per_topic(got)
    assert sent_on.keys() == got_on.keys()
    assert all(as_received(s, g) for t in sent_on for s, g in zip(sent_on[t], got_on[t], strict=True))


def is_ordered_subset(part: list, whole: list) -> bool:
    remaining = iter(whole)
    return all(any(item == other for other in remaining) for item in part)


def as_received(sent: bytes, received: bytes) -> bool:
    """The same payload: Fast DDS may pad a small (unfragmented) payload with zeros to 4 bytes,
    and that padding travels on, is stored and replayed like rosbag2 does."""
    padding = received[len(sent) :]
    return received[: len(sent)] == sent and len(padding) < 4 and not any(padding)


def publish_streams(out: Path, rounds: int, recorder: Recorder | None = None, probe: Probe | None = None) -> None:
    """The publisher process; a second one when the first never matched the recorder (a participant
    that missed discovery does not catch up by waiting: seen once in a fresh-clone run).

    With ``recorder`` and ``probe`` (both in this process) the streams go out once the recorder's
    subscriptions have matched them and one of the publisher's best-effort ``READY`` messages has
    reached this process: the recorder's side matching is not enough (after a module of node tests,
    the four statuses sent 0.5 s later were all lost)."""
    done = _run_publisher(out, rounds, recorder, probe)
    if done.returncode == NO_SUBSCRIBER:
        done = _run_publisher(out, rounds, recorder, probe)
    assert done.returncode == 0, done.stdout + done.stderr


def _run_publisher(
    out: Path, rounds: int, recorder: Recorder | None, probe: Probe | None
) -> subprocess.CompletedProcess:
    command = [sys.executable, str(HERE / "bag_streams.py"), str(out), "--rounds", str(rounds)]
    if recorder is None or probe is None:
        return run_command(command, timeout=90)
    go = out.with_name(f"{out.name}.go")
    go.unlink(missing_ok=True)
    delivered = probe.collect(String, READY, sensor_qos(1), keep=1, raw=True)

    def ready() -> bool:
        matched = recorder.matched_publishers()
        return bool(delivered.snapshot()) and all(matched.get(topic, 0) > 0 for topic in STREAMS)

    def go_once_ready(process: subprocess.Popen) -> None:
        if wait_until(lambda: ready() or process.poll() is not None, 60.0) and ready():
            go.touch()

    return run_command([*command, "--go", str(go)], timeout=90, meanwhile=go_once_ready)


TYPES = {
    CLOUD: "sensor_msgs/msg/PointCloud2",
    ODOM: "nav_msgs/msg/Odometry",
    TEXT: "std_msgs/msg/String",
    STATUS: "std_msgs/msg/String",
    MAP: "nav_msgs/msg/Path",
}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, list[tuple[str, bytes]]]:
    """``racestack record`` (MCAP) of a publisher process, stopped with SIGINT."""
    root = tmp_path_factory.mktemp("recorded")
    bag = root / "streams"
    recorder = start_racestack("record", "-o", str(bag), *ALL_TOPICS)
    try:
        publish_streams(root / "sent.pkl", rounds=12)
    finally:
        code, log = interrupt(recorder)
    assert code == 0, log
    assert "49 messages" in log, log
    with open(root / "sent.pkl", "rb") as handle:
        return bag, pickle.load(handle)


def test_record_stores_every_message_as_published(recorded):
    bag, sent = recorded
    got = stored(bag)
    assert_same_streams(sent, got)
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 8 and info["storage_identifier"] == "mcap"
    offered = {
        e["topic_metadata"]["name"]: yaml.safe_load(e["topic_metadata"]["offered_qos_profiles"])[0]
        for e in info["topics_with_message_count"]
    }
    assert offered[MAP]["durability"] == 1  # transient local: recorded although published before us
    assert offered[STATUS]["reliability"] == 2  # best effort
    assert offered[CLOUD]["reliability"] == 1


def test_replay_reproduces_the_recorded_bytes_in_order(recorded, probe):
    bag, _ = recorded
    expected = stored(bag)
    sink = subscribe_raw(probe, TYPES, best_effort=(STATUS,), latched=(MAP,))
    clock = collect_clock(probe)
    result = run_racestack("replay", str(bag), "--wait-for-subscribers", "10")
    assert result.returncode == 0, result.stdout + result.stderr
    reliable = len([t for t, _ in expected if t != STATUS])
    assert probe.wait_for(lambda: sink.count() - len(sink.on(STATUS)) >= reliable, 10.0)
    for topic in TYPES:
        if topic != STATUS:
            assert sink.on(topic) == [d for t, d in expected if t == topic], topic
    # best effort (as recorded) may lose a message under load; what arrives is exact and in order
    assert sink.on(STATUS) and is_ordered_subset(sink.on(STATUS), [d for t, d in expected if t == STATUS])
    received = sink.by_source_time()
    assert [item for item in expected if item in received] == received  # published in the recorded order
    ticks = clock_ns(clock)
    assert ticks and ticks == sorted(ticks)


def test_replay_loops_with_one_clock_jump_per_pass_and_recorded_qos(recorded, probe):
    bag, _ = recorded
    sink = subscribe_raw(probe, TYPES, best_effort=(STATUS,), latched=(MAP,))
    clock = collect_clock(probe)
    replay = start_racestack("replay", str(bag), "--loop", "--rate", "4", "--wait-for-subscribers", "10")
    try:
        assert probe.wait_for(lambda: len(sink.on(TEXT)) >= 30, 30.0)
        offers = {
            topic: probe.node.get_publishers_info_by_topic(topic)[0].qos_profile for topic in (MAP, STATUS, CLOUD)
        }
        late = probe.collect(
            message_class(TYPES[MAP]), MAP, QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        )
        assert probe.wait_for(lambda: len(late.items) >= 1, 10.0)  # latched: a late joiner gets the map
    finally:
        code, out = interrupt(replay)
    assert code == 0, out
    assert offers[MAP].durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert offers[MAP].reliability == ReliabilityPolicy.RELIABLE
    assert offers[STATUS].reliability == ReliabilityPolicy.BEST_EFFORT
    assert offers[CLOUD].durability == DurabilityPolicy.VOLATILE
    texts = sink.on(TEXT)
    assert texts[:12] == texts[12:24]  # each pass replays the same bytes
    ticks = clock_ns(clock)
    jumps = [later for earlier, later in itertools.pairwise(ticks) if later < earlier]
    assert len(jumps) >= 2
    assert set(jumps) == {min(ticks)}  # every jump lands on the start of the bag, nowhere else


def test_sqlite3_record_api_and_replay(tmp_path, probe):
    bag = tmp_path / "streams_sqlite"
    exclude = f"{DEFAULT_EXCLUDE}|^{READY}$"
    recorder = Recorder(bag, all_topics=True, storage="sqlite3", exclude=exclude, log=lambda text: None).start()
    try:
        publish_streams(tmp_path / "sent.pkl", rounds=4, recorder=recorder, probe=probe)
    finally:
        summary = recorder.stop()
    with open(tmp_path / "sent.pkl", "rb") as handle:
        sent = pickle.load(handle)
    assert summary.counts == {topic: 1 if topic == MAP else 4 for topic in ALL_TOPICS}
    assert (bag / "streams_sqlite.db3").is_file()
    expected = stored(bag)
    assert_same_streams(sent, expected)
    sink = subscribe_raw(probe, TYPES, best_effort=(STATUS,), latched=(MAP,))
    result = run_racestack("replay", str(bag), "--wait-for-subscribers", "10", "--timing", "receive", "--no-clock")
    assert result.returncode == 0, result.stdout + result.stderr
    reliable = [item for item in expected if item[0] != STATUS]
    assert probe.wait_for(lambda: sink.count() - len(sink.on(STATUS)) >= len(reliable), 10.0)
    assert [item for item in sink.by_source_time() if item[0] != STATUS] == reliable


def write_damage_bag(path: Path) -> tuple[list[tuple[str, bytes]], Path]:
    """Clouds (several MCAP chunks), a malformed cloud, and a topic whose type is not installed."""
    sent = []
    with BagWriter(path) as writer:
        writer.add_topic("/dmg/points", "sensor_msgs/msg/PointCloud2", [qos_profile()])
        writer.add_topic("/dmg/alien", "racestack_missing_msgs/msg/Alien", [qos_profile()])
        for k in range(40):
            t = 1_700_000_000_000_000_000 + k * 20_000_000
            cloud = xyz_to_cloud(np.full((16_000, 4), k, np.float32), ("x", "y", "z", "intensity"))
            cloud.header.stamp = ns_to_stamp(t)
            data = serialize_message(cloud)
            if k == 5:
                data = data[:1000]  # malformed: cut inside the point data
            writer.write("/dmg/points", t, data)
            writer.write("/dmg/alien", t + 1, b"\x00\x01\x00\x00alien")
            sent.append(("/dmg/points", data))
    storage = path / f"{path.name}.mcap"
    data = storage.read_bytes()
    storage.write_bytes(data[: len(data) // 2])
    return sent, storage


def test_damaged_bag_is_reported_and_its_readable_part_replays(tmp_path, probe):
    sent, storage = write_damage_bag(tmp_path / "damaged")
    sink = subscribe_raw(probe, {"/dmg/points": "sensor_msgs/msg/PointCloud2"})
    collect_clock(probe)
    result = run_racestack("replay", str(tmp_path / "damaged"), "--wait-for-subscribers", "10", "--rate", "5")
    assert result.returncode == 1, result.stdout + result.stderr
    report = result.stdout
    assert f"{storage.name}: offset" in report and "truncated" in report
    assert "racestack_missing_msgs/msg/Alien" in report and "not installed" in report
    assert "malformed sensor_msgs/msg/PointCloud2" in report and "chunk at offset" in report
    good = [d for _, d in sent[:5]] + [d for _, d in sent[6:]]
    assert probe.wait_for(lambda: len(sink.on("/dmg/points")) >= 10, 10.0)
    time.sleep(0.5)
    received = sink.on("/dmg/points")
    assert 10 <= len(received) < len(good)
    # everything readable, in order, the bad one left out; a payload DDS sends whole arrives padded to
    # a multiple of 4 bytes (these 256 kB clouds since messages up to 4 MB go unfragmented)
    assert [data[: len(sent)] for data, sent in zip(received, good, strict=False)] == good[: len(received)]
    assert all(len(data) - len(sent) < 4 for data, sent in zip(received, good, strict=False))


def test_ouster_bag_replays_with_its_timing(real_data, probe):
    bag = real_data / OUSTER
    with Bag(bag) as opened:
        expected = [m.data for m in opened.messages()]
    stamps = [
        s.sec * 1_000_000_000 + s.nanosec for s in (deserialize_message(d, PointCloud2).header.stamp for d in expected)
    ]
    sink = subscribe_raw(probe, {OUSTER_TOPIC: "sensor_msgs/msg/PointCloud2"})
    clock = collect_clock(probe)
    result = run_racestack("replay", str(bag), "--rate", "0.25", "--wait-for-subscribers", "10")
    assert result.returncode == 0, result.stdout + result.stderr
    assert probe.wait_for(lambda: sink.count() >= 2, 15.0)
    assert sink.on(OUSTER_TOPIC) == expected
    cloud = deserialize_message(expected[0], PointCloud2)
    points = cloud_to_array(cloud)
    assert points.shape == (64, 2048)
    assert {n: points.dtype[n].kind + str(points.dtype[n].itemsize) for n in points.dtype.names} == {
        "x": "f4",
        "y": "f4",
        "z": "f4",
        "intensity": "f4",
        "t": "u4",
        "reflectivity": "u2",
        "ring": "u1",
        "noise": "u2",
        "range": "u4",
    }  # fmt: skip  (ring is uint8 in this file, whatever its README says)
    published = sorted(source for _, _, source in sink.items)
    gap = stamps[1] - stamps[0]
    # rate 0.25: four times the recorded gap (less the first 6 MB publish's own copying, < 10 %)
    assert 4 * gap * 0.9 <= published[1] - published[0] <= 4 * gap + 1e9
    # /clock runs on the stamps (not on receive times, 55 days later) and stops at the last frame
    ticks = clock_ns(clock)
    assert len(ticks) >= 3 and min(ticks) >= stamps[0] and max(ticks) == stamps[1]


def test_a_stalled_best_effort_reader_still_gets_two_sensor_size_clouds(tmp_path):
    """A message stays in its writer's shared-memory segment until every reader has read it. The
    stack's transports size that segment for two 6.4 MB sweeps (an Ouster OS1-64's) in flight: with
    an 8 MB one, the second overwrote the first while a stopped recorder had not read it yet."""
    topic, bag, go = "/bagtest/big", tmp_path / "big", tmp_path / "go"
    recorder = start_racestack("record", "-o", str(bag), topic)
    command = [sys.executable, str(HERE / "big_clouds.py"), topic, str(go)]
    writer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stamps: list[int] = []
    try:
        matched = writer.stdout.readline().strip()
        if matched == "no subscriber":  # a participant that missed discovery: as in publish_streams
            writer.communicate()
            writer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            matched = writer.stdout.readline().strip()
        if matched == "matched":
            time.sleep(MATCH_SETTLE_S)  # the recorder's side of the match
            recorder.send_signal(signal.SIGSTOP)  # its DDS threads too: nothing is read while stopped
            try:
                go.touch()
                stamps = [int(word) for word in writer.stdout.readline().split()]
                time.sleep(0.5)
            finally:
                recorder.send_signal(signal.SIGCONT)
            try:
                writer.communicate(timeout=30)  # drains its stderr meanwhile: a full pipe would block it
            except subprocess.TimeoutExpired:
                raise stuck(writer, f"printed its stamps {stamps} and had not exited 30 s later") from None
            assert writer.returncode == 0
    finally:
        writer.kill()
        writer.communicate()
        code, log = interrupt(recorder)
    assert matched == "matched", f"the writer said {matched!r}; the recorder exited {code} and said:\n{log}"
    assert code == 0, log
    recorded = [header_stamp_ns(data, PointCloud2) for _, data in stored(bag)]
    assert len(stamps) == 2 and recorded == stamps, log


def test_ouster_bag_through_the_cloud_relay_node(real_data):
    bag = real_data / OUSTER
    with Bag(bag) as opened:
        inputs = {
            header_stamp_ns(m.data, PointCloud2): deserialize_message(m.data, PointCloud2) for m in opened.messages()
        }
    relay = {
        "name": "cloud_relay",
        "entry": "cloud_relay",
        "parameters": {"input_topic": OUSTER_TOPIC, "output_topic": "/bagtest/clean", "use_sim_time": True},
    }
    logs: list[str] = []
    with launched({"relay": relay}, echo=logs.append), Probe("relay_probe") as probe:
        out = probe.collect(PointCloud2, "/bagtest/clean", result_qos(5))
        diagnostics = probe.collect(DiagnosticArray, "/diagnostics", keep=20)
        # the relay answers at once: its output must reach us before the first frame goes out
        assert probe.wait_for(lambda: probe.node.count_publishers("/bagtest/clean") >= 1, 30.0)
        time.sleep(1.0)
        # a quarter of the recorded rate: the relay's input keeps the newest frame only, and a relay
        # that had not taken the first sweep 0.1 s later on a busy machine would answer one of two
        result = run_racestack("replay", str(bag), "--wait-for-subscribers", "20", "--rate", "0.25")
        assert result.returncode == 0, result.stdout + result.stderr
        probe.wait_for(lambda: len(out.items) >= len(inputs), 10.0)
        relay_said = diagnostics_values(diagnostics.messages(), "cloud_relay")
        answered = f"{len(out.items)} of {len(inputs)} frames answered; diagnostics {relay_said}; relay said:\n"
        answered += "\n".join(logs)
        assert len(out.items) == len(inputs), answered
        for msg in out.messages():
            source = inputs[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec]  # same stamp
            original = cloud_to_array(source).reshape(-1)
            relayed = cloud_to_array(msg)
            assert relayed.dtype.names == ("x", "y", "z", "intensity")
            finite = np.isfinite(original["x"]) & np.isfinite(original["y"]) & np.isfinite(original["z"])
            assert relayed.shape == (int(finite.sum()),) and finite.sum() > 100_000
            for name in relayed.dtype.names:
                np.testing.assert_array_equal(relayed[name], original[name][finite])


def test_lockstep_steps_publish_a_frame_and_wait_for_the_answer(tmp_path, probe):
    bag = tmp_path / "lockstep"
    frames = 8
    with BagWriter(bag) as writer:
        writer.add_topic("/lock/points", "sensor_msgs/msg/PointCloud2")
        writer.add_topic("/lock/text", "std_msgs/msg/String")
        for k in range(frames):
            t = 1_700_000_000_000_000_000 + k * 100_000_000
            cloud = xyz_to_cloud(np.full((500, 4), k + 1, np.float32), ("x", "y", "z", "intensity"))
            cloud.header.stamp = ns_to_stamp(t)
            writer.write("/lock/text", t - 1_000, serialize_message(message_class("std_msgs/msg/String")(data=str(k))))
            writer.write("/lock/points", t, serialize_message(cloud))
    relay = {
        "name": "cloud_relay",
        "entry": "cloud_relay",
        "parameters": {"input_topic": "/lock/points", "output_topic": "/lock/clean", "use_sim_time": True},
    }
    answers = probe.collect(PointCloud2, "/lock/clean", result_qos(5))
    with launched({"relay": relay}), BagReplayer(bag, log=lambda text: None) as replayer:
        assert replayer.wait_for_subscribers(30.0, topics=["/lock/points", "/clock"])
        assert probe.wait_for(lambda: probe.node.count_publishers("/lock/clean") >= 1, 30.0)
        time.sleep(1.0)
        for k in range(frames):
            batch = replayer.step({"/lock/points"})
            assert [item.topic for item in batch] == ["/lock/text", "/lock/points"]
            stamp = batch[-1].stamp_ns
            assert batch[-1].time_ns == stamp  # /clock stands at the frame's stamp while the stack works
            assert probe.wait_for(
                lambda s=stamp: any(
                    m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec == s for m in answers.messages()
                ),
                10.0,
            ), f"no answer to frame {k}"
        assert replayer.step({"/lock/points"}) == []
        replayer.rewind()
        first = replayer.publish_until(1_700_000_000_000_000_000 + 150_000_000)
        assert [item.topic for item in first] == ["/lock/text", "/lock/points", "/lock/text", "/lock/points"]
    values = [float(cloud_to_array(m)["x"][0]) for m in answers.messages()]
    assert values[:frames] == [float(k + 1) for k in range(frames)]


def test_recorder_follows_a_late_best_effort_publisher(tmp_path):
    bag = tmp_path / "late"
    log: list[str] = []
    String = message_class("std_msgs/msg/String")
    with Probe("late_publishers") as probe, Recorder(bag, ["/late/text"], log=log.append) as recorder:
        reliable = probe.publisher(String, "/late/text", result_qos(5))
        assert recorder.wait_for_topics(["/late/text"], DISCOVERY_S)
        assert probe.wait_for(lambda: reliable.get_subscription_count() >= 1, DISCOVERY_S)
        reliable.publish(String(data="from the reliable one"))
        best_effort = probe.node.create_publisher(
            String, "/late/text", QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
        )
        assert probe.wait_for(lambda: best_effort.get_subscription_count() >= 1, DISCOVERY_S)
        best_effort.publish(String(data="from the best effort one"))
        assert probe.wait_for(lambda: recorder.counts.get("/late/text", 0) >= 2, 10.0)
    assert any("subscribing again" in line for line in log)
    with Bag(bag) as opened:
        texts = [deserialize_message(m.data, String).data for m in opened.messages()]
        reliabilities = {q.reliability.name for q in opened.topics["/late/text"].qos}
    assert texts == ["from the reliable one", "from the best effort one"]
    assert reliabilities == {"RELIABLE", "BEST_EFFORT"}


def _start_simulator() -> subprocess.Popen:
    return subprocess.Popen(
        [*RACESTACK, "sim", "--scenario", "oval_solo", "--forever", "--no-camera"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_simulator_recording_replays_like_the_simulator(tmp_path, probe):
    """The embedded simulator recorded with --all: its topics, latched maps, and clouds replayed byte for byte."""
    bag, wanted = tmp_path / "sim", (LIDAR, "/map/racing_line")
    with Recorder(bag, all_topics=True, log=lambda text: None) as recorder:
        sim = _start_simulator()
        # discovery between processes takes seconds on a loaded machine: run until enough is recorded
        enough = recorder.wait_for_topics(wanted, 60.0)
        if not enough and not {*wanted, ODOMETRY} & recorder.subscribed():
            # nothing of it discovered in 60 s (seen once in a fresh-clone run): a participant that
            # missed discovery does not catch up by waiting; restarted, as racestack.liveness does.
            # Only its own topics count: an earlier test's writer, left to its process's exit, is
            # still announced until its lease runs out, and --all subscribes to its topic
            interrupt(sim)
            sim = _start_simulator()
            enough = recorder.wait_for_topics(wanted, 60.0)
        subscribed = sorted(recorder.subscribed())
        deadline = time.monotonic() + 60.0
        while enough and time.monotonic() < deadline and min(recorder.counts.get(t, 0) for t in (LIDAR, ODOMETRY)) < 10:
            time.sleep(0.1)
    returncode, output = interrupt(sim)
    # 0: clean exit; 1 with stacks: its work done, the DDS deletion hung and the exit watchdog ended it
    # (racestack.process) — a Fast DDS fault this machine shows at times, never a hang
    assert enough, f"after 60 s the recorder had subscribed to {subscribed} only; the simulator's output:\n{output}"
    assert returncode == 0 or (returncode == 1 and "Timeout" in output), output
    with Bag(bag) as opened:
        counts = {name: info.count for name, info in opened.topics.items()}
        clouds = [m.data for m in opened.messages([LIDAR])]
    for latched in ("/map/racing_line", "/map/left_bound", "/map/right_bound", "/map/centerline"):
        assert counts.get(latched) == 1, latched  # published before the first frame: kept by transient local
    assert counts["/localization/odometry"] >= 10 and counts["/clock"] >= 10
    assert len(clouds) >= 10 and counts["/ground_truth/objects"] >= len(clouds)
    sink = subscribe_raw(probe, {LIDAR: "sensor_msgs/msg/PointCloud2"})
    collect_clock(probe)
    result = run_racestack("replay", str(bag), "--topics", LIDAR, "--wait-for-subscribers", "10")
    assert result.returncode == 0, result.stdout + result.stderr
    assert probe.wait_for(lambda: len(sink.on(LIDAR)) >= len(clouds), 10.0)
    assert sink.on(LIDAR) == clouds
