"""Labelled triangle meshes and the primitives the world and its objects are built from.

Every triangle carries what a sensor needs to know about the surface it hits: colour (albedo and
texture strength for the camera), LiDAR reflectivity, semantic class and instance id (for ground
truth). Meshes are plain numpy arrays so a frame's dynamic objects are cheap to transform and join.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from racestack.objects import BEV_CLASSES, FLYING_CLASSES

# Per-point / per-pixel semantic classes: the BEV classes, then the flying-object classes.
SEMANTIC_CLASSES: tuple[str, ...] = (*BEV_CLASSES, *FLYING_CLASSES)
SEMANTIC_ID = {name: i for i, name in enumerate(SEMANTIC_CLASSES)}
NO_HIT = 255  # semantic value of a ray that hit nothing (sky)
NO_INSTANCE = -1  # instance id of static world geometry and of sky

Color = Sequence[float] | np.ndarray


@dataclass(frozen=True, eq=False)
class Mesh:
    """Triangles with per-triangle surface attributes."""

    vertices: np.ndarray  # (V, 3) float32
    triangles: np.ndarray  # (T, 3) int64 indices into vertices
    albedo: np.ndarray  # (T, 3) float32, linear RGB in [0, 1]
    texture: np.ndarray  # (T,) float32, strength of the procedural surface texture
    reflectivity: np.ndarray  # (T,) float32, LiDAR reflectivity in [0, 1]
    semantic: np.ndarray  # (T,) uint8, index in SEMANTIC_CLASSES
    instance: np.ndarray  # (T,) int32, NO_INSTANCE for static geometry

    @property
    def triangle_count(self) -> int:
        return int(self.triangles.shape[0])

    def normals(self) -> np.ndarray:
        """(T, 3) unit normals of the triangles (by winding; rays hit both sides)."""
        corners = self.vertices[self.triangles]
        normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        length = np.linalg.norm(normal, axis=1, keepdims=True)
        return (normal / np.maximum(length, 1e-12)).astype(np.float32)

    def transformed(self, matrix: np.ndarray) -> Mesh:
        """The mesh with vertices mapped by a 4x4 transform (attributes shared, not copied)."""
        vertices = self.vertices @ matrix[:3, :3].T.astype(np.float32) + matrix[:3, 3].astype(np.float32)
        return Mesh(
            vertices, self.triangles, self.albedo, self.texture, self.reflectivity, self.semantic, self.instance
        )

    def scaled(self, factors: Sequence[float] | np.ndarray) -> Mesh:
        vertices = self.vertices * np.asarray(factors, dtype=np.float32)
        return Mesh(
            vertices, self.triangles, self.albedo, self.texture, self.reflectivity, self.semantic, self.instance
        )

    def labelled(self, semantic: int, instance: int) -> Mesh:
        count = self.triangle_count
        return Mesh(
            self.vertices,
            self.triangles,
            self.albedo,
            self.texture,
            self.reflectivity,
            np.full(count, semantic, dtype=np.uint8),
            np.full(count, instance, dtype=np.int32),
        )


def make_mesh(
    vertices: np.ndarray,
    triangles: np.ndarray,
    albedo: Color | np.ndarray,
    reflectivity: float | np.ndarray = 0.3,
    semantic: int = 0,
    instance: int = NO_INSTANCE,
    texture: float | np.ndarray = 0.0,
) -> Mesh:
    """A mesh whose attributes are given once for all triangles, or per triangle."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1, 3)
    triangles = np.ascontiguousarray(triangles, dtype=np.int64).reshape(-1, 3)
    count = triangles.shape[0]
    albedo = np.asarray(albedo, dtype=np.float32)
    albedo = np.broadcast_to(albedo, (count, 3)).copy() if albedo.ndim == 1 else albedo.reshape(count, 3)
    return Mesh(
        vertices,
        triangles,
        albedo,
        np.broadcast_to(np.asarray(texture, dtype=np.float32), (count,)).copy(),
        np.broadcast_to(np.asarray(reflectivity, dtype=np.float32), (count,)).copy(),
        np.full(count, semantic, dtype=np.uint8),
        np.full(count, instance, dtype=np.int32),
    )


def join(meshes: Sequence[Mesh]) -> Mesh:
    """One mesh holding all triangles of ``meshes`` (indices re-based)."""
    meshes = [m for m in meshes if m.triangle_count]
    if not meshes:
        return empty_mesh()
    offsets = np.cumsum([0] + [m.vertices.shape[0] for m in meshes[:-1]])
    return Mesh(
        np.concatenate([m.vertices for m in meshes]),
        np.concatenate([m.triangles + off for m, off in zip(meshes, offsets, strict=True)]),
        np.concatenate([m.albedo for m in meshes]),
        np.concatenate([m.texture for m in meshes]),
        np.concatenate([m.reflectivity for m in meshes]),
        np.concatenate([m.semantic for m in meshes]),
        np.concatenate([m.instance for m in meshes]),
    )


def empty_mesh() -> Mesh:
    return Mesh(
        np.zeros((0, 3), np.float32),
        np.zeros((0, 3), np.int64),
        np.zeros((0, 3), np.float32),
        np.zeros(0, np.float32),
        np.zeros(0, np.float32),
        np.zeros(0, np.uint8),
        np.zeros(0, np.int32),
    )


