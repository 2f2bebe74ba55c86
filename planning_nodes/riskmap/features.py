"""Tokens the risk-map transformer reads, built the same way from simulator data and from live topics.

* agent tokens: each opponent's state in ``base_link`` at the stamp, its short history, its size,
  and a physics prior (the along-track forecast of ``planning_nodes.opponents``) at the horizon's
  steps, so the network learns corrections and uncertainty rather than kinematics;
* an ego token: speed, wheel angle, acceleration (it joins the agents: interactions include the ego);
* BEV context tokens: class fractions of patches of the segmentation grid (what perception sees);
* track context tokens: centre-line samples ahead (position, direction, widths, racing-line offset)
  from the ``/map`` geometry, which reaches beyond the BEV grid at racing speeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planning_nodes.opponents import forecast
from planning_nodes.riskmap.geometry import RISK_GRID, RISK_TIMES
from racestack.grid import LITE_GRID, BevGrid
from racestack.objects import BEV_CLASSES, empty_objects
from simulation.track import Track

HISTORY_STEPS = 5  # past samples per agent
HISTORY_DT = 0.2  # s between them
PATCH = 32  # BEV cells per patch side (8 x 8 patches of 12.8 m on the lite grid)
TRACK_TOKENS = 32
TRACK_SPACING = 8.0  # m between track tokens
TRACK_BEHIND = 16.0  # m of track behind the ego
POSITION_SCALE = 50.0  # m: positions are divided by this
SPEED_SCALE = 30.0  # m/s

AGENT_FEATURES = 9 + 2 * HISTORY_STEPS + 2 * len(RISK_TIMES)
EGO_FEATURES = 3
BEV_FEATURES = len(BEV_CLASSES) + 2
TRACK_FEATURES = 7


@dataclass
class Pose:
    x: float
    y: float
    yaw: float

    def to_local(self, xy: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        rel = np.asarray(xy, dtype=np.float64) - [self.x, self.y]
        return np.stack([c * rel[..., 0] + s * rel[..., 1], -s * rel[..., 0] + c * rel[..., 1]], axis=-1)

    def rotate_to_local(self, vec: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        vec = np.asarray(vec, dtype=np.float64)
        return np.stack([c * vec[..., 0] + s * vec[..., 1], -s * vec[..., 0] + c * vec[..., 1]], axis=-1)


@dataclass
class AgentInputs:
    """Per-agent arrays (M, ...) in ``base_link`` at the stamp; ``prior`` (M, T, 2) body centres."""

    tokens: np.ndarray
    center: np.ndarray
    yaw: np.ndarray
    length: np.ndarray
    width: np.ndarray
    velocity: np.ndarray
    prior: np.ndarray
    prior_yaw: np.ndarray


def agent_inputs(history: np.ndarray, pose: Pose, track: Track) -> AgentInputs:
    """Tokens from ``history`` (M, HISTORY_STEPS + 1, 7): [x, y, yaw, vx, vy, length, width] in ``map``.

    Index -1 is the stamp's state, earlier indices go back ``HISTORY_DT`` each (NaN rows: unseen then).
    """
    now = history[:, -1]
    m = now.shape[0]
    center = pose.to_local(now[:, :2])
    yaw = now[:, 2] - pose.yaw
    velocity = pose.rotate_to_local(now[:, 3:5])
    past = pose.to_local(history[:, :-1, :2]) - center[:, None, :]
    past = np.where(np.isfinite(past), past, 0.0)
    objects = empty_objects(m)
    for i, key in enumerate(("x", "y", "yaw", "vx", "vy", "length", "width")):
        objects[key] = now[:, i]
    fc = forecast(objects, track, RISK_TIMES) if m else None
    prior = pose.to_local(fc.center) if m else np.zeros((0, len(RISK_TIMES), 2))
    prior_yaw = fc.yaw - pose.yaw if m else np.zeros((0, len(RISK_TIMES)))
    tokens = np.concatenate(
        [
            center / POSITION_SCALE,
            np.column_stack([np.cos(yaw), np.sin(yaw)]),
            velocity / SPEED_SCALE,
            np.column_stack([now[:, 5] / 5.0, now[:, 6] / 2.0]),
            np.linalg.norm(velocity, axis=1, keepdims=True) / SPEED_SCALE,
            past.reshape(m, 2 * HISTORY_STEPS) / 10.0,
            (prior - center[:, None, :]).reshape(m, 2 * len(RISK_TIMES)) / POSITION_SCALE,
        ],
        axis=1,
    ).astype(np.float32)
    return AgentInputs(tokens, center, yaw, now[:, 5].copy(), now[:, 6].copy(), velocity, prior, prior_yaw)


def ego_token(speed: float, steer: float, accel: float) -> np.ndarray:
    return np.array([speed / SPEED_SCALE, steer / 0.35, accel / 10.0], dtype=np.float32)


def bev_tokens(labels: np.ndarray | None, grid: BevGrid = LITE_GRID) -> np.ndarray:
    """(64, 6): class fractions in each of 8 x 8 patches spanning the lite grid's ±51.2 m, and the
    patch centres (scaled); zeros when no segmentation is available. Any BEV grid is accepted:
    its cells are binned by their centres."""
    patches = LITE_GRID.width // PATCH
    size = PATCH * LITE_GRID.resolution
    xs = LITE_GRID.x_min + (np.arange(patches) + 0.5) * size
    cy, cx = np.meshgrid(xs, xs, indexing="ij")
    centers = np.column_stack([cx.ravel(), cy.ravel()]) / POSITION_SCALE
    fractions = np.zeros((patches * patches, len(BEV_CLASSES)))
    if labels is not None:
        X, Y = grid.cell_centers()
        px = np.floor((X - LITE_GRID.x_min) / size).astype(np.int64)
        py = np.floor((Y - LITE_GRID.y_min) / size).astype(np.int64)
        inside = (px >= 0) & (px < patches) & (py >= 0) & (py < patches)
        classes = np.clip(np.asarray(labels).astype(np.int64), 0, len(BEV_CLASSES) - 1)
        index = (py * patches + px)[inside] * len(BEV_CLASSES) + classes[inside]
        counts = np.bincount(index, minlength=patches * patches * len(BEV_CLASSES)).reshape(-1, len(BEV_CLASSES))
        fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    return np.concatenate([fractions, centers], axis=1).astype(np.float32)


def select_agents(history: np.ndarray, pose: Pose, limit: int) -> np.ndarray:
    """Rows of ``history`` present now and near the risk grid, nearest first, at most ``limit``."""
    now = history[:, -1]
    present = np.all(np.isfinite(now), axis=1)
    local = pose.to_local(np.where(present[:, None], now[:, :2], 0.0))
    g = RISK_GRID
    near = (
        present
        & (local[:, 0] > g.x_min - 30)
        & (local[:, 0] < g.x_max + 30)
        & (local[:, 1] > g.y_min - 30)
        & (local[:, 1] < g.y_max + 30)
    )
    rows = np.flatnonzero(near)
    return rows[np.argsort(np.hypot(local[rows, 0], local[rows, 1]))][:limit]


def track_tokens(track: Track, pose: Pose) -> np.ndarray:
    """(TRACK_TOKENS, 7): centre-line samples from TRACK_BEHIND m behind the ego onwards, in ``base_link``."""
    s0, _, _ = track.project(np.array([[pose.x, pose.y]]))
    s = s0[0] - TRACK_BEHIND + TRACK_SPACING * np.arange(TRACK_TOKENS)
    points = pose.to_local(track.point_at(s))
    heading = track.heading_at(s) - pose.yaw
    left, right = track.widths_at(s)
    racing = track.racing_offset_at(s)
    return np.column_stack(
        [points / POSITION_SCALE, np.cos(heading), np.sin(heading), left / 10.0, right / 10.0, racing / 10.0]
    ).astype(np.float32)
