"""The world the simulated sensors see: labelled triangle meshes and ray casting with Open3D.

The static world (ground, track surface with edge lines and a start/finish line, barriers on both
bounds, trees, a distant tree line, grandstands) is built once from a ``Track`` into one Open3D
``RaycastingScene``. Moving things (opponent cars, flying objects) form a small second scene rebuilt
each frame; a ray's hit is the nearer of the two. Every triangle carries its semantic class and
instance id, so each LiDAR point and camera pixel knows what it hit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.spatial import cKDTree

from racestack.objects import CLASS_ID
from racestack.transforms import pose_matrix
from simulation.meshes import (
    NO_HIT,
    NO_INSTANCE,
    SEMANTIC_ID,
    Mesh,
    box,
    ellipsoid,
    join,
    make_mesh,
    prism,
    quad_strip,
)
from simulation.schema import Section
from simulation.track import Track

GROUND_Z = -0.03  # the grass plane lies just below the track surface so the two never fight
EDGE_LINE_WIDTH = 0.3

_ASPHALT = (0.16, 0.16, 0.17)
_LINE = (0.85, 0.85, 0.82)
_CONCRETE = (0.62, 0.61, 0.58)
_GRASS = (0.19, 0.33, 0.11)
_TRUNK = (0.28, 0.2, 0.13)
_FOLIAGE = np.array([(0.12, 0.26, 0.08), (0.16, 0.31, 0.1), (0.1, 0.2, 0.07), (0.2, 0.3, 0.12)])
_ADVERTS = np.array(
    [(0.75, 0.1, 0.1), (0.1, 0.25, 0.7), (0.9, 0.75, 0.1), (0.95, 0.95, 0.95), (0.1, 0.5, 0.2), (0.9, 0.4, 0.05)]
)
CAR_COLORS = np.array(
    [
        (0.8, 0.05, 0.05),
        (0.05, 0.2, 0.75),
        (0.95, 0.8, 0.05),
        (0.9, 0.9, 0.9),
        (0.05, 0.55, 0.2),
        (0.95, 0.45, 0.05),
        (0.5, 0.1, 0.6),
        (0.1, 0.1, 0.1),
    ]
)


@dataclass(frozen=True)
class Scenery:
    """What stands around the track (scenario ``sensors.scenery``)."""

    trees_per_km: float = 60.0
    tree_line_per_km: float = 250.0
    grandstands: bool = True
    ground_margin: float = 2500.0

    @classmethod
    def from_section(cls, section: Section) -> Scenery:
        scenery = cls(
            trees_per_km=section.number("trees_per_km", cls.trees_per_km, min=0.0, max=1000.0),
            tree_line_per_km=section.number("tree_line_per_km", cls.tree_line_per_km, min=0.0, max=2000.0),
            grandstands=section.boolean("grandstands", cls.grandstands),
            ground_margin=section.number("ground_margin", cls.ground_margin, min=50.0, max=20000.0),
        )
        section.done()
        return scenery


@dataclass(frozen=True)
class Body:
    """A moving object of one frame: its mesh in ``map`` and a bounding sphere for ray culling."""

    mesh: Mesh
    center: np.ndarray  # (3,)
    radius: float
    instance: int
    class_id: int  # racestack.objects.OBJECT_CLASSES


class RayHits:
    """First hits of a batch of rays; per-triangle attributes are looked up on demand for chosen rays.

    ``distance`` is inf where a ray hit nothing; ``triangle`` is -1 there, else an index into the
    static mesh, or into the frame's dynamic mesh where ``dynamic`` is set.
    """

    def __init__(
        self,
        distance: np.ndarray,
        normal: np.ndarray,
        triangle: np.ndarray,
        dynamic: np.ndarray,
        static_mesh: Mesh,
        dynamic_mesh: Mesh | None,
    ) -> None:
        self.distance = distance  # (N,) float32, in units of the ray direction's length
        self.normal = normal  # (N, 3) float32, triangle normal (either side)
        self.triangle = triangle  # (N,) int64
        self.dynamic = dynamic  # (N,) bool
        self.static_mesh = static_mesh
        self.dynamic_mesh = dynamic_mesh

    @property
    def hit(self) -> np.ndarray:
        return self.triangle >= 0

    def attribute(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """A ``Mesh`` attribute (semantic, instance, albedo, texture, reflectivity) per ray of ``rows``."""
        return self.attributes((name,), rows)[0]

    def attributes(self, names: Sequence[str], rows: np.ndarray | None = None) -> list[np.ndarray]:
        """Several ``Mesh`` attributes per ray of ``rows``, sharing the index work."""
        triangle = self.triangle if rows is None else self.triangle[rows]
        dynamic = self.dynamic if rows is None else self.dynamic[rows]
        valid = triangle >= 0
        if self.dynamic_mesh is not None and dynamic.any():
            sources = ((self.static_mesh, valid & ~dynamic), (self.dynamic_mesh, dynamic))
        elif valid.all():
            sources = ((self.static_mesh, None),)
        else:
            sources = ((self.static_mesh, valid),)
        out = []
        for name in names:
            fill = {"semantic": NO_HIT, "instance": NO_INSTANCE}.get(name, 0)
            values = getattr(self.static_mesh, name)
            column = np.full((triangle.shape[0], *values.shape[1:]), fill, dtype=values.dtype)
            for mesh, select in sources:
                if select is None:
                    column = getattr(mesh, name)[triangle]
                else:
                    column[select] = getattr(mesh, name)[triangle[select]]
            out.append(column)
        return out


class MeshScene:
    """An Open3D ray-casting scene over one mesh, mapping hit triangles back to their attributes."""

    def __init__(self, mesh: Mesh, threads: int = 0) -> None:
        import open3d as o3d  # here, not at module level: importing Open3D takes seconds

        self._tensor = o3d.core.Tensor
        self._from_numpy = o3d.core.Tensor.from_numpy
        self.mesh = mesh
        self.threads = threads
        self._scene = o3d.t.geometry.RaycastingScene()
        if mesh.triangle_count:
            self._scene.add_triangles(
                self._tensor(np.ascontiguousarray(mesh.vertices, dtype=np.float32)),
                self._tensor(np.ascontiguousarray(mesh.triangles, dtype=np.uint32)),
            )

    def cast(self, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(distance, triangle index or -1, normal) of the first hit of each (N, 6) float32 ray."""
        count = rays.shape[0]
        if count == 0 or self.mesh.triangle_count == 0:
            return np.full(count, np.inf, np.float32), np.full(count, -1, np.int64), np.zeros((count, 3), np.float32)
        result = self._scene.cast_rays(self._from_numpy(np.ascontiguousarray(rays, dtype=np.float32)), self.threads)
        distance = result["t_hit"].numpy()
        triangle = result["primitive_ids"].numpy().astype(np.int64)
        triangle[~np.isfinite(distance)] = -1
        return distance, triangle, result["primitive_normals"].numpy()