# -- primitives (local frames, x forward, y left, z up) -------------------------------------------

_BOX_CORNERS = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], dtype=np.float32)
_BOX_TRIANGLES = np.array(
    [
        [0, 1, 3], [0, 3, 2],  # -x
        [4, 6, 7], [4, 7, 5],  # +x
        [0, 4, 5], [0, 5, 1],  # -y
        [2, 3, 7], [2, 7, 6],  # +y
        [0, 2, 6], [0, 6, 4],  # -z
        [1, 5, 7], [1, 7, 3],  # +z
    ],
    dtype=np.int64,
)  # fmt: skip


def box(center: Sequence[float], size: Sequence[float], albedo: Color, **attributes) -> Mesh:
    """An axis-aligned box."""
    vertices = _BOX_CORNERS * np.asarray(size, dtype=np.float32) + np.asarray(center, dtype=np.float32)
    return make_mesh(vertices, _BOX_TRIANGLES, albedo, **attributes)


def prism(
    center: Sequence[float],
    radii: Sequence[float],
    length: float,
    sides: int,
    albedo: Color,
    axis: str = "z",
    taper: Sequence[float] = (1.0, 1.0),
    **attributes,
) -> Mesh:
    """A closed n-gon prism (cylinder, fuselage, rotor hub) along ``axis``, ends scaled by ``taper``.

    ``radii`` are the two cross-section semi-axes; a taper of 0 closes an end to a point (a cone).
    """
    angle = np.linspace(0.0, 2.0 * np.pi, sides, endpoint=False)
    ring = np.stack([np.cos(angle) * radii[0], np.sin(angle) * radii[1]], axis=1)
    half = length / 2.0
    rings = [np.column_stack([ring * t, np.full(sides, z)]) for t, z in zip(taper, (-half, half), strict=True)]
    caps = np.array([[0.0, 0.0, -half], [0.0, 0.0, half]])
    local = np.concatenate([rings[0], rings[1], caps])
    i = np.arange(sides)
    j = (i + 1) % sides
    side = np.concatenate([np.stack([i, j, j + sides], 1), np.stack([i, j + sides, i + sides], 1)])
    bottom = np.stack([np.full(sides, 2 * sides), j, i], axis=1)
    top = np.stack([np.full(sides, 2 * sides + 1), i + sides, j + sides], axis=1)
    order = {"z": [0, 1, 2], "x": [2, 0, 1], "y": [1, 2, 0]}[axis]
    vertices = local[:, order] + np.asarray(center)
    return make_mesh(vertices, np.concatenate([side, bottom, top]), albedo, **attributes)


def ellipsoid(
    center: Sequence[float], radii: Sequence[float], albedo: Color, rings: int = 5, sides: int = 8, **attributes
) -> Mesh:
    """A low-poly ellipsoid (bodies, cabins, tree crowns)."""
    theta = np.linspace(0.0, np.pi, rings + 1)[1:-1]
    phi = np.linspace(0.0, 2.0 * np.pi, sides, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    body = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], axis=-1).reshape(-1, 3)
    vertices = np.concatenate([[[0.0, 0.0, 1.0]], body, [[0.0, 0.0, -1.0]]]) * np.asarray(radii) + np.asarray(center)
    last = len(vertices) - 1
    tris = []
    j = np.arange(sides)
    k = (j + 1) % sides
    tris.append(np.stack([np.zeros(sides, int), 1 + j, 1 + k], axis=1))
    for r in range(rings - 2):
        a, b = 1 + r * sides, 1 + (r + 1) * sides
        tris.append(np.stack([a + j, b + j, b + k], axis=1))
        tris.append(np.stack([a + j, b + k, a + k], axis=1))
    base = 1 + (rings - 2) * sides
    tris.append(np.stack([np.full(sides, last), base + k, base + j], axis=1))
    return make_mesh(vertices, np.concatenate(tris), albedo, **attributes)


def polygon(points: np.ndarray, albedo: Color, **attributes) -> Mesh:
    """A flat convex polygon (wings, fins) as a triangle fan; rays hit both sides."""
    points = np.asarray(points, dtype=np.float32)
    n = len(points)
    fan = np.stack([np.zeros(n - 2, int), np.arange(1, n - 1), np.arange(2, n)], axis=1)
    return make_mesh(points, fan, albedo, **attributes)


def quad_strip(a: np.ndarray, b: np.ndarray, albedo: Color | np.ndarray, **attributes) -> Mesh:
    """Quads between two closed polylines of equal length (road strips, walls); ``albedo`` may be per quad."""
    n = len(a)
    i = np.arange(n)
    j = (i + 1) % n
    tris = np.concatenate([np.stack([i, j, j + n], 1), np.stack([i, j + n, i + n], 1)])
    albedo = np.asarray(albedo, dtype=np.float32)
    if albedo.ndim == 2:
        albedo = np.concatenate([albedo, albedo])
    return make_mesh(np.concatenate([a, b]), tris, albedo, **attributes)


def rotation_about(axis: str, angle: float) -> np.ndarray:
    """4x4 rotation about a local axis (x, y or z) through the origin."""
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.eye(4)
    a, b = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    matrix[a, a], matrix[a, b], matrix[b, a], matrix[b, b] = c, -s, s, c
    return matrix


def translation(offset: Sequence[float]) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix
