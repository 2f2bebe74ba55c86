"""Ray-cast LiDAR: a rig of one or more spinning (or sector) units, fully vectorized.

A unit fires ``beams`` x ``columns`` rays on a fixed elevation/azimuth grid; the rig casts all of
them at once against the world (Open3D), adds range noise, dropout and an intensity model, and
returns the points in the published ``lidar`` frame with each point's semantic class and instance
id. The sweep is cast from one world state (no motion distortion); ``time`` still reports when
each column would have fired, as a real driver does. Deterministic for a given random generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from racestack.transforms import planar_pose_matrix, pose_matrix
from simulation.schema import Section
from simulation.world import DynamicScene, World

# Published point layout: x, y, z, intensity, time (float32), ring (uint16), padded to 24 bytes.
POINT_DTYPE = np.dtype(
    {
        "names": ["x", "y", "z", "intensity", "time", "ring"],
        "formats": ["<f4", "<f4", "<f4", "<f4", "<f4", "<u2"],
        "offsets": [0, 4, 8, 12, 16, 20],
        "itemsize": 24,
    }
)
DEFAULT_LIDAR_POSE = (1.5, 0.0, 1.2, 0.0, 0.0, 0.0)


@dataclass(frozen=True, eq=False)
class LidarUnit:
    """One sensor head: its pose in the ``lidar`` frame, ray grid, range limits and noise."""

    pose: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    elevations: np.ndarray = field(default_factory=lambda: np.deg2rad(np.linspace(-25.0, 15.0, 128)))
    azimuth_range: tuple[float, float] = (-np.pi, np.pi)
    columns: int = 1024
    min_range: float = 1.0
    max_range: float = 200.0
    range_noise: float = 0.02
    dropout: float = 0.01
    intensity_noise: float = 0.05

    @property
    def beams(self) -> int:
        return int(self.elevations.shape[0])

    @property
    def azimuths(self) -> np.ndarray:
        """Column azimuths (rad), increasing; a full turn has no duplicated end column."""
        lo, hi = self.azimuth_range
        full = hi - lo >= 2.0 * np.pi - 1e-9
        return np.linspace(lo, hi, self.columns, endpoint=not full)

    def directions(self) -> np.ndarray:
        """(beams, columns, 3) unit ray directions in the unit's own frame."""
        elevation, azimuth = np.meshgrid(self.elevations, self.azimuths, indexing="ij")
        cos_e = np.cos(elevation)
        return np.stack([cos_e * np.cos(azimuth), cos_e * np.sin(azimuth), np.sin(elevation)], axis=-1)


@dataclass
class LidarSweep:
    """One sweep in the ``lidar`` frame, with per-point ground truth."""

    points: np.ndarray  # (N,) POINT_DTYPE
    semantic: np.ndarray  # (N,) uint8, simulation.meshes.SEMANTIC_CLASSES (NO_HIT never appears)
    instance: np.ndarray  # (N,) int32, -1 for static world geometry
    rays: int  # rays cast (hits or not)

    def __len__(self) -> int:
        return int(self.points.shape[0])


class _UnitRays:
    """Precomputed rays of one unit: directions in the ``lidar`` frame, rings and firing times."""

    def __init__(self, unit: LidarUnit, ring_offset: int, rate: float) -> None:
        self.unit = unit
        self.in_lidar = pose_matrix(unit.pose)
        local = unit.directions()
        self.local = local
        self.directions = (local.reshape(-1, 3) @ self.in_lidar[:3, :3].T).astype(np.float32)
        beams, columns = local.shape[:2]
        self.ring = np.repeat(np.arange(beams, dtype=np.uint16) + ring_offset, columns)
        self.time = np.tile((np.arange(columns, dtype=np.float32) / columns / rate).astype(np.float32), beams)
        self.elevations = unit.elevations
        self.azimuths = unit.azimuths
        self.beam_step = float(np.abs(np.diff(unit.elevations)).max()) if beams > 1 else np.pi
        self.column_step = float(np.abs(np.diff(self.azimuths)).max()) if columns > 1 else 2.0 * np.pi

    def __len__(self) -> int:
        return self.directions.shape[0]

    def candidates(self, unit_in_map: np.ndarray, dynamic: DynamicScene) -> np.ndarray:
        """Mask (beams*columns,) of the rays whose direction can reach a moving body's bounding sphere."""
        beams, columns = self.local.shape[:2]
        mask = np.zeros((beams, columns), dtype=bool)
        rotation, origin = unit_in_map[:3, :3], unit_in_map[:3, 3]
        centers = (dynamic.centers - origin) @ rotation
        for center, radius in zip(centers, dynamic.radii, strict=True):
            distance = float(np.linalg.norm(center))
            if distance - radius > self.unit.max_range:
                continue
            horizontal = float(np.hypot(center[0], center[1]))
            if distance <= radius or horizontal <= radius:
                mask[:] = True
                break
            az_half = np.arcsin(radius / horizontal) + self.column_step
            el_half = np.arcsin(radius / distance) + self.beam_step
            azimuth = np.arctan2(center[1], center[0])
            elevation = np.arctan2(center[2], horizontal)
            cols = np.flatnonzero(np.abs((self.azimuths - azimuth + np.pi) % (2.0 * np.pi) - np.pi) <= az_half)
            rows = np.flatnonzero(np.abs(self.elevations - elevation) <= el_half)
            mask[np.ix_(rows, cols)] = True
        return mask.reshape(-1)


