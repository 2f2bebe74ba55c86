"""What the MPC tracks and must respect along a horizon, from the track geometry.

The racing line with its grip-limited speed profile is the reference (lateral error, heading,
speed); the barriers become one half-space per step, taken at the centre line's normal where the
previous solution crosses it. Queries are vectorized over the horizon's points; the plan frame
(``PlanFrame``) moves them between ``map`` and the MPC's local frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulation.track import Track
from simulation.vehicles import VehicleParams, speed_profile


@dataclass(frozen=True)
class PlanFrame:
    """``base_link`` at the plan's stamp: origin and heading in ``map``."""

    x: float
    y: float
    yaw: float

    @property
    def rotation(self) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, -s], [s, c]])

    def to_local(self, xy: np.ndarray) -> np.ndarray:
        return (np.asarray(xy) - [self.x, self.y]) @ self.rotation

    def to_map(self, xy: np.ndarray) -> np.ndarray:
        return np.asarray(xy) @ self.rotation.T + [self.x, self.y]

    def vectors_to_local(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors) @ self.rotation


def unwrap_near(angle: np.ndarray, near: np.ndarray) -> np.ndarray:
    """``angle`` shifted by multiples of 2π to lie within π of ``near``."""
    return near + (angle - near + np.pi) % (2.0 * np.pi) - np.pi


@dataclass
class HorizonReference:
    """Per-step data in the plan frame for points of a candidate horizon (k = 1..N)."""

    line_normal: np.ndarray
    line_offset: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    track_normal: np.ndarray
    track_low: np.ndarray
    track_high: np.ndarray
    s: np.ndarray
    d: np.ndarray


class RaceReference:
    """The racing line, its speed profile and the track bounds of one track."""

    def __init__(
        self,
        track: Track,
        vehicle: VehicleParams,
        grip_scale: float = 0.9,
        bound_margin: float = 0.45,
    ) -> None:
        self.track, self.vehicle = track, vehicle
        self.bound_margin = bound_margin
        racing = track.racing
        self.speed = speed_profile(
            racing.curvature,
            racing.seg_len,
            vehicle.max_speed,
            grip_scale * vehicle.max_lateral_accel,
            vehicle.max_accel,
            0.8 * vehicle.max_brake,
        )

    @property
    def clearance(self) -> float:
        """Lateral distance the rear-axle point keeps from a barrier face."""
        return self.vehicle.width / 2.0 + self.bound_margin

    def horizon(self, points_map: np.ndarray, yaw_near: np.ndarray, frame: PlanFrame) -> HorizonReference:
        """References at (N, 2) map points; ``yaw_near`` (plan frame) picks the heading's branch."""
        track, racing = self.track, self.track.racing
        s_line, _, _ = racing.project(points_map)
        line_point = frame.to_local(racing.point_at(s_line))
        line_normal = frame.vectors_to_local(racing.normal_at(s_line))
        line_offset = np.sum(line_normal * line_point, axis=1)
        yaw = unwrap_near(racing.heading_at(s_line) - frame.yaw, yaw_near)
        s, d, _ = track.project(points_map)
        center = frame.to_local(track.point_at(s))
        normal = frame.vectors_to_local(track.center.normal_at(s))
        left, right = track.widths_at(s)
        base = np.sum(normal * center, axis=1)
        low = base - right + self.clearance
        high = base + left - self.clearance
        narrow = low > high
        mid = 0.5 * (low + high)
        low, high = np.where(narrow, mid, low), np.where(narrow, mid, high)
        return HorizonReference(
            line_normal=line_normal,
            line_offset=line_offset,
            yaw=yaw,
            speed=racing.interpolate(self.speed, s_line),
            track_normal=normal,
            track_low=low,
            track_high=high,
            s=s,
            d=d,
        )
