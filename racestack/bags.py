"""rosbag2 reading and writing without rclpy: MCAP and sqlite3 storage, damage-tolerant reading.

Reading never depends on an index being intact: MCAP files are walked record by record (chunks are
found from their own headers, decoded lazily and merged in time order) and sqlite3 files row by
row, so a truncated or damaged bag yields everything that is still readable, plus a list of
problems that name the file and the offset or row. Writing goes through rosbags' writer with
metadata version 8, the newest layout ROS 2 Humble still reads: version 9 stores the QoS profiles
as a YAML list with string enums, which Humble's metadata reader cannot parse.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.rosbag2.errors import ReaderError
from rosbags.rosbag2.metadata import parse_qos
from rosbags.rosbag2.storage_mcap import McapWriter
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.base import TypesysError

from racestack.bag_storage import BagError, McapFile, Report, Sqlite3File, storage_of

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

METADATA_VERSION = 8
STORAGES = ("mcap", "sqlite3")
DEFAULT_DEPTH = 10
INFINITE = QosTime(9223372036, 854775807)


class MissingTopicError(BagError):
    """The bag lacks a topic the caller needs; the text names the topic and lists what the bag has."""


@dataclass(frozen=True)
class BagProblem:
    """Damage found while reading: which file, where in it (offset, chunk, row) and what."""

    file: str
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.what}" if self.where else f"{self.file}: {self.what}"


@dataclass
class TopicInfo:
    name: str
    msgtype: str
    count: int | None
    qos: list[Qos] = field(default_factory=list)
    type_hash: str = ""


@dataclass(slots=True)
class BagMessage:
    """One stored message: serialized CDR bytes as recorded, receive (log) time, origin for reports."""

    topic: str
    msgtype: str
    time_ns: int
    data: bytes
    where: str


# -- bags ---------------------------------------------------------------------------------------


def _read_metadata(path: Path, report: Callable[[str, str, str], None]) -> dict | None:
    try:
        info = yaml.safe_load(path.read_text())["rosbag2_bagfile_information"]
        if not isinstance(info, dict):
            raise TypeError("rosbag2_bagfile_information is not a mapping")
        return info
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        report(path.name, "", f"unreadable ({exc}); reading the storage files directly")
        return None


class Bag:
    """An opened rosbag2 (a directory with metadata.yaml, or one .mcap/.db3 file)."""

    def __init__(self, path: str | Path, on_problem: Callable[[BagProblem], None] | None = None) -> None:
        self.path = Path(path)
        self.problems: list[BagProblem] = []
        self.on_problem = on_problem
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.metadata: dict | None = None
        self.message_compression = False
        if not self.path.exists():
            raise BagError(f"bag '{self.path}' does not exist")
        files = self._files()
        self.storage = storage_of(files[0])
        self.readers: list[McapFile | Sqlite3File] = []
        try:
            for file in files:
                reader_class = McapFile if storage_of(file) == "mcap" else Sqlite3File
                self.readers.append(reader_class(file, self._reporter(file.name)))
        except BaseException:
            self.close()
            raise
        self.topics = self._topics()

    # -- opening ----------------------------------------------------------------------------------

    def _problem(self, file: str, where: str, what: str) -> None:
        problem = BagProblem(file, where, what)
        if problem in self.problems:
            return
        self.problems.append(problem)
        if self.on_problem is not None:
            self.on_problem(problem)

    def _reporter(self, file: str) -> Report:
        return lambda where, what: self._problem(file, where, what)

    def _files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        meta_path = self.path / "metadata.yaml"
        if meta_path.exists():
            self.metadata = _read_metadata(meta_path, self._problem)
        if self.metadata is None:
            found = sorted(p for p in self.path.iterdir() if p.suffix in (".mcap", ".db3", ".zstd"))
            if not found:
                raise BagError(f"'{self.path}' holds no metadata.yaml and no .mcap/.db3 files")
            if not meta_path.exists():
                self._problem("metadata.yaml", "", "missing (recording not closed?); reading the storage files")
            return self._decompressed(found, "file" if all(p.suffix == ".zstd" for p in found) else "")
        names = self.metadata.get("relative_file_paths") or []
        files = [self.path / Path(name).name for name in names]
        missing = [f for f in files if not f.exists()]
        for file in missing:
            self._problem(file.name, "", "listed in metadata.yaml but missing")
        files = [f for f in files if f.exists()]
        if not files:
            raise BagError(f"bag '{self.path}': none of its storage files exist ({', '.join(names)})")
        mode = str(self.metadata.get("compression_mode") or "").lower()
        fmt = str(self.metadata.get("compression_format") or "").lower()
        if mode not in ("", "none") and fmt != "zstd":
            raise BagError(f"bag '{self.path}': compression format '{fmt}' is not supported (zstd is)")
        self.message_compression = mode == "message"
        return self._decompressed(files, mode)

    def _decompressed(self, files: list[Path], mode: str) -> list[Path]:
        """File-compressed bags (.mcap.zstd) are inflated into a temporary folder first."""
        if mode != "file":
            return files
        self._tmp = tempfile.TemporaryDirectory(prefix="racestack-bag-")
        out = []
        for file in files:
            target = Path(self._tmp.name) / file.with_suffix("").name
            try:
                with file.open("rb") as src, zstd.open(src, "rb") as inflated, target.open("wb") as dst:
                    while block := inflated.read(1 << 22):
                        dst.write(block)
            except (OSError, zstd.ZstdError) as exc:
                self._problem(file.name, "", f"zstd stream damaged ({exc}): using the part that inflated")
            out.append(target)
        return out

    def _topics(self) -> dict[str, TopicInfo]:
        topics: dict[str, TopicInfo] = {}
        for entry in (self.metadata or {}).get("topics_with_message_count") or []:
            try:
                meta = entry["topic_metadata"]
                qos = parse_qos(meta.get("offered_qos_profiles") or [])
                topics[meta["name"]] = TopicInfo(
                    meta["name"],
                    meta["type"],
                    int(entry.get("message_count", 0)),
                    qos,
                    meta.get("type_description_hash") or "",
                )
            except (KeyError, TypeError, ValueError, ReaderError) as exc:
                self._problem("metadata.yaml", "topics_with_message_count", f"unreadable entry ({exc})")
        for reader in self.readers:
            for channel in reader.channels.values():
                info = topics.get(channel.topic)
                if info is None:
                    topics[channel.topic] = TopicInfo(
                        channel.topic, channel.msgtype, channel.count, list(channel.qos), channel.type_hash
                    )
                    continue
                if not info.qos:
                    info.qos = list(channel.qos)
                if not info.msgtype:
                    info.msgtype = channel.msgtype
        return topics

    # -- reading ----------------------------------------------------------------------------------

    def messages(self, topics: Iterable[str] | None = None, start_ns: int = 0) -> Iterator[BagMessage]:
        """Stored messages in receive-time order (per storage file), optionally for some topics only."""
        wanted = None if topics is None else set(topics)
        for reader in self.readers:
            keys = {
                key: channel for key, channel in reader.channels.items() if wanted is None or channel.topic in wanted
            }
            if not keys:
                continue
            for time_ns, key, data, where in reader.messages(keys, start_ns):
                channel = keys[key]
                if self.message_compression:
                    try:
                        data = zstd.decompress(data)
                    except zstd.ZstdError as exc:
                        self._problem(reader.path.name, where, f"message does not inflate ({exc}): skipped")
                        continue
                msgtype = channel.msgtype or self.topics[channel.topic].msgtype
                yield BagMessage(channel.topic, msgtype, time_ns, data, f"{reader.path.name} {where}")

    def describe(self) -> str:
        """One line per topic: name, type, message count."""
        return "\n".join(
            f"  {t.name}  {t.msgtype}  ({'?' if t.count is None else t.count} messages)"
            for t in sorted(self.topics.values(), key=lambda t: t.name)
        )

    def close(self) -> None:
        for reader in getattr(self, "readers", []):
            reader.close()
        self.readers = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Bag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def require_topics(bag: Bag | str | Path, topics: Iterable[str]) -> None:
    """Raises MissingTopicError naming every expected topic the bag lacks (or holds no messages of)."""
    if not isinstance(bag, Bag):
        with Bag(bag) as opened:
            require_topics(opened, topics)
        return
    missing = [t for t in topics if t not in bag.topics or bag.topics[t].count == 0]
    if missing:
        names = ", ".join(f"'{t}'" for t in missing)
        raise MissingTopicError(
            f"bag '{bag.path}' has no messages on {names}; it holds:\n{bag.describe() or '  (no topics)'}"
        )


# -- QoS policy (what to request when recording, what to offer when replaying) ----------------------


def qos_profile(reliable: bool = True, transient_local: bool = False, depth: int = DEFAULT_DEPTH) -> Qos:
    return Qos(
        QosHistory.KEEP_LAST,
        depth,
        QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
        QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        INFINITE,
        INFINITE,
        QosLiveliness.AUTOMATIC,
        INFINITE,
        False,
    )


def request_for_offers(offers: Sequence[Qos], depth: int = 100) -> Qos:
    """A subscription that matches every publisher: reliable / transient local only when all offer it."""
    reliable = bool(offers) and all(q.reliability == QosReliability.RELIABLE for q in offers)
    latched = bool(offers) and all(q.durability == QosDurability.TRANSIENT_LOCAL for q in offers)
    return qos_profile(reliable, latched, depth)


def offer_for_recorded(recorded: Sequence[Qos]) -> Qos:
    """The publisher replay offers: what the recorded publishers offered (reliable volatile if unknown).

    Mixed recorded offers fall back to the most compatible (best effort when any publisher was best
    effort, volatile unless all were transient local), so every original subscriber still matches.
    """
    if not recorded:
        return qos_profile()
    reliable = all(q.reliability != QosReliability.BEST_EFFORT for q in recorded)
    latched = all(q.durability == QosDurability.TRANSIENT_LOCAL for q in recorded)
    depths = [q.depth for q in recorded if q.history == QosHistory.KEEP_LAST and q.depth > 0]
    return qos_profile(reliable, latched, max(depths, default=1 if latched else DEFAULT_DEPTH))


# -- replay timeline ------------------------------------------------------------------------------


TIMINGS = ("stamp", "receive")
MAX_OFFSET_JUMP_NS = 5_000_000_000


class Timeline:
    """Where each stored message sits on the replay clock, never going backwards.

    ``receive``: at its recorded receive time, and /clock follows receive times (rosbag2's way).
    ``stamp``: at its header stamp when it has one, other messages at their receive time shifted by
    the latest (receive - stamp) offset; /clock then runs in the time base of the stamps, so nodes
    with ``use_sim_time`` see input ages as small as when recording even if the recorder's clock and
    the sensors' clock differed (a bag from another machine, a lockstep simulator that ran much
    slower than real time). A stamp counts when it lies within 5 s of the replay time so far, or
    when its offset is within 5 s of the previous offset; any other stamp (a message stamped in
    another clock) is ignored for timing.
    """

    def __init__(self, timing: str = "stamp", offset_ns: int | None = None) -> None:
        if timing not in TIMINGS:
            raise ValueError(f"timing '{timing}' is not one of {', '.join(TIMINGS)}")
        self.timing = timing
        self.offset_ns = offset_ns if timing == "stamp" else None
        self.last_ns: int | None = None

    def _stamp_counts(self, receive_ns: int, stamp_ns: int) -> bool:
        if self.last_ns is not None and abs(stamp_ns - self.last_ns) <= MAX_OFFSET_JUMP_NS:
            return True
        return self.offset_ns is None or abs(receive_ns - stamp_ns - self.offset_ns) <= MAX_OFFSET_JUMP_NS

    def time_of(self, receive_ns: int, stamp_ns: int | None) -> int:
        time_ns = receive_ns
        if self.timing == "stamp" and stamp_ns is not None and self._stamp_counts(receive_ns, stamp_ns):
            self.offset_ns = receive_ns - stamp_ns
        if self.offset_ns is not None:
            time_ns = receive_ns - self.offset_ns
        if self.last_ns is not None and time_ns < self.last_ns:
            time_ns = self.last_ns
        self.last_ns = time_ns
        return time_ns


# -- writing ------------------------------------------------------------------------------------


_UNKNOWN_TYPE = re.compile(r"Type '([^']+)' is unknown")


@cache
def _stores() -> tuple[Any, Any]:
    """The rosbags Kilted type store, and one filled on demand from the installed .msg files."""
    return get_typestore(Stores.ROS2_KILTED), get_typestore(Stores.EMPTY)


def _interface_file(msgtype: str) -> Path | None:
    package, kind, name = msgtype.split("/")
    prefixes = [sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]
    for prefix in filter(None, prefixes):
        candidate = Path(prefix) / "share" / package / kind / f"{name}.msg"
        if candidate.is_file():
            return candidate
    return None


def _definition_from(store: Any, msgtype: str, load: bool) -> tuple[str, str] | None:
    for _ in range(64):
        try:
            msgdef, _ = store.generate_msgdef(msgtype, ros_version=2)
            return msgdef, store.hash_rihs01(msgtype)
        except (TypesysError, KeyError) as exc:
            match = _UNKNOWN_TYPE.search(str(exc))
            missing = match.group(1) if match else str(exc).strip("'")
            source = _interface_file(missing) if load and missing.count("/") == 2 else None
            if source is None:
                return None
            store.register(get_types_from_msg(source.read_text(), missing))
    return None


def message_definition(msgtype: str, type_hash: str = "") -> tuple[str, str]:
    """(message definition text, RIHS01 hash) for the bag's schema of ``msgtype``.

    Taken from rosbags' Kilted definitions, else from the installed .msg files; when neither knows
    the type (or both disagree with the publisher's ``type_hash``) the schema stays empty and the
    publisher's hash is kept, which rosbag2 accepts for replay.
    """
    kilted, installed = _stores()
    for store, load in ((kilted, False), (installed, True)):
        found = _definition_from(store, msgtype, load)
        if found is not None and (not type_hash or found[1] == type_hash):
            return found
    return "", type_hash or "RIHS01_" + "0" * 64


class BagWriter:
    """A rosbag2 written message by message (MCAP or sqlite3, metadata version 8); ``close`` finalizes it."""

    def __init__(self, path: str | Path, storage: str = "mcap", custom_data: dict[str, str] | None = None) -> None:
        if storage not in STORAGES:
            raise BagError(f"storage '{storage}' is not one of {', '.join(STORAGES)}")
        self.path = Path(path)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        try:
            self._writer = Writer(self.path, version=METADATA_VERSION, storage_plugin=plugin)
            # Never null: an empty custom_data is written as null, which only newer readers accept.
            for key, value in {"writer": "racestack", **(custom_data or {})}.items():
                self._writer.set_custom_data(key, str(value))
            self._writer.open()
        except WriterError as exc:
            raise BagError(f"cannot write bag '{self.path}': {exc}") from exc
        self.storage = storage
        self._connections: dict[str, Any] = {}
        self.counts: Counter = Counter()
        self.closed = False

    def add_topic(self, topic: str, msgtype: str, offered_qos: Sequence[Qos] = (), type_hash: str = "") -> None:
        msgdef, rihs01 = message_definition(msgtype, type_hash)
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, msgdef=msgdef, rihs01=rihs01, offered_qos_profiles=list(offered_qos)
        )
        self.counts[topic] += 0

    def add_offered_qos(self, topic: str, qos: Qos) -> None:
        """A publisher that appeared after the topic was added: its profile goes into metadata.yaml."""
        profiles = self._connections[topic].ext.offered_qos_profiles
        if qos not in profiles:
            profiles.append(qos)

    def write(self, topic: str, time_ns: int, data: bytes | memoryview) -> None:
        self._writer.write(self._connections[topic], time_ns, data)
        self.counts[topic] += 1

    def flush(self) -> None:
        """Put everything written so far on disk, so a killed recorder loses at most this interval."""
        storage = self._writer.storage
        if isinstance(storage, McapWriter):
            if storage.chunk.bio.tell():
                storage.close_chunk()
            storage.bio.flush()
        elif isinstance(storage, Sqlite3Writer):
            storage.conn.commit()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
