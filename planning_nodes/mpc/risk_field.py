"""The risk map as the MPC sees it: risk of the ego's footprint, and its convex local model.

The ego collides when any part of its body overlaps an occupied cell, so the risk of a pose is the
maximum of the map over the body (sampled on a 5 x 3 pattern, oriented with the pose's heading),
linearly interpolated between the map's horizon steps. Around the previous solution the SCP needs a
convex model: value + gradient·Δp + ½ Σ max(curvature, 0)·Δp², from central differences of that
footprint risk. Everything is a vectorized gather; nothing is precomputed per map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from racestack.grid import BevGrid

_ALONG = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
_ACROSS = np.array([-0.75, 0.0, 0.75])


@dataclass
class LocalRisk:
    """Per-step value (N,), gradient (N, 2) and non-negative curvature (N, 2) at the points."""

    value: np.ndarray
    grad: np.ndarray
    curv: np.ndarray

    @classmethod
    def zero(cls, steps: int) -> LocalRisk:
        return cls(np.zeros(steps), np.zeros((steps, 2)), np.zeros((steps, 2)))


class RiskField:
    """A (T, H, W) risk map on ``grid`` (plan frame) with channel t at ``times[t]`` seconds."""

    def __init__(
        self,
        values: np.ndarray,
        grid: BevGrid,
        times: np.ndarray,
        body_length: float = 4.9,
        body_width: float = 1.9,
        step: float | None = None,
    ) -> None:
        if values.ndim != 3 or values.shape[1:] != grid.shape or values.shape[0] != len(times):
            raise ValueError(f"risk map of shape {values.shape} does not fit {len(times)} x {grid.shape}")
        self.values = np.ascontiguousarray(values, dtype=np.float32)
        self.grid, self.times = grid, np.asarray(times, dtype=np.float64)
        self.step = grid.resolution if step is None else step
        scale_l, scale_w = body_length / 4.9, body_width / 1.9
        along, across = np.meshgrid(_ALONG * scale_l, _ACROSS * scale_w, indexing="ij")
        self._pattern = np.column_stack([along.ravel(), across.ravel()])

    def footprint_risk(self, centers: np.ndarray, yaw: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Risk (P, ...) of bodies centred at ``centers`` (P, ..., 2) with headings ``yaw`` at times ``t``."""
        c, s = np.cos(yaw)[..., None], np.sin(yaw)[..., None]
        px = centers[..., 0:1] + c * self._pattern[:, 0] - s * self._pattern[:, 1]
        py = centers[..., 1:2] + s * self._pattern[:, 0] + c * self._pattern[:, 1]
        return self._sample(px, py, np.broadcast_to(t[..., None], px.shape)).max(axis=-1)

    def local_model(self, centers: np.ndarray, yaw: np.ndarray, t: np.ndarray) -> LocalRisk:
        """Convex local model around body centres (N, 2) at headings (N,) and times (N,)."""
        h = self.step
        offsets = np.array([[0.0, 0.0], [h, 0.0], [-h, 0.0], [0.0, h], [0.0, -h]])
        probe = centers[:, None, :] + offsets[None]
        r = self.footprint_risk(probe, np.repeat(yaw[:, None], 5, axis=1), np.repeat(t[:, None], 5, axis=1))
        grad = np.column_stack([(r[:, 1] - r[:, 2]) / (2 * h), (r[:, 3] - r[:, 4]) / (2 * h)])
        curv = np.column_stack([r[:, 1] - 2 * r[:, 0] + r[:, 2], r[:, 3] - 2 * r[:, 0] + r[:, 4]]) / h**2
        return LocalRisk(value=r[:, 0], grad=grad, curv=np.maximum(curv, 0.0))

    def _sample(self, x: np.ndarray, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Trilinear interpolation (time, y, x); zero outside the grid, clamped in time."""
        g = self.grid
        fx = (x - g.x_min) / g.resolution - 0.5
        fy = (y - g.y_min) / g.resolution - 0.5
        ft = np.interp(t, self.times, np.arange(self.times.size, dtype=np.float64))
        x0, y0 = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
        t0 = np.minimum(np.floor(ft).astype(np.int64), self.times.size - 2) if self.times.size > 1 else ft * 0
        t0 = t0.astype(np.int64)
        wx, wy, wt = fx - x0, fy - y0, ft - t0
        out = np.zeros(x.shape)
        for dt_, w_t in ((0, 1.0 - wt), (1, wt)):
            ti = np.minimum(t0 + dt_, self.times.size - 1)
            for dy_, w_y in ((0, 1.0 - wy), (1, wy)):
                yi = y0 + dy_
                for dx_, w_x in ((0, 1.0 - wx), (1, wx)):
                    xi = x0 + dx_
                    inside = (xi >= 0) & (xi < g.width) & (yi >= 0) & (yi < g.height)
                    vals = self.values[ti, np.clip(yi, 0, g.height - 1), np.clip(xi, 0, g.width - 1)]
                    out += np.where(inside, vals, 0.0) * w_t * w_y * w_x
        return out
