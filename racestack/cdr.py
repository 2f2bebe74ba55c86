"""Structural checks of serialized (CDR) ROS 2 messages against the installed message types.

A replayed message is published as the bytes stored in the bag, so nothing re-serializes it; but a
damaged or mismatched message would make every subscriber's deserialization fail. ``cdr_problem``
walks the layout of the installed type (lengths, alignment, string terminators, UTF-8) without
copying or allocating payloads (a 3.2 MB cloud: ~30 us) and without rclpy, so offline tools use it too.
Also reads a message's ``header.stamp`` straight from the bytes.
"""

from __future__ import annotations

import importlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from rosidl_parser import definition as idl

# Encapsulation identifier -> (little endian, maximum alignment). XCDR1 aligns 8-byte values to 8,
# plain XCDR2 to 4. Other identifiers (delimited/parameter lists) are not checked.
ENCAPSULATIONS: dict[bytes, tuple[bool, int]] = {
    b"\x00\x00": (False, 8),
    b"\x00\x01": (True, 8),
    b"\x00\x06": (False, 4),
    b"\x00\x07": (True, 4),
}
MAX_TRAILING_BYTES = 7

_PRIMITIVE_SIZES = {
    "boolean": 1, "octet": 1, "char": 1, "uint8": 1, "int8": 1,
    "uint16": 2, "int16": 2, "short": 2, "unsigned short": 2,
    "uint32": 4, "int32": 4, "long": 4, "unsigned long": 4, "float": 4,
    "uint64": 8, "int64": 8, "long long": 8, "unsigned long long": 8, "double": 8,
}  # fmt: skip


class CdrError(ValueError):
    """The bytes do not form a message of the type (the text says where)."""


class _UnsupportedError(Exception):
    """A construct the checker does not walk (wstring); such messages are passed unchecked."""


@dataclass(frozen=True)
class _Prim:
    size: int


@dataclass(frozen=True)
class _Str:
    bound: int


@dataclass(frozen=True)
class _Array:
    item: Any
    length: int


@dataclass(frozen=True)
class _Seq:
    item: Any
    bound: int


@dataclass(frozen=True)
class _Struct:
    name: str
    members: tuple[tuple[str, Any], ...]


def message_class(msgtype: str) -> type:
    """The installed Python class of ``pkg/msg/Name``; ValueError when it is not installed here."""
    parts = msgtype.split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"'{msgtype}' is not a ROS 2 type name (package/msg/Name)")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"message type '{msgtype}' is not installed here ({exc})") from None


def message_class_of(namespaced: idl.NamespacedType) -> type:
    return message_class("/".join((*namespaced.namespaces, namespaced.name)))


def _plan_of_type(slot: Any) -> Any:
    if isinstance(slot, idl.BasicType):
        size = _PRIMITIVE_SIZES.get(slot.typename)
        return _UnsupportedError if size is None else _Prim(size)
    if isinstance(slot, idl.AbstractWString):
        return _UnsupportedError
    if isinstance(slot, idl.AbstractString):
        return _Str(getattr(slot, "maximum_size", 0) or 0)
    if isinstance(slot, idl.NamespacedType):
        return plan_of(message_class_of(slot))
    if isinstance(slot, idl.Array):
        return _Array(_plan_of_type(slot.value_type), int(slot.size))
    if isinstance(slot, idl.AbstractSequence):
        bound = int(slot.maximum_size) if isinstance(slot, idl.BoundedSequence) else 0
        return _Seq(_plan_of_type(slot.value_type), bound)
    raise TypeError(f"unknown slot type {slot!r}")


@cache
def plan_of(msg_class: type) -> _Struct:
    """The member layout of a generated message class, compiled once per class."""
    names = list(msg_class.get_fields_and_field_types())
    return _Struct(
        f"{msg_class.__module__.split('.')[0]}/{msg_class.__name__}",
        tuple(zip(names, (_plan_of_type(slot) for slot in msg_class.SLOT_TYPES), strict=True)),
    )


