"""BEV grid geometry shared by the simulator's labels, the perception nets and the risk map.

Convention (docs/interfaces.md): arrays are indexed ``[iy, ix]`` like nav_msgs/OccupancyGrid
(row = y, column = x) in the ego frame (x forward, y left); cell (0, 0) is the corner at
(x_min, y_min); cell centres sit at x_min + (ix + 0.5) * resolution.
"""

from __future__ import annotations

import array
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from nav_msgs.msg import OccupancyGrid
from std_msgs.msg import Header

from racestack.cdr import HEADER_STAMP_OFFSET, StampedTemplate, frame_and_stamp, header_frame_end, serialized
from racestack.errors import InputError


@dataclass(frozen=True)
class BevGrid:
    """A rectangular grid of square cells in the ego frame."""

    width: int
    height: int
    resolution: float
    x_min: float
    y_min: float

    @classmethod
    def centered(cls, cells: int, resolution: float) -> BevGrid:
        half = cells * resolution / 2.0
        return cls(width=cells, height=cells, resolution=resolution, x_min=-half, y_min=-half)

    @classmethod
    def from_config(cls, config: dict) -> BevGrid:
        """From ``{cells, resolution}`` (centred) or the full ``{width, height, resolution, x_min, y_min}``."""
        if "cells" in config:
            return cls.centered(int(config["cells"]), float(config["resolution"]))
        return cls(
            width=int(config["width"]),
            height=int(config["height"]),
            resolution=float(config["resolution"]),
            x_min=float(config["x_min"]),
            y_min=float(config["y_min"]),
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def x_max(self) -> float:
        return self.x_min + self.width * self.resolution

    @property
    def y_max(self) -> float:
        return self.y_min + self.height * self.resolution

    def cell_indices(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ix, iy, inside) for (N, 2+) metric coordinates; ix/iy are only valid where inside."""
        ix = np.floor((xy[:, 0] - self.x_min) / self.resolution).astype(np.int64)
        iy = np.floor((xy[:, 1] - self.y_min) / self.resolution).astype(np.int64)
        inside = (ix >= 0) & (ix < self.width) & (iy >= 0) & (iy < self.height)
        return ix, iy, inside

    def cell_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Metric (X, Y) of every cell centre, each of shape (height, width)."""
        xs = self.x_min + (np.arange(self.width) + 0.5) * self.resolution
        ys = self.y_min + (np.arange(self.height) + 0.5) * self.resolution
        return np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))


LITE_GRID = BevGrid.centered(256, 0.4)
PAPER_GRID = BevGrid.centered(1000, 0.2)


def grid_to_occupancy(values: np.ndarray, grid: BevGrid, header=None) -> OccupancyGrid:
    """OccupancyGrid from an int8-compatible (height, width) array on ``grid``: one copy."""
    _check_shape(values, grid)
    msg = _occupancy_without_data(grid, header)
    data = array.array("b")
    data.frombytes(_cells(values))
    msg.data = data
    return msg


def serialized_occupancy(values: np.ndarray, grid: BevGrid, header=None) -> bytes:
    """The serialized ``grid_to_occupancy(values, grid, header)``, for a publisher: one copy of the cells."""
    _check_shape(values, grid)
    frame_id, stamp_ns = frame_and_stamp(header)
    return _occupancy_template(grid, frame_id).serialize(stamp_ns, _cells(values).data)


@lru_cache(maxsize=16)
def _occupancy_template(grid: BevGrid, frame_id: str) -> StampedTemplate:
    """header.stamp and info.map_load_time (4-aligned after the frame id) are the stamps."""
    empty = serialized(_occupancy_without_data(grid, Header(frame_id=frame_id)))
    load_time = -(-header_frame_end(empty) // 4) * 4
    return StampedTemplate(empty, (HEADER_STAMP_OFFSET, load_time))


def _cells(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.int8).reshape(-1).view(np.uint8)


def _check_shape(values: np.ndarray, grid: BevGrid) -> None:
    if values.shape != grid.shape:
        raise ValueError(f"values of shape {values.shape} do not fit grid {grid.shape}")


def _occupancy_without_data(grid: BevGrid, header) -> OccupancyGrid:
    msg = OccupancyGrid()
    if header is not None:
        msg.header = header
        msg.info.map_load_time = header.stamp
    msg.info.resolution = float(grid.resolution)
    msg.info.width, msg.info.height = int(grid.width), int(grid.height)
    msg.info.origin.position.x = float(grid.x_min)
    msg.info.origin.position.y = float(grid.y_min)
    msg.info.origin.orientation.w = 1.0
    return msg


def occupancy_to_grid(msg: OccupancyGrid) -> tuple[np.ndarray, BevGrid]:
    """(int8 (height, width) view, grid) of an OccupancyGrid; rotated origins are rejected."""
    width, height = int(msg.info.width), int(msg.info.height)
    if width * height == 0:
        raise InputError("empty", "occupancy grid has no cells")
    if len(msg.data) != width * height:
        raise InputError("layout", f"grid data has {len(msg.data)} cells, expected {width} x {height}")
    q = msg.info.origin.orientation
    if abs(q.x) + abs(q.y) + abs(q.z) > 1e-6:
        raise InputError("layout", "grid origin is rotated; only axis-aligned BEV grids are supported")
    if not msg.info.resolution > 0:
        raise InputError("layout", f"grid resolution is {msg.info.resolution}")
    grid = BevGrid(
        width=width,
        height=height,
        resolution=float(msg.info.resolution),
        x_min=float(msg.info.origin.position.x),
        y_min=float(msg.info.origin.position.y),
    )
    values = np.frombuffer(msg.data, dtype=np.int8).reshape(height, width)
    return values, grid
