"""The track–detection bipartite graph: gates fitted to racing speeds, node and edge features, masks.

Built in numpy for both inference and training, so the network only sees dense, masked tensors
(ONNX-friendly with dynamic numbers of tracks T and detections D). Features are expressed in the
ego frame (positions relative to the ego, velocities relative to the ego's), so the model does not
depend on where on the circuit the race is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception_nodes.tracking.state import NUM_CLASSES, Detections, EgoState, Tracks, wrap_angle

POSITION_SCALE = 50.0
HEIGHT_SCALE = 20.0
VELOCITY_SCALE = 20.0
OFFSET_SCALE = 4.0
TIME_SCALE = 0.5

DET_FEATURES = 20
TRACK_FEATURES = DET_FEATURES + 3
EDGE_FEATURES = 14


@dataclass(frozen=True)
class Gates:
    """Per-class association gates (index = racestack.objects.OBJECT_CLASSES).

    A detection may match a track of its class whose constant-velocity prediction lies within
    ``base + speed_uncertainty * tau`` (tau = seconds since the track's last update); a track whose
    velocity was never measured may be anywhere within ``base + max_speed * tau`` of where it was
    last seen. Cars at 80 m/s move 4 m per 50 ms, hence the large car ``max_speed``.
    """

    base_m: tuple[float, ...] = (2.0, 2.0, 2.0, 5.0, 4.0, 2.0)
    speed_uncertainty: tuple[float, ...] = (10.0, 8.0, 8.0, 15.0, 12.0, 8.0)
    max_speed: tuple[float, ...] = (95.0, 30.0, 25.0, 100.0, 80.0, 40.0)
    self_radius_m: float = 10.0

    def __post_init__(self) -> None:
        for name in ("base_m", "speed_uncertainty", "max_speed"):
            values = getattr(self, name)
            if len(values) != NUM_CLASSES or min(values) < 0:
                raise ValueError(f"gates.{name}: expected {NUM_CLASSES} non-negative values, got {values}")

    def radius(self, tracks: Tracks, tau: np.ndarray) -> np.ndarray:
        """(T,) gate radius around each track's gate centre (see ``centres``)."""
        c = tracks.classes
        spread = np.where(tracks.velocity_known, np.asarray(self.speed_uncertainty)[c], np.asarray(self.max_speed)[c])
        return np.asarray(self.base_m)[c] + spread * tau

    @staticmethod
    def centres(tracks: Tracks, predicted: np.ndarray) -> np.ndarray:
        """(T, 2) gate centres: the prediction when the velocity was measured, else the last position."""
        return np.where(tracks.velocity_known[:, None], predicted[:, :2], tracks.boxes[:, :2])

    def distances(self, tracks: Tracks, dets: Detections, time: float) -> tuple[np.ndarray, np.ndarray]:
        """(T, D) BEV distance of each detection to each track's gate centre, and the (T,) radii."""
        centres = self.centres(tracks, tracks.predicted_boxes(time))
        distance = np.linalg.norm(centres[:, None, :] - dets.boxes[None, :, :2], axis=2)
        return distance, self.radius(tracks, tracks.since_update(time))

    def mask(self, tracks: Tracks, dets: Detections, time: float) -> np.ndarray:
        """(T, D) pairs that may match: same class and within the gate."""
        distance, radius = self.distances(tracks, dets, time)
        same_class = tracks.classes[:, None] == dets.classes[None, :]
        return same_class & (distance <= radius[:, None])


@dataclass
class Graph:
    """Model inputs, batch of one."""

    det_feats: np.ndarray  # (1, D, DET_FEATURES)
    track_feats: np.ndarray  # (1, T, TRACK_FEATURES)
    edge_feats: np.ndarray  # (1, D, T, EDGE_FEATURES)
    edge_mask: np.ndarray  # (1, D, T) 1 where the gate allows a match
    det_mask: np.ndarray  # (1, D, D) self-attention among detections
    track_mask: np.ndarray  # (1, T, T) self-attention among tracks

    def inputs(self, latent: np.ndarray) -> tuple[np.ndarray, ...]:
        """Arrays in the network's input order (racestack.inference NetworkSpec)."""
        return (
            self.det_feats,
            self.track_feats,
            latent[None].astype(np.float32),
            self.edge_feats,
            self.edge_mask,
            self.det_mask,
            self.track_mask,
        )


def object_features(
    boxes: np.ndarray,
    velocity: np.ndarray,
    known: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    ego: EgoState,
) -> np.ndarray:
    """(N, DET_FEATURES): position and velocity relative to the ego, log size, heading, class, score,
    and the ego's own velocity (so "still in map" is known: minus the ego's velocity)."""
    n = boxes.shape[0]
    out = np.zeros((n, DET_FEATURES), np.float32)
    out[:, 0:2] = ego.to_local(boxes[:, :2] - (ego.x, ego.y)) / POSITION_SCALE
    out[:, 2] = boxes[:, 2] / HEIGHT_SCALE
    out[:, 3:6] = np.log(np.maximum(boxes[:, 3:6], 1e-3))
    heading = boxes[:, 6] - ego.yaw
    out[:, 6], out[:, 7] = np.sin(heading), np.cos(heading)
    relative = ego.to_local(velocity - (ego.vx, ego.vy)) / VELOCITY_SCALE
    out[:, 8:10] = np.where(known[:, None], relative, 0.0)
    out[:, 10] = known
    out[np.arange(n), 11 + classes] = 1.0
    out[:, 17] = scores
    out[:, 18:20] = ego.to_local(np.array([[ego.vx, ego.vy]]))[0] / VELOCITY_SCALE
    return out


def self_mask(xy: np.ndarray, classes: np.ndarray, radius: float) -> np.ndarray:
    """(N, N) same class within ``radius`` (diagonal always set)."""
    close = np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=2) <= radius
    return (close & (classes[:, None] == classes[None, :])).astype(np.float32)