@cache
def _fixed_size(plan: Any, max_align: int) -> tuple[int, int] | None:
    """(size, alignment) when every element of ``plan`` serializes to the same size, else None."""
    if isinstance(plan, _Prim):
        return plan.size, min(plan.size, max_align)
    if isinstance(plan, _Array):
        inner = _fixed_size(plan.item, max_align)
        if inner is None:
            return None
        return inner[0] * plan.length, inner[1]
    if isinstance(plan, _Struct):
        offset, align = 0, 1
        for _, member in plan.members:
            inner = _fixed_size(member, max_align)
            if inner is None:
                return None
            size, member_align = inner
            offset = -(-offset // member_align) * member_align + size
            align = max(align, member_align)
        if offset % align:
            return None
        return offset, align
    return None


class CdrReader:
    """Offset-based reads of serialized bytes (offsets count from after the 4-byte encapsulation
    header), aligned and bounds-checked as the encapsulation says: the checker walks a whole type
    with it, and readers of one message type (``racestack.pointcloud.cloud_from_cdr``) take its values.
    Every failure is a CdrError whose text starts with the field's path."""

    def __init__(self, data: bytes | memoryview, little: bool, max_align: int) -> None:
        self.data = memoryview(data).cast("B")[4:]
        self.size = len(self.data)
        self.order = "<" if little else ">"
        self.uint32 = struct.Struct(self.order + "I").unpack_from
        self.max_align = max_align

    @classmethod
    def of(cls, data: bytes | memoryview) -> CdrReader:
        """A reader of ``data``; CdrError when it does not start with a known encapsulation header."""
        layout = ENCAPSULATIONS.get(bytes(data[:2])) if len(data) >= 4 else None
        if layout is None:
            raise CdrError("the bytes do not start with a known CDR encapsulation header")
        return cls(data, *layout)

    def align(self, offset: int, alignment: int) -> int:
        alignment = min(alignment, self.max_align)
        return -(-offset // alignment) * alignment

    def need(self, offset: int, count: int, path: str) -> int:
        end = offset + count
        if end > self.size:
            raise CdrError(
                f"{path}: needs bytes {offset + 4}..{end + 4} but the message ends at byte {self.size + 4}"
            )
        return end

    def count(self, offset: int, path: str) -> tuple[int, int]:
        """(a uint32 such as a sequence length, the offset after it)."""
        offset = self.align(offset, 4)
        end = self.need(offset, 4, path)
        return self.uint32(self.data, offset)[0], end

    def unpack(self, code: str, offset: int, path: str) -> tuple[tuple, int]:
        """(the values of struct ``code``, items of one size, e.g. "iI"; the offset after them)."""
        offset = self.align(offset, struct.calcsize(code[0]))
        end = self.need(offset, struct.calcsize(self.order + code), path)
        return struct.unpack_from(self.order + code, self.data, offset), end

    def octets(self, offset: int, path: str) -> tuple[memoryview, int]:
        """(a byte sequence as a view of the data, the offset after it)."""
        length, offset = self.count(offset, path)
        end = self.need(offset, length, path)
        return self.data[offset:end], end

    def string(self, offset: int, path: str, bound: int = 0) -> tuple[str, int]:
        length, offset = self.count(offset, path)
        if length == 0:
            raise CdrError(f"{path}: string is unterminated (length 0, no NUL)")
        if bound and length - 1 > bound:
            raise CdrError(f"{path}: string of {length - 1} chars exceeds its bound {bound}")
        end = self.need(offset, length, path)
        if self.data[end - 1] != 0:
            raise CdrError(f"{path}: string is unterminated (no NUL at its end)")
        try:
            return bytes(self.data[offset : end - 1]).decode("utf-8"), end
        except UnicodeDecodeError as exc:
            raise CdrError(f"{path}: string is not UTF-8 ({exc.reason})") from None


class _Walker(CdrReader):
    def walk(self, plan: Any, offset: int, path: str) -> int:
        if plan is _UnsupportedError:
            raise _UnsupportedError
        if isinstance(plan, _Prim):
            offset = self.align(offset, plan.size)
            return self.need(offset, plan.size, path)
        if isinstance(plan, _Str):
            return self.string(offset, path, plan.bound)[1]
        if isinstance(plan, _Struct):
            for name, member in plan.members:
                offset = self.walk(member, offset, f"{path}.{name}" if path else name)
            return offset
        if isinstance(plan, _Seq):
            length, offset = self.count(offset, path)
            if plan.bound and length > plan.bound:
                raise CdrError(f"{path}: sequence of {length} exceeds its bound {plan.bound}")
            return self.items(plan.item, length, offset, path)
        if isinstance(plan, _Array):
            return self.items(plan.item, plan.length, offset, path)
        raise TypeError(plan)

    def items(self, item: Any, length: int, offset: int, path: str) -> int:
        if length == 0:
            return offset
        fixed = _fixed_size(item, self.max_align)
        if fixed is not None:
            size, alignment = fixed
            offset = self.align(offset, alignment)
            if length > (self.size - offset) // max(size, 1):
                raise CdrError(f"{path}: {length} items of {size} bytes exceed the message")
            return self.need(offset, size * length, path)
        for index in range(length):
            offset = self.walk(item, offset, f"{path}[{index}]")
        return offset


def cdr_problem(data: bytes | memoryview, msg_class: type) -> str | None:
    """None when ``data`` is a well-formed ``msg_class`` message (or cannot be checked), else why not."""
    if len(data) < 4:
        return f"only {len(data)} bytes (no CDR header)"
    layout = ENCAPSULATIONS.get(bytes(data[:2]))
    if layout is None:
        return None if bytes(data[:1]) == b"\x00" else f"unknown CDR encapsulation {bytes(data[:2]).hex()}"
    walker = _Walker(data, *layout)
    try:
        end = walker.walk(plan_of(msg_class), 0, "")
    except CdrError as exc:
        return str(exc)
    except _UnsupportedError:
        return None
    trailing = walker.size - end
    if trailing > MAX_TRAILING_BYTES:
        return f"{trailing} bytes after the end of the message (a different message type?)"
    return None


@cache
def _has_header(msg_class: type) -> bool:
    slots = getattr(msg_class, "SLOT_TYPES", ())
    if not slots or not isinstance(slots[0], idl.NamespacedType):
        return False
    return tuple(slots[0].namespaces) == ("std_msgs", "msg") and slots[0].name == "Header"


HEADER_STAMP_OFFSET = 4  # header.stamp, right after the encapsulation header


def header_stamp_ns(data: bytes | memoryview, msg_class: type) -> int | None:
    """``header.stamp`` in ns for messages whose first field is a std_msgs/Header; None otherwise or 0."""
    if not _has_header(msg_class) or len(data) < 12:
        return None
    layout = ENCAPSULATIONS.get(bytes(data[:2]))
    if layout is None:
        return None
    sec, nanosec = struct.unpack_from("<iI" if layout[0] else ">iI", data, HEADER_STAMP_OFFSET)
    stamp = sec * 1_000_000_000 + nanosec
    return stamp if stamp > 0 else None


def set_header_stamp(buffer: bytearray | memoryview, msg_class: type, stamp_ns: int) -> None:
    """Set ``header.stamp`` of the serialized message in ``buffer``, in place: re-stamping a stored
    message costs eight bytes, not a serialization (~0.3 ms of a 1.6 MB cloud) nor a copy (~0.1 ms)."""
    if not _has_header(msg_class):
        raise CdrError(f"{msg_class.__name__} does not begin with a std_msgs/Header")
    layout = ENCAPSULATIONS.get(bytes(buffer[:2]))
    end = HEADER_STAMP_OFFSET + 8
    if layout is None or len(buffer) < end:
        raise CdrError("not a CDR message with a known encapsulation")
    buffer[HEADER_STAMP_OFFSET:end] = packed_stamp("<" if layout[0] else ">", stamp_ns)


def packed_stamp(order: str, stamp_ns: int) -> bytes:
    """A builtin_interfaces/Time as CDR bytes in byte ``order`` ("<" or ">")."""
    return struct.pack(order + "iI", *divmod(stamp_ns, 1_000_000_000))


def serialized(msg: Any) -> bytes:
    """``msg`` serialized by rclpy, imported here rather than with the module: the grid and image
    helpers that build templates with it also serve dataset export and training, which run where
    rclpy is not installed (a GPU machine's own Python)."""
    from rclpy.serialization import serialize_message

    return serialize_message(msg)


class StampedTemplate:
    """A serialized message whose fields stay the same from frame to frame but for its stamps (at
    ``stamp_offsets`` in the bytes, each a builtin_interfaces/Time) and its trailing byte sequence.

    Serialized once; a frame then costs the stamps written and the payload joined: one copy of the
    payload, where rclpy's publish of the message object makes three (its array, the C message, the
    serialization: ~0.4 ms of a 1 MB map), and no header or info built as message objects and
    serialized (~0.2 ms of each PPN frame).
    """

    def __init__(self, empty: bytes, stamp_offsets: Sequence[int] = ()) -> None:
        layout = ENCAPSULATIONS.get(bytes(empty[:2]))
        if layout is None or len(empty) < 8 or bytes(empty[-4:]) != bytes(4):
            raise CdrError("not a CDR message ending in an empty sequence")
        if any(offset < 4 or offset + 8 > len(empty) - 4 for offset in stamp_offsets):
            raise CdrError(f"stamp offsets {list(stamp_offsets)} fall outside the message's fields")
        self._prefix = bytes(memoryview(empty)[:-4])
        self._order = "<" if layout[0] else ">"
        self._stamp_offsets = tuple(stamp_offsets)

    def serialize(self, stamp_ns: int | None, payload: bytes | memoryview) -> bytes:
        """The message with every stamp set to ``stamp_ns`` (None: as serialized) and ``payload`` as its
        trailing bytes."""
        prefix = self._prefix
        if stamp_ns is not None and self._stamp_offsets:
            patched = bytearray(prefix)
            stamp = packed_stamp(self._order, stamp_ns)
            for offset in self._stamp_offsets:
                patched[offset : offset + 8] = stamp
            prefix = patched
        return b"".join((prefix, struct.pack(self._order + "I", len(payload)), payload))


def stamp_to_ns(stamp: Any) -> int:
    """A builtin_interfaces/Time in ns."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def frame_and_stamp(header: Any) -> tuple[str, int | None]:
    """(frame id, stamp in ns) of a std_msgs/Header, or ("", None) for no header: what a template
    needs from a frame's header."""
    return ("", None) if header is None else (header.frame_id, stamp_to_ns(header.stamp))


def header_frame_end(data: bytes | memoryview) -> int:
    """Offset in serialized ``data`` (a message that begins with a std_msgs/Header) just after
    ``header.frame_id``: where the message's own fields begin."""
    reader = CdrReader.of(data)
    _, offset = reader.unpack("iI", 0, "header.stamp")
    return reader.string(offset, "header.frame_id")[1] + 4
