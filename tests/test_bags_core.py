"""Bag files without ROS processes: writing, Humble-readable metadata, damage-tolerant reading, CDR checks."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMsg
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Bool, String

from racestack.bags import (
    Bag,
    BagError,
    BagWriter,
    MissingTopicError,
    Timeline,
    offer_for_recorded,
    qos_profile,
    request_for_offers,
    require_topics,
)
from racestack.cdr import CdrError, cdr_problem, header_stamp_ns, message_class, set_header_stamp
from racestack.node import ns_to_stamp
from racestack.pointcloud import xyz_to_cloud

CLOUD, TEXT, ODOM = "/t/points", "/t/text", "/t/odom"
ROUNDS = 60


def make_messages() -> list[tuple[str, int, bytes]]:
    """(topic, receive time, CDR) of a small 10 Hz stream: ~100 kB clouds, odometry, text."""
    out = []
    for k in range(ROUNDS):
        t = 1_700_000_000_000_000_000 + k * 100_000_000
        points = np.random.default_rng(k).normal(0, 10, size=(6000, 4)).astype(np.float32)
        cloud = xyz_to_cloud(points, ("x", "y", "z", "intensity"))
        cloud.header.stamp = ns_to_stamp(t - 20_000_000)
        odom = Odometry()
        odom.header.stamp = ns_to_stamp(t - 5_000_000)
        odom.pose.pose.position.x = float(k)
        out.append((CLOUD, t, serialize_message(cloud)))
        out.append((ODOM, t + 1_000_000, serialize_message(odom)))
        out.append((TEXT, t + 2_000_000, serialize_message(String(data=f"frame {k} ✓"))))
    return out


TYPES = {CLOUD: "sensor_msgs/msg/PointCloud2", TEXT: "std_msgs/msg/String", ODOM: "nav_msgs/msg/Odometry"}


def write_bag(path: Path, storage: str, messages: list[tuple[str, int, bytes]]) -> Path:
    with BagWriter(path, storage) as writer:
        for topic, msgtype in TYPES.items():
            writer.add_topic(topic, msgtype, [qos_profile(reliable=topic != CLOUD)])
        for topic, t, data in messages:
            writer.write(topic, t, data)
    return path


@pytest.fixture(scope="module")
def messages() -> list[tuple[str, int, bytes]]:
    return make_messages()


@pytest.fixture(scope="module")
def bags(tmp_path_factory, messages) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bags")
    return {storage: write_bag(root / storage, storage, messages) for storage in ("mcap", "sqlite3")}


def read_all(path: Path) -> tuple[list[tuple[str, int, bytes]], list[str]]:
    problems = []
    with Bag(path, on_problem=problems.append) as bag:
        return [(m.topic, m.time_ns, m.data) for m in bag.messages()], [str(p) for p in problems]


def damaged_copy(src: Path, dst: Path, change) -> Path:
    shutil.copytree(src, dst)
    storage = next(p for p in dst.iterdir() if p.suffix in (".mcap", ".db3"))
    data = bytearray(storage.read_bytes())
    storage.write_bytes(bytes(change(data)))
    return storage


def is_ordered_subset(part: list, whole: list) -> bool:
    remaining = iter(whole)
    return all(any(item == other for other in remaining) for item in part)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_keeps_bytes_order_and_qos(bags, messages, storage):
    got, problems = read_all(bags[storage])
    assert problems == []
    assert got == messages
    with Bag(bags[storage]) as bag:
        assert bag.storage == storage
        assert {t: (i.msgtype, i.count) for t, i in bag.topics.items()} == {t: (TYPES[t], ROUNDS) for t in TYPES}
        assert bag.topics[CLOUD].qos[0].reliability.name == "BEST_EFFORT"
        assert bag.topics[TEXT].qos[0].reliability.name == "RELIABLE"
    with Reader(bags[storage]) as reader:  # rosbags' own reader agrees
        assert [(c.topic, t, d) for c, t, d in reader.messages()] == messages


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_metadata_is_what_humble_reads(bags, storage):
    info = yaml.safe_load((bags[storage] / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 8
    assert info["storage_identifier"] == storage
    assert info["message_count"] == 3 * ROUNDS
    assert info["duration"]["nanoseconds"] > 0 and info["starting_time"]["nanoseconds_since_epoch"] > 0
    assert info["relative_file_paths"] == [f["path"] for f in info["files"]]
    assert info["compression_format"] == "" and info["compression_mode"] == ""
    assert isinstance(info["custom_data"], dict)
    for entry in info["topics_with_message_count"]:
        meta = entry["topic_metadata"]
        assert meta["serialization_format"] == "cdr" and meta["type"] == TYPES[meta["name"]]
        # Humble parses offered_qos_profiles as a YAML *string* whose enums are integers.
        assert isinstance(meta["offered_qos_profiles"], str)
        profile = yaml.safe_load(meta["offered_qos_profiles"])[0]
        assert all(isinstance(profile[k], int) for k in ("history", "reliability", "durability", "liveliness"))
        assert meta["type_description_hash"].startswith("RIHS01_")


def test_truncated_mcap_reports_offset_and_yields_the_readable_part(tmp_path, bags, messages):
    storage = damaged_copy(bags["mcap"], tmp_path / "cut", lambda d: d[: len(d) * 6 // 10])
    got, problems = read_all(tmp_path / "cut")
    assert 0 < len(got) < len(messages)
    assert got == messages[: len(got)]
    assert problems and all(p.startswith(storage.name) for p in problems)
    assert any("offset" in p and "truncated" in p for p in problems)


def test_damaged_mcap_chunk_is_skipped_and_reading_resumes(tmp_path, bags, messages):
    with Bag(bags["mcap"]) as bag:
        chunks = bag.readers[0].chunks
    assert len(chunks) >= 3
    second = chunks[1].offset

    def smash(data: bytearray) -> bytearray:
        data[second : second + 9] = b"\xee" * 9  # opcode and length of the second chunk
        return data

    damaged_copy(bags["mcap"], tmp_path / "smashed", smash)
    got, problems = read_all(tmp_path / "smashed")
    assert any(f"offset {second}" in p and "opcode" in p for p in problems)
    assert any("found the next intact chunk" in p for p in problems)
    assert is_ordered_subset(got, messages)
    assert got[-1] == messages[-1]  # chunks after the damage are read
    assert len(got) < len(messages)


def test_truncated_sqlite_yields_the_readable_rows(tmp_path, bags, messages):
    damaged_copy(bags["sqlite3"], tmp_path / "cut", lambda d: d[: len(d) // 2])
    got, problems = read_all(tmp_path / "cut")
    assert 0 < len(got) < len(messages)
    assert is_ordered_subset(got, messages)
    assert problems and all(p.startswith("sqlite3.db3:") for p in problems)


def test_damaged_sqlite_page_loses_only_its_rows(tmp_path, bags, messages):
    path = bags["sqlite3"] / "sqlite3.db3"
    db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        leaves = [r[0] for r in db.execute("SELECT pageno FROM dbstat WHERE name='messages' AND pagetype='leaf'")]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    except sqlite3.OperationalError:
        pytest.skip("this sqlite has no dbstat table to find a leaf page")
    finally:
        db.close()
    page = sorted(leaves)[len(leaves) // 2]

    def smash(data: bytearray) -> bytearray:
        data[(page - 1) * page_size : page * page_size] = b"\xa5" * page_size
        return data

    damaged_copy(bags["sqlite3"], tmp_path / "page", smash)
    got, problems = read_all(tmp_path / "page")
    assert any("rows" in p and "unreadable" in p for p in problems)
    assert is_ordered_subset(got, messages)
    assert len(messages) * 0.8 < len(got) < len(messages)
    assert got[-1] == messages[-1]


def test_bag_without_metadata_is_read_from_its_storage_file(tmp_path, bags, messages):
    shutil.copytree(bags["mcap"], tmp_path / "bag")
    (tmp_path / "bag" / "metadata.yaml").unlink()
    got, problems = read_all(tmp_path / "bag")
    assert got == messages
    assert any("metadata.yaml" in p and "missing" in p for p in problems)
    single, _ = read_all(bags["sqlite3"] / "sqlite3.db3")
    assert single == messages


def test_unusable_paths_fail_naming_them(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        Bag(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match=r"no metadata\.yaml"):
        Bag(tmp_path / "empty")
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not a bag at all")
    with pytest.raises(BagError, match=r"junk\.mcap"):
        Bag(junk)


def test_require_topics_names_the_missing_topic(bags, tmp_path):
    require_topics(bags["mcap"], [CLOUD, ODOM])
    with pytest.raises(MissingTopicError, match="'/sensing/lidar/points'") as info:
        require_topics(bags["mcap"], [CLOUD, "/sensing/lidar/points"])
    assert CLOUD in str(info.value) and "'/t/points'" not in str(info.value)
    with BagWriter(tmp_path / "empty_topic") as writer:
        writer.add_topic("/silent", "std_msgs/msg/String")
    with pytest.raises(MissingTopicError, match="'/silent'"):
        require_topics(tmp_path / "empty_topic", ["/silent"])


def test_cdr_check_accepts_real_messages_and_names_the_damage(messages):
    cloud = next(d for t, _, d in messages if t == CLOUD)
    assert cdr_problem(cloud, PointCloud2) is None
    assert "data" in cdr_problem(cloud[:-100], PointCloud2)
    assert "after the end" in cdr_problem(serialize_message(String(data="x" * 40)), Bool)
    assert "needs bytes" in cdr_problem(serialize_message(String(data="abc")), Odometry)
    assert cdr_problem(serialize_message(Image(encoding="rgb8", data=bytes(12))), Image) is None
    path = PathMsg(poses=[_pose(i) for i in range(3)])
    assert cdr_problem(serialize_message(path), PathMsg) is None
    text = bytearray(serialize_message(String(data="abc")))
    text[8] = 0xFF  # first character: invalid UTF-8
    assert "UTF-8" in cdr_problem(bytes(text), String)
    text = bytearray(serialize_message(String(data="abc")))
    text[4] = 0x40  # string length far beyond the message
    assert "needs bytes" in cdr_problem(bytes(text), String)
    assert cdr_problem(b"\x00", String).startswith("only 1 bytes")


def _pose(i: int) -> PoseStamped:
    pose = PoseStamped()
    pose.header.frame_id = f"map{i}"
    pose.pose.position.x = float(i)
    return pose


def test_header_stamp_is_read_from_the_bytes(messages):
    cloud = next(d for t, _, d in messages if t == CLOUD)
    assert header_stamp_ns(cloud, PointCloud2) == 1_700_000_000_000_000_000 - 20_000_000
    assert header_stamp_ns(serialize_message(String(data="x")), String) is None
    assert header_stamp_ns(serialize_message(Odometry()), Odometry) is None  # zero stamp = none
    assert message_class("nav_msgs/msg/Odometry") is Odometry
    with pytest.raises(ValueError, match="not installed"):
        message_class("racestack_nowhere_msgs/msg/Nothing")


def test_restamped_bytes_deserialize_to_the_same_message_with_the_new_stamp(messages):
    from rclpy.serialization import deserialize_message

    cloud = next(d for t, _, d in messages if t == CLOUD)
    stamp = 1_800_000_000_123_456_789
    restamped = bytearray(cloud)
    set_header_stamp(restamped, PointCloud2, stamp)
    assert header_stamp_ns(restamped, PointCloud2) == stamp
    before, after = deserialize_message(cloud, PointCloud2), deserialize_message(bytes(restamped), PointCloud2)
    assert after.header.frame_id == before.header.frame_id and bytes(after.data) == bytes(before.data)
    assert len(restamped) == len(cloud) and restamped[12:] == cloud[12:]
    with pytest.raises(CdrError, match="Header"):
        set_header_stamp(bytearray(serialize_message(String(data="x"))), String, stamp)


def test_timeline_follows_stamps_and_never_goes_back():
    line = Timeline("stamp", offset_ns=1_000)
    assert line.time_of(5_000, None) == 4_000  # before any stamp: the first offset
    assert line.time_of(6_000, 5_500) == 5_500  # stamped: its stamp
    assert line.time_of(6_100, None) == 5_600  # unstamped: latest offset
    assert line.time_of(6_200, 5_000) == 5_600  # an older stamp does not move time back
    wall = 1_795_000_000_000_000_000
    slow = Timeline("stamp", offset_ns=wall)  # a lockstep run: 20 s of wall time per simulated frame
    assert [slow.time_of(wall + 1_000_000_000 + k * 20_000_000_000, 1_000_000_000 + k * 50_000_000)
            for k in range(3)] == [1_000_000_000, 1_050_000_000, 1_100_000_000]
    # a message stamped in another clock is placed by its receive time, in the stamps' time base
    assert slow.time_of(wall + 80_000_000_000, wall + 79_000_000_000) == 80_000_000_000 - 39_900_000_000
    receive = Timeline("receive", offset_ns=1_000)
    assert [receive.time_of(t, 1) for t in (10, 30, 20)] == [10, 30, 30]
    with pytest.raises(ValueError, match="timing"):
        Timeline("wall")


def test_qos_policy_matches_every_publisher():
    reliable, best_effort = qos_profile(True), qos_profile(False)
    latched = qos_profile(True, transient_local=True, depth=1)
    assert request_for_offers([reliable, reliable]).reliability.name == "RELIABLE"
    assert request_for_offers([reliable, best_effort]).reliability.name == "BEST_EFFORT"
    assert request_for_offers([latched]).durability.name == "TRANSIENT_LOCAL"
    assert request_for_offers([latched, reliable]).durability.name == "VOLATILE"
    assert offer_for_recorded([]).reliability.name == "RELIABLE"
    assert offer_for_recorded([best_effort]).reliability.name == "BEST_EFFORT"
    assert offer_for_recorded([latched._replace(depth=0)]).depth == 1


def test_flushed_bag_survives_a_killed_writer(tmp_path, messages):
    """The recorder flushes every second: a bag whose writer died still holds what was flushed."""
    writer = BagWriter(tmp_path / "live")
    for topic, msgtype in TYPES.items():
        writer.add_topic(topic, msgtype)
    writer.flush()  # a chunk with channel records only
    for topic, t, data in messages[:90]:
        writer.write(topic, t, data)
    writer.flush()
    (tmp_path / "killed").mkdir()
    shutil.copy(tmp_path / "live" / "live.mcap", tmp_path / "killed" / "live.mcap")
    for topic, t, data in messages[90:]:
        writer.write(topic, t, data)
    writer.close()
    assert read_all(tmp_path / "live") == (messages, [])
    got, problems = read_all(tmp_path / "killed")
    assert got == messages[:90]
    assert problems == ["metadata.yaml: missing (recording not closed?); reading the storage files"]