class DynamicScene:
    """The moving bodies of one frame, joined into one small scene."""

    def __init__(self, bodies: Sequence[Body], threads: int = 0) -> None:
        self.bodies = tuple(bodies)
        self.scene = MeshScene(join([b.mesh for b in self.bodies]), threads)
        self.centers = np.array([b.center for b in self.bodies], dtype=np.float64).reshape(-1, 3)
        self.radii = np.array([b.radius for b in self.bodies], dtype=np.float64)
        self.instances = np.array([b.instance for b in self.bodies], dtype=np.int32)

    def __len__(self) -> int:
        return len(self.bodies)


class World:
    """Static geometry of a track plus ray casting against it and a frame's moving bodies."""

    def __init__(self, track: Track, scenery: Scenery | None = None, seed: int = 0, threads: int = 0) -> None:
        self.track = track
        self.scenery = scenery or Scenery()
        self.threads = threads
        self.static = MeshScene(static_mesh(track, self.scenery, np.random.default_rng([seed, 17])), threads)

    def dynamic(self, bodies: Sequence[Body]) -> DynamicScene:
        return DynamicScene(bodies, self.threads)

    def cast(
        self, rays: np.ndarray, dynamic: DynamicScene | None = None, dynamic_rays: np.ndarray | None = None
    ) -> RayHits:
        """First hits of (N, 6) rays ``[origin, direction]`` in ``map``.

        Only the rays selected by ``dynamic_rays`` (indices or a mask; all when None) are tested
        against the moving bodies, so sensors can skip the rays that cannot reach any of them.
        """
        distance, triangle, normal = self.static.cast(rays)
        from_dynamic = np.zeros(rays.shape[0], dtype=bool)
        if dynamic is not None and len(dynamic):
            select = np.arange(rays.shape[0]) if dynamic_rays is None else np.asarray(dynamic_rays)
            if select.dtype == bool:
                select = np.flatnonzero(select)
            if select.size:
                d_dist, d_tri, d_normal = dynamic.scene.cast(rays[select])
                nearer = d_dist < distance[select]
                chosen = select[nearer]
                distance[chosen] = d_dist[nearer]
                triangle[chosen] = d_tri[nearer]
                normal[chosen] = d_normal[nearer]
                from_dynamic[chosen] = True
        dynamic_mesh = dynamic.scene.mesh if dynamic is not None else None
        return RayHits(distance, normal, triangle, from_dynamic, self.static.mesh, dynamic_mesh)


