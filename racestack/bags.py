"""rosbag2 reading and writing without rclpy: MCAP and sqlite3 storage, damage-tolerant reading.

Reading never depends on an index being intact: MCAP files are walked record by record (chunks are
found from their own headers, decoded lazily and merged in time order) and sqlite3 files row by
row, so a truncated or damaged bag yields everything that is still readable, plus a list of
problems that name the file and the offset or row. Writing goes through rosbags' writer with
metadata version 8, the newest layout ROS 2 Humble still reads: version 9 stores the QoS profiles
as a YAML list with string enums, which Humble's metadata reader cannot parse.
"""

from __future__ import annotations

import heapq
import mmap
import os
import re
import sqlite3
import struct
import sys
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import lz4.frame
import numpy as np
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

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

METADATA_VERSION = 8
STORAGES = ("mcap", "sqlite3")
DEFAULT_DEPTH = 10
MCAP_MAGIC = b"\x89MCAP0\r\n"
SQLITE_MAGIC = b"SQLite format 3\x00"
INFINITE = QosTime(9223372036, 854775807)

_OP_FOOTER, _OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x02, 0x03, 0x04, 0x05, 0x06
_OP_STATISTICS, _OP_DATA_END = 0x0B, 0x0F
_MCAP_OPS = range(0x01, 0x10)
_CHUNK_FIXED = 8 + 8 + 8 + 4 + 4  # start, end, uncompressed size, crc, compression length
_DECOMPRESSORS: dict[str, Callable[[bytes | memoryview], bytes]] = {
    "": bytes,
    "zstd": zstd.decompress,
    "lz4": lz4.frame.decompress,
}
_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from


class BagError(RuntimeError):
    """A bag that cannot be used at all (missing, not a rosbag2, unsupported); the text names the path."""


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


@dataclass
class _Channel:
    key: int
    topic: str
    msgtype: str
    qos: list[Qos]
    count: int | None = None
    type_hash: str = ""


Report = Callable[[str, str], None]


# -- MCAP ---------------------------------------------------------------------------------------


@dataclass
class _Chunk:
    offset: int
    start_ns: int
    end_ns: int
    uncompressed_size: int
    crc: int
    compression: str
    data_offset: int
    data_size: int


def _string(buf: bytes | memoryview, pos: int) -> tuple[str, int]:
    (length,) = _U32(buf, pos)
    end = pos + 4 + length
    if end > len(buf):
        raise ValueError(f"string of {length} bytes runs past its record")
    return bytes(buf[pos + 4 : end]).decode(), end


def _string_map(buf: bytes | memoryview, pos: int) -> dict[str, str]:
    (size,) = _U32(buf, pos)
    pos, end = pos + 4, pos + 4 + size
    values = {}
    while pos < end:
        key, pos = _string(buf, pos)
        values[key], pos = _string(buf, pos)
    return values


