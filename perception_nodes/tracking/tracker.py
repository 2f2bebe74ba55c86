"""The Tracker interface every method shares (birth, coasting, death, output scores) and 3DMOTFormer.

A tracker consumes one frame of detections in ``map`` at a time and returns the live tracks as an
object table. Methods differ only in association and in how a matched track is updated; the life
cycle is common so that the baselines and 3DMOTFormer are compared on equal terms:

- birth: every unmatched detection with score >= ``birth_score`` starts a track;
- coasting: an unmatched track moves at constant velocity; its output score is multiplied by
  ``coast_score_factor`` per missed frame;
- death: after more than ``max_age`` consecutive missed frames (``flying_max_age`` for drones,
  birds, airplanes and helicopters, which a camera sees only briefly from a racing car), or when
  not updated for ``max_coast_s`` seconds (a gap in the stream: frames that never came);
- output: tracks seen at least ``min_hits`` times; a track seen once scores ``new_score_factor``
  times its detection's score (``score_source: model``: 3DMOTFormer's confidence instead).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from perception_nodes.tracking.association import METHODS, associate
from perception_nodes.tracking.graph import VELOCITY_SCALE, Gates, Graph, build_graph
from perception_nodes.tracking.state import Detections, EgoState, Tracks, tracks_to_table
from racestack.objects import CLASS_ID, FLYING_CLASSES

TRACKER_METHODS = ("3dmotformer", "kalman", "greedy")
FLYING_IDS = np.array([CLASS_ID[name] for name in FLYING_CLASSES])
SCORE_SOURCES = ("detection", "model")


@dataclass(frozen=True)
class TrackerConfig:
    """Life-cycle and association settings shared by all methods."""

    max_age: int = 8
    flying_max_age: int = 3
    max_coast_s: float = 1.0
    birth_score: float = 0.0
    min_hits: int = 1
    coast_score_factor: float = 0.5
    new_score_factor: float = 0.5
    association: str = "greedy"
    affinity_threshold: float = 0.5
    score_source: str = "detection"
    gates: Gates = field(default_factory=Gates)

    def __post_init__(self) -> None:
        if self.association not in METHODS:
            raise ValueError(f"association '{self.association}' is not one of {METHODS}")
        if self.score_source not in SCORE_SOURCES:
            raise ValueError(f"score_source '{self.score_source}' is not one of {SCORE_SOURCES}")
        if min(self.max_age, self.flying_max_age) < 0 or self.min_hits < 1:
            raise ValueError("max_age and flying_max_age must be >= 0 and min_hits >= 1")
        if not self.max_coast_s > 0.0:
            raise ValueError("max_coast_s must be > 0")

    def max_misses(self, classes: np.ndarray) -> np.ndarray:
        """Missed frames each track may coast through, by class."""
        return np.where(np.isin(classes, FLYING_IDS), self.flying_max_age, self.max_age)


class IdSource:
    """Track ids unique over a node's lifetime (shared by trackers of several detection streams)."""

    def __init__(self) -> None:
        self.next_id = 0

    def take(self, count: int) -> np.ndarray:
        ids = np.arange(self.next_id, self.next_id + count, dtype=np.int64)
        self.next_id += count
        return ids


