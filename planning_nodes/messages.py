"""Messages <-> planner arrays: odometry, plans as Paths, commands as JointState, track Paths, risk maps."""

from __future__ import annotations

import math

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import Image, JointState

from planning_nodes.plan import EgoState, Plan
from planning_nodes.riskmap.geometry import RISK_GRID, RISK_TIMES
from racestack.errors import InputError
from racestack.image import image_to_array, serialized_image
from racestack.node import ns_to_stamp, stamp_to_ns
from simulation.track import Track

COMMAND_NAMES = ("steering_angle", "steering_rate", "speed", "acceleration")
RISK_ENCODING = f"32FC{len(RISK_TIMES)}"


def yaw_of(q) -> float:
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def odometry_to_ego(msg: Odometry, wheelbase: float, steer: float = 0.0, accel: float = 0.0) -> EgoState:
    """Ego state from odometry; the wheel angle is estimated from yaw rate / speed when moving."""
    p, q, twist = msg.pose.pose.position, msg.pose.pose.orientation, msg.twist.twist
    values = (p.x, p.y, q.x, q.y, q.z, q.w, twist.linear.x, twist.angular.z)
    if not all(math.isfinite(v) for v in values):
        raise InputError("nan", "odometry has non-finite pose or twist")
    v = float(twist.linear.x)
    if v > 2.0:
        steer = math.atan(wheelbase * float(twist.angular.z) / v)
    return EgoState(float(p.x), float(p.y), yaw_of(q), max(v, 0.0), steer, accel)


def plan_to_path(plan: Plan, stamp: Time, frame_id: str = "map") -> Path:
    """Poses of the plan (rear axle, heading) with per-pose stamps = stamp + k·dt."""
    msg = Path()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    base = stamp_to_ns(stamp)
    for k, state in enumerate(plan.states):
        pose = PoseStamped()
        pose.header.frame_id = frame_id
        pose.header.stamp = ns_to_stamp(base + round(k * plan.dt * 1e9))
        pose.pose.position.x, pose.pose.position.y = float(state[0]), float(state[1])
        pose.pose.orientation.z = math.sin(float(state[2]) / 2.0)
        pose.pose.orientation.w = math.cos(float(state[2]) / 2.0)
        msg.poses.append(pose)
    return msg


def command_message(command: dict[str, float], stamp: Time) -> JointState:
    msg = JointState()
    msg.header.stamp, msg.header.frame_id = stamp, "base_link"
    msg.name = list(COMMAND_NAMES)
    msg.position = [float(command[name]) for name in COMMAND_NAMES]
    return msg


def command_from_message(msg: JointState) -> dict[str, float]:
    values = dict(zip(msg.name, msg.position, strict=False))
    missing = [n for n in COMMAND_NAMES if n not in values]
    if missing:
        raise InputError("missing_field", f"command lacks {', '.join(missing)}")
    return {n: float(values[n]) for n in COMMAND_NAMES}


def path_to_xy(msg: Path) -> np.ndarray:
    """(N, 2) points of a closed polyline Path; a repeated closing point is dropped."""
    xy = np.array([[p.pose.position.x, p.pose.position.y] for p in msg.poses], dtype=np.float64).reshape(-1, 2)
    if xy.shape[0] > 1 and np.allclose(xy[0], xy[-1]):
        xy = xy[:-1]
    if xy.shape[0] < 4 or not np.all(np.isfinite(xy)):
        raise InputError("layout", f"track path has {xy.shape[0]} usable points")
    return xy


def xy_to_path(xy: np.ndarray, stamp: Time, frame_id: str = "map") -> Path:
    msg = Path()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    for x, y in np.asarray(xy, dtype=np.float64):
        pose = PoseStamped()
        pose.header = msg.header
        pose.pose.position.x, pose.pose.position.y = float(x), float(y)
        pose.pose.orientation.w = 1.0
        msg.poses.append(pose)
    return msg


def track_from_paths(centerline: Path, left: Path, right: Path, racing: Path, name: str = "map") -> Track:
    """A Track from the four latched /map Paths; widths are the bounds' distances to the centre line."""
    center_xy = path_to_xy(centerline)
    probe = Track(name, center_xy, np.ones(len(center_xy)), np.ones(len(center_xy)), path_to_xy(racing))
    widths = []
    for path in (left, right):
        s, d, _ = probe.project(path_to_xy(path))
        order = np.argsort(s)
        widths.append(np.interp(probe.s, s[order], np.abs(d[order]), period=probe.length))
    return Track(name, center_xy, widths[0], widths[1], path_to_xy(racing))


def serialized_risk(values: np.ndarray, header) -> bytes:
    """(T, H, W) risk map -> serialized Image 32FC<T> (channel t = horizon step t), for a publisher."""
    return serialized_image(np.transpose(values, (1, 2, 0)), RISK_ENCODING, header)


def image_to_risk(msg: Image) -> np.ndarray:
    """Image 32FC<T> on RISK_GRID -> (T, H, W) float32 in [0, 1]; InputError on layout/NaN."""
    values = image_to_array(msg, expect=(RISK_ENCODING,))
    if values.shape[:2] != RISK_GRID.shape:
        raise InputError(
            "layout",
            f"risk map is {values.shape[1]} x {values.shape[0]}, expected {RISK_GRID.width} x {RISK_GRID.height}",
        )
    if not np.all(np.isfinite(values)):
        raise InputError("nan", "risk map has non-finite cells")
    return np.ascontiguousarray(np.transpose(values, (2, 0, 1)), dtype=np.float32)