class _McapFile:
    """Record-level reader of one MCAP file that keeps going past damage."""

    def __init__(self, path: Path, report: Report) -> None:
        self.path = path
        self.report = report
        self._file = path.open("rb")
        size = os.fstat(self._file.fileno()).st_size
        self.buf: mmap.mmap | bytes = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, _Channel] = {}
        self.chunks: list[_Chunk] = []
        self.loose: list[tuple[int, int]] = []
        self._unknown_channels: set[int] = set()
        self._scan(self._header_end())
        if not self._read_summary():
            self._discover()

    def close(self) -> None:
        if isinstance(self.buf, mmap.mmap):
            self.buf.close()
        self._file.close()

    # -- layout ---------------------------------------------------------------------------------

    def _header_end(self) -> int:
        buf = self.buf
        if len(buf) < 8 or buf[:8] != MCAP_MAGIC:
            raise BagError(f"'{self.path}' is not an MCAP file (bad magic)")
        if len(buf) < 17 or buf[8] != 0x01:
            self.report("offset 8", "header record missing: file truncated")
            return len(buf)
        (length,) = _U64(buf, 9)
        return min(17 + length, len(buf))

    def _scan(self, pos: int) -> None:
        """Locate chunks and loose records in the data section, skipping over damaged stretches."""
        buf, size = self.buf, len(self.buf)
        while pos < size:
            if pos + 9 > size:
                self.report(f"offset {pos}", f"file ends {size - pos} bytes into a record header: truncated")
                return
            op, (length,) = buf[pos], _U64(buf, pos + 1)
            end = pos + 9 + length
            if op == _OP_CHUNK and end > size and (partial := self._partial_chunk(pos)) is not None:
                self.report(
                    f"offset {pos}",
                    f"file ends inside this chunk ({size - partial.data_offset} of {partial.data_size} bytes"
                    " present): truncated; reading the complete messages in it",
                )
                self.chunks.append(partial)
                return
            if op not in _MCAP_OPS or end > size:
                what = (
                    f"record (opcode 0x{op:02x}, {length} bytes) runs past the end of the file: truncated"
                    if op in _MCAP_OPS
                    else f"invalid record opcode 0x{op:02x}: damaged data"
                )
                self.report(f"offset {pos}", what)
                resumed = self._resync(pos + 1)
                if resumed is None:
                    return
                self.report(f"offset {resumed}", f"found the next intact chunk; bytes {pos}..{resumed} skipped")
                pos = resumed
                continue
            if op == _OP_CHUNK:
                chunk = self._chunk_at(pos, strict=False)
                if chunk is None:
                    self.report(f"offset {pos}", "chunk header is inconsistent: chunk skipped")
                else:
                    self.chunks.append(chunk)
            elif op in (_OP_SCHEMA, _OP_CHANNEL):
                self._record(op, memoryview(buf)[pos + 9 : end], f"offset {pos}")
            elif op == _OP_MESSAGE and length >= 22:
                self.loose.append((_U64(buf, pos + 9 + 6)[0], pos))
            elif op in (_OP_DATA_END, _OP_FOOTER):
                return
            pos = end

    def _chunk_at(self, pos: int, strict: bool) -> _Chunk | None:
        buf, size = self.buf, len(self.buf)
        content = pos + 9
        if content + _CHUNK_FIXED > size:
            return None
        (length,) = _U64(buf, pos + 1)
        start, end, usize, crc, clen = struct.unpack_from("<QQQII", buf, content)
        if clen > 4 or content + _CHUNK_FIXED + clen + 8 > size:
            return None
        compression = bytes(buf[content + _CHUNK_FIXED : content + _CHUNK_FIXED + clen])
        (csize,) = _U64(buf, content + _CHUNK_FIXED + clen)
        data_offset = content + _CHUNK_FIXED + clen + 8
        used = _CHUNK_FIXED + clen + 8 + csize
        consistent = used == length if strict else used <= length
        if (
            not consistent
            or data_offset + csize > size
            or compression.decode(errors="replace") not in _DECOMPRESSORS
            or (not compression and usize != csize)
        ):
            return None
        return _Chunk(pos, start, end, usize, crc, compression.decode(), data_offset, csize)

    def _partial_chunk(self, pos: int) -> _Chunk | None:
        """The present part of a chunk cut by the end of the file (uncompressed or zstd only)."""
        buf, content = self.buf, pos + 9
        if content + _CHUNK_FIXED > len(buf):
            return None
        start, end, usize, _, clen = struct.unpack_from("<QQQII", buf, content)
        compression = bytes(buf[content + _CHUNK_FIXED : content + _CHUNK_FIXED + clen])
        data_offset = content + _CHUNK_FIXED + clen + 8
        if compression not in (b"", b"zstd") or data_offset >= len(buf):
            return None
        (csize,) = _U64(buf, data_offset - 8)
        return _Chunk(pos, start, end, usize, 0, compression.decode(), data_offset, csize)

    def _resync(self, pos: int) -> int | None:
        """Offset of the next record that is an intact chunk header, or None."""
        find = self.buf.find
        while (pos := find(b"\x06", pos)) >= 0:
            if self._chunk_at(pos, strict=True) is not None:
                return pos
            pos += 1
        return None

    def _read_summary(self) -> bool:
        """Schemas, channels and counts from the summary section; False when it is absent or damaged."""
        buf, size = self.buf, len(self.buf)
        footer = size - 8 - 29
        if footer < 17 or buf[size - 8 :] != MCAP_MAGIC or buf[footer] != _OP_FOOTER:
            return False
        (start,) = _U64(buf, footer + 9)
        if not 0 < start <= footer:
            return False
        found, counts, pos = {}, {}, start
        try:
            while pos < footer:
                op, (length,) = buf[pos], _U64(buf, pos + 1)
                end = pos + 9 + length
                if end > footer:
                    raise ValueError(f"record at offset {pos} runs past the footer")
                if op in (_OP_SCHEMA, _OP_CHANNEL):
                    found.setdefault(op, 0)
                    self._record(op, memoryview(buf)[pos + 9 : end], f"summary offset {pos}")
                elif op == _OP_STATISTICS:
                    counts = self._statistics(memoryview(buf)[pos + 9 : end])
                pos = end
        except (ValueError, struct.error) as exc:
            self.report("summary", f"unreadable ({exc}); scanning the chunks instead")
            return False
        for key, count in counts.items():
            if key in self.channels:
                self.channels[key].count = count
        return bool(self.channels) or not (self.chunks or self.loose)

    @staticmethod
    def _statistics(rec: memoryview) -> dict[int, int]:
        (size,) = _U32(rec, 42)
        return {_U16(rec, 46 + i)[0]: _U64(rec, 48 + i)[0] for i in range(0, size, 10)}

    def _record(self, op: int, rec: memoryview, where: str) -> None:
        try:
            if op == _OP_SCHEMA:
                (key,) = _U16(rec, 0)
                self.schemas[key], _ = _string(rec, 2)
                return
            key, schema = _U16(rec, 0)[0], _U16(rec, 2)[0]
            if key in self.channels:
                return
            topic, pos = _string(rec, 4)
            encoding, pos = _string(rec, pos)
            metadata = _string_map(rec, pos)
        except (ValueError, struct.error, UnicodeDecodeError) as exc:
            self.report(where, f"unreadable schema/channel record ({exc})")
            return
        if encoding != "cdr":
            self.report(where, f"topic {topic}: message encoding '{encoding}' is not CDR: skipped")
            return
        try:
            qos = parse_qos(metadata.get("offered_qos_profiles", ""))
        except (ReaderError, KeyError, TypeError) as exc:
            self.report(where, f"topic {topic}: unreadable QoS profiles ({exc})")
            qos = []
        self.channels[key] = _Channel(key, topic, self.schemas.get(schema, ""), qos)

    def _discover(self) -> None:
        """No usable summary: decode every chunk once to learn the channels and count messages."""
        counts: Counter = Counter()
        for index in range(len(self.chunks)):
            for _, key, _, _ in self._chunk_messages(index, None, keep_data=False):
                counts[key] += 1
        for _, pos in self.loose:
            counts[_U16(self.buf, pos + 9)[0]] += 1
        for key, channel in self.channels.items():
            channel.count = counts.get(key, 0)

    # -- messages ---------------------------------------------------------------------------------

    def _chunk_messages(
        self, index: int, keys: Collection[int] | None, keep_data: bool = True, start_ns: int = 0
    ) -> list[tuple[int, int, bytes, str]]:
        chunk = self.chunks[index]
        where = f"chunk at offset {chunk.offset}"
        raw = memoryview(self.buf)[chunk.data_offset : chunk.data_offset + chunk.data_size]
        partial = chunk.data_offset + chunk.data_size > len(self.buf)
        try:
            if chunk.compression == "zstd" and partial:
                raw = memoryview(zstd.ZstdDecompressor().decompress(raw))
            elif chunk.compression:
                raw = memoryview(_DECOMPRESSORS[chunk.compression](raw))
        except Exception as exc:
            self.report(where, f"cannot decompress ({chunk.compression}: {exc}): its messages are lost")
            return []
        if len(raw) != chunk.uncompressed_size and not partial:
            self.report(where, f"holds {len(raw)} bytes, its header says {chunk.uncompressed_size}")
        if chunk.crc and zlib.crc32(raw) != chunk.crc:
            self.report(where, "CRC mismatch: reading its records anyway, each message is checked")
        out: list[tuple[int, int, bytes, str]] = []
        pos, size = 0, len(raw)
        while pos < size:
            op = raw[pos]
            length = _U64(raw, pos + 1)[0] if pos + 9 <= size else size
            end = pos + 9 + length
            if op not in _MCAP_OPS or end > size:
                what = "cut by the end of the file" if partial else f"damaged (opcode 0x{op:02x})"
                self.report(f"{where} +{pos}", f"record {what}: rest of the chunk skipped")
                break
            if op == _OP_MESSAGE and length >= 22:
                key, _, log_time = struct.unpack_from("<HIQ", raw, pos + 9)
                if key not in self.channels:
                    if key not in self._unknown_channels and keep_data:
                        self._unknown_channels.add(key)
                        self.report(f"{where} +{pos}", f"message on undeclared channel {key}: skipped")
                elif (keys is None or key in keys) and log_time >= start_ns:
                    data = bytes(raw[pos + 9 + 22 : end]) if keep_data else b""
                    out.append((log_time, key, data, f"{where} +{pos}"))
            elif op in (_OP_SCHEMA, _OP_CHANNEL):
                self._record(op, raw[pos + 9 : end], f"{where} +{pos}")
            pos = end
        out.sort(key=lambda item: item[0])
        return out

    def messages(self, keys: Collection[int], start_ns: int = 0) -> Iterator[tuple[int, int, bytes, str]]:
        """(log time, channel, data, where) in log-time order: chunks merged lazily by start time."""
        heap: list[tuple[int, int, int, Any]] = [
            (chunk.start_ns, index, -1, None) for index, chunk in enumerate(self.chunks) if chunk.end_ns >= start_ns
        ]
        loose = sorted((t, _U16(self.buf, pos + 9)[0], pos) for t, pos in self.loose if t >= start_ns)
        loose_items = [
            (t, key, bytes(self.buf[pos + 9 + 22 : pos + 9 + _U64(self.buf, pos + 1)[0]]), f"offset {pos}")
            for t, key, pos in loose
            if key in keys
        ]
        if loose_items:
            heap.append((loose_items[0][0], len(self.chunks), 0, loose_items))
        heapq.heapify(heap)
        while heap:
            _, index, position, items = heapq.heappop(heap)
            if position < 0:
                items, position = self._chunk_messages(index, keys, start_ns=start_ns), 0
                if not items:
                    continue
            else:
                yield items[position]
                position += 1
                if position >= len(items):
                    continue
            heapq.heappush(heap, (items[position][0], index, position, items))


