"""Letterbox and normalization, bit-compatible with ultralytics' predictor (same rounding, pad 114).

One resize and one border copy (OpenCV), then one fused HWC uint8 -> NCHW float32 pass; the output
buffer is reused between frames so the hot path allocates nothing large.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114
STRIDE = 32
_SCALE = np.float32(1.0 / 255.0)


@dataclass(frozen=True)
class Letterbox:
    """Where the source image sits in the network input, to map boxes back to source pixels."""

    source_hw: tuple[int, int]
    input_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    top: int
    left: int

    @property
    def gain_x(self) -> float:
        return self.resized_hw[1] / self.source_hw[1]

    @property
    def gain_y(self) -> float:
        return self.resized_hw[0] / self.source_hw[0]


def letterbox_geometry(source_hw: tuple[int, int], input_hw: tuple[int, int]) -> Letterbox:
    """Scale to fit (keeping the aspect ratio), centred, with ultralytics' rounding of the padding."""
    height, width = source_hw
    ratio = min(input_hw[0] / height, input_hw[1] / width)
    new_w, new_h = max(round(width * ratio), 1), max(round(height * ratio), 1)
    pad_w, pad_h = (input_hw[1] - new_w) / 2, (input_hw[0] - new_h) / 2
    return Letterbox(
        source_hw=(height, width),
        input_hw=tuple(input_hw),
        resized_hw=(new_h, new_w),
        top=round(pad_h - 0.1),
        left=round(pad_w - 0.1),
    )


def letterbox(image: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """(input_hw + (3,)) uint8 image: resized with bilinear interpolation and padded with grey 114."""
    geometry = letterbox_geometry(image.shape[:2], input_hw)
    new_h, new_w = geometry.resized_hw
    if (new_h, new_w) != image.shape[:2]:
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    bottom = input_hw[0] - new_h - geometry.top
    right = input_hw[1] - new_w - geometry.left
    padded = cv2.copyMakeBorder(
        image, geometry.top, bottom, geometry.left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
    )
    return padded, geometry


class Preprocessor:
    """Image (H, W, 3) uint8 -> network input (1, 3, h, w) float32 in [0, 1], RGB channel order."""

    def __init__(self, input_hw: tuple[int, int]) -> None:
        self.input_hw = check_input_size(input_hw)
        self._buffer = np.empty((1, 3, *self.input_hw), dtype=np.float32)

    def __call__(self, image: np.ndarray, bgr: bool = False) -> tuple[np.ndarray, Letterbox]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        padded, geometry = letterbox(image, self.input_hw)
        channels = padded[:, :, ::-1] if bgr else padded
        np.multiply(channels.transpose(2, 0, 1), _SCALE, out=self._buffer[0], dtype=np.float32)
        return self._buffer, geometry


def check_input_size(size: tuple[int, ...] | list[int]) -> tuple[int, int]:
    """(height, width) from [s] or [h, w]; each a positive multiple of the network stride (32)."""
    values = [int(v) for v in size]
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or any(v <= 0 or v % STRIDE for v in values):
        raise ValueError(f"input size must be [s] or [h, w] with multiples of {STRIDE}, got {list(size)}")
    return values[0], values[1]


def camera_input_size(image_hw: tuple[int, int], long_side: int) -> tuple[int, int]:
    """The smallest stride-aligned input that holds an image of this aspect at ``long_side`` pixels."""
    geometry = letterbox_geometry(image_hw, (long_side, long_side))
    height, width = geometry.resized_hw
    return -(-height // STRIDE) * STRIDE, -(-width // STRIDE) * STRIDE
