"""Pinhole camera rendered by ray casting the world, with ground-truth 2D boxes of what is visible.

Two passes keep it fast and still sharp where it matters:
1. the static world and sky at ``render_scale`` of the image (e.g. 320x240 for 640x480), shaded
   (albedo, procedural texture, sun and sky light, haze, clouds) and upscaled;
2. each moving body (car, flying object) in its own image rectangle at full resolution (2x2
   supersampled when small, so a drone at 150 m is a soft few-pixel blob rather than aliasing),
   cast against everything, so only the pixels where the body is the nearest hit are drawn.
The 2D boxes come from those per-pixel instance hits: tight, occlusion-aware, clipped to the image,
and dropped when smaller than ``min_box`` pixels. Sensor noise is added last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo

from racestack.objects import BOX2D_DTYPE
from racestack.transforms import camera_optical_matrix, planar_pose_matrix
from simulation.meshes import Mesh
from simulation.schema import Section
from simulation.world import DynamicScene, RayHits, World

DEFAULT_CAMERA_POSE = (1.0, 0.0, 1.4, 0.0, 0.0, 0.0)
_SKY_LIGHT = np.array([0.75, 0.82, 0.95], np.float32)
_SUN_LIGHT = np.array([1.05, 1.0, 0.92], np.float32)
_CLOUD_ALTITUDE = 1500.0
_NEAR = 0.05  # m, the camera's near plane
_NOISE_BANK_PAD = 64


@dataclass(frozen=True)
class Sky:
    """Lighting and weather: cloud cover, sun direction, visibility (haze), exposure."""

    cloud_cover: float = 0.35
    sun_elevation: float = 45.0  # deg
    sun_azimuth: float = 135.0  # deg, counter-clockwise from map x
    visibility: float = 12000.0  # m (meteorological visibility: contrast 2 % at this distance)
    exposure: float = 1.0

    @property
    def sun(self) -> np.ndarray:
        elevation, azimuth = np.deg2rad(self.sun_elevation), np.deg2rad(self.sun_azimuth)
        return np.array(
            [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)],
            dtype=np.float32,
        )


@dataclass(frozen=True)
class CameraConfig:
    """Intrinsics, mounting and rendering options (scenario ``sensors.camera``)."""

    width: int = 640
    height: int = 480
    fx: float = 320.0
    fy: float = 320.0
    cx: float = 320.0
    cy: float = 240.0
    pose: tuple[float, ...] = DEFAULT_CAMERA_POSE
    rate: float = 10.0
    noise: float = 2.0  # standard deviation, 8-bit counts
    render_scale: float = 0.5
    min_box: float = 4.0  # px; smaller boxes are not ground truth
    roi_budget: int = 8000  # rays per moving body at full resolution; larger bodies render coarser
    sky: Sky = field(default_factory=Sky)

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass
class CameraFrame:
    """A rendered image (rgb8) and the ground-truth boxes of the bodies visible in it."""

    image: np.ndarray  # (height, width, 3) uint8, RGB
    boxes: np.ndarray  # (M,) BOX2D_DTYPE, pixel edges: a box covers columns u_min .. u_max - 1
    instances: np.ndarray  # (M,) int32 instance id of each box
    visible_pixels: np.ndarray  # (M,) float32 pixels covered by each body


@dataclass(frozen=True)
class _Roi:
    """A body's image rectangle [u0, u1) x [v0, v1) and how densely it is sampled."""

    index: int
    u0: int
    v0: int
    u1: int
    v1: int
    samples: float  # rays per pixel along each axis: 2 (supersampled), 1, or < 1 (coarse)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, columns) of rays."""
        rows = max(1, int(np.ceil((self.v1 - self.v0) * self.samples)))
        cols = max(1, int(np.ceil((self.u1 - self.u0) * self.samples)))
        return rows, cols


