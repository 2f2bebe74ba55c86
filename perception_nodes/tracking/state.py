"""Detections and the track store as struct-of-arrays, so every tracker step is vectorized.

Everything here is in the ``map`` frame. Boxes are ``(x, y, z, length, width, height, yaw)``;
velocities are over ground. A detection velocity of exactly (0, 0) means "unknown" (what a
single-frame detector publishes, docs/interfaces.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from racestack.objects import OBJECT_CLASSES, empty_objects

NUM_CLASSES = len(OBJECT_CLASSES)
BOX_FIELDS = ("x", "y", "z", "length", "width", "height", "yaw")


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Angles in [-pi, pi)."""
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


@dataclass(frozen=True)
class EgoState:
    """Pose and over-ground velocity of base_link in map: the reference frame of the model's features."""

    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0
    vx: float = 0.0
    vy: float = 0.0

    def to_map(self, table: np.ndarray) -> np.ndarray:
        """An object table in base_link moved into map (positions, yaw and non-zero velocities)."""
        out = table.copy()
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        out["x"] = self.x + c * table["x"] - s * table["y"]
        out["y"] = self.y + s * table["x"] + c * table["y"]
        out["yaw"] = wrap_angle(table["yaw"] + self.yaw)
        out["vx"] = c * table["vx"] - s * table["vy"]
        out["vy"] = s * table["vx"] + c * table["vy"]
        return out

    def to_local(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) map vectors rotated into base_link axes (no translation)."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.stack([c * xy[:, 0] + s * xy[:, 1], -s * xy[:, 0] + c * xy[:, 1]], axis=1)


@dataclass
class Detections:
    """One frame of detections in map."""

    boxes: np.ndarray
    velocity: np.ndarray
    velocity_known: np.ndarray
    classes: np.ndarray
    scores: np.ndarray

    @classmethod
    def from_table(cls, table: np.ndarray) -> Detections:
        boxes = np.stack([table[n] for n in BOX_FIELDS], axis=1).astype(np.float64)
        velocity = np.stack([table["vx"], table["vy"]], axis=1).astype(np.float64)
        return cls(
            boxes=boxes,
            velocity=velocity,
            velocity_known=np.any(velocity != 0.0, axis=1),
            classes=np.clip(table["class_id"].astype(np.int64), 0, NUM_CLASSES - 1),
            scores=np.clip(table["score"].astype(np.float64), 0.0, 1.0),
        )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def take(self, index: np.ndarray) -> Detections:
        return Detections(*(getattr(self, f.name)[index] for f in fields(self)))


def _take(value: Any, index: np.ndarray) -> Any:
    return value[index] if isinstance(value, np.ndarray) else value[_torch_index(value, index)]


def _torch_index(value: Any, index: np.ndarray) -> Any:
    import torch

    return torch.as_tensor(np.asarray(index, dtype=np.int64), device=value.device)


def _concat(a: Any, b: Any) -> Any:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return np.concatenate([a, b], axis=0)
    import torch  # training carries latents as tensors (with gradients through the frames)

    like = b if isinstance(a, np.ndarray) else a
    return torch.cat([torch.as_tensor(x, dtype=like.dtype, device=like.device) for x in (a, b)], dim=0)


@dataclass
class Tracks:
    """Live tracks. ``boxes``/``velocity`` are the state at time ``updated``; ``extra`` holds per-track
    method state (3DMOTFormer latents, Kalman means/covariances, numpy or torch) kept in step on
    selection and concatenation."""

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))
    velocity: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    velocity_known: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    age: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    hits: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    misses: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    updated: np.ndarray = field(default_factory=lambda: np.zeros(0))
    extra: dict[str, Any] = field(default_factory=dict)

    _ARRAYS = ("ids", "boxes", "velocity", "velocity_known", "classes", "scores", "age", "hits", "misses", "updated")

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def take(self, index: np.ndarray) -> Tracks:
        index = np.flatnonzero(index) if index.dtype == bool else index
        arrays = {name: getattr(self, name)[index] for name in self._ARRAYS}
        return Tracks(**arrays, extra={k: _take(v, index) for k, v in self.extra.items()})

    def concat(self, other: Tracks) -> Tracks:
        if len(self) == 0 and not self.extra:
            return other
        arrays = {name: np.concatenate([getattr(self, name), getattr(other, name)]) for name in self._ARRAYS}
        return Tracks(**arrays, extra={k: _concat(v, other.extra[k]) for k, v in self.extra.items()})

    def since_update(self, time: float) -> np.ndarray:
        """Seconds since each track was last updated (never below 1 ms)."""
        return np.maximum(time - self.updated, 1e-3)

    def predicted_boxes(self, time: float) -> np.ndarray:
        """Boxes moved at constant velocity to ``time`` (coasting)."""
        boxes = self.boxes.copy()
        boxes[:, :2] += self.velocity * (time - self.updated)[:, None]
        return boxes

    @classmethod
    def born(cls, dets: Detections, ids: np.ndarray, time: float, velocity: np.ndarray | None = None) -> Tracks:
        """New tracks, one per detection; velocity from the detector, else ``velocity`` (a prior), else 0."""
        n = len(dets)
        vel = dets.velocity.copy()
        if velocity is not None:
            vel[~dets.velocity_known] = velocity[~dets.velocity_known]
        return cls(
            ids=np.asarray(ids, np.int64),
            boxes=dets.boxes.copy(),
            velocity=vel,
            velocity_known=dets.velocity_known.copy(),
            classes=dets.classes.copy(),
            scores=dets.scores.copy(),
            age=np.zeros(n, np.int64),
            hits=np.ones(n, np.int64),
            misses=np.zeros(n, np.int64),
            updated=np.full(n, float(time)),
        )


def tracks_to_table(tracks: Tracks, time: float, scores: np.ndarray) -> np.ndarray:
    """The object table (OBJECT_DTYPE, map) of tracks predicted to ``time`` with the given output scores."""
    table = empty_objects(len(tracks))
    boxes = tracks.predicted_boxes(time)
    for i, name in enumerate(BOX_FIELDS):
        table[name] = boxes[:, i]
    table["vx"], table["vy"] = tracks.velocity[:, 0], tracks.velocity[:, 1]
    table["score"] = scores
    table["class_id"] = tracks.classes
    table["track_id"] = tracks.ids
    table["age"] = tracks.age
    return table