# -- vehicles ----------------------------------------------------------------------------------


def car_template() -> Mesh:
    """A single-seater race car (tub, sidepods, wings, open wheels) filling a unit box, body coloured white.

    Scaled per vehicle to its (length, width, height), so LiDAR points always lie inside the
    ground-truth box. ``albedo`` white marks body panels that take the livery colour.
    """
    white, dark, tyre = (1.0, 1.0, 1.0), (0.08, 0.08, 0.09), (0.03, 0.03, 0.03)
    paint = {"reflectivity": 0.35, "texture": 0.02}
    parts = [
        box((0.0, 0.0, -0.2), (0.9, 0.42, 0.35), white, **paint),
        box((0.38, 0.0, -0.28), (0.25, 0.22, 0.2), white, **paint),
        box((-0.05, 0.0, -0.22), (0.4, 0.8, 0.3), white, **paint),
        box((-0.12, 0.0, 0.15), (0.14, 0.14, 0.7), dark, reflectivity=0.2),
        box((0.1, 0.0, 0.05), (0.2, 0.3, 0.1), dark, reflectivity=0.1),
        box((0.46, 0.0, -0.44), (0.08, 0.96, 0.1), dark, reflectivity=0.25),
        box((-0.46, 0.0, 0.38), (0.08, 0.8, 0.1), white, **paint),
        box((-0.44, 0.0, 0.0), (0.04, 0.06, 0.7), dark, reflectivity=0.2),
    ]
    for x in (-0.33, 0.33):
        for y in (-0.42, 0.42):
            parts.append(box((x, y, -0.22), (0.14, 0.16, 0.56), tyre, reflectivity=0.05))
    return join(parts)


_CAR = car_template()


def vehicle_bodies(table: np.ndarray) -> list[Body]:
    """Bodies for the car rows (class ``car``) of an OBJECT_DTYPE table in ``map``.

    Livery colours follow the instance id (``track_id``), so a car keeps its colour in every frame.
    """
    bodies = []
    for row in table[table["class_id"] == CLASS_ID["car"]]:
        instance = int(row["track_id"])
        size = (float(row["length"]), float(row["width"]), float(row["height"]))
        pose = pose_matrix([row["x"], row["y"], row["z"], 0.0, 0.0, row["yaw"]])
        center = np.array([row["x"], row["y"], row["z"]], dtype=np.float64)
        mesh = _car_mesh(instance, size).transformed(pose)
        bodies.append(Body(mesh, center, float(np.linalg.norm(size) / 2.0), instance, CLASS_ID["car"]))
    return bodies