class Camera:
    """Renders the world from a camera on the ego car."""

    def __init__(self, config: CameraConfig, seed: int = 0) -> None:
        self.config = config
        self.in_base = camera_optical_matrix(config.pose)
        textures = np.random.default_rng([seed, 41])
        self._surface = _fractal_noise(textures, 256, 1.0).astype(np.float32)
        self._clouds = _fractal_noise(textures, 256, 1.4).astype(np.float32)
        self._noise_bank = np.clip(
            textures.normal(0.0, config.noise, (config.height + _NOISE_BANK_PAD, config.width + _NOISE_BANK_PAD, 3)),
            -127,
            127,
        ).astype(np.int16)
        scale = config.render_scale
        low_w, low_h = max(1, round(config.width * scale)), max(1, round(config.height * scale))
        self._low_size = (low_w, low_h)
        u = (np.arange(low_w) + 0.5) * config.width / low_w
        v = (np.arange(low_h) + 0.5) * config.height / low_h
        self._base_directions = self._directions(*np.meshgrid(u, v))
        self._display = _display_lut(config.sky.exposure)
        self._static_table: tuple[Mesh, np.ndarray] | None = None
        self._gradient = self._sky_gradient()

    def info(self, header=None) -> CameraInfo:
        """The ``sensor_msgs/CameraInfo`` of this camera (no distortion)."""
        c = self.config
        msg = CameraInfo()
        if header is not None:
            msg.header = header
        msg.width, msg.height = c.width, c.height
        msg.distortion_model = "plumb_bob"
        msg.d = [0.0] * 5
        msg.k = [float(v) for v in c.matrix.reshape(-1)]
        msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        msg.p = [c.fx, 0.0, c.cx, 0.0, 0.0, c.fy, c.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return msg

    def _directions(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(..., 3) unit directions in the optical frame through image points (u, v) (pixel edges at integers)."""
        c = self.config
        rays = np.stack([(u - c.cx) / c.fx, (v - c.cy) / c.fy, np.ones_like(u)], axis=-1)
        return (rays / np.linalg.norm(rays, axis=-1, keepdims=True)).astype(np.float32)

    # -- rendering ---------------------------------------------------------------------------

    def render(
        self, world: World, ego_pose: Sequence[float], rng: np.random.Generator, dynamic: DynamicScene | None = None
    ) -> CameraFrame:
        """The image seen with the car at ``ego_pose`` = (x, y, yaw) in ``map``, and its boxes."""
        c = self.config
        to_map = planar_pose_matrix(*ego_pose) @ self.in_base
        rotation = to_map[:3, :3].T.astype(np.float32)
        origin = to_map[:3, 3].astype(np.float32)
        directions = self._base_directions.reshape(-1, 3) @ rotation
        low = self._shade(world.cast(_rays(origin, directions)), origin, directions)
        low = self._display[low].reshape(self._low_size[1], self._low_size[0], 3)
        image = cv2.resize(low, (c.width, c.height), interpolation=cv2.INTER_LINEAR)
        boxes, instances, pixels = self._draw_bodies(image, world, dynamic, to_map)
        offset = rng.integers(0, _NOISE_BANK_PAD, 2)
        noise = self._noise_bank[offset[0] : offset[0] + c.height, offset[1] : offset[1] + c.width]
        image = np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        return CameraFrame(image, boxes, instances, pixels)

    def _draw_bodies(
        self, image: np.ndarray, world: World, dynamic: DynamicScene | None, to_map: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render each visible body's rectangle into ``image``; (boxes, instance ids, visible pixels)."""
        empty = (np.zeros(0, BOX2D_DTYPE), np.zeros(0, np.int32), np.zeros(0, np.float32))
        if dynamic is None or not len(dynamic):
            return empty
        rois = self._rois(dynamic, to_map)
        if not rois:
            return empty
        rotation = to_map[:3, :3].T.astype(np.float32)
        origin = to_map[:3, 3].astype(np.float32)
        grids = [self._roi_directions(roi) for roi in rois]
        directions = np.concatenate([g.reshape(-1, 3) for g in grids]) @ rotation
        hits = world.cast(_rays(origin, directions), dynamic)
        colors = self._display[self._shade(hits, origin, directions)]
        instance = hits.attribute("instance")
        boxes, instances, pixels = [], [], []
        start = 0
        for roi, grid in zip(rois, grids, strict=True):
            count = grid.shape[0] * grid.shape[1]
            body = dynamic.bodies[roi.index]
            own = (instance[start : start + count] == body.instance).reshape(grid.shape[:2])
            color = colors[start : start + count].reshape(*grid.shape[:2], 3)
            start += count
            coverage = self._paint(image, roi, own, color)
            box = _box_of(coverage, roi, self.config.min_box)
            if box is not None:
                boxes.append((*box, 1.0, body.class_id))
                instances.append(body.instance)
                pixels.append(float(coverage.sum()))
        table = np.array(boxes, dtype=BOX2D_DTYPE) if boxes else empty[0]
        return table, np.array(instances, dtype=np.int32), np.array(pixels, dtype=np.float32)

    def _rois(self, dynamic: DynamicScene, to_map: np.ndarray) -> list[_Roi]:
        """Image rectangles enclosing each body's projected mesh (skipping bodies out of view)."""
        c = self.config
        rotation, origin = to_map[:3, :3], to_map[:3, 3]
        centers = (dynamic.centers - origin) @ rotation
        rois = []
        for index, (center, radius) in enumerate(zip(centers, dynamic.radii, strict=True)):
            if center[2] + radius <= _NEAR:
                continue
            mesh = dynamic.bodies[index].mesh
            points = _in_front(((mesh.vertices - origin) @ rotation)[mesh.triangles], _NEAR)
            if points.shape[0] == 0:
                continue
            u = np.clip(c.fx * points[:, 0] / points[:, 2] + c.cx, -1.0, c.width + 1.0)
            v = np.clip(c.fy * points[:, 1] / points[:, 2] + c.cy, -1.0, c.height + 1.0)
            u0, u1 = max(0, int(np.floor(u.min())) - 1), min(c.width, int(np.ceil(u.max())) + 1)
            v0, v1 = max(0, int(np.floor(v.min())) - 1), min(c.height, int(np.ceil(v.max())) + 1)
            if u1 <= u0 or v1 <= v0:
                continue
            area = (u1 - u0) * (v1 - v0)
            if area <= c.roi_budget / 16:
                samples = 2.0
            elif area <= c.roi_budget:
                samples = 1.0
            else:
                samples = max(float(np.sqrt(c.roi_budget / area)), 0.05)
            rois.append(_Roi(index, u0, v0, u1, v1, samples))
        return rois

    def _roi_directions(self, roi: _Roi) -> np.ndarray:
        rows, cols = roi.grid
        u = roi.u0 + (np.arange(cols) + 0.5) * (roi.u1 - roi.u0) / cols
        v = roi.v0 + (np.arange(rows) + 0.5) * (roi.v1 - roi.v0) / rows
        return self._directions(*np.meshgrid(u, v))

    @staticmethod
    def _paint(image: np.ndarray, roi: _Roi, own: np.ndarray, color: np.ndarray) -> np.ndarray:
        """Write the body's pixels into ``image``; returns the per-pixel coverage of the rectangle."""
        height, width = roi.v1 - roi.v0, roi.u1 - roi.u0
        if roi.samples == 2.0:
            coverage = own.reshape(height, 2, width, 2).mean(axis=(1, 3))
            pixel = color.reshape(height, 2, width, 2, 3).mean(axis=(1, 3))
        elif roi.samples == 1.0:
            coverage = own.astype(np.float32)
            pixel = color
        else:
            coverage = cv2.resize(own.astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST)
            pixel = cv2.resize(color, (width, height), interpolation=cv2.INTER_LINEAR)
        target = image[roi.v0 : roi.v1, roi.u0 : roi.u1]
        touched = coverage > 0
        target[touched] = pixel[touched] if pixel.dtype == np.uint8 else (pixel[touched] + 0.5).astype(np.uint8)
        return coverage

    def _lit(self, mesh: Mesh) -> np.ndarray:
        """(2T, 3) linear colour of both faces of every triangle (rows 2t: the winding side, 2t+1: the back).

        Sun and sky light do not change during a run, so the static world's table is computed once.
        """
        sky = self.config.sky
        normal = mesh.normals()
        faces = np.stack([normal, -normal], axis=1).reshape(-1, 3)
        sun = np.maximum(faces @ sky.sun, 0.0) * (1.0 - 0.6 * sky.cloud_cover)
        ambient = 0.35 + 0.15 * faces[:, 2]
        light = ambient[:, None] * _SKY_LIGHT + sun[:, None] * _SUN_LIGHT
        return (np.repeat(mesh.albedo, 2, axis=0) * light).astype(np.float32)

    def _static_lit(self, mesh: Mesh) -> np.ndarray:
        if self._static_table is None or self._static_table[0] is not mesh:
            self._static_table = (mesh, self._lit(mesh))
        return self._static_table[1]

    def _shade(self, hits: RayHits, origin: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Display-LUT indices (N, 3) of each ray's colour: lit surfaces with texture and haze, or sky."""
        linear = np.empty((directions.shape[0], 3), np.float32)
        hit = hits.hit
        miss = np.flatnonzero(~hit)
        if miss.size:
            linear[miss] = self._sky(origin, directions[miss])
        rows = np.flatnonzero(hit)
        if rows.size:
            linear[rows] = self._surfaces(hits, rows, origin, directions)
        return np.clip(linear * 1023.0, 0, 2047).astype(np.int16)

    def _surfaces(self, hits: RayHits, rows: np.ndarray, origin: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Linear colour of the surfaces hit by the rays ``rows``."""
        distance = hits.distance[rows]
        back = (np.einsum("ij,ij->i", hits.normal, directions) > 0)[rows]  # the ray meets the triangle's back
        key = hits.triangle[rows] * 2 + back
        dynamic = hits.dynamic[rows]
        static_lit = self._static_lit(hits.static_mesh)
        if dynamic.any():
            color = np.empty((rows.size, 3), np.float32)
            color[~dynamic] = static_lit[key[~dynamic]]
            color[dynamic] = self._lit(hits.dynamic_mesh)[key[dynamic]]
        else:
            color = static_lit[key]
        transmission = np.exp(distance * np.float32(-3.912 / self.config.sky.visibility))
        factor = transmission.copy()
        (amplitude,) = hits.attributes(("texture",), rows)
        textured = np.flatnonzero((amplitude > 0) & (distance < 250.0))
        if textured.size:
            points = origin + directions[rows[textured]] * distance[textured, None]
            grain = (self._surface_texture(points) - 0.5) * np.exp(distance[textured] * np.float32(-1.0 / 80.0))
            factor[textured] *= 1.0 + 1.6 * amplitude[textured] * grain
        color *= factor[:, None]
        color += self._horizon_color() * (1.0 - transmission)[:, None]
        return color

    def _surface_texture(self, points: np.ndarray) -> np.ndarray:
        """Procedural texture in [0, 1] from map coordinates (two scales), for floors and walls alike."""
        u = points[:, 0] + 0.6 * points[:, 2]
        v = points[:, 1] - 0.6 * points[:, 2]
        size = self._surface.shape[0]
        fine = self._surface[(u * 4.0).astype(np.int64) % size, (v * 4.0).astype(np.int64) % size]
        coarse = self._surface[(u * 0.25).astype(np.int64) % size, (v * 0.25).astype(np.int64) % size]
        return 0.5 * fine + 0.5 * coarse

    def _horizon_color(self) -> np.ndarray:
        grey = self.config.sky.cloud_cover
        return np.array([0.72, 0.79, 0.88], np.float32) * (1.0 - 0.2 * grey) + 0.12 * grey

    def _sky_gradient(self) -> np.ndarray:
        """(256, 3) sky colour by the ray's upward component (0 = horizon, 1 = zenith)."""
        cover = self.config.sky.cloud_cover
        zenith = np.array([0.2, 0.38, 0.75], np.float32) * (1.0 - 0.5 * cover) + 0.3 * cover
        t = np.sqrt(np.linspace(0.0, 1.0, 256, dtype=np.float32))[:, None]
        return self._horizon_color() * (1.0 - t) + zenith * t

    def _sky(self, origin: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Linear sky colour: horizon-to-zenith gradient, sun glow, and clouds on a plane at 1.5 km."""
        sky = self.config.sky
        up = np.clip(directions[:, 2], 0.0, 1.0)
        color = self._gradient[(up * 255.0).astype(np.int64)]
        near_sun = np.flatnonzero(directions @ sky.sun > 0.8)
        if near_sun.size:
            cosine = directions[near_sun] @ sky.sun
            glow = np.exp(400.0 * np.log(cosine)) * 3.0 + np.exp(12.0 * np.log(cosine)) * 0.25
            color[near_sun] += glow[:, None] * (1.0 - sky.cloud_cover)
        if sky.cloud_cover > 0:
            rise = np.maximum(directions[:, 2], 0.01)
            reach = (_CLOUD_ALTITUDE - origin[2]) / rise
            x = (origin[0] + directions[:, 0] * reach) * np.float32(1.0 / 12.0)
            y = (origin[1] + directions[:, 1] * reach) * np.float32(1.0 / 12.0)
            size = self._clouds.shape[0]
            density = self._clouds[x.astype(np.int64) % size, y.astype(np.int64) % size]
            threshold = 1.0 - sky.cloud_cover
            cloud = np.clip((density - threshold + 0.12) / 0.3, 0.0, 1.0) * np.clip(rise / 0.12 - 0.0833, 0.0, 1.0)
            brightness = (0.75 + 0.35 * density) * (1.0 - 0.35 * sky.cloud_cover)
            color += cloud[:, None] * (brightness[:, None] - color)
        return color


def _in_front(triangles: np.ndarray, near: float) -> np.ndarray:
    """(M, 3) points bounding the part of (T, 3, 3) camera-frame triangles in front of z = near:
    the vertices in front plus where the triangles' edges cross the near plane."""
    a = triangles.reshape(-1, 3)
    b = np.roll(triangles, -1, axis=1).reshape(-1, 3)
    crossing = (a[:, 2] > near) != (b[:, 2] > near)
    t = (near - a[crossing, 2]) / (b[crossing, 2] - a[crossing, 2])
    cuts = a[crossing] + t[:, None] * (b[crossing] - a[crossing])
    cuts[:, 2] = near
    return np.concatenate([a[a[:, 2] > near], cuts])


def _rays(origin: np.ndarray, directions: np.ndarray) -> np.ndarray:
    return np.concatenate([np.broadcast_to(origin, directions.shape), directions], axis=1)


def _box_of(coverage: np.ndarray, roi: _Roi, min_box: float) -> tuple[float, float, float, float] | None:
    """(u_min, v_min, u_max, v_max) of the pixels a body covers (>= 1/4), None when too small.

    Too small: less than 2 pixels' worth of the body visible, or a longer side under ``min_box``.
    """
    covered = coverage >= 0.25
    if coverage.sum() < 2.0 or not covered.any():
        return None
    rows = np.flatnonzero(covered.any(axis=1))
    cols = np.flatnonzero(covered.any(axis=0))
    u_min, u_max = roi.u0 + cols[0], roi.u0 + cols[-1] + 1
    v_min, v_max = roi.v0 + rows[0], roi.v0 + rows[-1] + 1
    if max(u_max - u_min, v_max - v_min) < min_box:
        return None
    return float(u_min), float(v_min), float(u_max), float(v_max)


def _display_lut(exposure: float) -> np.ndarray:
    """Linear (index / 1023) -> sRGB-like 8-bit values, with a soft shoulder above white."""
    linear = np.arange(2048, dtype=np.float64) / 1023.0 * exposure
    mapped = linear / (1.0 + 0.15 * linear)
    return np.clip(255.0 * (mapped / (1.0 / 1.15)) ** (1.0 / 2.2), 0, 255).astype(np.uint8)


def _fractal_noise(rng: np.random.Generator, size: int, slope: float) -> np.ndarray:
    """Seamlessly tileable fractal noise in [0, 1]: white noise shaped to a 1/f^slope spectrum."""
    frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    frequency[0, 0] = 1.0
    spectrum = np.fft.fft2(rng.standard_normal((size, size))) / frequency**slope
    spectrum[0, 0] = 0.0
    field = np.fft.ifft2(spectrum).real
    return (field - field.min()) / max(field.max() - field.min(), 1e-12)


# -- scenario section --------------------------------------------------------------------------


def camera_from_section(section: Section, seed: int = 0) -> CameraConfig | None:
    """The camera of ``sensors.camera`` (None when ``enabled: false``); unset sky values come from ``seed``."""
    enabled = section.boolean("enabled", True)
    width = section.integer("width", 640, min=16, max=8192)
    height = section.integer("height", 480, min=16, max=8192)
    if section.has("fov") and (section.has("fx") or section.has("fy")):
        raise section.error("fov", "give either fov (horizontal, deg) or fx/fy")
    fov = section.number("fov", 90.0, min=1.0, max=170.0)
    focal = width / 2.0 / np.tan(np.deg2rad(fov) / 2.0)
    fx = section.number("fx", focal, min=1.0)
    config = CameraConfig(
        width=width,
        height=height,
        fx=fx,
        fy=section.number("fy", fx, min=1.0),
        cx=section.number("cx", width / 2.0, min=0.0, max=float(width)),
        cy=section.number("cy", height / 2.0, min=0.0, max=float(height)),
        pose=section.vector("pose", 6, DEFAULT_CAMERA_POSE),
        rate=section.number("rate", 10.0, min=0.5, max=100.0),
        noise=section.number("noise", 2.0, min=0.0, max=50.0),
        render_scale=section.number("render_scale", 0.5, min=0.1, max=1.0),
        min_box=section.number("min_box", 4.0, min=1.0, max=1000.0),
        roi_budget=section.integer("roi_budget", 8000, min=100, max=10_000_000),
        sky=_sky(section.section("sky"), np.random.default_rng([seed, 43])),
    )
    section.done()
    return config if enabled else None


def _sky(section: Section, rng: np.random.Generator) -> Sky:
    """Weather and light; each value left out is drawn from the scenario seed (varied data sets)."""
    drawn = Sky(
        cloud_cover=float(rng.uniform(0.0, 0.8)),
        sun_elevation=float(rng.uniform(15.0, 70.0)),
        sun_azimuth=float(rng.uniform(0.0, 360.0)),
        visibility=float(np.exp(rng.uniform(np.log(4000.0), np.log(30000.0)))),
        exposure=float(rng.uniform(0.85, 1.15)),
    )
    sky = Sky(
        cloud_cover=section.number("cloud_cover", drawn.cloud_cover, min=0.0, max=1.0),
        sun_elevation=section.number("sun_elevation", drawn.sun_elevation, min=-5.0, max=90.0),
        sun_azimuth=section.number("sun_azimuth", drawn.sun_azimuth, min=-360.0, max=360.0),
        visibility=section.number("visibility", drawn.visibility, min=100.0, max=1e6),
        exposure=section.number("exposure", drawn.exposure, min=0.1, max=10.0),
    )
    section.done()
    return sky


def render_frames(
    count: int, size: tuple[int, int] = (480, 640), scenario: str | None = None, seed: int = 0
) -> list[np.ndarray]:
    """``count`` consecutive rgb8 images of (height, width) ``size`` from a run of ``scenario``.

    For benchmarks and demos that need realistic frames without a running simulator node; the
    default scenario is the first shipped training scenario.
    """
    from dataclasses import replace

    from simulation.scenario import list_scenarios, load_scenario
    from simulation.simulation import Simulation

    loaded = load_scenario(scenario or list_scenarios()[0])
    sensors = dict(loaded.sensors or {})
    sensors["camera"] = {**(sensors.get("camera") or {}), "width": size[1], "height": size[0]}
    sensors["lidar"] = {"enabled": False}
    sim = Simulation(replace(loaded, sensors=sensors, seed=seed))
    frames = []
    while len(frames) < count:
        sim.step_frame()
        frames.append(sim.camera_frame().image)
    return frames