class LidarRig:
    """The units mounted on the car; points are returned in the ``lidar`` frame (``pose`` in base_link)."""

    def __init__(
        self, units: Sequence[LidarUnit], pose: Sequence[float] = DEFAULT_LIDAR_POSE, rate: float = 10.0
    ) -> None:
        if not units:
            raise ValueError("a LiDAR rig needs at least one unit")
        self.units = tuple(units)
        self.pose = tuple(float(v) for v in pose)
        self.rate = float(rate)
        self.in_base = pose_matrix(self.pose)
        offsets = np.cumsum([0] + [u.beams for u in self.units[:-1]])
        self._rays = [_UnitRays(u, int(o), self.rate) for u, o in zip(self.units, offsets, strict=True)]
        self.ray_count = sum(len(r) for r in self._rays)
        per_ray = [np.full(len(r), i, np.int32) for i, r in enumerate(self._rays)]
        self._unit_of = np.concatenate(per_ray)
        self._directions = np.concatenate([r.directions for r in self._rays])
        self._origins = np.concatenate(
            [np.broadcast_to(r.in_lidar[:3, 3].astype(np.float32), (len(r), 3)) for r in self._rays]
        )
        self._time = np.concatenate([r.time for r in self._rays])
        self._ring = np.concatenate([r.ring for r in self._rays])
        self._min_range = self._per_unit("min_range")[self._unit_of]
        self._max_range = self._per_unit("max_range")[self._unit_of]

    def _per_unit(self, name: str) -> np.ndarray:
        return np.array([getattr(u, name) for u in self.units], dtype=np.float32)

    def sweep(
        self,
        world: World,
        ego_pose: Sequence[float],
        rng: np.random.Generator,
        dynamic: DynamicScene | None = None,
    ) -> LidarSweep:
        """Cast every ray of the rig with the car at ``ego_pose`` = (x, y, yaw) in ``map``."""
        lidar_in_map = planar_pose_matrix(*ego_pose) @ self.in_base
        rotation = lidar_in_map[:3, :3].T.astype(np.float32)
        rays = np.empty((self.ray_count, 6), dtype=np.float32)
        start = 0
        for unit_rays in self._rays:
            end = start + len(unit_rays)
            rays[start:end, :3] = (lidar_in_map @ unit_rays.in_lidar)[:3, 3]
            start = end
        directions = np.matmul(self._directions, rotation, out=rays[:, 3:])
        mask = None
        if dynamic is not None and len(dynamic):
            mask = np.concatenate([r.candidates(lidar_in_map @ r.in_lidar, dynamic) for r in self._rays])
        hits = world.cast(rays, dynamic, mask)
        distance = hits.distance
        keep = (distance >= self._min_range) & (distance <= self._max_range)
        index = np.flatnonzero(keep)
        index = index[rng.random(index.size, dtype=np.float32) >= self._per_unit("dropout")[self._unit_of[index]]]
        unit_of = self._unit_of[index]
        count = index.size
        noisy = distance[index] + self._per_unit("range_noise")[unit_of] * rng.standard_normal(count, dtype=np.float32)
        xyz = self._directions[index]
        xyz *= noisy[:, None]
        if len(self.units) > 1 or any(self.units[0].pose):
            xyz += self._origins[index]
        incidence = np.abs(np.einsum("ij,ij->i", hits.normal, directions))[index]  # cheaper than gathering rows
        gain = 1.0 + self._per_unit("intensity_noise")[unit_of] * rng.standard_normal(count, dtype=np.float32)
        # Calibrated reflectivity, as modern sensors report it, with a mild fall-off at grazing incidence.
        reflectivity, semantic, instance = hits.attributes(("reflectivity", "semantic", "instance"), index)
        intensity = reflectivity * (0.5 + 0.5 * incidence) * gain
        points = np.zeros(count, dtype=POINT_DTYPE)  # zeros: the padding bytes are published too
        points["x"], points["y"], points["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        points["intensity"] = np.clip(intensity, 0.0, 1.0)
        points["time"] = self._time[index]
        points["ring"] = self._ring[index]
        return LidarSweep(points, semantic, instance, self.ray_count)


def lidar_from_section(section: Section) -> LidarRig | None:
    """The rig of a scenario's ``sensors.lidar`` section (None when ``enabled: false``).

    Unit keys (beams, vertical_fov, ...) may sit directly in the section for a single unit, or in
    a ``units`` list, each unit with its own ``pose`` in the ``lidar`` frame.
    """
    enabled = section.boolean("enabled", True)
    pose = section.vector("pose", 6, DEFAULT_LIDAR_POSE)
    rate = section.number("rate", 10.0, min=1.0, max=100.0)
    if section.has("units"):
        unit_sections = section.sections("units")
        if not unit_sections:
            raise section.error("units", "needs at least one unit")
        units = []
        for unit_section in unit_sections:
            units.append(unit_from_section(unit_section, own_pose=True))
            unit_section.done()
    else:
        units = [unit_from_section(section)]
    section.done()
    return LidarRig(units, pose, rate) if enabled else None


def unit_from_section(section: Section, own_pose: bool = False) -> LidarUnit:
    """One unit's keys; the caller checks for unknown keys (a single unit shares the rig's section)."""
    defaults = LidarUnit()
    pose = section.vector("pose", 6, defaults.pose) if own_pose else defaults.pose
    if section.has("vertical_angles"):
        if section.has("vertical_fov") or section.has("beams"):
            raise section.error("vertical_angles", "give either vertical_angles or vertical_fov and beams")
        angles = _angle_list(section, "vertical_angles")
        elevations = np.deg2rad(np.sort(angles))
    else:
        beams = section.integer("beams", defaults.beams, min=1, max=1024)
        low, high = section.vector("vertical_fov", 2, (-25.0, 15.0))
        if not -90.0 <= low < high <= 90.0:
            raise section.error("vertical_fov", f"needs -90 <= low < high <= 90 (deg), got [{low:g}, {high:g}]")
        elevations = np.deg2rad(np.linspace(low, high, beams) if beams > 1 else np.array([(low + high) / 2.0]))
    az_low, az_high = section.vector("horizontal_fov", 2, (-180.0, 180.0))
    if not -360.0 <= az_low < az_high <= az_low + 360.0:
        raise section.error("horizontal_fov", f"needs low < high <= low + 360 (deg), got [{az_low:g}, {az_high:g}]")
    min_range = section.number("min_range", defaults.min_range, min=0.0, max=100.0)
    max_range = section.number("max_range", defaults.max_range, min=1.0, max=2000.0)
    if max_range <= min_range:
        raise section.error("max_range", f"{max_range:g} is not above min_range {min_range:g}")
    return LidarUnit(
        pose=pose,
        elevations=elevations,
        azimuth_range=(float(np.deg2rad(az_low)), float(np.deg2rad(az_high))),
        columns=section.integer("columns", defaults.columns, min=1, max=16384),
        min_range=min_range,
        max_range=max_range,
        range_noise=section.number("range_noise", defaults.range_noise, min=0.0, max=5.0),
        dropout=section.number("dropout", defaults.dropout, min=0.0, max=1.0),
        intensity_noise=section.number("intensity_noise", defaults.intensity_noise, min=0.0, max=1.0),
    )


def _angle_list(section: Section, name: str) -> np.ndarray:
    value = section.raw(name)
    if not isinstance(value, list) or not value:
        raise section.error(name, "expected a non-empty list of angles (deg)")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int | float) or not -90.0 <= item <= 90.0:
            raise section.error(f"{name}[{i}]", f"expected an angle in [-90, 90] deg, got {item!r}")
    return np.asarray(value, dtype=np.float64)
