"""Ground truth -> detections as a real 3D detector makes them, for tracking data and evaluation.

Trackers are trained and compared on what the perception front end really delivers, not on ground
truth. The model reproduces what LiDAR/BEV detectors (and camera detections lifted to 3D) get
wrong, per object class group (cars; flying objects):

- a range limit (the BEV grid; for flying objects the camera's field of view and an apparent size
  of at least a few pixels);
- misses that grow with range and with occlusion by closer objects (angular shadow seen from
  the sensor), correlated in time (a Gaussian copula on an AR(1) latent), so objects drop out for
  several frames as they do behind another car;
- position noise growing with range, correlated in time, with a bias toward the sensor (a box fit
  to the visible faces), size noise, heading noise and occasional 180-degree heading flips;
- scores: high for close, unoccluded objects, lower with range and occlusion;
- false positives: one-frame clutter on and beside the track (barrier returns), persistent static
  ghosts (a few frames to a few seconds), and split detections beside real cars.

Detections are returned in ``base_link`` (as a detector publishes them) with the ground-truth
instance id of each (-1 for false positives); velocities are 0 (unknown), as a single-frame
detector reports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

from perception_nodes.tracking.state import EgoState, wrap_angle
from racestack.objects import CLASS_ID, empty_objects


@dataclass(frozen=True)
class GroupNoise:
    """Error model of one object group (cars, or flying objects)."""

    max_range: float = 50.0
    square_range: bool = True  # a BEV grid covers |x|, |y| <= max_range; else a disc (and a FOV)
    half_fov_deg: float = 180.0
    min_angular_size: float = 0.0  # rad: smaller objects are never detected (a camera needs pixels)
    full_angular_size: float = 0.0  # rad: from this size on, detection probability is not reduced
    p_detect_near: float = 0.97
    p_detect_far: float = 0.75
    miss_correlation: float = 0.6
    occlusion_power: float = 1.5
    position_std: float = 0.12
    position_std_per_m: float = 0.006
    range_std_fraction: float = 0.0
    position_correlation: float = 0.5
    sensor_bias_m: float = 0.25
    size_std: float = 0.05
    yaw_std: float = 0.04
    yaw_flip: float = 0.02
    score_logit_near: float = 2.5
    score_logit_range: float = 2.0
    score_logit_occlusion: float = 2.5
    score_logit_std: float = 0.7


FLYING_NOISE = GroupNoise(
    max_range=300.0,
    square_range=False,
    half_fov_deg=50.0,
    min_angular_size=0.02,  # ~8 px at 640 px over 100 degrees
    full_angular_size=0.05,  # ~20 px
    p_detect_near=0.9,
    p_detect_far=0.6,
    position_std=0.3,
    position_std_per_m=0.0,
    range_std_fraction=0.03,
    sensor_bias_m=0.0,
    size_std=0.15,
    yaw_std=0.3,
    yaw_flip=0.0,
)


@dataclass(frozen=True)
class ClutterNoise:
    """False positives (all labelled class car: what a BEV vehicle class returns wrongly)."""

    per_frame: float = 0.6
    barrier_fraction: float = 0.6
    ghost_births_per_frame: float = 0.04
    ghost_mean_frames: float = 12.0
    ghost_detect: float = 0.75
    ghost_jitter_m: float = 0.3
    split_probability: float = 0.03
    score_logit_mean: float = -1.2
    ghost_logit_mean: float = -0.3
    score_logit_std: float = 0.8


@dataclass(frozen=True)
class DetectorNoise:
    cars: GroupNoise = field(default_factory=GroupNoise)
    flying: GroupNoise = FLYING_NOISE
    clutter: ClutterNoise = field(default_factory=ClutterNoise)
    sensor_offset: tuple[float, float] = (1.5, 0.0)  # LiDAR/camera position in base_link (x, y)


@dataclass
class _Ghost:
    xy: np.ndarray
    frames_left: int


class SyntheticDetector:
    """Stateful (temporal correlations, ghosts): one instance per sequence, fed frames in order."""

    def __init__(self, noise: DetectorNoise, rng: np.random.Generator) -> None:
        self.noise = noise
        self.rng = rng
        self._latent: dict[int, float] = {}
        self._offset: dict[int, np.ndarray] = {}
        self._ghosts: list[_Ghost] = []

    def detect(self, gt: np.ndarray, ego: EgoState, track=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(detections in base_link, their ground-truth ids (-1 = false), per-GT visibility mask).

        ``gt`` is the ground-truth object table in ``map``; ``ego`` the true base_link pose;
        ``track`` (simulation.track.Track) places clutter on and beside the circuit when given.
        A ground-truth object counts as visible (what evaluation scores) when it is in range, not
        almost entirely occluded and, for flying objects, large enough on the image to be detected
        at least every other frame (like nuScenes scoring only boxes with LiDAR points).
        """
        local = _to_base_link(gt, ego)
        flying = gt["class_id"] != CLASS_ID["car"]
        in_range = np.where(flying, self._in_range(local, self.noise.flying), self._in_range(local, self.noise.cars))
        occlusion = self._occlusion(local, in_range & ~flying)
        size = _angular_size(local, self.noise.sensor_offset)
        flying_group = self.noise.flying
        detectable = size >= 0.5 * (flying_group.min_angular_size + flying_group.full_angular_size)
        visible = in_range & (occlusion < 0.95) & (detectable | ~flying)
        rows, ids = [], []
        for group, mask in ((self.noise.cars, ~flying), (self.noise.flying, flying)):
            det, det_ids = self._detect_group(local[mask & in_range], occlusion[mask & in_range], group)
            rows.append(det)
            ids.append(det_ids)
        clutter = self._clutter(local[~flying & in_range], ego, track)
        rows.append(clutter)
        ids.append(np.full(clutter.size, -1, np.int32))
        self._forget(set(gt["track_id"][in_range].tolist()))
        return np.concatenate(rows), np.concatenate(ids), visible

    # -- true objects --------------------------------------------------------------------------

    def _in_range(self, local: np.ndarray, group: GroupNoise) -> np.ndarray:
        x = local["x"] - self.noise.sensor_offset[0]
        y = local["y"] - self.noise.sensor_offset[1]
        if group.square_range:
            return (np.abs(local["x"]) <= group.max_range) & (np.abs(local["y"]) <= group.max_range)
        bearing = np.abs(np.arctan2(y, x))
        visible = (np.hypot(x, y) <= group.max_range) & (bearing <= np.deg2rad(group.half_fov_deg))
        return visible & (_angular_size(local, self.noise.sensor_offset) >= group.min_angular_size)

    def _occlusion(self, local: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Fraction of each object's angular extent hidden by closer objects (seen from the sensor)."""
        n = local.size
        out = np.zeros(n)
        if n < 2:
            return out
        x = local["x"] - self.noise.sensor_offset[0]
        y = local["y"] - self.noise.sensor_offset[1]
        distance = np.hypot(x, y)
        bearing = np.arctan2(y, x)
        half = np.minimum(np.arctan2(0.5 * np.hypot(local["length"], local["width"]), np.maximum(distance, 0.1)), 1.5)
        centre_j = bearing[:, None] + wrap_angle(bearing[None, :] - bearing[:, None])  # j relative to i
        overlap = np.minimum(bearing[:, None] + half[:, None], centre_j + half[None, :]) - np.maximum(
            bearing[:, None] - half[:, None], centre_j - half[None, :]
        )
        closer = (distance[None, :] < distance[:, None]) & candidates[None, :]
        hidden = np.where(closer, np.clip(overlap, 0.0, None), 0.0).sum(axis=1) / (2.0 * half)
        return np.where(candidates, np.clip(hidden, 0.0, 1.0), 0.0)

    def _detect_group(
        self, local: np.ndarray, occlusion: np.ndarray, group: GroupNoise
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        n = local.size
        ids = local["track_id"].astype(np.int32)
        x = local["x"] - self.noise.sensor_offset[0]
        y = local["y"] - self.noise.sensor_offset[1]
        distance = np.hypot(x, y)
        reach = np.clip(distance / group.max_range, 0.0, 1.0)
        p_range = group.p_detect_near + (group.p_detect_far - group.p_detect_near) * reach**2
        p = p_range * np.clip(1.0 - occlusion**group.occlusion_power, 0.0, 1.0)
        if group.full_angular_size > group.min_angular_size:
            size = _angular_size(local, self.noise.sensor_offset)
            p *= np.clip((size - group.min_angular_size) / (group.full_angular_size - group.min_angular_size), 0, 1)
        latent = self._ar1(self._latent, ids, group.miss_correlation, rng.standard_normal(n))
        detected = ndtr(latent) < p
        det = local[detected].copy()
        ids = ids[detected]
        m = det.size
        direction = np.stack([x[detected], y[detected]], axis=1) / np.maximum(distance[detected], 0.1)[:, None]
        sigma = group.position_std + group.position_std_per_m * distance[detected]
        innovation = rng.standard_normal((m, 2)) * sigma[:, None]
        innovation += direction * (rng.standard_normal(m) * group.range_std_fraction * distance[detected])[:, None]
        offset = self._ar1_vectors(ids, group.position_correlation, innovation)
        offset -= direction * group.sensor_bias_m * rng.random(m)[:, None]
        det["x"] += offset[:, 0]
        det["y"] += offset[:, 1]
        det["z"] += rng.standard_normal(m) * 0.5 * sigma
        for name in ("length", "width", "height"):
            det[name] *= np.exp(rng.standard_normal(m) * group.size_std)
        flip = rng.random(m) < group.yaw_flip
        det["yaw"] = wrap_angle(det["yaw"] + rng.standard_normal(m) * group.yaw_std + np.pi * flip)
        logit = (
            group.score_logit_near
            - group.score_logit_range * reach[detected]
            - group.score_logit_occlusion * occlusion[detected]
            + rng.standard_normal(m) * group.score_logit_std
        )
        det["score"] = _sigmoid(logit)
        det["vx"] = det["vy"] = 0.0
        det["track_id"], det["age"] = -1, 0
        splits, split_ids = self._splits(det, ids)
        return np.concatenate([det, splits]), np.concatenate([ids, split_ids])

    def _splits(self, det: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A second, weaker box beside some cars (a cluster split in two)."""
        clutter = self.noise.clutter
        chosen = (self.rng.random(det.size) < clutter.split_probability) & (det["class_id"] == CLASS_ID["car"])
        split = det[chosen].copy()
        k = split.size
        along = self.rng.uniform(1.5, 3.0, k) * self.rng.choice([-1.0, 1.0], k)
        split["x"] += along * np.cos(split["yaw"])
        split["y"] += along * np.sin(split["yaw"])
        split["length"] *= 0.5
        logit = clutter.score_logit_mean + 0.5 + self.rng.standard_normal(k) * clutter.score_logit_std
        split["score"] = _sigmoid(logit)
        return split, np.full(k, -1, np.int32)

    def _ar1(self, state: dict[int, float], ids: np.ndarray, rho: float, draw: np.ndarray) -> np.ndarray:
        previous = np.array([state.get(int(i), np.nan) for i in ids])
        fresh = np.isnan(previous)
        value = np.where(fresh, draw, rho * np.nan_to_num(previous) + np.sqrt(1.0 - rho**2) * draw)
        state.update(zip(ids.tolist(), value.tolist(), strict=True))
        return value

    def _ar1_vectors(self, ids: np.ndarray, rho: float, innovation: np.ndarray) -> np.ndarray:
        previous = np.array([self._offset.get(int(i), (np.nan, np.nan)) for i in ids]).reshape(-1, 2)
        fresh = np.isnan(previous[:, 0])
        value = np.where(fresh[:, None], innovation, rho * np.nan_to_num(previous) + np.sqrt(1.0 - rho**2) * innovation)
        self._offset.update({int(i): v for i, v in zip(ids, value, strict=True)})
        return value

    def _forget(self, present: set[int]) -> None:
        for state in (self._latent, self._offset):
            for key in [k for k in state if k not in present]:
                del state[key]

    # -- false positives -----------------------------------------------------------------------

    def _clutter(self, cars: np.ndarray, ego: EgoState, track) -> np.ndarray:
        clutter = self.noise.clutter
        rng = self.rng
        n = rng.poisson(clutter.per_frame)
        xy = self._clutter_positions(n, ego, track)
        self._step_ghosts(ego, track)
        ghosts = [g.xy for g in self._ghosts if rng.random() < clutter.ghost_detect]
        ghost_xy = np.array(ghosts).reshape(-1, 2) + rng.standard_normal((len(ghosts), 2)) * clutter.ghost_jitter_m
        all_xy = np.concatenate([xy, ghost_xy])
        logits = (
            np.concatenate(
                [
                    np.full(n, clutter.score_logit_mean),
                    np.full(len(ghosts), clutter.ghost_logit_mean),
                ]
            )
            + rng.standard_normal(all_xy.shape[0]) * clutter.score_logit_std
        )
        table = empty_objects(all_xy.shape[0])
        local = _points_to_base_link(all_xy, ego)
        table["x"], table["y"] = local[:, 0], local[:, 1]
        table["length"] = rng.uniform(1.0, 5.0, table.size)
        table["width"] = rng.uniform(0.8, 2.2, table.size)
        table["height"] = rng.uniform(0.4, 1.5, table.size)
        table["z"] = table["height"] / 2.0
        table["yaw"] = rng.uniform(-np.pi, np.pi, table.size)
        table["score"] = _sigmoid(logits)
        table["class_id"] = CLASS_ID["car"]
        inside = (np.abs(table["x"]) <= self.noise.cars.max_range) & (np.abs(table["y"]) <= self.noise.cars.max_range)
        return table[inside]

    def _clutter_positions(self, n: int, ego: EgoState, track) -> np.ndarray:
        """Map positions of clutter: along the circuit near the ego (barriers or surface), else a square."""
        rng = self.rng
        reach = self.noise.cars.max_range
        if track is None:
            local = rng.uniform(-reach, reach, (n, 2))
            c, s = np.cos(ego.yaw), np.sin(ego.yaw)
            return np.stack([ego.x + c * local[:, 0] - s * local[:, 1], ego.y + s * local[:, 0] + c * local[:, 1]], 1)
        s_ego = float(track.project(np.array([[ego.x, ego.y]]))[0][0])
        s = s_ego + rng.uniform(-reach, reach, n)
        left, right = track.widths_at(s)
        barrier = rng.random(n) < self.noise.clutter.barrier_fraction
        side = rng.choice([-1.0, 1.0], n)
        at_barrier = np.where(side > 0, left, -right) + side * rng.uniform(-0.5, 1.5, n)
        on_surface = rng.uniform(-right, left)
        return np.asarray(track.frenet_to_xy(s, np.where(barrier, at_barrier, on_surface))).reshape(-1, 2)

    def _step_ghosts(self, ego: EgoState, track) -> None:
        clutter = self.noise.clutter
        for ghost in self._ghosts:
            ghost.frames_left -= 1
        self._ghosts = [g for g in self._ghosts if g.frames_left > 0]
        births = self.rng.poisson(clutter.ghost_births_per_frame)
        for xy in self._clutter_positions(births, ego, track):
            self._ghosts.append(_Ghost(xy, int(self.rng.geometric(1.0 / clutter.ghost_mean_frames))))


def _angular_size(local: np.ndarray, sensor: tuple[float, float]) -> np.ndarray:
    """Apparent size (rad) of each object from the sensor: its largest dimension over its distance."""
    distance = np.hypot(local["x"] - sensor[0], local["y"] - sensor[1])
    extent = np.maximum(np.maximum(local["length"], local["width"]), local["height"])
    return extent / np.maximum(distance, 0.1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _points_to_base_link(xy: np.ndarray, ego: EgoState) -> np.ndarray:
    c, s = np.cos(ego.yaw), np.sin(ego.yaw)
    dx, dy = xy[:, 0] - ego.x, xy[:, 1] - ego.y
    return np.stack([c * dx + s * dy, -s * dx + c * dy], axis=1)


def _to_base_link(table: np.ndarray, ego: EgoState) -> np.ndarray:
    out = table.copy()
    local = _points_to_base_link(np.stack([table["x"], table["y"]], axis=1).astype(np.float64), ego)
    out["x"], out["y"] = local[:, 0], local[:, 1]
    out["yaw"] = wrap_angle(table["yaw"] - ego.yaw)
    return out