# -- sqlite3 ------------------------------------------------------------------------------------


class _Sqlite3File:
    """Row-level reader of one rosbag2 sqlite3 file that steps over unreadable pages."""

    BATCH = 4096

    def __init__(self, path: Path, report: Report) -> None:
        self.path = path
        self.report = report
        try:
            self.db = sqlite3.connect(f"file:{quote(str(path))}?mode=ro&immutable=1", uri=True)
            # A truncated file is "malformed" to sqlite unless the schema is trusted as it is.
            self.db.execute("PRAGMA writable_schema = ON")
            tables = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise BagError(f"'{path}' is not a readable sqlite3 database ({exc})") from exc
        if not {"messages", "topics"} <= tables:
            raise BagError(f"'{path}' is not a rosbag2 sqlite3 file (no messages/topics tables)")
        self.channels: dict[int, _Channel] = {}
        try:
            self._read_topics()
        except sqlite3.DatabaseError as exc:
            self.report("topics table", f"unreadable ({exc}): no messages can be attributed")
        self.order = self._index()

    def close(self) -> None:
        self.db.close()

    def _read_topics(self) -> None:
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(topics)")}
        wanted = ["id", "name", "type", "serialization_format"]
        optional = [c for c in ("offered_qos_profiles", "type_description_hash") if c in columns]
        for row in self.db.execute(f"SELECT {', '.join(wanted + optional)} FROM topics ORDER BY id"):
            key, name, msgtype, encoding, *rest = row
            extra = dict(zip(optional, rest, strict=True))
            if encoding != "cdr":
                self.report(f"topic {name}", f"serialization format '{encoding}' is not CDR: skipped")
                continue
            try:
                qos = parse_qos(extra.get("offered_qos_profiles") or "")
            except (ReaderError, KeyError, TypeError) as exc:
                self.report(f"topic {name}", f"unreadable QoS profiles ({exc})")
                qos = []
            self.channels[key] = _Channel(key, name, msgtype, qos, 0, extra.get("type_description_hash") or "")

    def _index(self) -> np.ndarray:
        """(timestamp, id, topic) of every readable row, in timestamp order."""
        parts: list[np.ndarray] = []
        last = -(2**63)
        while True:
            rows: list[tuple[int, int, int]] = []
            error = None
            try:
                for row in self.db.execute(
                    "SELECT timestamp, id, topic_id FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                    (last, self.BATCH),
                ):
                    rows.append(row)
            except sqlite3.DatabaseError as exc:
                error = exc
            if rows:
                parts.append(np.asarray(rows, dtype=np.int64))
                last = rows[-1][1]
            if error is None:
                if len(rows) < self.BATCH:
                    break
                continue
            resumed = self._skip_damaged(last)
            span = f"rows after id {max(last, 0)}" if resumed is None else f"rows {last + 1}..{resumed - 1}"
            self.report(span, f"unreadable ({error}): skipped")
            if resumed is None:
                break
            last = resumed - 1
        table = np.concatenate(parts) if parts else np.empty((0, 3), dtype=np.int64)
        table = table[np.lexsort((table[:, 1], table[:, 0]))]
        counts = Counter(table[:, 2].tolist())
        for key, channel in self.channels.items():
            channel.count = counts.get(key, 0)
        return table

    def _skip_damaged(self, last: int) -> int | None:
        """The first readable id after an unreadable stretch that starts after ``last``."""
        step = 1
        while step < 2**40:
            try:
                row = self.db.execute(
                    "SELECT id FROM messages WHERE id > ? ORDER BY id LIMIT 1", (last + step,)
                ).fetchone()
            except sqlite3.DatabaseError:
                step *= 2
                continue
            return None if row is None else int(row[0])
        return None

    def messages(self, keys: Collection[int], start_ns: int = 0) -> Iterator[tuple[int, int, bytes, str]]:
        for time_ns, row_id, key in self.order.tolist():
            if key not in keys or time_ns < start_ns:
                continue
            try:
                row = self.db.execute("SELECT data FROM messages WHERE id = ?", (row_id,)).fetchone()
            except sqlite3.DatabaseError as exc:
                self.report(f"row {row_id}", f"unreadable ({exc}): message skipped")
                continue
            if row is not None:
                yield time_ns, key, bytes(row[0]), f"row {row_id}"


