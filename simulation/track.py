"""Track geometry as data: centre line, widths to the barrier faces, racing line, Frenet projection.

A ``Track`` is what the planner, the evaluation and the simulator's world all read, so it is plain
arrays (saved as ``.npz``) with no simulator state. Coordinates are the ``map`` frame (metres); ``s``
is arc length along the centre line from the start/finish line, ``d`` the lateral offset (left > 0).
Barriers stand on both bounds: their inner face is the bound, ``barrier_thickness`` wide outwards.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.sparse import coo_matrix, vstack
from scipy.spatial import cKDTree

from simulation.schema import ConfigError, Section

TRACK_FILE_VERSION = 1
RACING_LINE_MARGIN = 1.9  # m between the racing line and a bound: half a car width plus a safety gap


def _wrap(angle: np.ndarray | float) -> np.ndarray | float:
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


class ClosedPath:
    """A closed polyline with arc length, heading, curvature and vectorized projection."""

    def __init__(self, xy: np.ndarray) -> None:
        xy = np.ascontiguousarray(xy, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2 or xy.shape[0] < 4:
            raise ValueError(f"a closed path needs (N>=4, 2) points, got {xy.shape}")
        seg = np.roll(xy, -1, axis=0) - xy
        seg_len = np.hypot(seg[:, 0], seg[:, 1])
        if not (seg_len > 1e-9).all():
            raise ValueError("a closed path has repeated consecutive points (is the end point duplicated?)")
        self.xy = xy
        self.seg = seg
        self.seg_len = seg_len
        self.s = np.concatenate([[0.0], np.cumsum(seg_len[:-1])])
        self.length = float(seg_len.sum())
        seg_heading = np.arctan2(seg[:, 1], seg[:, 0])
        turn = _wrap(seg_heading - np.roll(seg_heading, 1))
        self.heading = _wrap(np.roll(seg_heading, 1) + turn / 2.0)
        self.curvature = turn / ((seg_len + np.roll(seg_len, 1)) / 2.0)
        self.normal = np.stack([-np.sin(self.heading), np.cos(self.heading)], axis=1)
        self._tree: cKDTree | None = None
        self._lists = (self.s.tolist(), self.seg_len.tolist(), xy[:, 0].tolist(), xy[:, 1].tolist())
        self._heading_list = self.heading.tolist()
        self._curvature_list = self.curvature.tolist()

    def __len__(self) -> int:
        return self.xy.shape[0]

    def locate(self, s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(index i, index i+1, fraction t) of arc length(s) ``s`` (wrapped onto one lap)."""
        s = np.mod(s, self.length)
        i = self.s.searchsorted(s, side="right") - 1
        t = (s - self.s[i]) / self.seg_len[i]
        return i, (i + 1) % len(self.s), t

    def point_at(self, s: np.ndarray | float) -> np.ndarray:
        i, j, t = self.locate(s)
        t = np.asarray(t)[..., None]
        return self.xy[i] * (1.0 - t) + self.xy[j] * t

    def heading_at(self, s: np.ndarray | float) -> np.ndarray:
        i, j, t = self.locate(s)
        return _wrap(self.heading[i] + t * _wrap(self.heading[j] - self.heading[i]))

    def curvature_at(self, s: np.ndarray | float) -> np.ndarray:
        return self.interpolate(self.curvature, s)

    def normal_at(self, s: np.ndarray | float) -> np.ndarray:
        heading = self.heading_at(s)
        return np.stack([-np.sin(heading), np.cos(heading)], axis=-1)

    def point(self, s: float) -> tuple[float, float, float, float]:
        """(x, y, heading, curvature) at one arc length as plain floats: the per-step path of moving cars."""
        s_list, seg_len, xs, ys = self._lists
        s = s % self.length
        i = bisect.bisect_right(s_list, s) - 1
        j = i + 1 if i + 1 < len(s_list) else 0
        t = (s - s_list[i]) / seg_len[i]
        h0 = self._heading_list[i]
        turn = (self._heading_list[j] - h0 + math.pi) % (2.0 * math.pi) - math.pi
        k = self._curvature_list[i] * (1.0 - t) + self._curvature_list[j] * t
        return xs[i] + t * (xs[j] - xs[i]), ys[i] + t * (ys[j] - ys[i]), h0 + t * turn, k

    def value(self, values: list[float], s: float) -> float:
        """One per-vertex value (a Python list) interpolated at one arc length."""
        s_list, seg_len = self._lists[0], self._lists[1]
        s = s % self.length
        i = bisect.bisect_right(s_list, s) - 1
        j = i + 1 if i + 1 < len(s_list) else 0
        t = (s - s_list[i]) / seg_len[i]
        return values[i] * (1.0 - t) + values[j] * t

    def interpolate(self, values: np.ndarray, s: np.ndarray | float) -> np.ndarray:
        """Per-vertex ``values`` linearly interpolated at ``s``."""
        i, j, t = self.locate(s)
        return values[i] * (1.0 - t) + values[j] * t

    def project(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(s, d, index) of each (M, 2) point: closest point on the polyline, d > 0 on the left.

        ``index`` is the segment holding the foot point. Exact for points whose closest vertex lies
        on the right part of the path, i.e. within the path's clearance (tracks guarantee it).
        """
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        if self._tree is None:
            self._tree = cKDTree(self.xy)
        _, nearest = self._tree.query(xy)
        start = np.stack([(nearest - 1) % len(self.s), nearest])  # the two segments at the vertex
        seg = self.seg[start]
        rel = xy - self.xy[start]
        t = np.clip((rel * seg).sum(axis=-1) / self.seg_len[start] ** 2, 0.0, 1.0)
        offset = rel - seg * t[..., None]
        dist = np.hypot(offset[..., 0], offset[..., 1])
        pick = np.argmin(dist, axis=0)
        cols = np.arange(xy.shape[0])
        seg_index = start[pick, cols]
        side = seg[pick, cols, 0] * rel[pick, cols, 1] - seg[pick, cols, 1] * rel[pick, cols, 0]
        s = self.s[seg_index] + t[pick, cols] * self.seg_len[seg_index]
        d = np.copysign(dist[pick, cols], side)
        return np.mod(s, self.length), d, seg_index


@dataclass(frozen=True, eq=False)
class Track:
    """A closed race track. Arrays are per centre-line vertex (~1 m apart, end point not repeated)."""

    name: str
    centerline: np.ndarray
    left_width: np.ndarray
    right_width: np.ndarray
    racing_line: np.ndarray
    barrier_height: float = 1.0
    barrier_thickness: float = 1.0
    center: ClosedPath = field(init=False, repr=False)
    racing: ClosedPath = field(init=False, repr=False)
    racing_offset: np.ndarray = field(init=False, repr=False)
    length: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        center = ClosedPath(self.centerline)
        n = len(center)
        for name in ("left_width", "right_width"):
            values = np.asarray(getattr(self, name), dtype=np.float64)
            if values.shape != (n,) or not (values > 0).all():
                raise ValueError(f"track {self.name}: {name} must be {n} positive widths")
            object.__setattr__(self, name, values)
        if np.asarray(self.racing_line).shape[1:] != (2,):
            raise ValueError(f"track {self.name}: racing_line must be (M, 2) points")
        object.__setattr__(self, "centerline", center.xy)
        object.__setattr__(self, "center", center)
        racing = ClosedPath(self.racing_line)
        object.__setattr__(self, "racing_line", racing.xy)
        object.__setattr__(self, "racing", racing)
        s_racing, offset, _ = center.project(racing.xy)
        order = np.argsort(s_racing)
        offset_at_vertices = np.interp(center.s, s_racing[order], offset[order], period=center.length)
        object.__setattr__(self, "racing_offset", offset_at_vertices)
        object.__setattr__(self, "length", center.length)
        object.__setattr__(self, "_racing_offset_list", offset_at_vertices.tolist())

    # -- derived geometry (per centre-line vertex) -------------------------------------------

    @property
    def s(self) -> np.ndarray:
        return self.center.s

    @property
    def heading(self) -> np.ndarray:
        return self.center.heading

    @property
    def normal(self) -> np.ndarray:
        """Unit normals pointing left."""
        return self.center.normal

    @property
    def curvature(self) -> np.ndarray:
        return self.center.curvature

    @property
    def left_bound(self) -> np.ndarray:
        return self.centerline + self.normal * self.left_width[:, None]

    @property
    def right_bound(self) -> np.ndarray:
        return self.centerline - self.normal * self.right_width[:, None]

    @property
    def left_barrier_outer(self) -> np.ndarray:
        return self.centerline + self.normal * (self.left_width + self.barrier_thickness)[:, None]

    @property
    def right_barrier_outer(self) -> np.ndarray:
        return self.centerline - self.normal * (self.right_width + self.barrier_thickness)[:, None]

    # -- queries -----------------------------------------------------------------------------

    def project(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(s, d, index) of (M, 2) map points on the centre line (d > 0 left of it)."""
        return self.center.project(xy)

    def point_at(self, s: np.ndarray | float) -> np.ndarray:
        return self.center.point_at(s)

    def heading_at(self, s: np.ndarray | float) -> np.ndarray:
        return self.center.heading_at(s)

    def curvature_at(self, s: np.ndarray | float) -> np.ndarray:
        return self.center.curvature_at(s)

    def widths_at(self, s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) distance from the centre line to the barrier faces at ``s``."""
        return self.center.interpolate(self.left_width, s), self.center.interpolate(self.right_width, s)

    def racing_offset_at(self, s: np.ndarray | float) -> np.ndarray:
        """Lateral offset d of the racing line at centre-line arc length ``s``."""
        if isinstance(s, float):
            return self.center.value(self._racing_offset_list, s)
        return self.center.interpolate(self.racing_offset, s)

    def frenet_point(self, s: float, d: float) -> tuple[float, float, float, float]:
        """(x, y) of (s, d) with the centre line's heading and curvature there, as plain floats."""
        x, y, heading, curvature = self.center.point(s)
        return x - d * math.sin(heading), y + d * math.cos(heading), heading, curvature

    def frenet_to_xy(self, s: np.ndarray | float, d: np.ndarray | float) -> np.ndarray:
        return self.center.point_at(s) + self.center.normal_at(s) * np.asarray(d, dtype=np.float64)[..., None]

    def lane_curvature_at(self, s: np.ndarray | float, d: np.ndarray | float) -> np.ndarray:
        """Curvature of the curve at constant offset ``d`` from the centre line."""
        k = self.center.curvature_at(s)
        return k / np.maximum(1.0 - k * np.asarray(d, dtype=np.float64), 0.05)

    def wrap_ds(self, ds: np.ndarray | float) -> np.ndarray | float:
        """An arc-length difference mapped into [-length/2, length/2)."""
        half = self.length / 2.0
        return (np.asarray(ds) + half) % self.length - half

    # -- files -------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the track as ``.npz`` (what a planner on a car reads through ``track_file``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            np.savez_compressed(
                handle,
                version=np.int64(TRACK_FILE_VERSION),
                name=np.str_(self.name),
                centerline=self.centerline,
                left_width=self.left_width,
                right_width=self.right_width,
                racing_line=self.racing_line,
                barrier_height=np.float64(self.barrier_height),
                barrier_thickness=np.float64(self.barrier_thickness),
            )
        return path


