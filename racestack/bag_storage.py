"""Damage-tolerant readers of rosbag2 storage files: MCAP record by record, sqlite3 row by row.

Neither trusts an index. An MCAP file is walked from its header: chunks are located from their own
headers (after damage, by searching for the next intact chunk header), decoded one at a time when
the time-ordered merge needs them, and a chunk cut by the end of the file still yields its complete
messages. A sqlite3 file is indexed by row id in batches, stepping over unreadable pages, and each
message is then read on its own. Every problem goes to a ``report(where, what)`` callback.
"""

from __future__ import annotations

import heapq
import mmap
import os
import sqlite3
import struct
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import lz4.frame
import numpy as np
from rosbags.interfaces import Qos
from rosbags.rosbag2.errors import ReaderError
from rosbags.rosbag2.metadata import parse_qos

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

MCAP_MAGIC = b"\x89MCAP0\r\n"
SQLITE_MAGIC = b"SQLite format 3\x00"

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


@dataclass
class Channel:
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


class McapFile:
    """Record-level reader of one MCAP file that keeps going past damage."""

    def __init__(self, path: Path, report: Report) -> None:
        self.path = path
        self.report = report
        self._file = path.open("rb")
        size = os.fstat(self._file.fileno()).st_size
        self.buf: mmap.mmap | bytes = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, Channel] = {}
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
        self.channels[key] = Channel(key, topic, self.schemas.get(schema, ""), qos)

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


class Sqlite3File:
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
        self.channels: dict[int, Channel] = {}
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
            self.channels[key] = Channel(key, name, msgtype, qos, 0, extra.get("type_description_hash") or "")

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


def storage_of(path: Path) -> str:
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