@lru_cache(maxsize=256)
def _car_mesh(instance: int, size: tuple[float, float, float]) -> Mesh:
    """The car of ``instance`` in its box frame: scaled, labelled and painted (the same every frame)."""
    mesh = _CAR.scaled(size).labelled(SEMANTIC_ID["vehicle"], instance)
    painted = (mesh.albedo == 1.0).all(axis=1)
    albedo = np.where(painted[:, None], CAR_COLORS[instance % len(CAR_COLORS)], mesh.albedo).astype(np.float32)
    return Mesh(mesh.vertices, mesh.triangles, albedo, mesh.texture, mesh.reflectivity, mesh.semantic, mesh.instance)


# -- static world --------------------------------------------------------------------------------


def static_mesh(track: Track, scenery: Scenery, rng: np.random.Generator) -> Mesh:
    """Ground, track surface, start/finish line, barriers and scenery of ``track`` in ``map``."""
    parts = [ground_mesh(track, scenery.ground_margin, rng), track_surface_mesh(track), start_line_mesh(track)]
    parts += barrier_meshes(track, rng)
    near = tree_positions(track, rng, scenery.trees_per_km, (6.0, 70.0))
    far = tree_positions(track, rng, scenery.tree_line_per_km, (120.0, 450.0))
    stand = grandstand_placement(track) if scenery.grandstands else None
    if stand is not None:
        near = near[~stand.covers(near)]
        parts.append(grandstands_mesh(stand))
    parts.append(trees_mesh(near, rng, (5.0, 16.0), sides=8))
    parts.append(trees_mesh(far, rng, (10.0, 25.0), sides=5))
    return join(parts)


def _edge(track: Track, offset: np.ndarray | float, z: float = 0.0) -> np.ndarray:
    """(N, 3) points at lateral offset(s) ``offset`` (left > 0) of every centre-line vertex."""
    xy = track.centerline + track.normal * np.asarray(offset, dtype=np.float64).reshape(-1, 1)
    return np.column_stack([xy, np.full(len(xy), z)])


def track_surface_mesh(track: Track) -> Mesh:
    """Asphalt between the bounds, with a white edge line along each barrier."""
    left, right = track.left_width, track.right_width
    line = min(EDGE_LINE_WIDTH, float(min(left.min(), right.min())) / 4.0)
    track_id = SEMANTIC_ID["track"]
    surface = {"semantic": track_id}
    return join(
        [
            quad_strip(_edge(track, left), _edge(track, left - line), _LINE, reflectivity=0.6, texture=0.05, **surface),
            quad_strip(
                _edge(track, left - line),
                _edge(track, -(right - line)),
                _ASPHALT,
                reflectivity=0.12,
                texture=0.15,
                **surface,
            ),
            quad_strip(
                _edge(track, -(right - line)), _edge(track, -right), _LINE, reflectivity=0.6, texture=0.05, **surface
            ),
        ]
    )


def start_line_mesh(track: Track, length: float = 1.2, cell: float = 0.6) -> Mesh:
    """A chequered start/finish line across the track at s = 0, 5 mm above the asphalt."""
    origin = track.centerline[0]
    forward = np.array([np.cos(track.heading[0]), np.sin(track.heading[0])])
    left = track.normal[0]
    across = np.arange(-track.right_width[0], track.left_width[0] - 1e-6, cell)
    along = np.arange(0.0, length - 1e-6, cell)
    a, d = np.meshgrid(along, across, indexing="ij")
    a, d = a.reshape(-1), d.reshape(-1)
    d_end = np.minimum(d + cell, track.left_width[0])
    along_corners = np.stack([a, a + cell, a + cell, a], axis=1)[..., None]
    across_corners = np.stack([d, d, d_end, d_end], axis=1)[..., None]
    xy = origin + along_corners * forward + across_corners * left
    vertices = np.concatenate([xy, np.full((*xy.shape[:2], 1), 0.005)], axis=2).reshape(-1, 3)
    base = 4 * np.arange(len(a))
    triangles = np.concatenate([np.stack([base, base + 1, base + 2], 1), np.stack([base, base + 2, base + 3], 1)])
    parity = (np.round(a / cell) + np.round((d + track.right_width[0]) / cell)) % 2
    color = np.where(parity[:, None] == 0, 0.05, 0.9).repeat(3, axis=1)
    return make_mesh(
        vertices, triangles, np.concatenate([color, color]), reflectivity=0.5, semantic=SEMANTIC_ID["track"]
    )