def build_graph(tracks: Tracks, dets: Detections, time: float, ego: EgoState, gates: Gates) -> Graph:
    """The gated bipartite graph between live tracks (predicted to ``time``) and this frame's detections."""
    tau = tracks.since_update(time)
    predicted = tracks.predicted_boxes(time)
    det_feats = object_features(dets.boxes, dets.velocity, dets.velocity_known, dets.classes, dets.scores, ego)
    track_feats = np.zeros((len(tracks), TRACK_FEATURES), np.float32)
    track_feats[:, :DET_FEATURES] = object_features(
        predicted, tracks.velocity, tracks.velocity_known, tracks.classes, tracks.scores, ego
    )
    track_feats[:, DET_FEATURES] = np.minimum(tracks.hits, 10) / 10.0
    track_feats[:, DET_FEATURES + 1] = np.minimum(tracks.misses, 10) / 10.0
    track_feats[:, DET_FEATURES + 2] = np.minimum(tau / TIME_SCALE, 10.0)

    offset = dets.boxes[:, None, :2] - predicted[None, :, :2]  # (D, T, 2)
    gate_distance, radius = gates.distances(tracks, dets, time)
    gate_distance = gate_distance.T
    same_class = dets.classes[:, None] == tracks.classes[None, :]
    edge_mask = same_class & (gate_distance <= radius[None, :])
    edge_feats = _edge_features(tracks, dets, predicted, offset, gate_distance, radius, tau, ego)
    return Graph(
        det_feats=det_feats[None],
        track_feats=track_feats[None],
        edge_feats=edge_feats[None],
        edge_mask=edge_mask.astype(np.float32)[None],
        det_mask=self_mask(dets.boxes[:, :2], dets.classes, gates.self_radius_m)[None],
        track_mask=self_mask(predicted[:, :2], tracks.classes, gates.self_radius_m)[None],
    )


def _edge_features(
    tracks: Tracks,
    dets: Detections,
    predicted: np.ndarray,
    offset: np.ndarray,
    gate_distance: np.ndarray,
    radius: np.ndarray,
    tau: np.ndarray,
    ego: EgoState,
) -> np.ndarray:
    d, t = offset.shape[:2]
    out = np.zeros((d, t, EDGE_FEATURES), np.float32)
    local_offset = ego.to_local(offset.reshape(-1, 2)).reshape(d, t, 2)
    since_last = dets.boxes[:, None, :2] - tracks.boxes[None, :, :2]
    out[..., 0:2] = local_offset / OFFSET_SCALE
    out[..., 2] = (dets.boxes[:, None, 2] - predicted[None, :, 2]) / OFFSET_SCALE
    out[..., 3:5] = ego.to_local(since_last.reshape(-1, 2)).reshape(d, t, 2) / (2.0 * OFFSET_SCALE)
    out[..., 5:7] = local_offset / tau[None, :, None] / VELOCITY_SCALE
    out[..., 7:10] = np.log(np.maximum(dets.boxes[:, None, 3:6], 1e-3) / np.maximum(predicted[None, :, 3:6], 1e-3))
    turn = wrap_angle(dets.boxes[:, None, 6] - predicted[None, :, 6])
    out[..., 10], out[..., 11] = np.sin(turn), np.cos(turn)
    out[..., 12] = np.minimum(tau / TIME_SCALE, 10.0)[None, :]
    out[..., 13] = np.minimum(gate_distance / np.maximum(radius[None, :], 1e-3), 10.0)
    return out
