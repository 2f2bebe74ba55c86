"""BEV semantic labels on a ``racestack.grid.BevGrid`` in ``base_link``: the segmentation targets.

A cell takes the class of what covers its centre: ``vehicle`` inside another car's footprint,
``barrier`` between a bound and the barrier's outer face, ``track`` between the two bounds, and
``other`` elsewhere. The bounds are the same polylines the world meshes are built from, so labels
and LiDAR agree to the centimetre. The ego's own footprint is not labelled (its LiDAR never sees
it). Rasterization is an exact even-odd scanline fill of the polygons at cell centres, vectorized
(no per-cell work beyond one cumulative sum per polygon set).
"""

from __future__ import annotations

import numpy as np

from racestack.grid import BevGrid
from racestack.objects import BEV_CLASSES, CLASS_ID
from simulation.track import Track
from simulation.vehicles import box_corners

OTHER, TRACK, BARRIER, VEHICLE = (BEV_CLASSES.index(name) for name in ("other", "track", "barrier", "vehicle"))


def to_base_link(points: np.ndarray, pose: tuple[float, float, float]) -> np.ndarray:
    """(..., 2) map points in the frame of a base_link pose (x, y, yaw)."""
    x, y, yaw = pose
    c, s = np.cos(yaw), np.sin(yaw)
    rel = np.asarray(points, dtype=np.float64) - [x, y]
    return np.stack([c * rel[..., 0] + s * rel[..., 1], -s * rel[..., 0] + c * rel[..., 1]], axis=-1)


def polygon_parity(rings: list[np.ndarray], grid: BevGrid) -> np.ndarray:
    """Even-odd inside test at every cell centre for closed rings of (M, 2) base_link points.

    A row's cells right of each edge crossing toggle; the parity of the running count is "inside".
    Several rings in one call give their symmetric difference (a ring between two loops).
    """
    height, width = grid.shape
    toggles = np.zeros((height, width + 1), dtype=np.int32)
    for ring in rings:
        cells = (np.asarray(ring, dtype=np.float64) - [grid.x_min, grid.y_min]) / grid.resolution - 0.5
        a, b = cells, np.roll(cells, -1, axis=0)
        lo_y, hi_y = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
        first = np.clip(np.ceil(lo_y), 0, height).astype(np.int64)
        last = np.clip(np.ceil(hi_y), 0, height).astype(np.int64)
        counts = np.maximum(last - first, 0)
        total = int(counts.sum())
        if total == 0:
            continue
        edge = np.repeat(np.arange(len(a)), counts)
        starts = np.cumsum(counts) - counts
        rows = first[edge] + np.arange(total) - np.repeat(starts, counts)
        ax, ay, bx, by = a[edge, 0], a[edge, 1], b[edge, 0], b[edge, 1]
        x_cross = ax + (rows - ay) * (bx - ax) / (by - ay)
        cols = np.clip(np.floor(x_cross).astype(np.int64) + 1, 0, width)
        np.add.at(toggles, (rows, cols), 1)
    return (np.cumsum(toggles[:, :width], axis=1) & 1).astype(bool)


def bev_labels(
    track: Track,
    pose: tuple[float, float, float],
    vehicles: np.ndarray,
    grid: BevGrid,
) -> np.ndarray:
    """(height, width) int8 BEV class ids around a base_link ``pose`` (x, y, yaw in ``map``).

    ``vehicles`` is an OBJECT_DTYPE table in ``map`` (rows of class car are drawn; pass the other
    cars, not the ego). Any pose works, so future occupancy can be drawn in a present frame.
    """
    left, right = to_base_link(track.left_bound, pose), to_base_link(track.right_bound, pose)
    left_out = to_base_link(track.left_barrier_outer, pose)
    right_out = to_base_link(track.right_barrier_outer, pose)
    labels = np.full(grid.shape, OTHER, dtype=np.int8)
    labels[polygon_parity([left, right], grid)] = TRACK
    barrier = polygon_parity([left, left_out], grid) | polygon_parity([right, right_out], grid)
    labels[barrier] = BARRIER
    labels[vehicle_mask(vehicles, pose, grid)] = VEHICLE
    return labels


def vehicle_mask(vehicles: np.ndarray, pose: tuple[float, float, float], grid: BevGrid) -> np.ndarray:
    """Cells whose centre lies inside the footprint of any car of an OBJECT_DTYPE table in ``map``."""
    mask = np.zeros(grid.shape, dtype=bool)
    cars = vehicles[vehicles["class_id"] == CLASS_ID["car"]] if len(vehicles) else vehicles
    if len(cars) == 0:
        return mask
    corners = box_corners(cars["x"], cars["y"], cars["yaw"], cars["length"], cars["width"])
    for footprint in to_base_link(corners, pose):
        mask |= _polygon_window(footprint, grid)
    return mask


def _polygon_window(polygon: np.ndarray, grid: BevGrid) -> np.ndarray:
    """Parity mask of one small polygon, rasterized only over its bounding rows and columns."""
    full = np.zeros(grid.shape, dtype=bool)
    ix, iy, _ = grid.cell_indices(polygon)
    x0, x1 = max(int(ix.min()) - 1, 0), min(int(ix.max()) + 2, grid.width)
    y0, y1 = max(int(iy.min()) - 1, 0), min(int(iy.max()) + 2, grid.height)
    if x0 >= x1 or y0 >= y1:
        return full
    window = BevGrid(
        width=x1 - x0,
        height=y1 - y0,
        resolution=grid.resolution,
        x_min=grid.x_min + x0 * grid.resolution,
        y_min=grid.y_min + y0 * grid.resolution,
    )
    full[y0:y1, x0:x1] = polygon_parity([polygon], window)
    return full