def barrier_meshes(track: Track, rng: np.random.Generator) -> list[Mesh]:
    """Walls on both bounds: inner face, top and outer face, with advertising panels here and there."""
    height, thickness = track.barrier_height, track.barrier_thickness
    count = len(track.centerline)
    panel = np.arange(count) // 12
    advert = rng.random(panel.max() + 1) < 0.35
    colors = _ADVERTS[rng.integers(0, len(_ADVERTS), panel.max() + 1)]
    albedo = np.where(advert[panel][:, None], colors[panel], np.asarray(_CONCRETE)).astype(np.float32)
    meshes = []
    for inner, outer in (
        (track.left_width, track.left_width + thickness),
        (-track.right_width, -(track.right_width + thickness)),
    ):
        faces = (
            (_edge(track, inner, 0.0), _edge(track, inner, height), albedo),
            (_edge(track, inner, height), _edge(track, outer, height), np.asarray(_CONCRETE)),
            (_edge(track, outer, height), _edge(track, outer, 0.0), np.asarray(_CONCRETE)),
        )
        for a, b, color in faces:
            meshes.append(quad_strip(a, b, color, reflectivity=0.4, texture=0.1, semantic=SEMANTIC_ID["barrier"]))
    return meshes


def ground_mesh(track: Track, margin: float, rng: np.random.Generator, cell: float = 100.0) -> Mesh:
    """A grass plane around the track, each cell tinted a little differently."""
    lo = track.centerline.min(axis=0) - margin
    hi = track.centerline.max(axis=0) + margin
    nx, ny = (np.ceil((hi - lo) / cell)).astype(int)
    xs = lo[0] + cell * np.arange(nx + 1)
    ys = lo[1] + cell * np.arange(ny + 1)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    vertices = np.column_stack([gx.reshape(-1), gy.reshape(-1), np.full(gx.size, GROUND_Z)])
    ix, iy = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    v00 = (ix * (ny + 1) + iy).reshape(-1)
    v10, v01 = v00 + ny + 1, v00 + 1
    v11 = v10 + 1
    triangles = np.concatenate([np.stack([v00, v10, v11], 1), np.stack([v00, v11, v01], 1)])
    tint = np.asarray(_GRASS) * rng.uniform(0.8, 1.2, (nx * ny, 1)) + rng.normal(0.0, 0.015, (nx * ny, 3))
    tint = np.clip(np.concatenate([tint, tint]), 0.0, 1.0)
    return make_mesh(vertices, triangles, tint, reflectivity=0.3, texture=0.35, semantic=SEMANTIC_ID["other"])


def tree_positions(track: Track, rng: np.random.Generator, per_km: float, clearance: tuple[float, float]) -> np.ndarray:
    """(M, 2) tree positions at a distance in ``clearance`` (m) beyond the barriers of any part of the track."""
    wanted = round(per_km * track.length / 1000.0)
    if wanted == 0:
        return np.zeros((0, 2))
    s = rng.uniform(0.0, track.length, 3 * wanted)
    side = rng.choice([-1.0, 1.0], 3 * wanted)
    left, right = track.widths_at(s)
    barrier = np.where(side > 0, left, right) + track.barrier_thickness
    offset = barrier + rng.uniform(*clearance, 3 * wanted)
    normal = np.stack([-np.sin(track.heading_at(s)), np.cos(track.heading_at(s))], axis=1)
    xy = track.point_at(s) + normal * (side * offset)[:, None]
    reach = float(max(track.left_width.max(), track.right_width.max())) + track.barrier_thickness
    distance, _ = cKDTree(track.centerline).query(xy)
    keep = (distance - reach >= clearance[0] * 0.8) & (distance - reach <= clearance[1] * 1.5)
    return xy[keep][:wanted]


