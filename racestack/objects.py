"""Object lists (3D detections, tracks, 2D boxes) as PointCloud2 tables, and MarkerArrays to view them.

One point per object with named, typed fields (docs/interfaces.md). Readers use only the fields
they need, so producers may add fields; required fields that are missing raise InputError.
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from racestack.errors import InputError
from racestack.pointcloud import array_to_cloud, cloud_to_array

OBJECT_CLASSES: tuple[str, ...] = ("car", "drone", "bird", "airplane", "helicopter", "other")
CLASS_ID = {name: i for i, name in enumerate(OBJECT_CLASSES)}
FLYING_CLASSES: tuple[str, ...] = ("drone", "bird", "airplane", "helicopter")

BEV_CLASSES: tuple[str, ...] = ("other", "track", "barrier", "vehicle")

OBJECT_DTYPE = np.dtype(
    [
        ("x", "<f4"),
        ("y", "<f4"),
        ("z", "<f4"),
        ("length", "<f4"),
        ("width", "<f4"),
        ("height", "<f4"),
        ("yaw", "<f4"),
        ("vx", "<f4"),
        ("vy", "<f4"),
        ("score", "<f4"),
        ("class_id", "<i4"),
        ("track_id", "<i4"),
        ("age", "<i4"),
    ]
)
BOX2D_DTYPE = np.dtype(
    [
        ("u_min", "<f4"),
        ("v_min", "<f4"),
        ("u_max", "<f4"),
        ("v_max", "<f4"),
        ("score", "<f4"),
        ("class_id", "<i4"),
    ]
)
_OBJECT_REQUIRED = ("x", "y", "z", "length", "width", "height", "yaw")
_OBJECT_DEFAULTS = {"score": 1.0, "class_id": 0, "track_id": -1, "age": 0, "vx": 0.0, "vy": 0.0}

_CLASS_COLORS = np.array(
    [
        (0.9, 0.2, 0.2),
        (0.2, 0.6, 1.0),
        (0.9, 0.8, 0.2),
        (0.6, 0.3, 0.9),
        (0.2, 0.9, 0.5),
        (0.7, 0.7, 0.7),
    ],
    dtype=np.float32,
)


def empty_objects(count: int = 0) -> np.ndarray:
    """A zeroed object table with defaults (score 1, track_id -1)."""
    table = np.zeros(count, dtype=OBJECT_DTYPE)
    table["score"] = 1.0
    table["track_id"] = -1
    return table


def objects_to_cloud(table: np.ndarray, header=None) -> PointCloud2:
    return array_to_cloud(_as_dtype(table, OBJECT_DTYPE), header=header)


def boxes2d_to_cloud(table: np.ndarray, header=None) -> PointCloud2:
    return array_to_cloud(_as_dtype(table, BOX2D_DTYPE), header=header)


def cloud_to_objects(msg: PointCloud2) -> np.ndarray:
    """The object table of a message in OBJECT_DTYPE; optional fields missing take defaults."""
    src = cloud_to_array(msg).reshape(-1)
    names = src.dtype.names or ()
    missing = [n for n in _OBJECT_REQUIRED if n not in names]
    if missing:
        raise InputError("missing_field", f"object table lacks field(s) {', '.join(missing)}")
    out = np.zeros(src.shape[0], dtype=OBJECT_DTYPE)
    for name in OBJECT_DTYPE.names:
        out[name] = src[name] if name in names else _OBJECT_DEFAULTS.get(name, 0)
    return out


def cloud_to_boxes2d(msg: PointCloud2) -> np.ndarray:
    src = cloud_to_array(msg).reshape(-1)
    missing = [n for n in BOX2D_DTYPE.names if n not in (src.dtype.names or ())]
    if missing:
        raise InputError("missing_field", f"2D box table lacks field(s) {', '.join(missing)}")
    return _as_dtype(src, BOX2D_DTYPE)


def valid_objects(table: np.ndarray) -> np.ndarray:
    """Mask of rows with finite values and positive sizes (the rest must be dropped and counted)."""
    floats = np.stack([table[n] for n in (*_OBJECT_REQUIRED, "vx", "vy", "score")], axis=1)
    sizes = np.stack([table["length"], table["width"], table["height"]], axis=1)
    return np.isfinite(floats).all(axis=1) & (sizes > 0).all(axis=1)


def objects_to_markers(table: np.ndarray, header, namespace: str = "objects", lifetime_s: float = 0.0):
    """Boxes (CUBE) with an arrow for velocity and a text label with the class and track id."""
    markers = MarkerArray()
    clear = Marker(header=header, ns=namespace, action=Marker.DELETEALL)
    markers.markers.append(clear)
    for i, row in enumerate(table):
        class_id = int(row["class_id"])
        color = _CLASS_COLORS[class_id % len(_CLASS_COLORS)]
        box = Marker(header=header, ns=namespace, id=3 * i, type=Marker.CUBE, action=Marker.ADD)
        box.pose.position.x, box.pose.position.y = float(row["x"]), float(row["y"])
        box.pose.position.z = float(row["z"])
        box.pose.orientation.z = float(np.sin(row["yaw"] / 2.0))
        box.pose.orientation.w = float(np.cos(row["yaw"] / 2.0))
        box.scale.x, box.scale.y = float(row["length"]), float(row["width"])
        box.scale.z = float(row["height"])
        box.color.r, box.color.g, box.color.b, box.color.a = (*map(float, color), 0.5)
        box.lifetime.nanosec = int(lifetime_s * 1e9) % 1_000_000_000
        box.lifetime.sec = int(lifetime_s)
        arrow = Marker(header=header, ns=namespace, id=3 * i + 1, type=Marker.ARROW, action=Marker.ADD)
        start = Point(x=float(row["x"]), y=float(row["y"]), z=float(row["z"]))
        end = Point(x=float(row["x"] + row["vx"]), y=float(row["y"] + row["vy"]), z=float(row["z"]))
        arrow.points = [start, end]
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.3, 0.6, 0.6
        arrow.color = box.color
        arrow.lifetime = box.lifetime
        label = Marker(header=header, ns=namespace, id=3 * i + 2, type=Marker.TEXT_VIEW_FACING)
        label.pose.position.x, label.pose.position.y = float(row["x"]), float(row["y"])
        label.pose.position.z = float(row["z"] + row["height"])
        name = OBJECT_CLASSES[class_id] if 0 <= class_id < len(OBJECT_CLASSES) else str(class_id)
        track = int(row["track_id"])
        label.text = f"{name} #{track}" if track >= 0 else name
        label.scale.z = 1.0
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        label.lifetime = box.lifetime
        markers.markers.extend([box, arrow, label])
    return markers


def _as_dtype(table: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if table.dtype == dtype:
        return table
    out = np.zeros(table.shape[0], dtype=dtype)
    for name in dtype.names:
        if name in (table.dtype.names or ()):
            out[name] = table[name]
    return out