# -- bags ---------------------------------------------------------------------------------------


def _storage_of(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(16)
    if head.startswith(MCAP_MAGIC):
        return "mcap"
    if head.startswith(SQLITE_MAGIC):
        return "sqlite3"
    if path.suffix == ".mcap":
        return "mcap"
    if path.suffix == ".db3":
        return "sqlite3"
    raise BagError(f"'{path}' is neither an MCAP nor a sqlite3 file")


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
        self.storage = _storage_of(files[0])
        self.readers: list[_McapFile | _Sqlite3File] = []
        try:
            for file in files:
                reader_class = _McapFile if _storage_of(file) == "mcap" else _Sqlite3File
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

    @property
    def start_ns(self) -> int:
        """Receive time of the first readable message (metadata as a fallback)."""
        for message in self.messages():
            return message.time_ns
        return int(((self.metadata or {}).get("starting_time") or {}).get("nanoseconds_since_epoch", 0))

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


def open_bag(path: str | Path, on_problem: Callable[[BagProblem], None] | None = None) -> Bag:
    return Bag(path, on_problem)


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
    the sensors' clock differed (a bag from another machine, a lockstep simulator). A stamp whose
    offset jumps by more than 5 s from the previous one (a message stamped in another clock) is
    ignored for timing.
    """

    def __init__(self, timing: str = "stamp", offset_ns: int | None = None) -> None:
        if timing not in TIMINGS:
            raise ValueError(f"timing '{timing}' is not one of {', '.join(TIMINGS)}")
        self.timing = timing
        self.offset_ns = offset_ns if timing == "stamp" else None
        self.last_ns: int | None = None

    def time_of(self, receive_ns: int, stamp_ns: int | None) -> int:
        time_ns = receive_ns
        if self.timing == "stamp" and stamp_ns is not None:
            offset = receive_ns - stamp_ns
            if self.offset_ns is None or abs(offset - self.offset_ns) <= MAX_OFFSET_JUMP_NS:
                self.offset_ns = offset
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

    def has_topic(self, topic: str) -> bool:
        return topic in self._connections

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