def trees_mesh(positions: np.ndarray, rng: np.random.Generator, height: tuple[float, float], sides: int = 7) -> Mesh:
    """Trees of two shapes (conifer cone, broadleaf ellipsoid) on a trunk, in varied greens.

    ``sides`` sets the crowns' polygon count: distant trees need few, and every triangle costs
    ray-casting time for every sensor.
    """
    trees = []
    foliage = {"reflectivity": 0.35, "texture": 0.3, "semantic": SEMANTIC_ID["other"]}
    for x, y in positions:
        total = rng.uniform(*height)
        trunk_h = total * rng.uniform(0.2, 0.35)
        radius = total * rng.uniform(0.18, 0.32)
        green = _FOLIAGE[rng.integers(0, len(_FOLIAGE))] * rng.uniform(0.8, 1.2)
        trunk = (0.04 * total, 0.04 * total)
        trees.append(prism((x, y, trunk_h / 2.0), trunk, trunk_h, 4, _TRUNK, reflectivity=0.3, texture=0.2))
        crown_h = total - trunk_h
        center = (x, y, trunk_h + crown_h / 2.0)
        if rng.random() < 0.5:
            crown = prism(center, (radius, radius), crown_h, sides, green, taper=(1.0, 0.0), **foliage)
        else:
            rings = max(3, sides - 3)
            crown = ellipsoid(center, (radius, radius, crown_h / 2.0), green, rings=rings, sides=sides, **foliage)
        trees.append(crown)
    return join(trees)


@dataclass(frozen=True)
class Grandstand:
    """Placement of the grandstands: along the start/finish straight, behind its outer barrier."""

    pose: np.ndarray  # 4x4, x along the straight at the start line, y to the left of the track
    side: float  # +1 left of the track, -1 right
    inner: float  # m from the centre line to the first tier
    length: float
    tiers: int = 7
    tier_depth: float = 2.5
    tier_rise: float = 1.6

    @property
    def depth(self) -> float:
        return self.tiers * self.tier_depth

    def covers(self, xy: np.ndarray, margin: float = 4.0) -> np.ndarray:
        """Mask of the (N, 2) map points on the grandstands' footprint (plus ``margin``)."""
        local = (xy - self.pose[:2, 3]) @ self.pose[:2, :2]
        lateral = local[:, 1] * self.side
        return (
            (np.abs(local[:, 0]) <= self.length / 2 + margin)
            & (lateral >= self.inner - margin)
            & (lateral <= self.inner + self.depth + margin)
        )


def grandstand_placement(track: Track) -> Grandstand | None:
    """The longest grandstand (160 m down to 40 m) that stays clear of every part of the track."""
    centroid = track.centerline.mean(axis=0)
    side = 1.0 if np.dot(track.normal[0], track.centerline[0] - centroid) > 0 else -1.0
    width = track.left_width[0] if side > 0 else track.right_width[0]
    pose = pose_matrix([*track.centerline[0], 0.0, 0.0, 0.0, float(track.heading[0])])
    reach = float(max(track.left_width.max(), track.right_width.max())) + track.barrier_thickness + 2.0
    tree = cKDTree(track.centerline)
    for length in (160.0, 120.0, 80.0, 40.0):
        stand = Grandstand(pose, side, width + track.barrier_thickness + 6.0, length)
        x, y = np.meshgrid(np.linspace(-length / 2, length / 2, 41), np.linspace(0.0, stand.depth, 5))
        local = np.column_stack([x.reshape(-1), side * (stand.inner + y.reshape(-1))])
        distance, _ = tree.query(local @ pose[:2, :2].T + pose[:2, 3])
        if (distance > reach).all():
            return stand
    return None


def grandstands_mesh(stand: Grandstand) -> Mesh:
    """Stepped tiers in alternating seat colours."""
    seats = np.array([(0.55, 0.1, 0.1), (0.1, 0.2, 0.55), (0.7, 0.7, 0.72)])
    parts = []
    for k in range(stand.tiers):
        offset = stand.inner + stand.tier_depth * (k + 0.5)
        height = stand.tier_rise * (k + 1)
        center = np.array([0.0, stand.side * offset, height / 2.0])
        size = (stand.length, stand.tier_depth, height)
        parts.append(box(center, size, seats[k % len(seats)], reflectivity=0.3, texture=0.15).transformed(stand.pose))
    return join(parts).labelled(SEMANTIC_ID["other"], NO_INSTANCE)
