"""Publishing serialized bytes without rclpy's copy of them.

rclpy's ``Publisher.publish(bytes)`` hands the bytes to C++ as a ``std::string``: one more copy of
the whole message before Fast DDS copies it into its own buffer. For a 3.2 MB cloud that copy costs
0.22 ms per publish (0.49 against 0.27 ms of CPU, nobody subscribed: ``python -m bench transport``).
Here rcl's ``rcl_publish_serialized_message``, the call rclpy makes after its copy, gets a pointer
to the caller's buffer instead (bytes, bytearray, memoryview or a numpy array). Fast DDS has copied
the data by the time it returns, so the caller may reuse its buffer at once: re-stamp it in place
and publish it again, as a replay does.

Where rclpy's copy of rcl cannot be found in this process (no /proc), rclpy's own publish is used.
"""

from __future__ import annotations

import ctypes
from functools import cache
from typing import Any

import numpy as np
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.publisher import Publisher

RCL_RET_OK = 0


class _SerializedMessage(ctypes.Structure):
    """rcl_serialized_message_t (rcutils_uint8_array_t): the buffer, its length and capacity, and an
    allocator (four functions and a state) that publishing does not use."""

    _fields_ = [
        ("buffer", ctypes.c_void_p),
        ("buffer_length", ctypes.c_size_t),
        ("buffer_capacity", ctypes.c_size_t),
        ("allocator", ctypes.c_void_p * 5),
    ]


class _ErrorString(ctypes.Structure):
    _fields_ = [("text", ctypes.c_char * 1024)]


def _loaded_library(stem: str) -> str | None:
    """The path of ``lib<stem>.so`` as rclpy loaded it into this process: another copy of rcl would
    not know rclpy's publishers."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").rsplit(" ", 1)[-1]
                if path.endswith(f"/lib{stem}.so"):
                    return path
    except OSError:
        pass
    return None


@cache
def _rcl() -> tuple[Any, Any] | None:
    """(librcl, librcutils) with the two calls used here typed, or None where either is missing."""
    paths = [_loaded_library(stem) for stem in ("rcl", "rcutils")]
    if None in paths:
        return None
    try:
        rcl, rcutils = (ctypes.CDLL(path) for path in paths)
    except OSError:
        return None
    rcl.rcl_publish_serialized_message.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(_SerializedMessage),
        ctypes.c_void_p,
    ]
    rcl.rcl_publish_serialized_message.restype = ctypes.c_int
    rcutils.rcutils_get_error_string.restype = _ErrorString
    rcutils.rcutils_reset_error.restype = None
    return rcl, rcutils


def one_copy_publishing() -> bool:
    """Whether ``publish_serialized`` skips rclpy's copy in this process: its fallback is otherwise
    silent, so the transport bench says when its figure compares rclpy with itself."""
    return _rcl() is not None


def publish_serialized(publisher: Publisher, data: bytes | bytearray | memoryview | np.ndarray) -> None:
    """Publish CDR bytes (a serialized message of the publisher's type) with one copy, Fast DDS's."""
    libraries = _rcl()
    if libraries is None:
        publisher.publish(bytes(data))
        return
    rcl, rcutils = libraries
    view = np.frombuffer(data, dtype=np.uint8)
    message = _SerializedMessage(view.ctypes.data, view.size, view.size)
    with publisher.handle:
        ret = rcl.rcl_publish_serialized_message(publisher.handle.pointer, ctypes.byref(message), None)
    if ret != RCL_RET_OK:
        error = rcutils.rcutils_get_error_string().text.decode(errors="replace")
        rcutils.rcutils_reset_error()
        raise _rclpy.RCLError(f"failed to publish serialized message on {publisher.topic_name}: {error}")
