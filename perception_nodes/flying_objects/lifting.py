"""2D detections -> 3D objects: LiDAR depth inside each box, or the class's size prior.

For each box the LiDAR points that project into its (slightly shrunk) interior are split into
depth clusters; the nearest cluster with enough points is the object (the sky or the track
behind it is farther), its median depth is the object's front surface. Without such a cluster
the depth comes from the pinhole relation depth = focal x size / pixels with the class's prior
size (less accurate: sizes within a class vary by 2-3x). The centre lies on the ray through the box centre.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from racestack.errors import InputError
from racestack.objects import CLASS_ID, empty_objects
from racestack.transforms import transform_points

# length, width (span), height (m) of a typical object of each class (the simulator's medians,
# which follow real ones: small multirotors, pigeon-to-gull birds, light aircraft to airliners).
SIZE_PRIORS: dict[str, tuple[float, float, float]] = {
    "drone": (0.45, 0.35, 0.1),
    "bird": (0.35, 0.6, 0.1),
    "airplane": (28.0, 34.0, 9.0),
    "helicopter": (15.0, 10.0, 4.0),
    "other": (1.0, 1.0, 1.0),
}


@dataclass(frozen=True)
class CameraModel:
    """Pinhole intrinsics (sensor_msgs/CameraInfo ``k``, ``d``) of the image the boxes come from."""

    matrix: np.ndarray
    distortion: np.ndarray
    width: int
    height: int

    @classmethod
    def from_values(cls, k: Sequence[float], d: Sequence[float], width: int, height: int) -> CameraModel:
        """Validated model; InputError('camera_info') when the intrinsics cannot be used."""
        matrix = np.asarray(k, dtype=np.float64).reshape(3, 3) if len(k) == 9 else np.zeros((3, 3))
        if not (np.isfinite(matrix).all() and matrix[0, 0] > 0 and matrix[1, 1] > 0):
            raise InputError("camera_info", f"unusable intrinsics k={list(k)}")
        if width <= 0 or height <= 0:
            raise InputError("camera_info", f"image size {width}x{height}")
        distortion = np.asarray(d, dtype=np.float64)
        if not np.isfinite(distortion).all():
            raise InputError("camera_info", f"non-finite distortion d={list(d)}")
        if distortion.size and not distortion.any():
            distortion = np.zeros(0)
        return cls(matrix=matrix, distortion=distortion, width=int(width), height=int(height))

    @property
    def focal(self) -> tuple[float, float]:
        return float(self.matrix[0, 0]), float(self.matrix[1, 1])

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) pixel coordinates of (N, 3) points in the optical frame (z > 0)."""
        if self.distortion.size:
            pixels, _ = cv2.projectPoints(
                points.astype(np.float64), np.zeros(3), np.zeros(3), self.matrix, self.distortion
            )
            return pixels.reshape(-1, 2)
        normalized = points[:, :2] / points[:, 2:3]
        return normalized * np.diag(self.matrix)[:2] + self.matrix[:2, 2]

    def normalized(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 2) ray directions (x/z, y/z) of pixel coordinates, undoing the lens distortion."""
        pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        if self.distortion.size:
            return cv2.undistortPoints(pixels[:, None], self.matrix, self.distortion).reshape(-1, 2)
        return (pixels - self.matrix[:2, 2]) / np.diag(self.matrix)[:2]


@dataclass(frozen=True)
class LiftingConfig:
    min_points: int = 3
    shrink: float = 0.15
    gap_m: float = 1.0
    gap_ratio: float = 0.05
    min_depth: float = 0.5
    max_depth: float = 500.0
    priors: Mapping[int, tuple[float, float, float]] = field(
        default_factory=lambda: {CLASS_ID[name]: size for name, size in SIZE_PRIORS.items()}
    )

    def prior(self, class_id: int) -> tuple[float, float, float]:
        fallback = self.priors.get(CLASS_ID["other"], SIZE_PRIORS["other"])
        return self.priors.get(int(class_id), fallback)


def points_in_image(points_camera: np.ndarray, camera: CameraModel, config: LiftingConfig):
    """(pixels (M, 2), depths (M,)) of the points in front of the camera that land in the image."""
    depth = points_camera[:, 2]
    front = (depth > config.min_depth) & (depth < config.max_depth)
    points = points_camera[front]
    pixels = camera.project(points)
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < camera.width) & (pixels[:, 1] >= 0) & (pixels[:, 1] < camera.height)
    return pixels[inside], points[inside, 2]


def nearest_cluster_depth(depths: np.ndarray, config: LiftingConfig) -> float:
    """Median depth of the nearest cluster of at least ``min_points`` depths, NaN if there is none."""
    if depths.size < config.min_points:
        return float("nan")
    ordered = np.sort(depths)
    gaps = np.diff(ordered) > np.maximum(config.gap_m, config.gap_ratio * ordered[:-1])
    labels = np.concatenate(([0], np.cumsum(gaps)))
    counts = np.bincount(labels)
    dense = np.flatnonzero(counts >= config.min_points)
    if dense.size == 0:
        return float("nan")
    return float(np.median(ordered[labels == dense[0]]))


def box_depths(boxes: np.ndarray, pixels: np.ndarray, depths: np.ndarray, config: LiftingConfig) -> np.ndarray:
    """Object surface depth per box from the LiDAR points inside it (NaN where there are too few)."""
    out = np.full(boxes.shape[0], np.nan)
    if pixels.shape[0] == 0:
        return out
    width = boxes["u_max"] - boxes["u_min"]
    height = boxes["v_max"] - boxes["v_min"]
    u0, u1 = boxes["u_min"] + config.shrink * width, boxes["u_max"] - config.shrink * width
    v0, v1 = boxes["v_min"] + config.shrink * height, boxes["v_max"] - config.shrink * height
    for i in range(boxes.shape[0]):
        inside = (pixels[:, 0] >= u0[i]) & (pixels[:, 0] <= u1[i]) & (pixels[:, 1] >= v0[i]) & (pixels[:, 1] <= v1[i])
        out[i] = nearest_cluster_depth(depths[inside], config)
    return out


def prior_depths(boxes: np.ndarray, camera: CameraModel, config: LiftingConfig) -> np.ndarray:
    """Centre depth per box from its class's size prior: the largest dimension over the box's larger
    angular extent (the largest dimension of a flying object shows from almost every viewpoint)."""
    sizes = np.array([config.prior(c) for c in boxes["class_id"]], dtype=np.float64).reshape(-1, 3)
    fx, fy = camera.focal
    width = np.maximum(boxes["u_max"] - boxes["u_min"], 1.0) / fx
    height = np.maximum(boxes["v_max"] - boxes["v_min"], 1.0) / fy
    return sizes.max(axis=1) / np.maximum(width, height)


def lift_boxes(
    boxes: np.ndarray,
    camera: CameraModel,
    camera_to_base: np.ndarray,
    config: LiftingConfig,
    points_camera: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(OBJECT_DTYPE table in base_link, mask of boxes whose depth came from the LiDAR)."""
    table = empty_objects(boxes.shape[0])
    if boxes.shape[0] == 0:
        return table, np.zeros(0, dtype=bool)
    sizes = np.array([config.prior(c) for c in boxes["class_id"]], dtype=np.float64).reshape(-1, 3)
    surface = np.full(boxes.shape[0], np.nan)
    if points_camera is not None and points_camera.shape[0]:
        pixels, depths = points_in_image(points_camera, camera, config)
        surface = box_depths(boxes, pixels, depths, config)
    from_lidar = np.isfinite(surface)
    depth = np.where(from_lidar, surface + 0.5 * sizes[:, :2].min(axis=1), prior_depths(boxes, camera, config))
    centres = np.stack([(boxes["u_min"] + boxes["u_max"]) / 2, (boxes["v_min"] + boxes["v_max"]) / 2], axis=1)
    rays = camera.normalized(centres)
    in_camera = np.column_stack([rays * depth[:, None], depth])
    in_base = transform_points(camera_to_base, in_camera)
    table["x"], table["y"], table["z"] = in_base[:, 0], in_base[:, 1], in_base[:, 2]
    table["length"], table["width"], table["height"] = sizes[:, 0], sizes[:, 1], sizes[:, 2]
    table["score"] = boxes["score"]
    table["class_id"] = boxes["class_id"]
    return table, from_lidar