def load_track(path: str | Path) -> Track:
    """A track from ``.npz`` (``Track.save``) or from a ``.yaml`` track config (``track_from_config``)."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(str(path), "", f"cannot read track config: {exc}") from exc
        return track_from_config(Section(data, "", path.name), base_dir=path.parent)
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(str(path), "", f"cannot read track file: {exc}") from exc
    missing = [k for k in ("centerline", "left_width", "right_width", "racing_line") if k not in fields]
    if missing:
        raise ConfigError(str(path), missing[0], "missing from the track file")
    return Track(
        name=str(fields.get("name", path.stem)),
        centerline=fields["centerline"],
        left_width=fields["left_width"],
        right_width=fields["right_width"],
        racing_line=fields["racing_line"],
        barrier_height=float(fields.get("barrier_height", 1.0)),
        barrier_thickness=float(fields.get("barrier_thickness", 1.0)),
    )


# -- construction ----------------------------------------------------------------------------


def resample_closed(points: np.ndarray, spacing: float = 1.0) -> np.ndarray:
    """A closed curve through ``points`` (periodic cubic spline), resampled every ~``spacing`` m."""
    points = np.asarray(points, dtype=np.float64)
    if np.allclose(points[0], points[-1]):
        points = points[:-1]
    closed = np.vstack([points, points[:1]])
    chord = np.hypot(*np.diff(closed, axis=0).T)
    t = np.concatenate([[0.0], np.cumsum(chord)])
    spline = CubicSpline(t, closed, bc_type="periodic")
    dense_t = np.linspace(0.0, t[-1], 20 * len(points) + 1)
    dense = spline(dense_t)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(dense, axis=0).T))])
    count = max(8, round(arc[-1] / spacing))
    wanted = np.linspace(0.0, arc[-1], count, endpoint=False)
    return spline(np.interp(wanted, arc, dense_t))


def minimum_curvature_offsets(
    centerline: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    margin: float = RACING_LINE_MARGIN,
    knot_spacing: float = 4.0,
) -> np.ndarray:
    """Lateral offsets d (per vertex) of the smoothest closed line within the bounds less ``margin``.

    Minimizes the summed squared second difference of the points ``c + d n`` (a discrete curvature)
    on knots every ``knot_spacing`` m (a small QP, Clarabel), then splines d back onto the vertices:
    a racing line that cuts corners from edge to apex.
    """
    import cvxpy as cp

    path = ClosedPath(centerline)
    count = max(16, round(path.length / knot_spacing))
    knot_s = np.linspace(0.0, path.length, count, endpoint=False)
    knots = path.point_at(knot_s)
    normal = path.normal_at(knot_s)
    lower = path.interpolate(-right, knot_s) + margin
    upper = path.interpolate(left, knot_s) - margin
    if (lower >= upper).any():
        raise ValueError(f"track narrower than twice the racing-line margin ({margin} m)")
    idx = np.arange(count)
    prev, nxt = (idx - 1) % count, (idx + 1) % count
    rows = np.concatenate([idx] * 3)
    cols = np.concatenate([prev, idx, nxt])
    coeff = np.concatenate([np.ones(count), -2.0 * np.ones(count), np.ones(count)]) / knot_spacing**2
    shape = (count, count)
    matrix = vstack([coo_matrix((coeff * normal[cols, k], (rows, cols)), shape=shape) for k in range(2)])
    second = (knots[prev] - 2.0 * knots + knots[nxt]) / knot_spacing**2
    target = -np.concatenate([second[:, 0], second[:, 1]])
    offset = cp.Variable(count)
    objective = cp.Minimize(cp.sum_squares(matrix.tocsr() @ offset - target))
    problem = cp.Problem(objective, [offset >= lower, offset <= upper])
    problem.solve(solver=cp.CLARABEL)
    if offset.value is None:
        raise ValueError(f"racing line optimisation failed ({problem.status})")
    closed_s = np.append(knot_s, path.length)
    spline = CubicSpline(closed_s, np.append(offset.value, offset.value[0]), bc_type="periodic")
    return np.clip(spline(path.s), -right + margin, left - margin)


def build_track(
    name: str,
    points: np.ndarray,
    left_width: np.ndarray | float,
    right_width: np.ndarray | float,
    spacing: float = 1.0,
    margin: float = RACING_LINE_MARGIN,
    barrier_height: float = 1.0,
    barrier_thickness: float = 1.0,
) -> Track:
    """A track from rough centre-line points: resampled, with a minimum-curvature racing line.

    Widths given per input point are carried over to the resampled vertices by arc length.
    """
    centerline = resample_closed(points, spacing)
    left = _carry_widths(points, centerline, left_width)
    right = _carry_widths(points, centerline, right_width)
    offsets = minimum_curvature_offsets(centerline, left, right, margin)
    center = ClosedPath(centerline)
    racing = centerline + center.normal * offsets[:, None]
    return Track(name, centerline, left, right, racing, barrier_height, barrier_thickness)


def _carry_widths(points: np.ndarray, centerline: np.ndarray, widths: np.ndarray | float) -> np.ndarray:
    widths = np.asarray(widths, dtype=np.float64)
    if widths.ndim == 0:
        return np.full(len(centerline), float(widths))
    if len(widths) != len(points):
        raise ValueError(f"{len(widths)} widths for {len(points)} centre-line points")
    raw, new = ClosedPath(np.asarray(points, dtype=np.float64)), ClosedPath(centerline)
    return np.interp(new.s / new.length, raw.s / raw.length, widths, period=1.0)


def oval_track(
    length: float = 2400.0,
    turn_radius: float = 250.0,
    width: float = 14.0,
    name: str = "oval",
    barrier_height: float = 1.0,
    barrier_thickness: float = 1.0,
) -> Track:
    """A speedway oval (two straights, two 180° turns), start/finish mid front straight, heading +x."""
    straight = (length - 2.0 * np.pi * turn_radius) / 2.0
    if straight <= 0:
        raise ValueError(f"an oval of {length} m cannot have turns of radius {turn_radius} m")
    step = 2.0
    half = straight / 2.0
    xs = np.arange(-half, half, step)
    bottom = np.stack([xs, np.full_like(xs, -turn_radius)], axis=1)
    angles = np.arange(-np.pi / 2, np.pi / 2, step / turn_radius)
    right_turn = np.stack([half + turn_radius * np.cos(angles), turn_radius * np.sin(angles)], axis=1)
    top = np.stack([-xs, np.full_like(xs, turn_radius)], axis=1)
    left_turn = -right_turn
    points = np.vstack([bottom[len(bottom) // 2 :], right_turn, top, left_turn, bottom[: len(bottom) // 2]])
    barrier = {"barrier_height": barrier_height, "barrier_thickness": barrier_thickness}
    return build_track(name, points, width / 2.0, width / 2.0, **barrier)


def circuit_track(
    seed: int,
    length: float | None = None,
    min_width: float = 10.0,
    max_width: float = 15.0,
    min_radius: float = 25.0,
    name: str | None = None,
    barrier_height: float = 1.0,
    barrier_thickness: float = 1.0,
) -> Track:
    """A random smooth closed circuit for ``seed``: no self-intersection, bends of radius >= ``min_radius``.

    The centre line is a star-shaped curve r(θ) with a few random low harmonics, stretched; drafts
    whose bends are too tight or whose distant parts come closer than two barriers apart are redrawn.
    """
    rng = np.random.default_rng(seed)
    target = float(length) if length is not None else float(rng.uniform(1600.0, 3000.0))
    for _ in range(500):
        theta = np.linspace(0.0, 2.0 * np.pi, 360, endpoint=False)
        radius = np.ones_like(theta)
        for k in range(2, 8):
            radius += rng.uniform(0.0, 0.5 / k**0.8) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        if radius.min() < 0.35:
            continue
        points = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
        points *= [rng.uniform(1.0, 1.7), 1.0]
        points = _rotate(points, rng.uniform(0, 2 * np.pi))
        points *= target / ClosedPath(points).length
        width = _smooth_widths(rng, len(points), min_width, max_width)
        centerline = resample_closed(points, 1.0)
        if not _clearance_ok(centerline, max_width / 2.0 + barrier_thickness, min_radius):
            continue
        track = build_track(
            name or f"circuit_{seed}",
            points,
            width / 2.0,
            width / 2.0,
            barrier_height=barrier_height,
            barrier_thickness=barrier_thickness,
        )
        return _start_on_straight(track)
    raise ValueError(f"no valid circuit found for seed {seed} and length {target:.0f} m")


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _smooth_widths(rng: np.random.Generator, count: int, lo: float, hi: float) -> np.ndarray:
    phase = np.linspace(0.0, 2.0 * np.pi, count, endpoint=False)
    wave = sum(rng.normal(0.0, 1.0) * np.cos(k * phase + rng.uniform(0, 2 * np.pi)) for k in range(1, 5))
    wave = wave / max(np.abs(wave).max(), 1e-9)
    return np.clip((lo + hi) / 2.0 + wave * (hi - lo) / 2.0, lo, hi)


def _clearance_ok(centerline: np.ndarray, half_span: float, min_radius: float) -> bool:
    """Bends not tighter than ``min_radius``; distant parts of the track keep their barriers apart."""
    path = ClosedPath(centerline)
    if np.abs(path.curvature).max() > 1.0 / min_radius:
        return False
    clearance = 2.0 * half_span + 4.0
    pairs = cKDTree(centerline).query_pairs(clearance, output_type="ndarray")
    if len(pairs) == 0:
        return True
    gap = np.abs(path.s[pairs[:, 0]] - path.s[pairs[:, 1]])
    gap = np.minimum(gap, path.length - gap)
    return bool((gap < np.pi * clearance).all())


def _start_on_straight(track: Track) -> Track:
    """Re-index the track so s = 0 lies in the middle of its straightest stretch (the start line)."""
    window = 101
    k = np.abs(track.curvature)
    padded = np.concatenate([k[-window:], k, k[:window]])
    smooth = np.convolve(padded, np.ones(window) / window, mode="same")[window:-window]
    start = int(np.argmin(smooth))
    return Track(
        track.name,
        np.roll(track.centerline, -start, axis=0),
        np.roll(track.left_width, -start),
        np.roll(track.right_width, -start),
        np.roll(track.racing_line, -start, axis=0),
        track.barrier_height,
        track.barrier_thickness,
    )


def track_from_config(config: dict[str, Any] | Section, base_dir: Path | None = None, seed: int = 0) -> Track:
    """A track from a scenario's ``track`` section: ``type: oval | circuit | file`` and its options."""
    section = config if isinstance(config, Section) else Section(config, "track", "track config")
    kind = section.string("type", "oval", choices=("oval", "circuit", "file"))
    barrier = {
        "barrier_height": section.number("barrier_height", 1.0, min=0.2, max=10.0),
        "barrier_thickness": section.number("barrier_thickness", 1.0, min=0.1, max=5.0),
    }
    if kind == "file":
        path = Path(section.string("path"))
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        section.done()
        if not path.exists():
            raise section.error("path", f"track file '{path}' not found")
        return load_track(path)
    name = section.string("name", kind)
    try:
        if kind == "oval":
            params = {
                "length": section.number("length", 2400.0, min=400.0, max=20000.0),
                "turn_radius": section.number("turn_radius", 250.0, min=30.0, max=2000.0),
                "width": section.number("width", 14.0, min=2 * RACING_LINE_MARGIN + 1.0, max=40.0),
            }
            section.done()
            return oval_track(name=name, **params, **barrier)
        params = {
            "seed": section.integer("seed", seed, min=0),
            "length": section.number("length", min=600.0, max=20000.0) if section.has("length") else None,
            "min_width": section.number("min_width", 10.0, min=2 * RACING_LINE_MARGIN + 1.0, max=40.0),
            "max_width": section.number("max_width", 15.0, min=2 * RACING_LINE_MARGIN + 1.0, max=40.0),
            "min_radius": section.number("min_radius", 25.0, min=10.0, max=500.0),
        }
        section.done()
        if params["min_width"] > params["max_width"]:
            raise section.error("min_width", "is larger than max_width")
        return circuit_track(name=name if section.has("name") else None, **params, **barrier)
    except ValueError as exc:
        raise ConfigError(section.source, section.path, str(exc)) from exc
