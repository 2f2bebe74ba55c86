"""The risk map as the MPC sees it: risk of the ego's footprint, and its convex local model.

The ego collides when any part of its body overlaps an occupied cell, so the risk of a pose is the
maximum of the map over the body (sampled on a 5 x 3 pattern, oriented with the pose's heading),
linearly interpolated between the map's horizon steps. Around the previous solution the SCP needs a
convex model: value + gradient·Δp + ½ Σ max(curvature, 0)·Δp², from central differences of that
footprint risk. Everything is a vectorized gather; nothing is precomputed per map but a zero border.
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
        self._padded = np.zeros((values.shape[0], values.shape[1] + 2, values.shape[2] + 2), dtype=np.float32)
        self._padded[:, 1:-1, 1:-1] = values
        self.values = self._padded[:, 1:-1, 1:-1]
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
        """Trilinear interpolation (time, y, x); zero outside the grid, clamped in time.

        Gathers from the map with a zero border: coordinates clamped onto the border need no mask."""
        g, (n_t, height, width) = self.grid, self._padded.shape
        fx = np.clip((x - g.x_min) / g.resolution + 0.5, 0.0, width - 1.0)
        fy = np.clip((y - g.y_min) / g.resolution + 0.5, 0.0, height - 1.0)
        ft = np.interp(t, self.times, np.arange(n_t, dtype=np.float64))
        x0 = np.minimum(fx.astype(np.int64), width - 2)
        y0 = np.minimum(fy.astype(np.int64), height - 2)
        t0 = np.minimum(ft.astype(np.int64), max(n_t - 2, 0))
        wx, wy, wt = fx - x0, fy - y0, ft - t0
        flat = self._padded.ravel()
        base = (t0 * height + y0) * width + x0
        step_t = height * width if n_t > 1 else 0
        out = np.zeros(x.shape)
        for offset_t, w_t in ((0, 1.0 - wt), (step_t, wt)):
            row = base + offset_t
            low = flat[row] * (1.0 - wx) + flat[row + 1] * wx
            high = flat[row + width] * (1.0 - wx) + flat[row + width + 1] * wx
            out += (low * (1.0 - wy) + high * wy) * w_t
        return out
