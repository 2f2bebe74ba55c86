"""The baselines a user ablates 3DMOTFormer against, with the same life cycle and topic contract.

- ``KalmanTracker`` (AB3DMOT-style): a constant-velocity Kalman filter per track, Mahalanobis-gated
  Hungarian assignment.
- ``GreedyTracker`` (CenterPoint-style): centre distance to the constant-velocity prediction,
  cheapest pair first; velocity from the detector or from consecutive positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception_nodes.tracking.association import associate
from perception_nodes.tracking.state import NUM_CLASSES, Detections, EgoState, Tracks
from perception_nodes.tracking.tracker import IdSource, Tracker, TrackerConfig


@dataclass(frozen=True)
class KalmanConfig:
    """Noise model of the constant-velocity filter (state x, y, vx, vy; measurement x, y)."""

    accel_std: tuple[float, ...] = (25.0, 5.0, 5.0, 5.0, 5.0, 5.0)
    position_std: float = 0.4
    initial_velocity_std: tuple[float, ...] = (40.0, 15.0, 12.0, 50.0, 40.0, 20.0)
    detector_velocity_std: float = 2.0
    gate_chi2: float = 13.8

    def __post_init__(self) -> None:
        for name in ("accel_std", "initial_velocity_std"):
            if len(getattr(self, name)) != NUM_CLASSES:
                raise ValueError(f"kalman.{name}: expected {NUM_CLASSES} values")


class KalmanTracker(Tracker):
    """Constant-velocity Kalman filter + Hungarian on the Mahalanobis distance (AB3DMOT-style)."""

    name = "kalman"

    def __init__(
        self, config: TrackerConfig | None = None, kalman: KalmanConfig | None = None, ids: IdSource | None = None
    ) -> None:
        self.kalman = kalman or KalmanConfig()
        super().__init__(config, ids)
        self._predicted: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        super().reset()
        self.tracks.extra["cov"] = np.zeros((0, 4, 4))

    def _predict(self, tracks: Tracks, time: float) -> tuple[np.ndarray, np.ndarray]:
        """State means (T, 4) and covariances (T, 4, 4) at ``time``."""
        tau = tracks.since_update(time)
        mean = np.concatenate([tracks.boxes[:, :2] + tracks.velocity * tau[:, None], tracks.velocity], axis=1)
        F = np.tile(np.eye(4), (len(tracks), 1, 1))
        F[:, 0, 2] = F[:, 1, 3] = tau
        q = np.asarray(self.kalman.accel_std)[tracks.classes] ** 2
        Q = np.zeros((len(tracks), 4, 4))
        for i in range(2):
            Q[:, i, i] = q * tau**4 / 4
            Q[:, i, i + 2] = Q[:, i + 2, i] = q * tau**3 / 2
            Q[:, i + 2, i + 2] = q * tau**2
        cov = F @ tracks.extra["cov"] @ F.transpose(0, 2, 1) + Q
        return mean, cov

    def match(self, tracks: Tracks, dets: Detections, time: float, ego: EgoState) -> tuple[np.ndarray, np.ndarray]:
        mean, cov = self._predict(tracks, time)
        self._predicted = (mean, cov)
        innovation_cov = cov[:, :2, :2] + np.eye(2) * self.kalman.position_std**2
        inverse = np.linalg.inv(innovation_cov)
        residual = dets.boxes[None, :, :2] - mean[:, None, :2]  # (T, D, 2)
        mahalanobis = np.einsum("tdi,tij,tdj->td", residual, inverse, residual)
        valid = self.config.gates.mask(tracks, dets, time) & (mahalanobis <= self.kalman.gate_chi2)
        return associate(mahalanobis, valid, self.config.association)

    def update_matched(
        self,
        tracks: Tracks,
        track_index: np.ndarray,
        dets: Detections,
        det_index: np.ndarray,
        time: float,
        ego: EgoState,
    ) -> Tracks:
        tracks = tracks.take(track_index)
        if not len(det_index):
            return tracks
        mean, cov = self._predicted
        mean, cov = mean[track_index], cov[track_index]
        S = cov[:, :2, :2] + np.eye(2) * self.kalman.position_std**2
        K = cov[:, :, :2] @ np.linalg.inv(S)  # (M, 4, 2)
        residual = dets.boxes[det_index, :2] - mean[:, :2]
        mean = mean + np.einsum("mij,mj->mi", K, residual)
        cov = cov - K @ cov[:, :2, :]
        tracks.boxes = dets.boxes[det_index].copy()
        tracks.boxes[:, :2] = mean[:, :2]
        tracks.velocity = mean[:, 2:]
        tracks.velocity_known = np.ones(len(det_index), bool)
        tracks.extra["cov"] = cov
        return tracks

    def born(self, dets: Detections, det_index: np.ndarray, ids: np.ndarray, time: float, ego: EgoState) -> Tracks:
        new = Tracks.born(dets.take(det_index), ids, time)
        velocity_std = np.where(
            new.velocity_known,
            self.kalman.detector_velocity_std,
            np.asarray(self.kalman.initial_velocity_std)[new.classes],
        )
        cov = np.zeros((len(new), 4, 4))
        cov[:, 0, 0] = cov[:, 1, 1] = self.kalman.position_std**2
        cov[:, 2, 2] = cov[:, 3, 3] = velocity_std**2
        new.extra["cov"] = cov
        return new


class GreedyTracker(Tracker):
    """Greedy closest-centre matching to constant-velocity predictions (CenterPoint-style)."""

    name = "greedy"

    def __init__(
        self, config: TrackerConfig | None = None, velocity_smoothing: float = 0.5, ids: IdSource | None = None
    ) -> None:
        super().__init__(config, ids)
        self.velocity_smoothing = velocity_smoothing

    def match(self, tracks: Tracks, dets: Detections, time: float, ego: EgoState) -> tuple[np.ndarray, np.ndarray]:
        predicted = tracks.predicted_boxes(time)
        distance = np.linalg.norm(predicted[:, None, :2] - dets.boxes[None, :, :2], axis=2)
        return associate(distance, self.config.gates.mask(tracks, dets, time), "greedy")

    def update_matched(
        self,
        tracks: Tracks,
        track_index: np.ndarray,
        dets: Detections,
        det_index: np.ndarray,
        time: float,
        ego: EgoState,
    ) -> Tracks:
        tracks = tracks.take(track_index)
        matched = dets.take(det_index)
        measured = (matched.boxes[:, :2] - tracks.boxes[:, :2]) / tracks.since_update(time)[:, None]
        measured = np.where(matched.velocity_known[:, None], matched.velocity, measured)
        a = self.velocity_smoothing
        smoothed = np.where(tracks.velocity_known[:, None], a * measured + (1 - a) * tracks.velocity, measured)
        tracks.boxes = matched.boxes.copy()
        tracks.velocity = smoothed
        tracks.velocity_known = np.ones(len(det_index), bool)
        return tracks

    def born(self, dets: Detections, det_index: np.ndarray, ids: np.ndarray, time: float, ego: EgoState) -> Tracks:
        return Tracks.born(dets.take(det_index), ids, time)
