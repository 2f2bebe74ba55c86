"""The headless simulator: a scenario's track, ego, opponents and sensors, stepped deterministically.

``Simulation.from_scenario("oval_overtake")`` builds everything from a scenario; ``step(command)``
advances one physics step (``None``: the privileged expert drives), ``step_frame`` one frame
(``1/rate``). State is exposed for exporters and the node: ``time``, ``frame``, ``ego``,
``opponents``, ``objects_table()`` (ground-truth cars in ``map``), ``odometry()``, ``bev_labels()``,
and the sensors ``lidar_sweep()`` / ``camera_frame()``. Every random draw comes from generators
seeded by the scenario seed, one per consumer, so the same seed gives the same run bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from racestack.grid import BevGrid
from racestack.objects import CLASS_ID, empty_objects
from simulation.expert import ExpertDriver
from simulation.ground_truth import bev_labels
from simulation.scenario import Scenario, load_scenario, timing_problem
from simulation.schema import ConfigError
from simulation.sensors import SensorRig
from simulation.vehicles import (
    RACING,
    Command,
    Opponent,
    Traffic,
    VehicleState,
    box_corners,
    boxes_overlap,
    make_opponent,
    step_ego,
    step_opponent,
)

EGO_INSTANCE = 0  # instance id of the ego car; opponents are 1..N
OPPONENT_REPLAN_STEPS = 5
_RNG_STREAMS = ("odometry", "lidar", "camera", "flying_objects")


@dataclass(frozen=True)
class Odometry:
    """What /localization/odometry carries: base_link pose in ``map``, twist in base_link (+ noise)."""

    time: float
    x: float
    y: float
    yaw: float
    v: float
    yaw_rate: float
    accel: float


@dataclass
class Events:
    """Safety bookkeeping of the ego: collision and track-limit onsets, laps and their times."""

    collisions: int = 0
    track_limit_violations: int = 0
    laps: int = 0
    lap_times: list[float] = field(default_factory=list)
    distance: float = 0.0
    colliding: set[int] = field(default_factory=set)
    off_track: bool = False
    max_excursion: float = -np.inf


class Simulation:
    """One scenario run. Not thread-safe; one instance per process or exporter worker."""

    def __init__(self, scenario: Scenario) -> None:
        problem = timing_problem(scenario.rate, scenario.physics_dt)
        if problem:
            raise ConfigError(f"scenario {scenario.source or scenario.name}", "rate", problem)
        self.scenario = scenario
        self.track = scenario.track
        self.ego_params = scenario.ego.params
        self.dt = scenario.physics_dt
        self.time = 0.0
        self.steps = 0
        self.frame = 0
        seeds = np.random.SeedSequence(scenario.seed).spawn(len(_RNG_STREAMS))
        self.rng = {name: np.random.default_rng(seq) for name, seq in zip(_RNG_STREAMS, seeds, strict=True)}
        self.expert = ExpertDriver(self.track, self.ego_params, scenario.expert)
        self.ego = self._ego_start()
        self.opponents: list[Opponent] = [
            make_opponent(spec, EGO_INSTANCE + 1 + i, self.track) for i, spec in enumerate(scenario.opponents)
        ]
        self.sensors = SensorRig.from_scenario(scenario, self.ego_pose, self.rng["flying_objects"])
        self.events = Events()
        self.last_command = Command()
        self._ego_sd = self._project_ego()[0]
        self._lap_start = 0.0
        self._odometry: tuple[int, Odometry] | None = None

    @classmethod
    def from_scenario(
        cls, source: str | Path | dict[str, Any] | Scenario, seed: int | None = None, **overrides: Any
    ) -> Simulation:
        """From a scenario name, path, mapping or object; ``seed``/``overrides`` replace its fields."""
        scenario = source if isinstance(source, Scenario) else load_scenario(source)
        if seed is not None:
            overrides["seed"] = seed
        return cls(replace(scenario, **overrides) if overrides else scenario)

    # -- stepping ----------------------------------------------------------------------------

    def step(self, command: Command | None = None) -> None:
        """One physics step of ``physics_dt``; ``command`` None lets the expert drive."""
        traffic = [Traffic(o.instance_id, o.s, o.d, o.v) for o in self.opponents]
        ego_s, ego_d = self._ego_sd
        if command is None:
            command = self.expert.command(self.ego, traffic, (ego_s, ego_d))
        self.last_command = command
        everyone = [*traffic, Traffic(EGO_INSTANCE, ego_s, ego_d, self.ego.v)]
        self.ego = step_ego(self.ego, command, self.ego_params, self.dt)
        self.time = (self.steps + 1) * self.dt
        replan = self.steps % OPPONENT_REPLAN_STEPS == 0
        for opponent in self.opponents:
            others = [t for t in everyone if t.instance_id != opponent.instance_id]
            step_opponent(opponent, self.track, self.time, self.dt, others, replan)
        self.sensors.step(self.dt, self.ego_pose)
        self.steps += 1
        self._check_events()

    def step_frame(self, command: Command | None = None) -> int:
        """Physics steps up to the next frame (``1/rate``) under one command; returns the new frame."""
        for _ in range(self.scenario.substeps):
            self.step(command)
        self.frame += 1
        return self.frame

    @property
    def frame_time(self) -> float:
        """Time of the current frame (its sensor data and ground truth)."""
        return self.frame / self.scenario.rate

    def lidar_due(self) -> bool:
        """Whether the LiDAR fires in the current frame (at k / its rate; ``SensorRig.due``)."""
        return self.sensors.due("lidar", self.frame_time, 1.0 / self.scenario.rate)

    def camera_due(self) -> bool:
        """Whether the camera fires in the current frame (half a period after the LiDAR)."""
        return self.sensors.due("camera", self.frame_time, 1.0 / self.scenario.rate)

    @property
    def done(self) -> bool:
        return self.time >= self.scenario.duration - 1e-9

    # -- state -------------------------------------------------------------------------------

    def ego_frenet(self) -> tuple[float, float]:
        """(s, d) of the ego's body-box centre on the centre line."""
        return self._ego_sd

    def ego_center(self) -> np.ndarray:
        offset = self.ego_params.center_offset
        return np.array([self.ego.x + offset * np.cos(self.ego.yaw), self.ego.y + offset * np.sin(self.ego.yaw)])

    @property
    def ego_pose(self) -> tuple[float, float, float]:
        return (self.ego.x, self.ego.y, self.ego.yaw)

    def objects_table(self) -> np.ndarray:
        """Ground-truth opponent cars (OBJECT_DTYPE) in ``map``: box centres, true velocities, ids."""
        table = empty_objects(len(self.opponents))
        for row, o in zip(table, self.opponents, strict=True):
            p = o.params
            row["x"] = o.x + p.center_offset * np.cos(o.yaw)
            row["y"] = o.y + p.center_offset * np.sin(o.yaw)
            row["z"] = p.height / 2.0
            row["length"], row["width"], row["height"] = p.length, p.width, p.height
            row["yaw"], row["vx"], row["vy"] = o.yaw, o.vx, o.vy
            row["class_id"] = CLASS_ID["car"]
            row["track_id"] = o.instance_id
            row["age"] = self.frame
        return table

    def ego_table(self) -> np.ndarray:
        """The ego car as a one-row object table in ``map`` (for exporters and evaluation)."""
        table = empty_objects(1)
        p, center = self.ego_params, self.ego_center()
        table["x"], table["y"], table["z"] = center[0], center[1], p.height / 2.0
        table["length"], table["width"], table["height"] = p.length, p.width, p.height
        table["yaw"] = self.ego.yaw
        table["vx"], table["vy"] = self.ego.v * np.cos(self.ego.yaw), self.ego.v * np.sin(self.ego.yaw)
        table["class_id"], table["track_id"], table["age"] = CLASS_ID["car"], EGO_INSTANCE, self.frame
        return table

    def odometry(self) -> Odometry:
        """The ego state as /localization/odometry reports it (noise from the scenario, drawn once per step)."""
        if self._odometry is not None and self._odometry[0] == self.steps:
            return self._odometry[1]
        noise = self.scenario.noise
        rng = self.rng["odometry"]
        draw = rng.standard_normal(4)
        odometry = Odometry(
            time=self.time,
            x=self.ego.x + noise.position * draw[0],
            y=self.ego.y + noise.position * draw[1],
            yaw=self.ego.yaw + noise.yaw * draw[2],
            v=max(self.ego.v + noise.speed * draw[3], 0.0),
            yaw_rate=self.ego.yaw_rate,
            accel=self.ego.accel,
        )
        self._odometry = (self.steps, odometry)
        return odometry

    def bev_labels(self, grid: BevGrid, pose: tuple[float, float, float] | None = None) -> np.ndarray:
        """BEV class ids around the ego (or ``pose``) on ``grid``; other cars are ``vehicle``."""
        return bev_labels(self.track, pose or self.ego_pose, self.objects_table(), grid)

    # -- sensors (simulation.world / lidar / camera) ----------------------------------------

    def flying_objects_table(self) -> np.ndarray:
        """Ground-truth flying objects (OBJECT_DTYPE in ``map``, ``track_id`` = instance id >= 1000)."""
        return self.sensors.flying_objects_table()

    def dynamic_objects(self) -> np.ndarray:
        """Everything that moves and that sensors see: opponent cars and flying objects."""
        return np.concatenate([self.objects_table(), self.flying_objects_table()])

    def lidar_sweep(self):
        """A LiDAR sweep (``simulation.lidar.LidarSweep``) of the current state, or None without a LiDAR."""
        return self.sensors.lidar_sweep(self.ego_pose, self.objects_table(), self.rng["lidar"])

    def camera_frame(self):
        """An image with its 2D boxes (``simulation.camera.CameraFrame``) of the current state, or None."""
        return self.sensors.camera_frame(self.ego_pose, self.objects_table(), self.rng["camera"])

    # -- bookkeeping -------------------------------------------------------------------------

    def _ego_start(self) -> VehicleState:
        spec = self.scenario.ego
        s = spec.start_s
        d = float(self.track.racing_offset_at(s)) if spec.lane == RACING else float(spec.lane)
        center = self.track.frenet_to_xy(s, d)
        yaw = float(self.track.heading_at(s))
        back = self.ego_params.center_offset
        return VehicleState(
            x=float(center[0] - back * np.cos(yaw)), y=float(center[1] - back * np.sin(yaw)), yaw=yaw, v=spec.speed
        )

    def _project_ego(self) -> tuple[tuple[float, float], np.ndarray, np.ndarray, np.ndarray]:
        """((s, d) of the box centre, corners, and the corners' s and d), with one projection."""
        p = self.ego_params
        center = self.ego_center()
        corners = box_corners(center[0], center[1], self.ego.yaw, p.length, p.width)
        s, d, _ = self.track.project(np.vstack([center[None], corners]))
        return (float(s[0]), float(d[0])), corners, s[1:], d[1:]

    def _check_events(self) -> None:
        """Collision and track-limit onsets (ego footprint vs other cars and vs the bounds), laps."""
        events = self.events
        previous_s = self._ego_sd[0]
        self._ego_sd, corners, s, d = self._project_ego()
        left, right = self.track.widths_at(s)
        excursion = float(np.max(np.maximum(d - left, -right - d)))
        events.max_excursion = max(events.max_excursion, excursion)
        off = excursion > 0.0
        if off and not events.off_track:
            events.track_limit_violations += 1
        events.off_track = off
        touching = set()
        reach = self.ego_params.length + 1.0
        for o in self.opponents:
            if math.hypot(o.x - self.ego.x, o.y - self.ego.y) > 2.0 * reach:
                continue
            c = o.params.center_offset
            other = box_corners(
                o.x + c * math.cos(o.yaw), o.y + c * math.sin(o.yaw), o.yaw, o.params.length, o.params.width
            )
            if boxes_overlap(corners, other):
                touching.add(o.instance_id)
        events.collisions += len(touching - events.colliding)
        events.colliding = touching
        events.distance += float(self.track.wrap_ds(self._ego_sd[0] - previous_s))
        if events.distance >= (events.laps + 1) * self.track.length:
            events.laps += 1
            events.lap_times.append(self.time - self._lap_start)
            self._lap_start = self.time

