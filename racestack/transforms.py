"""Rigid transforms for the static extrinsics (``lidar_pose``, ``camera_pose``) and ego poses.

There is no tf2 in the wheel-based install, so sensor poses are ``[x, y, z, roll, pitch, yaw]``
parameters (docs/interfaces.md). Rotations follow ROS (REP 103): R = Rz(yaw) Ry(pitch) Rx(roll),
fixed axes. ``camera_pose`` gives the camera *body* (x forward, y left, z up); its optical frame
(z forward, x right, y down) is that body turned by ``OPTICAL_IN_BODY``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Columns are the optical axes (x right, y down, z forward) written in the camera body frame.
OPTICAL_IN_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """3x3 rotation of fixed-axis roll, pitch, yaw (radians)."""
    cr, sr = np.cos(roll), np.sin(roll)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def pose_matrix(pose: Sequence[float]) -> np.ndarray:
    """4x4 homogeneous transform of ``[x, y, z, roll, pitch, yaw]`` (child frame in parent)."""
    if len(pose) != 6:
        raise ValueError(f"a pose is [x, y, z, roll, pitch, yaw], got {len(pose)} values")
    matrix = np.eye(4)
    matrix[:3, :3] = rotation_rpy(*pose[3:])
    matrix[:3, 3] = pose[:3]
    return matrix


def planar_pose_matrix(x: float, y: float, yaw: float) -> np.ndarray:
    """4x4 transform of a ground pose (``base_link`` in ``map``: flat ground, z = 0)."""
    return pose_matrix([x, y, 0.0, 0.0, 0.0, yaw])


def camera_optical_matrix(camera_pose: Sequence[float]) -> np.ndarray:
    """4x4 transform of the ``camera_optical`` frame in ``base_link`` from ``camera_pose``."""
    matrix = pose_matrix(camera_pose)
    matrix[:3, :3] = matrix[:3, :3] @ OPTICAL_IN_BODY
    return matrix


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 3) points mapped by a 4x4 transform, in the points' float dtype."""
    rotation = matrix[:3, :3].astype(points.dtype)
    return points @ rotation.T + matrix[:3, 3].astype(points.dtype)
