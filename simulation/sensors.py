"""The simulated sensor rig of a scenario: LiDAR, camera, the flying objects, and the world they see.

``SensorRig(scenario, ego_pose, rng)`` validates the scenario's ``sensors`` and ``flying_objects``
sections at once (a bad key fails before anything runs) and spawns the flying objects; the world's
meshes are built on first use, so runs that never cast a ray do not pay for them. The simulation
calls ``step`` every physics step and ``lidar_sweep`` / ``camera_frame`` when it wants sensor data.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np

from simulation.camera import Camera, CameraFrame, camera_from_section
from simulation.flying_objects import FlyingObjects, flying_config_from_section
from simulation.lidar import LidarRig, LidarSweep, lidar_from_section
from simulation.schema import Section
from simulation.track import Track
from simulation.world import DynamicScene, Scenery, World, vehicle_bodies


def limit_blas_threads() -> None:
    """One BLAS thread: on a busy 2-core machine OpenBLAS' spinning workers turn the (N, 3) x (3, 3)
    ray rotations from 0.5 ms into 50 ms. The sensors' parallel work is Open3D's ray casting."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1, user_api="blas")


class SensorRig:
    """Sensors and flying objects of one run. ``vehicles`` arguments are OBJECT_DTYPE car tables in ``map``."""

    def __init__(
        self,
        track: Track,
        sensors: dict[str, Any] | None,
        flying_objects: Any,
        seed: int,
        ego_pose: Sequence[float],
        rng: np.random.Generator,
        source: str = "scenario",
    ) -> None:
        section = Section(sensors, "sensors", source)
        self.scenery = Scenery.from_section(section.section("scenery"))
        self.lidar: LidarRig | None = lidar_from_section(section.section("lidar"))
        camera = camera_from_section(section.section("camera"), seed)
        section.done()
        self.camera: Camera | None = Camera(camera, seed) if camera is not None else None
        config = flying_config_from_section(Section(flying_objects, "flying_objects", source))
        self.flying = FlyingObjects(config, rng, ego_pose)
        self.track = track
        self.seed = seed
        self._dynamic: tuple[tuple, DynamicScene] | None = None

    @classmethod
    def from_scenario(cls, scenario, ego_pose: Sequence[float], rng: np.random.Generator) -> SensorRig:
        """From a ``simulation.scenario.Scenario`` (its ``sensors`` and ``flying_objects`` sections)."""
        source = f"scenario {scenario.source or scenario.name}"
        return cls(scenario.track, scenario.sensors, scenario.flying_objects, scenario.seed, ego_pose, rng, source)

    @cached_property
    def world(self) -> World:
        limit_blas_threads()
        return World(self.track, self.scenery, seed=self.seed)

    def due(self, sensor: str, time: float, period: float) -> bool:
        """Whether ``sensor`` ("lidar" or "camera") fires in the frame (time - period, time] (s).

        The LiDAR fires at k / rate, the camera half a period later, so with equal rates below the
        frame rate they land on different frames and share the load (a real rig is not in sync either).
        """
        device = {"lidar": self.lidar, "camera": self.camera.config if self.camera else None}[sensor]
        if device is None:
            return False
        phase = 0.0 if sensor == "lidar" else 0.5
        ticks = np.floor(np.array([time - period, time]) * device.rate - phase + 1e-6)
        return bool(ticks[1] > ticks[0])

    def step(self, dt: float, ego_pose: Sequence[float]) -> None:
        """Advance the flying objects by one physics step."""
        self.flying.step(dt, ego_pose)

    def flying_objects_table(self) -> np.ndarray:
        """Ground-truth flying objects (OBJECT_DTYPE, ``map``, class ids drone 1 ... helicopter 4)."""
        return self.flying.objects_table()

    def dynamic_scene(self, vehicles: np.ndarray) -> DynamicScene:
        """The moving bodies now (cars of ``vehicles`` and flying objects), built once per state."""
        key = (self.flying.time, vehicles.tobytes())
        if self._dynamic is None or self._dynamic[0] != key:
            bodies = vehicle_bodies(vehicles) + self.flying.bodies()
            self._dynamic = (key, self.world.dynamic(bodies))
        return self._dynamic[1]

    def lidar_sweep(
        self, ego_pose: Sequence[float], vehicles: np.ndarray, rng: np.random.Generator
    ) -> LidarSweep | None:
        """A sweep with the ego at (x, y, yaw); None when the scenario has no LiDAR."""
        if self.lidar is None:
            return None
        return self.lidar.sweep(self.world, ego_pose, rng, self.dynamic_scene(vehicles))

    def camera_frame(
        self, ego_pose: Sequence[float], vehicles: np.ndarray, rng: np.random.Generator
    ) -> CameraFrame | None:
        """An image and its 2D boxes with the ego at (x, y, yaw); None when the scenario has no camera."""
        if self.camera is None:
            return None
        return self.camera.render(self.world, ego_pose, rng, self.dynamic_scene(vehicles))