class Tracker(ABC):
    """One detection stream -> tracks. Subclasses implement ``match``, ``update_matched`` and ``born``."""

    name = "tracker"

    def __init__(self, config: TrackerConfig | None = None, ids: IdSource | None = None) -> None:
        self.config = config or TrackerConfig()
        self.ids = ids or IdSource()
        self.tracks = Tracks()
        self.time: float | None = None
        self.matched_ids = np.zeros(0, np.int64)
        self.matched_dets = np.zeros(0, np.int64)
        self.born_dets = np.zeros(0, np.int64)
        self.born_ids = np.zeros(0, np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget every track (a time jump, a new sequence); ids keep counting up."""
        self.tracks = Tracks()
        self.time = None

    def step(self, dets: Detections, time: float, ego: EgoState | None = None) -> np.ndarray:
        """Advance to ``time`` with this frame's detections; the output table of live tracks."""
        if self.time is not None and time <= self.time:
            raise ValueError(f"time {time} is not after the last step {self.time}")
        ego = ego or EgoState()
        tracks = self.tracks = self.tracks.take(time - self.tracks.updated <= self.config.max_coast_s)
        if len(tracks) and len(dets):
            track_index, det_index = self.match(tracks, dets, time, ego)
        else:
            track_index = det_index = np.zeros(0, np.int64)
            self.prepare(dets, time, ego)
        matched = self.update_matched(tracks, track_index, dets, det_index, time, ego)
        matched.ids = tracks.ids[track_index]
        matched.classes = tracks.classes[track_index]
        scores = self.detection_scores(dets)
        matched.scores = scores[det_index]
        matched.age = tracks.age[track_index] + 1
        matched.hits = tracks.hits[track_index] + 1
        matched.misses = np.zeros(len(track_index), np.int64)
        matched.updated = np.full(len(track_index), float(time))

        unmatched = np.ones(len(tracks), bool)
        unmatched[track_index] = False
        coasting = tracks.take(unmatched)
        coasting.misses = coasting.misses + 1
        coasting.age = coasting.age + 1
        coasting = coasting.take(coasting.misses <= self.config.max_misses(coasting.classes))

        free = np.ones(len(dets), bool)
        free[det_index] = False
        free &= dets.scores >= self.config.birth_score
        new_index = np.flatnonzero(free)
        born = self.born(dets, new_index, self.ids.take(new_index.size), time, ego)
        born.scores = scores[new_index]

        self.tracks = matched.concat(coasting).concat(born)
        self.time = time
        self.matched_ids, self.matched_dets = matched.ids, det_index
        self.born_ids, self.born_dets = born.ids, new_index
        return self.output(time)

    def output(self, time: float) -> np.ndarray:
        """Live tracks at ``time`` with the output score policy applied."""
        tracks = self.tracks.take(self.tracks.hits >= self.config.min_hits)
        scores = tracks.scores * self.config.coast_score_factor**tracks.misses
        scores = np.where(tracks.hits == 1, scores * self.config.new_score_factor, scores)
        return tracks_to_table(tracks, time, scores)

    def prepare(self, dets: Detections, time: float, ego: EgoState) -> None:
        """Called instead of ``match`` when there is nothing to match (no tracks or no detections)."""
        return None

    def detection_scores(self, dets: Detections) -> np.ndarray:
        """The score each detection gives the track it updates or starts (after ``match``/``prepare``)."""
        return dets.scores

    @abstractmethod
    def match(self, tracks: Tracks, dets: Detections, time: float, ego: EgoState) -> tuple[np.ndarray, np.ndarray]:
        """(track indices, detection indices) of this frame's matches."""

    @abstractmethod
    def update_matched(
        self,
        tracks: Tracks,
        track_index: np.ndarray,
        dets: Detections,
        det_index: np.ndarray,
        time: float,
        ego: EgoState,
    ) -> Tracks:
        """``tracks[track_index]`` with box, velocity and method state updated from ``dets[det_index]``."""

    @abstractmethod
    def born(self, dets: Detections, det_index: np.ndarray, ids: np.ndarray, time: float, ego: EgoState) -> Tracks:
        """New tracks for ``dets[det_index]``."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class MOTFormerTracker(Tracker):
    """3DMOTFormer: the network scores every gated edge; matches by greedy/Hungarian on affinities.

    ``runner`` is a racestack.inference runner (PyTorch, ONNX Runtime or TensorRT) of
    ``model.NETWORK_SPEC``. Each track carries the latent the network produced for the detection it
    last matched; matched and new tracks take the network's velocity. Training runs the network
    itself (batched, with gradients) and hands its outputs over with ``use_outputs`` before ``step``.
    """

    name = "3dmotformer"

    def __init__(self, runner, latent_dim: int, config: TrackerConfig | None = None, ids: IdSource | None = None):
        self.runner = runner
        self.latent_dim = latent_dim
        self._velocity = np.zeros((0, 2))
        self._latent = np.zeros((0, latent_dim), np.float32)
        self._confidence = np.zeros(0)
        self._given: tuple | None = None
        super().__init__(config, ids)

    def reset(self) -> None:
        super().reset()
        self.tracks.extra["latent"] = np.zeros((0, self.latent_dim), np.float32)

    def graph(self, dets: Detections, time: float, ego: EgoState) -> Graph:
        """The graph this step runs; with no live track, one masked placeholder keeps tensors non-empty."""
        if len(self.tracks):
            return build_graph(self.tracks, dets, time, ego, self.config.gates)
        placeholder = Tracks.born(dets.take(np.zeros(1, np.int64)), np.zeros(1), time - 0.1)
        graph = build_graph(placeholder, dets, time, ego, self.config.gates)
        graph.edge_mask[:] = 0.0
        return graph

    def track_latent(self) -> np.ndarray:
        """(T, d) latents matching ``graph``'s tracks (a zero row for the placeholder)."""
        latent = self.tracks.extra["latent"]
        return latent if len(self.tracks) else np.zeros((1, self.latent_dim), np.float32)

    def use_outputs(self, graph: Graph, affinity: np.ndarray, velocity: np.ndarray, latent, confidence) -> None:
        """Network outputs for the next ``step`` (batch axis removed): (D, T), (D, 2), (D, d), (D,)."""
        self._given = (graph, affinity, velocity, latent, confidence)

    def _outputs(self, dets: Detections, time: float, ego: EgoState):
        if self._given is not None:
            outputs, self._given = self._given, None
            return outputs
        graph = self.graph(dets, time, ego)
        affinity, velocity, latent, confidence = self.runner(*graph.inputs(self.track_latent()))
        return graph, affinity[0], velocity[0], latent[0], confidence[0]

    def _infer(self, dets: Detections, time: float, ego: EgoState) -> np.ndarray:
        """Network outputs for this frame; keeps velocities and latents per detection; (T, D) affinities."""
        graph, affinity, velocity, latent, confidence = self._outputs(dets, time, ego)
        self._velocity = velocity_to_map(velocity, ego)
        self._latent = latent
        self._confidence = sigmoid(np.asarray(confidence, np.float64))
        return sigmoid(affinity.T) * graph.edge_mask[0].T

    def detection_scores(self, dets: Detections) -> np.ndarray:
        return self._confidence if self.config.score_source == "model" and len(dets) else dets.scores

    def prepare(self, dets: Detections, time: float, ego: EgoState) -> None:
        if len(dets):
            self._infer(dets, time, ego)

    def match(self, tracks: Tracks, dets: Detections, time: float, ego: EgoState) -> tuple[np.ndarray, np.ndarray]:
        probability = self._infer(dets, time, ego)
        return associate(1.0 - probability, probability >= self.config.affinity_threshold, self.config.association)

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
        tracks.boxes = dets.boxes[det_index].copy()
        tracks.velocity = self._velocity[det_index]
        tracks.velocity_known = np.ones(len(det_index), bool)
        tracks.extra["latent"] = self._latent[det_index]
        return tracks

    def born(self, dets: Detections, det_index: np.ndarray, ids: np.ndarray, time: float, ego: EgoState) -> Tracks:
        new = Tracks.born(dets.take(det_index), ids, time, velocity=self._velocity[det_index])
        new.extra["latent"] = self._latent[det_index]
        return new


def velocity_to_map(velocity: np.ndarray, ego: EgoState) -> np.ndarray:
    """The network's velocities (relative to the ego, its axes, scaled) as over-ground map velocities."""
    c, s = np.cos(ego.yaw), np.sin(ego.yaw)
    v = velocity.astype(np.float64) * VELOCITY_SCALE
    return np.stack([c * v[:, 0] - s * v[:, 1] + ego.vx, s * v[:, 0] + c * v[:, 1] + ego.vy], axis=1)
