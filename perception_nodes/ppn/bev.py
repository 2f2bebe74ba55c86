"""LiDAR sweeps -> BEV tensors, with past sweeps motion-compensated into the current ego frame.

The reference stacks 16 raw sweeps as they are; at 80 m/s the car moves 4 m between sweeps, so a
static wall appears 16 times. Here every past sweep keeps its obstacle cells (at ``history_factor``
times the grid resolution) with the ego pose it was taken at, and each new frame re-bins them
through the relative pose, so static structure stays put and only moving things smear.

The same vectorized code runs on numpy (CPU: single-threaded numpy beats torch's CPU kernels on
these scatter-heavy, few-FLOP operations) or on torch for a CUDA device, so the BEV is built on
the node's own device. No per-point Python.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from perception_nodes.ppn.config import FEATURES, BevConfig
from racestack.transforms import rotation_rpy

_DENSITY_NORM = math.log1p(64.0)


def relative_pose(current: Sequence[float], past: Sequence[float]) -> tuple[float, float, float]:
    """(dx, dy, dyaw) taking coordinates in the ``past`` ego frame into the ``current`` one (SE(2))."""
    cx, cy, cyaw = (float(v) for v in current)
    px, py, pyaw = (float(v) for v in past)
    c, s = math.cos(cyaw), math.sin(cyaw)
    dx, dy = px - cx, py - cy
    return c * dx + s * dy, -s * dx + c * dy, pyaw - cyaw


class _Ops:
    """The few operations whose spelling differs between numpy and torch."""

    def __init__(self, device: torch.device, use_torch: bool) -> None:
        self.torch = use_torch
        self.xp: Any = torch if self.torch else np
        self.device = device

    def asarray(self, values: Any) -> Any:
        if self.torch:
            return torch.as_tensor(values, dtype=torch.float32).to(self.device)
        return np.asarray(values.numpy() if isinstance(values, torch.Tensor) else values, dtype=np.float32)

    def zeros(self, shape: tuple[int, ...], dtype: str = "float32") -> Any:
        if self.torch:
            return torch.zeros(shape, dtype=getattr(torch, dtype), device=self.device)
        return np.zeros(shape, dtype=dtype)

    def index(self, values: Any) -> Any:
        return values.long() if self.torch else values.astype(np.intp)

    def flatnonzero(self, mask: Any) -> Any:
        return torch.nonzero(mask).squeeze(1) if self.torch else np.flatnonzero(mask)

    def scatter_max(self, size: int, index: Any, values: Any) -> Any:
        if self.torch:
            top = torch.full((size,), -math.inf, device=self.device)
            return top.scatter_reduce_(0, index, values, reduce="amax")
        top = np.full(size, -np.inf, dtype=np.float32)
        np.maximum.at(top, index, values)
        return top

    def floats(self, values: Any) -> Any:
        return values.float() if self.torch else values.astype(np.float32)

    def to_tensor(self, values: Any) -> torch.Tensor:
        return values if self.torch else torch.from_numpy(values)


@dataclass
class _Sweep:
    """Obstacle sub-cell centres of one past sweep (metres, its own base_link) and its ego pose."""

    x: Any
    y: Any
    pose: tuple[float, float, float]


class BevEncoder:
    """Stateful encoder: call ``encode`` once per sweep, in time order; ``reset`` on a time jump."""

    def __init__(
        self,
        config: BevConfig,
        lidar_pose: Sequence[float] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
        device: str | torch.device = "cpu",
        use_torch: bool | None = None,
    ) -> None:
        """``use_torch`` None: numpy on the CPU, torch on any other device (True forces torch, for tests)."""
        if len(lidar_pose) != 6:
            raise ValueError("lidar_pose must be [x, y, z, roll, pitch, yaw]")
        self.config = config
        self.grid = config.grid
        self.device = torch.device(device)
        self.ops = _Ops(self.device, self.device.type != "cpu" if use_torch is None else use_torch)
        # Rows map sensor (x, y, z, 1) to (grid column, grid row, height in base_link).
        rotation = rotation_rpy(*lidar_pose[3:])
        scale = np.array([1.0 / self.grid.resolution, 1.0 / self.grid.resolution, 1.0])
        offset = np.array([-self.grid.x_min, -self.grid.y_min, 0.0])
        self._affine = np.hstack([rotation * scale[:, None], ((np.array(lidar_pose[:3]) + offset) * scale)[:, None]])
        self._history: deque[_Sweep] = deque(maxlen=max(config.sweeps - 1, 0))
        self._feature_slot = {name: config.sweeps + i for i, name in enumerate(_ordered(config.features))}

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def history_length(self) -> int:
        return len(self._history)

    def reset(self) -> None:
        self._history.clear()

    def encode(self, points: np.ndarray | torch.Tensor, pose: Sequence[float] | None = None) -> torch.Tensor:
        """(C, H, W) float32 BEV of one sweep in the sensor frame (x, y, z[, intensity] columns).

        ``pose`` is the ego pose (x, y, yaw) in ``map`` at the sweep's stamp; None means unknown:
        the history is dropped (never stacked unaligned) and only the current sweep is encoded.
        """
        cfg, ops, xp = self.config, self.ops, self.ops.xp
        height, width = self.grid.shape
        cells = height * width
        cloud = ops.asarray(points)
        if cloud.ndim != 2 or cloud.shape[1] < 3:
            raise ValueError(f"points must be (N, 3+), got {tuple(cloud.shape)}")
        gx, gy, z = (self._affine_row(cloud, row) for row in range(3))
        valid = (gx >= 0) & (gx < width) & (gy >= 0) & (gy < height) & (z >= cfg.z_min) & (z < cfg.z_max)
        flat = xp.where(valid, ops.index(gy) * width + ops.index(gx), cells)
        out = ops.zeros((cfg.channels, cells))
        obstacle = ops.flatnonzero(valid & (z >= cfg.obstacle_z))
        out[0, flat[obstacle]] = 1.0
        self._features(out, flat, z, cloud[:, 3] if cloud.shape[1] > 3 else None)
        if pose is None:
            self._history.clear()
        else:
            pose = (float(pose[0]), float(pose[1]), float(pose[2]))
            for age, sweep in enumerate(reversed(self._history), start=1):
                out[age, self._compensated_cells(sweep, pose)] = 1.0
            if self._history.maxlen:
                self._history.append(self._history_cells(gx[obstacle], gy[obstacle], pose))
        return ops.to_tensor(out.reshape(cfg.channels, height, width))

    def _affine_row(self, cloud: Any, row: int) -> Any:
        """One output coordinate of the sensor->grid transform, skipping zero coefficients."""
        coefficients = self._affine[row]
        result = None
        for column in range(3):
            if abs(coefficients[column]) > 1e-12:
                term = cloud[:, column] * float(coefficients[column])
                result = term if result is None else result + term
        if result is None:
            result = cloud[:, 0] * 0.0
        return result + float(coefficients[3])

    def _features(self, out: Any, flat: Any, z: Any, intensity: Any | None) -> None:
        cfg, ops, xp = self.config, self.ops, self.ops.xp
        size = out.shape[1]
        counts = xp.bincount(flat, minlength=size + 1)[:size]
        occupied = counts > 0
        if "density" in cfg.features:
            out[self._feature_slot["density"]] = xp.log1p(counts * 1.0) / _DENSITY_NORM
        if "height" in cfg.features:
            top = ops.scatter_max(size + 1, flat, z)[:size]
            out[self._feature_slot["height"]] = xp.where(occupied, top / cfg.height_scale, 0.0)
        if "intensity" in cfg.features and intensity is not None:
            total = xp.bincount(flat, weights=intensity, minlength=size + 1)[:size]
            mean = total / xp.clip(counts, 1, None) / cfg.intensity_scale
            out[self._feature_slot["intensity"]] = xp.clip(mean, 0.0, 1.0)

    def _history_cells(self, gx: Any, gy: Any, pose: tuple[float, float, float]) -> _Sweep:
        """Unique obstacle sub-cells of this sweep as metric centres: what later frames re-bin."""
        ops = self.ops
        factor = self.config.history_factor
        fine = self.grid.width * factor
        fine_flat = ops.index(gy * factor) * fine + ops.index(gx * factor)
        occupied = ops.zeros((fine * self.grid.height * factor,), "bool")
        occupied[fine_flat] = True
        cells = ops.flatnonzero(occupied)
        step = self.grid.resolution / factor
        x = (cells % fine) * step + (self.grid.x_min + step / 2)
        y = (cells // fine) * step + (self.grid.y_min + step / 2)
        return _Sweep(x=ops.floats(x), y=ops.floats(y), pose=pose)

    def _compensated_cells(self, sweep: _Sweep, pose: tuple[float, float, float]) -> Any:
        """Flat current-grid indices of a past sweep's obstacle cells after the ego motion since then."""
        grid, ops = self.grid, self.ops
        dx, dy, dyaw = relative_pose(pose, sweep.pose)
        c, s = math.cos(dyaw), math.sin(dyaw)
        gx = (sweep.x * c - sweep.y * s + (dx - grid.x_min)) / grid.resolution
        gy = (sweep.x * s + sweep.y * c + (dy - grid.y_min)) / grid.resolution
        inside = ops.flatnonzero((gx >= 0) & (gx < grid.width) & (gy >= 0) & (gy < grid.height))
        return ops.index(gy[inside]) * grid.width + ops.index(gx[inside])


def _ordered(features: Sequence[str]) -> list[str]:
    return [f for f in FEATURES if f in features]
