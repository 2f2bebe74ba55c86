"""Vehicle cells of a BEV label map -> oriented 3D boxes (the object table of docs/interfaces.md).

Connected vehicle cells form candidates; each gets a minimum-area rectangle (OpenCV) for its
centre, size and heading, a component much longer than a car is split along its long axis, and
heights come from the LiDAR points that fall in the component's cells (a prior when none do).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import cv2
import numpy as np
from scipy import ndimage

from racestack.grid import BevGrid
from racestack.objects import CLASS_ID, empty_objects

VEHICLE_LABEL = 3


@dataclass(frozen=True)
class ExtractionConfig:
    vehicle_label: int = VEHICLE_LABEL
    min_cells: int = 6
    car_length: float = 4.9
    car_width: float = 1.9
    default_height: float = 1.2
    split_ratio: float = 1.6
    max_height: float = 4.0


def extract_objects(
    labels: np.ndarray, grid: BevGrid, points: np.ndarray | None = None, config: ExtractionConfig | None = None
) -> np.ndarray:
    """Object table (OBJECT_DTYPE, frame of the grid) of the vehicle components of ``labels``.

    ``points`` are (N, 3) in the grid's frame (base_link, ground at z = 0) for the box heights.
    """
    config = config or ExtractionConfig()
    components, count = ndimage.label(labels == config.vehicle_label, structure=np.ones((3, 3)))
    if count == 0:
        return empty_objects(0)
    tops = _component_tops(components, count, grid, points)
    rows = []
    for index, cells in enumerate(ndimage.find_objects(components), start=1):
        iy, ix = np.nonzero(components[cells] == index)
        if iy.size < config.min_cells:
            continue
        xy = np.stack(
            [
                grid.x_min + (ix + cells[1].start + 0.5) * grid.resolution,
                grid.y_min + (iy + cells[0].start + 0.5) * grid.resolution,
            ],
            axis=1,
        )
        height = tops[index] if np.isfinite(tops[index]) else config.default_height
        rows.extend(_boxes(xy, grid.resolution, float(np.clip(height, 0.3, config.max_height)), config))
    table = empty_objects(len(rows))
    for i, (x, y, length, width, yaw, height, score) in enumerate(rows):
        table[i] = (x, y, height / 2, length, width, height, yaw, 0.0, 0.0, score, CLASS_ID["car"], -1, 0)
    return table


def _component_tops(components: np.ndarray, count: int, grid: BevGrid, points: np.ndarray | None) -> np.ndarray:
    """Highest point z per component (index 0 unused); NaN where no point fell in it."""
    tops = np.full(count + 1, -np.inf, dtype=np.float64)
    if points is not None and len(points):
        ix, iy, inside = grid.cell_indices(points)
        owner = np.zeros(points.shape[0], dtype=np.intp)
        owner[inside] = components[iy[inside], ix[inside]]
        np.maximum.at(tops, owner, points[:, 2].astype(np.float64))
    tops[~np.isfinite(tops) | (tops <= 0)] = np.nan
    return tops


def _boxes(
    xy: np.ndarray, resolution: float, height: float, config: ExtractionConfig
) -> list[tuple[float, float, float, float, float, float, float]]:
    """One box per car-sized piece of a component: (x, y, length, width, yaw, height, score)."""
    (cx, cy), (w, h), angle = cv2.minAreaRect(xy.astype(np.float32))
    length, width, yaw = (w, h, math.radians(angle)) if w >= h else (h, w, math.radians(angle + 90.0))
    length, width = length + resolution, width + resolution
    yaw = math.remainder(yaw, math.pi)
    pieces = max(1, round(length / config.car_length)) if length > config.split_ratio * config.car_length else 1
    if pieces == 1:
        score = min(1.0, xy.shape[0] * resolution**2 / (config.car_length * config.car_width))
        return [(cx, cy, length, width, yaw, height, score)]
    axis = np.array([math.cos(yaw), math.sin(yaw)])
    along = (xy - (cx, cy)) @ axis
    edges = np.linspace(along.min(), along.max() + 1e-6, pieces + 1)
    boxes = []
    for lo, hi in itertools.pairwise(edges):
        part = xy[(along >= lo) & (along < hi)]
        if part.shape[0]:
            boxes.extend(_boxes(part, resolution, height, replace(config, split_ratio=math.inf)))
    return boxes
