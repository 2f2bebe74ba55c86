"""The risk map from live inputs (no ROS): track histories, tokens, the network, the rendered map.

Keeps each track's recent states (by ``track_id``) so agent tokens carry a short history; runs the
network through ``racestack.inference`` (torch, ONNX Runtime or TensorRT); renders the published
map with ``model.render_window``.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from planning_nodes.opponents import ground_objects
from planning_nodes.riskmap.features import (
    HISTORY_DT,
    HISTORY_STEPS,
    Pose,
    agent_inputs,
    bev_tokens,
    ego_token,
    select_agents,
    track_tokens,
)
from planning_nodes.riskmap.geometry import RISK_GRID, RISK_TIMES, severity
from planning_nodes.riskmap.model import MAX_AGENTS, render_window
from racestack.grid import LITE_GRID, BevGrid
from racestack.objects import empty_objects
from simulation.track import Track

STATE_FIELDS = ("x", "y", "yaw", "vx", "vy", "length", "width")


class TrackHistory:
    """Recent states of each track id, looked up at past times (NaN where a track was not seen)."""

    def __init__(self, keep_s: float = 2.0, tolerance_s: float = 0.07) -> None:
        self.keep_s, self.tolerance_s = keep_s, tolerance_s
        self.states: dict[int, deque] = {}

    def clear(self) -> None:
        self.states.clear()

    def add(self, table: np.ndarray, time: float) -> None:
        for row in table:
            key = int(row["track_id"])
            self.states.setdefault(key, deque()).append((time, np.array([row[f] for f in STATE_FIELDS], float)))
        for key in list(self.states):
            buffer = self.states[key]
            while buffer and buffer[0][0] < time - self.keep_s:
                buffer.popleft()
            if not buffer:
                del self.states[key]

    def at(self, table: np.ndarray, time: float) -> np.ndarray:
        """(M, HISTORY_STEPS + 1, 7) for the rows of ``table`` (last step = the table itself)."""
        out = np.full((table.shape[0], HISTORY_STEPS + 1, len(STATE_FIELDS)), np.nan)
        wanted = time - HISTORY_DT * np.arange(HISTORY_STEPS, 0, -1)
        for i, row in enumerate(table):
            out[i, -1] = [row[f] for f in STATE_FIELDS]
            buffer = self.states.get(int(row["track_id"]))
            if not buffer or int(row["track_id"]) < 0:
                continue
            times = np.array([t for t, _ in buffer])
            values = np.stack([v for _, v in buffer])
            nearest = np.abs(times[None, :] - wanted[:, None]).argmin(axis=1)
            ok = np.abs(times[nearest] - wanted) <= self.tolerance_s
            out[i, :-1][ok] = values[nearest[ok]]
        return out


class RiskPredictor:
    """Risk maps (T, H, W) on RISK_GRID in ``base_link`` from objects, ego and BEV context."""

    def __init__(self, runner, track: Track) -> None:
        self.runner, self.track = runner, track
        self.history = TrackHistory()

    def predict(
        self,
        objects: np.ndarray | None,
        ego_pose: tuple[float, float, float],
        ego_speed: float,
        ego_steer: float,
        ego_accel: float,
        time: float,
        bev_labels: np.ndarray | None = None,
        bev_grid: BevGrid | None = None,
    ) -> np.ndarray:
        table = ground_objects(objects if objects is not None else empty_objects(0))
        history = self.history.at(table, time)
        self.history.add(table, time)
        context = bev_tokens(bev_labels, bev_grid or LITE_GRID)
        return self.predict_from_history(history, Pose(*ego_pose), ego_speed, ego_steer, ego_accel, context)

    def predict_from_history(
        self, history: np.ndarray, pose: Pose, speed: float, steer: float, accel: float, context: np.ndarray
    ) -> np.ndarray:
        """The map for object histories (M, HISTORY_STEPS + 1, 7) in ``map`` and BEV tokens (64, 6)."""
        rows = select_agents(history, pose, MAX_AGENTS)
        if rows.size == 0:
            return np.zeros((len(RISK_TIMES), *RISK_GRID.shape), dtype=np.float32)
        inputs = agent_inputs(history[rows], pose, self.track)
        m = rows.size
        agents = np.zeros((1, MAX_AGENTS, inputs.tokens.shape[1]), np.float32)
        mask = np.zeros((1, MAX_AGENTS), np.float32)
        prior = np.zeros((1, MAX_AGENTS, len(RISK_TIMES), 2), np.float32)
        prior_yaw = np.zeros((1, MAX_AGENTS, len(RISK_TIMES)), np.float32)
        agents[0, :m], mask[0, :m] = inputs.tokens, 1.0
        prior[0, :m] = inputs.prior
        prior_yaw[0, :m] = (inputs.prior_yaw + np.pi) % (2 * np.pi) - np.pi
        mean, sigma, yaw, weight = self.runner(
            agents,
            mask,
            ego_token(speed, steer, accel)[None],
            context[None],
            track_tokens(self.track, pose)[None],
            prior,
            prior_yaw,
        )
        sev = severity(np.array([speed, 0.0]), inputs.velocity)
        return render_window(
            mean[0, :m], sigma[0, :m], yaw[0, :m], weight[0, :m], inputs.length, inputs.width, sev, RISK_GRID
        )
