"""Ego poses at arbitrary stamps from an odometry stream (no rclpy: usable in tools and tests).

Clouds and odometry arrive on different topics, in either order. A sweep's pose is interpolated
between the two odometry samples around its stamp, or extrapolated with the last twist when the
sweep is newer than the last sample by at most ``tolerance``; otherwise it is unknown (None) and
the BEV encoder does not stack history for that sweep.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from racestack.cdr import CdrReader


def yaw_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def odometry_sample(data: bytes | memoryview) -> tuple[float, float, float, float, float, float, float]:
    """(t, x, y, yaw, vx, vy, wz) of a serialized nav_msgs/Odometry, read from the bytes (CdrError if
    they do not hold one): the message object, covariances included, cost ~40 us each, and a PPN sweep
    reads every sample that came since the last one."""
    reader = CdrReader.of(data)
    (sec, nanosec), offset = reader.unpack("iI", 0, "header.stamp")
    _, offset = reader.string(offset, "header.frame_id")
    _, offset = reader.string(offset, "child_frame_id")
    (x, y, _z, qx, qy, qz, qw), offset = reader.unpack("ddddddd", offset, "pose.pose")
    offset = reader.need(reader.align(offset, 8), 36 * 8, "pose.covariance")
    (vx, vy, _vz, _wx, _wy, wz), _ = reader.unpack("dddddd", offset, "twist.twist")
    return (sec * 1_000_000_000 + nanosec) / 1e9, x, y, yaw_from_quaternion(qx, qy, qz, qw), vx, vy, wz


class PoseBuffer:
    """Recent (t, x, y, yaw, vx, vy, wz) odometry samples; twist in the ego frame."""

    def __init__(self, horizon_s: float = 3.0, tolerance_s: float = 0.15) -> None:
        self.horizon_s = horizon_s
        self.tolerance_s = tolerance_s
        self._samples: deque[tuple[float, ...]] = deque()

    def __len__(self) -> int:
        return len(self._samples)

    def clear(self) -> None:
        self._samples.clear()

    def add(self, t: float, x: float, y: float, yaw: float, vx: float = 0.0, vy: float = 0.0, wz: float = 0.0) -> None:
        """Append a sample; one older than the newest (a time jump back) clears the buffer first."""
        if self._samples and t < self._samples[-1][0]:
            self._samples.clear()
        if self._samples and t == self._samples[-1][0]:
            self._samples.pop()
        self._samples.append((t, x, y, yaw, vx, vy, wz))
        while self._samples and self._samples[0][0] < t - self.horizon_s:
            self._samples.popleft()

    def pose_at(self, t: float) -> tuple[float, float, float] | None:
        """(x, y, yaw) at ``t``, or None when the buffer cannot tell within the tolerance."""
        if not self._samples:
            return None
        times = np.fromiter((s[0] for s in self._samples), dtype=np.float64, count=len(self._samples))
        if t > times[-1]:
            return self._extrapolate(self._samples[-1], t)
        if t < times[0]:
            return self._extrapolate(self._samples[0], t) if times[0] - t <= self.tolerance_s else None
        i = int(np.searchsorted(times, t, side="left"))
        if times[i] == t:
            return self._samples[i][1:4]
        before, after = self._samples[i - 1], self._samples[i]
        if after[0] - before[0] > 2 * self.tolerance_s:
            return None
        f = (t - before[0]) / (after[0] - before[0])
        dyaw = math.remainder(after[3] - before[3], math.tau)
        return (
            before[1] + f * (after[1] - before[1]),
            before[2] + f * (after[2] - before[2]),
            math.remainder(before[3] + f * dyaw, math.tau),
        )

    def _extrapolate(self, sample: tuple[float, ...], t: float) -> tuple[float, float, float] | None:
        dt = t - sample[0]
        if abs(dt) > self.tolerance_s:
            return None
        _, x, y, yaw, vx, vy, wz = sample
        mid = yaw + 0.5 * wz * dt
        c, s = math.cos(mid), math.sin(mid)
        return x + (c * vx - s * vy) * dt, y + (s * vx + c * vy) * dt, math.remainder(yaw + wz * dt, math.tau)
