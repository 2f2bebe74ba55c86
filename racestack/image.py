"""numpy <-> sensor_msgs/Image for the standard encodings, honouring row padding and byte order."""

from __future__ import annotations

import array
import re
import sys
from functools import lru_cache

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from racestack.cdr import HEADER_STAMP_OFFSET, StampedTemplate, frame_and_stamp, serialized
from racestack.errors import InputError

_NAMED: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "rgb16": ("u2", 3),
    "bgr16": ("u2", 3),
    "rgba16": ("u2", 4),
    "bgra16": ("u2", 4),
    "mono8": ("u1", 1),
    "mono16": ("u2", 1),
    "bayer_rggb8": ("u1", 1),
    "bayer_bggr8": ("u1", 1),
    "bayer_gbrg8": ("u1", 1),
    "bayer_grbg8": ("u1", 1),
    "bayer_rggb16": ("u2", 1),
    "bayer_bggr16": ("u2", 1),
    "bayer_gbrg16": ("u2", 1),
    "bayer_grbg16": ("u2", 1),
    "yuv422": ("u1", 2),
    "uyvy": ("u1", 2),
    "yuyv": ("u1", 2),
}
_GENERIC = re.compile(r"^(8U|8S|16U|16S|32S|32F|64F)C(\d+)$")
_GENERIC_TYPES = {"8U": "u1", "8S": "i1", "16U": "u2", "16S": "i2", "32S": "i4", "32F": "f4", "64F": "f8"}
_HOST_BIGENDIAN = sys.byteorder == "big"


def encoding_layout(encoding: str) -> tuple[np.dtype, int]:
    """(element dtype, channels) of an encoding; InputError('encoding') when unknown."""
    if encoding in _NAMED:
        code, channels = _NAMED[encoding]
        return np.dtype(code), channels
    match = _GENERIC.match(encoding)
    if match and int(match.group(2)) > 0:
        return np.dtype(_GENERIC_TYPES[match.group(1)]), int(match.group(2))
    raise InputError("encoding", f"unknown image encoding '{encoding}'")


def image_to_array(msg: Image, expect: tuple[str, ...] = ()) -> np.ndarray:
    """(H, W) or (H, W, C) view of the image buffer (a copy only for foreign byte order).

    ``expect`` restricts the accepted encodings (InputError('encoding') otherwise).
    """
    if expect and msg.encoding not in expect:
        raise InputError("encoding", f"encoding '{msg.encoding}' not accepted (expected {', '.join(expect)})")
    dtype, channels = encoding_layout(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise InputError("layout", f"step {step} < width {width} x {channels} ch x {dtype.itemsize} B")
    if len(msg.data) != step * height:
        raise InputError("layout", f"data has {len(msg.data)} bytes, expected step {step} x height {height}")
    if height * width == 0:
        raise InputError("empty", "image has no pixels")
    if msg.is_bigendian and dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">")
    raw = np.frombuffer(msg.data, dtype=np.uint8)
    view = np.ndarray(
        shape=(height, width, channels),
        dtype=dtype,
        buffer=raw,
        strides=(step, channels * dtype.itemsize, dtype.itemsize),
    )
    if dtype.byteorder == ">" and not _HOST_BIGENDIAN:
        view = view.astype(dtype.newbyteorder("="))
    return view[:, :, 0] if channels == 1 else view


def array_to_image(values: np.ndarray, encoding: str, header=None) -> Image:
    """Image message from an (H, W) or (H, W, C) array matching ``encoding``: one copy."""
    msg, values = _image_without_data(values, encoding, header)
    data = array.array("B")
    data.frombytes(values.reshape(-1).view(np.uint8))
    msg.data = data
    return msg


def serialized_image(values: np.ndarray, encoding: str, header=None) -> bytes:
    """The serialized ``array_to_image(values, encoding, header)``, for a publisher: one copy of the pixels."""
    values = _pixels(values, encoding)
    payload = values.reshape(-1).view(np.uint8).data
    frame_id, stamp_ns = frame_and_stamp(header)
    return _image_template(*values.shape[:2], encoding, frame_id).serialize(stamp_ns, payload)


@lru_cache(maxsize=16)
def _image_template(height: int, width: int, encoding: str, frame_id: str) -> StampedTemplate:
    msg = _image_fields(height, width, encoding, Header(frame_id=frame_id))
    return StampedTemplate(serialized(msg), (HEADER_STAMP_OFFSET,))


def _pixels(values: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, C) contiguous native-order pixels of ``values`` for ``encoding``; ValueError if they do not fit."""
    dtype, channels = encoding_layout(encoding)
    if values.ndim == 2:
        values = values[:, :, None]
    if values.ndim != 3 or values.shape[2] != channels:
        raise ValueError(f"encoding {encoding} needs {channels} channel(s), got array of shape {values.shape}")
    return np.ascontiguousarray(values, dtype=dtype.newbyteorder("="))


def _image_without_data(values: np.ndarray, encoding: str, header) -> tuple[Image, np.ndarray]:
    """The image's fields but its data, and the pixels as a contiguous native-order array."""
    values = _pixels(values, encoding)
    return _image_fields(values.shape[0], values.shape[1], encoding, header), values


def _image_fields(height: int, width: int, encoding: str, header) -> Image:
    dtype, channels = encoding_layout(encoding)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(height), int(width)
    msg.encoding = encoding
    msg.is_bigendian = int(_HOST_BIGENDIAN)
    msg.step = int(width * channels * dtype.itemsize)
    return msg
