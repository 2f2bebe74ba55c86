"""Flying objects: drones, birds, airplanes and helicopters with their shapes, sizes and motions.

Each object has a class, a shape variant (quad/hexa drones; crow, gull, raptor or pigeon colours;
airliners and light aircraft; helicopters with 2-5 blades), a size drawn from realistic ranges, and a
motion: ``hover`` and ``wander`` (drones, helicopters), ``flap`` and ``glide`` (birds, with flapping
wings), ``straight`` and ``circle``. Random objects are spawned around the ego (most of them in front,
where the camera looks) and, with ``respawn``, replaced by new ones (new instance ids) once the ego
has left them behind. Explicit objects from the scenario stay for the whole run. Every draw comes
from one generator, so a seed gives the same objects, motions and meshes bit for bit.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from racestack.objects import CLASS_ID, FLYING_CLASSES, empty_objects
from racestack.transforms import pose_matrix
from simulation.meshes import SEMANTIC_ID, Mesh, box, ellipsoid, join, polygon, prism, rotation_about, translation
from simulation.schema import Section
from simulation.world import Body

FLYING_INSTANCE_BASE = 1000  # instance ids of flying objects start here (cars use small ids)
TICK = 0.05  # s between motion updates (frames at 20 Hz, 10 Hz, ... see objects exactly up to date)
MOTIONS: dict[str, tuple[str, ...]] = {
    "drone": ("hover", "wander", "straight", "circle"),
    "bird": ("flap", "glide"),
    "airplane": ("straight", "circle"),
    "helicopter": ("hover", "straight", "circle"),
}
_GRAVITY = 9.81
_GLASS = (0.1, 0.12, 0.15)
_MAX_BANK = np.deg2rad(30.0)
_VIEW_HALF_ANGLE = np.deg2rad(35.0)
_MAX_VIEW_ELEVATION = np.deg2rad(32.0)


@dataclass(frozen=True)
class ClassSpec:
    """Spawn distribution of one class: relative weight and (low, high) ranges."""

    weight: float
    size: tuple[float, float]  # m: drone span, bird wingspan, aircraft length
    altitude: tuple[float, float]  # m above ground
    distance: tuple[float, float]  # m, horizontal, from the ego at spawn
    speed: tuple[float, float]  # m/s
    radius: tuple[float, float]  # m, of circling and gliding


DEFAULT_CLASSES: dict[str, ClassSpec] = {
    "drone": ClassSpec(1.0, (0.25, 1.2), (3.0, 60.0), (4.0, 120.0), (2.0, 15.0), (5.0, 30.0)),
    "bird": ClassSpec(1.0, (0.25, 1.8), (3.0, 80.0), (4.0, 120.0), (7.0, 20.0), (10.0, 60.0)),
    "airplane": ClassSpec(0.5, (10.0, 70.0), (150.0, 2500.0), (400.0, 4000.0), (60.0, 250.0), (1500.0, 4000.0)),
    "helicopter": ClassSpec(0.5, (9.0, 20.0), (30.0, 400.0), (60.0, 1200.0), (10.0, 60.0), (100.0, 400.0)),
}


@dataclass(frozen=True)
class ObjectSpec:
    """An explicit object of the scenario (``flying_objects.objects[i]``)."""

    kind: str
    position: tuple[float, float, float]
    motion: str
    size: float
    speed: float
    heading: float
    radius: float
    variant: int


@dataclass(frozen=True)
class FlyingConfig:
    """The scenario's ``flying_objects`` section."""

    count: int = 6
    classes: tuple[tuple[str, ClassSpec], ...] = tuple(DEFAULT_CLASSES.items())
    in_view: float = 0.75
    respawn: bool = True
    objects: tuple[ObjectSpec, ...] = ()


# -- shapes ------------------------------------------------------------------------------------


class Shape:
    """A template mesh in the body frame whose wings flap (about x) and rotors spin (about their hub).

    Parts are joined once; a pose only moves the vertices of the moving parts, so the triangles and
    their attributes are shared by every frame.
    """

    def __init__(
        self,
        rigid: Mesh,
        wings: Sequence[tuple[Mesh, float]] = (),
        rotors: Sequence[tuple[Mesh, np.ndarray, str]] = (),
    ) -> None:
        parts = [rigid, *(mesh for mesh, _ in wings), *(mesh for mesh, _, _ in rotors)]
        self.mesh = join(parts)
        ends = np.cumsum([part.vertices.shape[0] for part in parts])
        ranges = [slice(int(a), int(b)) for a, b in itertools.pairwise(ends)]
        self._wings = [(r, side) for r, (_, side) in zip(ranges[: len(wings)], wings, strict=True)]
        self._rotors = [
            (r, np.asarray(hub), axis) for r, (_, hub, axis) in zip(ranges[len(wings) :], rotors, strict=True)
        ]

    def labelled(self, semantic: int, instance: int) -> Shape:
        shape = Shape.__new__(Shape)
        shape.mesh, shape._wings, shape._rotors = self.mesh.labelled(semantic, instance), self._wings, self._rotors
        return shape

    def vertices(self, flap: float, rotor: float) -> np.ndarray:
        """(V, 3) body-frame vertices with the wings raised by ``flap`` and rotors turned by ``rotor`` (rad)."""
        vertices = self.mesh.vertices.copy()
        for part, side in self._wings:
            vertices[part] = vertices[part] @ rotation_about("x", side * flap)[:3, :3].T.astype(np.float32)
        for part, hub, axis in self._rotors:
            turn = rotation_about(axis, rotor)[:3, :3].T.astype(np.float32)
            vertices[part] = (vertices[part] - hub.astype(np.float32)) @ turn + hub.astype(np.float32)
        return vertices


def drone_shape(span: float, variant: int, rng: np.random.Generator) -> Shape:
    """Quad- or hexacopter: body, arms, 2-blade rotors, landing legs, and a camera on some."""
    colors = [(0.08, 0.08, 0.09), (0.85, 0.85, 0.86), (0.45, 0.46, 0.48), (0.7, 0.1, 0.1)]
    color = colors[variant % len(colors)]
    arms = 4 if variant % 2 == 0 else 6
    reach = span * 0.36
    blade = span * 0.15
    body = {"reflectivity": 0.3}
    parts = [box((0, 0, 0), (span * 0.3, span * 0.18, span * 0.1), color, **body)]
    rotors = []
    for k in range(arms):
        angle = np.pi / arms + 2.0 * np.pi * k / arms
        hub = np.array([reach * np.cos(angle), reach * np.sin(angle), span * 0.06])
        arm = box((reach / 2.0, 0, 0), (reach, span * 0.04, span * 0.03), color, **body)
        parts.append(arm.transformed(rotation_about("z", angle)))
        parts.append(prism(hub - [0, 0, span * 0.03], (span * 0.03, span * 0.03), span * 0.06, 6, (0.1, 0.1, 0.1)))
        rotors.append(
            (box(hub, (2 * blade, span * 0.025, span * 0.006), (0.15, 0.15, 0.15), reflectivity=0.2), hub, "z")
        )
    for y in (-1.0, 1.0):
        parts.append(
            box((0, y * span * 0.08, -span * 0.09), (span * 0.22, span * 0.015, span * 0.015), (0.2, 0.2, 0.2))
        )
    if rng.random() < 0.6:
        parts.append(ellipsoid((span * 0.12, 0, -span * 0.07), (span * 0.04,) * 3, (0.05, 0.05, 0.05)))
    return Shape(join(parts), rotors=tuple(rotors))


def bird_shape(span: float, variant: int, rng: np.random.Generator) -> Shape:
    """Body, head, beak, tail and two swept, tapering wings hinged at the shoulders."""
    palettes = [
        ((0.06, 0.06, 0.07), (0.05, 0.05, 0.06)),  # crow
        ((0.92, 0.92, 0.9), (0.55, 0.57, 0.6)),  # gull
        ((0.4, 0.28, 0.17), (0.3, 0.2, 0.12)),  # raptor
        ((0.5, 0.52, 0.56), (0.4, 0.42, 0.46)),  # pigeon
    ]
    body_color, wing_color = palettes[variant % len(palettes)]
    length = span * rng.uniform(0.33, 0.45)
    radius = span * 0.055
    feathers = {"reflectivity": 0.2, "texture": 0.1}
    parts = [
        ellipsoid((0, 0, 0), (length / 2.0, radius, radius * 0.9), body_color, **feathers),
        ellipsoid((length * 0.5, 0, radius * 0.3), (radius * 0.9,) * 3, body_color, **feathers),
        prism((length * 0.62, 0, radius * 0.25), (radius * 0.25, radius * 0.25), radius, 4, (0.8, 0.6, 0.1), axis="x",
              taper=(1.0, 0.0)),
        polygon([[-length * 0.35, 0, 0], [-length * 0.75, radius * 2.2, 0], [-length * 0.75, -radius * 2.2, 0]],
                wing_color, **feathers),
    ]  # fmt: skip
    root, tip = span * rng.uniform(0.14, 0.2), span * rng.uniform(0.05, 0.09)
    sweep = span * rng.uniform(0.05, 0.15)
    wings = []
    for side in (1.0, -1.0):
        outline = [
            [root * 0.45, side * radius * 0.8, 0.0],
            [tip * 0.5 - sweep, side * span / 2.0, 0.0],
            [-tip * 0.5 - sweep, side * span / 2.0, 0.0],
            [-root * 0.55, side * radius * 0.8, 0.0],
        ]
        wings.append((polygon(outline, wing_color, **feathers), side))
    return Shape(join(parts), wings=tuple(wings))


def airplane_shape(length: float, variant: int, rng: np.random.Generator) -> Shape:
    """Airliner (swept low wing, two engines) or light aircraft (straight high wing, propeller)."""
    airliner = variant % 2 == 0
    tails = [(0.1, 0.2, 0.6), (0.75, 0.1, 0.1), (0.1, 0.45, 0.3), (0.9, 0.6, 0.1)]
    white, grey = (0.9, 0.9, 0.92), (0.6, 0.62, 0.65)
    tail_color = tails[int(rng.integers(0, len(tails)))]
    skin = {"reflectivity": 0.5, "texture": 0.03}
    radius = length * (0.055 if airliner else 0.07)
    parts = [
        prism((0, 0, 0), (radius, radius), length * 0.7, 10, white, axis="x", **skin),
        prism((length * 0.42, 0, 0), (radius, radius), length * 0.14, 10, white, axis="x", taper=(1.0, 0.2), **skin),
        prism((-length * 0.42, 0, radius * 0.3), (radius, radius), length * 0.14, 10, white, axis="x",
              taper=(1.0, 0.25), **skin),
    ]  # fmt: skip
    span = length * (rng.uniform(0.9, 1.05) if airliner else rng.uniform(1.2, 1.4))
    chord_root, chord_tip = length * (0.2 if airliner else 0.14), length * (0.06 if airliner else 0.12)
    sweep = span * (0.22 if airliner else 0.0)
    wing_z = -radius * 0.6 if airliner else radius * 0.95
    wing_x = length * 0.02
    for side in (1.0, -1.0):
        outline = [
            [wing_x + chord_root / 2, side * radius, wing_z],
            [wing_x + chord_tip / 2 - sweep / 2, side * span / 2, wing_z + (0.03 * span if airliner else 0.0)],
            [wing_x - chord_tip / 2 - sweep / 2, side * span / 2, wing_z + (0.03 * span if airliner else 0.0)],
            [wing_x - chord_root / 2, side * radius, wing_z],
        ]
        parts.append(polygon(outline, grey, **skin))
        stab = [
            [-length * 0.4, side * radius * 0.5, radius * 0.4],
            [-length * 0.47, side * length * 0.17, radius * 0.5],
            [-length * 0.5, side * length * 0.17, radius * 0.5],
            [-length * 0.49, side * radius * 0.5, radius * 0.4],
        ]
        parts.append(polygon(stab, grey, **skin))
        if airliner:
            engine_center = (wing_x + chord_root * 0.1 - sweep * 0.18, side * span * 0.17, wing_z - radius * 0.6)
            parts.append(prism(engine_center, (radius * 0.45, radius * 0.45), length * 0.09, 8, grey, axis="x", **skin))
    fin = [
        [-length * 0.36, 0, radius * 0.8],
        [-length * 0.47, 0, radius + length * 0.16],
        [-length * 0.5, 0, radius + length * 0.16],
        [-length * 0.49, 0, radius * 0.6],
    ]
    parts.append(polygon(fin, tail_color, **skin))
    rotors = []
    if not airliner:
        hub = np.array([length * 0.5, 0.0, 0.0])
        prop = box(hub, (length * 0.01, length * 0.025, length * 0.22), (0.1, 0.1, 0.1))
        rotors.append((prop, hub, "x"))
    return Shape(join(parts), rotors=tuple(rotors))


def helicopter_shape(length: float, variant: int, rng: np.random.Generator) -> Shape:
    """Cabin, tail boom and fin, skids, main rotor (2-5 blades) and tail rotor."""
    colors = [(0.75, 0.1, 0.1), (0.9, 0.75, 0.1), (0.1, 0.15, 0.45), (0.9, 0.9, 0.9), (0.3, 0.35, 0.2)]
    color = colors[variant % len(colors)]
    skin = {"reflectivity": 0.45, "texture": 0.03}
    cabin_len, cabin_r = length * 0.38, length * 0.1
    parts = [
        ellipsoid((length * 0.15, 0, 0), (cabin_len / 2, cabin_r, cabin_r * 1.1), color, **skin),
        ellipsoid((length * 0.27, 0, cabin_r * 0.15), (cabin_len * 0.22, cabin_r * 0.8, cabin_r * 0.7), _GLASS),
        prism((-length * 0.2, 0, cabin_r * 0.3), (cabin_r * 0.25, cabin_r * 0.3), length * 0.5, 6, color, axis="x",
              taper=(1.0, 0.5), **skin),
        box((length * 0.15, 0, cabin_r * 1.15), (cabin_r * 0.5, cabin_r * 0.4, cabin_r * 0.3), (0.2, 0.2, 0.2)),
    ]  # fmt: skip
    fin = [[-length * 0.38, 0, cabin_r * 0.3], [-length * 0.46, 0, cabin_r * 1.6], [-length * 0.48, 0, cabin_r * 1.6]]
    parts.append(polygon([*fin, [-length * 0.46, 0, cabin_r * 0.2]], color, **skin))
    skid = (cabin_len * 1.1, length * 0.012, length * 0.012)
    for y in (-1.0, 1.0):
        parts.append(box((length * 0.15, y * cabin_r * 0.9, -cabin_r * 1.35), skid, (0.15, 0.15, 0.15)))
    blades = 2 + variant % 4
    blade_len = length * 0.43
    hub = np.array([length * 0.15, 0.0, cabin_r * 1.35])
    main = [
        box((blade_len / 2, 0, 0), (blade_len, length * 0.03, length * 0.004), (0.12, 0.12, 0.12), reflectivity=0.3)
        .transformed(rotation_about("z", 2.0 * np.pi * k / blades))
        .transformed(translation(hub))
        for k in range(blades)
    ]
    tail_hub = np.array([-length * 0.47, cabin_r * 0.3, cabin_r * 1.2])
    tail = box(tail_hub, (length * 0.1, length * 0.005, length * 0.02), (0.12, 0.12, 0.12))
    return Shape(join(parts), rotors=((join(main), hub, "z"), (tail, tail_hub, "y")))


_SHAPES = {"drone": drone_shape, "bird": bird_shape, "airplane": airplane_shape, "helicopter": helicopter_shape}


# -- the population ------------------------------------------------------------------------------


@dataclass
class _Flyer:
    """One object's state: objects are few, so each is a plain record its motion function updates."""

    kind: str
    instance: int
    shape: Shape
    motion: str
    position: np.ndarray
    anchor: np.ndarray
    speed: float
    heading: float
    radius: float
    turn_rate: float
    phase: float
    flap_hz: float
    rotor_hz: float
    respawn: bool
    velocity: np.ndarray
    target: np.ndarray
    roll: float = 0.0
    pitch: float = 0.0


class FlyingObjects:
    """The flying objects of a run; ``step(dt, ego_pose)`` moves them, ``bodies()`` gives their meshes."""

    def __init__(self, config: FlyingConfig, rng: np.random.Generator, ego_pose: Sequence[float]) -> None:
        self.config = config
        self.rng = rng
        self.time = 0.0
        self._pending = 0.0
        self._next_instance = FLYING_INSTANCE_BASE
        self._specs = dict(config.classes)
        self._weights = np.array([spec.weight for _, spec in config.classes], dtype=np.float64)
        self._posed: dict[int, tuple[Body, np.ndarray, np.ndarray]] = {}
        self.flyers: list[_Flyer] = [self._explicit(spec) for spec in config.objects]
        if self._weights.sum() > 0:
            self.flyers += [self._spawn(ego_pose) for _ in range(config.count)]

    def __len__(self) -> int:
        return len(self.flyers)

    # -- spawning --------------------------------------------------------------------------

    def _new_instance(self) -> int:
        self._next_instance += 1
        return self._next_instance - 1

    def _spawn(self, ego_pose: Sequence[float], kind: str | None = None) -> _Flyer:
        """A random object near the ego; a replacement keeps the class of the one it replaces.

        Keeping the class keeps the class mix at the configured weights: otherwise long-lived far
        objects (airplanes) would pile up while near ones (birds) are replaced every few seconds.
        """
        rng = self.rng
        if kind is None:
            names = [name for name, _ in self.config.classes]
            kind = names[int(rng.choice(len(names), p=self._weights / self._weights.sum()))]
        spec = self._specs[kind]
        distance = _log_uniform(rng, spec.distance)
        in_view = rng.random() < self.config.in_view
        bearing = ego_pose[2] + (
            rng.uniform(-_VIEW_HALF_ANGLE, _VIEW_HALF_ANGLE) if in_view else rng.uniform(-np.pi, np.pi)
        )
        low, high = spec.altitude
        if in_view:
            high = max(low, min(high, distance * np.tan(_MAX_VIEW_ELEVATION)))
        position = np.array(
            [ego_pose[0] + distance * np.cos(bearing), ego_pose[1] + distance * np.sin(bearing), rng.uniform(low, high)]
        )
        motions = MOTIONS[kind]
        motion = motions[int(rng.integers(0, len(motions)))]
        return self._make(
            kind,
            position,
            motion,
            size=_log_uniform(rng, spec.size),
            speed=rng.uniform(*spec.speed),
            heading=rng.uniform(-np.pi, np.pi),
            radius=rng.uniform(*spec.radius),
            variant=int(rng.integers(0, 60)),
            respawn=self.config.respawn,
        )

    def _explicit(self, spec: ObjectSpec) -> _Flyer:
        return self._make(
            spec.kind,
            np.array(spec.position, dtype=np.float64),
            spec.motion,
            spec.size,
            spec.speed,
            spec.heading,
            spec.radius,
            spec.variant,
            respawn=False,
        )

    def _make(
        self,
        kind: str,
        position: np.ndarray,
        motion: str,
        size: float,
        speed: float,
        heading: float,
        radius: float,
        variant: int,
        respawn: bool,
    ) -> _Flyer:
        rng = self.rng
        instance = self._new_instance()
        shape = _SHAPES[kind](size, variant, rng).labelled(SEMANTIC_ID[kind], instance)
        if motion == "hover":
            speed = 0.0
        anchor = position.copy()
        if motion in ("circle", "glide"):
            radius = max(radius, speed**2 / (_GRAVITY * np.tan(_MAX_BANK)))
            anchor = position - radius * np.array([np.cos(heading - np.pi / 2), np.sin(heading - np.pi / 2), 0.0])
        return _Flyer(
            kind=kind,
            instance=instance,
            shape=shape,
            motion=motion,
            position=position,
            anchor=anchor,
            speed=float(speed),
            heading=float(heading),
            radius=float(radius),
            turn_rate=0.0,
            phase=float(rng.uniform(0.0, 2.0 * np.pi)),
            flap_hz=float(np.clip(3.0 / np.sqrt(size), 2.0, 9.0)) * rng.uniform(0.85, 1.15),
            rotor_hz={"drone": 90.0, "helicopter": 6.0, "airplane": 30.0}.get(kind, 0.0) * rng.uniform(0.9, 1.1),
            respawn=respawn,
            velocity=np.zeros(3),
            target=position + _wander_offset(rng),
        )

    # -- motion ----------------------------------------------------------------------------

    def step(self, dt: float, ego_pose: Sequence[float]) -> None:
        """Let ``dt`` seconds pass: objects move in whole ticks of ``TICK`` s, so their motion does not
        depend on the physics step, and the per-object work runs at most 1/TICK times a second."""
        self._pending += dt
        while self._pending >= TICK - 1e-9:
            self._pending -= TICK
            self._tick(ego_pose)

    def _tick(self, ego_pose: Sequence[float]) -> None:
        """Move every object by one tick; recycle the ones the ego has left behind."""
        self.time += TICK
        self._posed = {}
        for i, flyer in enumerate(self.flyers):
            if flyer.respawn and self._left_behind(flyer, ego_pose):
                self.flyers[i] = self._spawn(ego_pose, flyer.kind)
                continue
            before = flyer.position.copy()
            _MOVES[flyer.motion](flyer, TICK, self.time, self.rng)
            flyer.velocity = (flyer.position - before) / TICK

    def _left_behind(self, flyer: _Flyer, ego_pose: Sequence[float]) -> bool:
        spec = self._specs.get(flyer.kind, DEFAULT_CLASSES[flyer.kind])
        offset = flyer.position[:2] - np.asarray(ego_pose[:2])
        ahead = offset[0] * np.cos(ego_pose[2]) + offset[1] * np.sin(ego_pose[2])
        distance = float(np.hypot(*offset))
        return ahead < -max(30.0, 0.5 * spec.distance[0]) or distance > 1.3 * spec.distance[1]

    # -- outputs ---------------------------------------------------------------------------

    def bodies(self) -> list[Body]:
        """Meshes of every object in ``map`` at the current time (wings and rotors posed)."""
        return [self._body(flyer)[0] for flyer in self.flyers]

    def objects_table(self) -> np.ndarray:
        """Ground truth in ``map`` (OBJECT_DTYPE): yaw-aligned boxes around the posed meshes, true velocities."""
        table = empty_objects(len(self.flyers))
        for row, flyer in zip(table, self.flyers, strict=True):
            _, center, size = self._body(flyer)
            row["x"], row["y"], row["z"] = center
            row["length"], row["width"], row["height"] = size
            row["yaw"] = flyer.heading
            row["vx"], row["vy"] = flyer.velocity[:2]
            row["class_id"] = CLASS_ID[flyer.kind]
            row["track_id"] = flyer.instance
        return table

    def _body(self, flyer: _Flyer) -> tuple[Body, np.ndarray, np.ndarray]:
        """(body in ``map``, ground-truth box centre, box size), posed once per time step."""
        if flyer.instance not in self._posed:
            self._posed[flyer.instance] = self._pose(flyer)
        return self._posed[flyer.instance]

    def _pose(self, flyer: _Flyer) -> tuple[Body, np.ndarray, np.ndarray]:
        flap = _flap_angle(flyer, self.time)
        rotor = 2.0 * np.pi * flyer.rotor_hz * self.time
        attitude = pose_matrix([0.0, 0.0, 0.0, flyer.roll, flyer.pitch, 0.0])[:3, :3]
        tilted = flyer.shape.vertices(flap, rotor) @ attitude.T.astype(np.float32)
        low, high = tilted.min(axis=0), tilted.max(axis=0)
        yaw = pose_matrix([0.0, 0.0, 0.0, 0.0, 0.0, flyer.heading])[:3, :3]
        vertices = tilted @ yaw.T.astype(np.float32) + flyer.position.astype(np.float32)
        center = yaw @ ((low + high) / 2.0) + flyer.position
        radius = float(np.sqrt(((vertices - flyer.position.astype(np.float32)) ** 2).sum(axis=1).max()))
        m = flyer.shape.mesh
        mesh = Mesh(vertices, m.triangles, m.albedo, m.texture, m.reflectivity, m.semantic, m.instance)
        body = Body(mesh, flyer.position.copy(), radius, flyer.instance, CLASS_ID[flyer.kind])
        return body, center, high - low


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return float(np.exp(rng.uniform(np.log(low), np.log(high)))) if low > 0 else float(rng.uniform(low, high))


def _wander_offset(rng: np.random.Generator) -> np.ndarray:
    return np.array([*rng.uniform(-25.0, 25.0, 2), rng.uniform(-4.0, 4.0)])


def _flap_angle(flyer: _Flyer, time: float) -> float:
    if flyer.kind != "bird":
        return 0.0
    if flyer.motion == "glide":
        return 0.08
    return 0.1 + 0.55 * np.sin(2.0 * np.pi * flyer.flap_hz * time + flyer.phase)


def _hover(flyer: _Flyer, dt: float, time: float, rng: np.random.Generator) -> None:
    wobble = np.array(
        [np.sin(0.7 * time + flyer.phase), np.sin(0.9 * time + 2 * flyer.phase), 0.5 * np.sin(1.3 * time)]
    )
    flyer.position = flyer.anchor + 0.3 * wobble
    flyer.heading = float(_wrap(flyer.heading + 0.2 * np.sin(0.3 * time + flyer.phase) * dt))
    flyer.pitch, flyer.roll = 0.0, 0.0


def _wander(flyer: _Flyer, dt: float, time: float, rng: np.random.Generator) -> None:
    to_target = flyer.target - flyer.position
    if np.linalg.norm(to_target) < 3.0:
        flyer.target = flyer.anchor + _wander_offset(rng)
        to_target = flyer.target - flyer.position
    desired = np.arctan2(to_target[1], to_target[0])
    turn = np.clip(_wrap(desired - flyer.heading), -1.5 * dt, 1.5 * dt)
    flyer.heading = float(_wrap(flyer.heading + turn))
    climb = np.clip(to_target[2], -2.0, 2.0)
    flyer.position = flyer.position + dt * np.array(
        [flyer.speed * np.cos(flyer.heading), flyer.speed * np.sin(flyer.heading), climb]
    )
    flyer.position[2] = max(flyer.position[2], 1.5)
    flyer.pitch = 0.02 * flyer.speed  # a multicopter tilts nose-down to fly forward
    flyer.roll = 0.0


def _straight(flyer: _Flyer, dt: float, time: float, rng: np.random.Generator) -> None:
    direction = np.array([np.cos(flyer.heading), np.sin(flyer.heading), 0.0])
    flyer.position = flyer.position + flyer.speed * dt * direction
    flyer.pitch = 0.02 * flyer.speed if flyer.kind == "drone" else 0.0
    flyer.roll = 0.0


def _flap(flyer: _Flyer, dt: float, time: float, rng: np.random.Generator) -> None:
    """Flapping flight with a wandering turn rate (an Ornstein-Uhlenbeck process) and banked turns."""
    flyer.turn_rate += -flyer.turn_rate * dt / 2.0 + 0.4 * np.sqrt(dt) * rng.standard_normal()
    flyer.heading = float(_wrap(flyer.heading + flyer.turn_rate * dt))
    direction = np.array([np.cos(flyer.heading), np.sin(flyer.heading), 0.3 * np.sin(0.5 * time + flyer.phase)])
    flyer.position = flyer.position + flyer.speed * dt * direction
    flyer.position[2] = max(flyer.position[2], 2.0)
    flyer.roll = -float(np.clip(np.arctan(flyer.speed * flyer.turn_rate / _GRAVITY), -_MAX_BANK, _MAX_BANK))


def _circle(flyer: _Flyer, dt: float, time: float, rng: np.random.Generator) -> None:
    """Counter-clockwise circling around the anchor (soaring birds, holding patterns), banked inward."""
    rate = flyer.speed / max(flyer.radius, 1e-3)
    angle = np.arctan2(flyer.position[1] - flyer.anchor[1], flyer.position[0] - flyer.anchor[0]) + rate * dt
    height = flyer.anchor[2] + min(0.05 * flyer.radius, 0.3 * flyer.anchor[2]) * np.sin(0.2 * time + flyer.phase)
    flyer.position = np.array(
        [flyer.anchor[0] + flyer.radius * np.cos(angle), flyer.anchor[1] + flyer.radius * np.sin(angle), height]
    )
    flyer.heading = float(_wrap(angle + np.pi / 2.0))
    flyer.roll = -float(np.arctan(flyer.speed * rate / _GRAVITY))
    flyer.pitch = 0.0


_MOVES = {"hover": _hover, "wander": _wander, "straight": _straight, "flap": _flap, "glide": _circle, "circle": _circle}


def _wrap(angle: float) -> float:
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


# -- scenario section --------------------------------------------------------------------------


def flying_config_from_section(section: Section) -> FlyingConfig:
    """Validate ``flying_objects``: count, classes (weights or ranges), in_view, respawn, objects."""
    defaults = FlyingConfig()
    classes = _classes(section.section("classes")) if section.has("classes") else defaults.classes
    config = FlyingConfig(
        count=section.integer("count", defaults.count, min=0, max=1000),
        classes=classes,
        in_view=section.number("in_view", defaults.in_view, min=0.0, max=1.0),
        respawn=section.boolean("respawn", defaults.respawn),
        objects=tuple(_object(s) for s in section.sections("objects", [])),
    )
    section.done()
    if config.count and not any(spec.weight > 0 for _, spec in config.classes):
        raise section.error("classes", "every class weight is 0 but count > 0")
    return config


def _classes(section: Section) -> tuple[tuple[str, ClassSpec], ...]:
    """``{drone: 1.0, bird: {weight: 2, distance: [5, 80]}, ...}``; classes left out get weight 0."""
    out = []
    for name in FLYING_CLASSES:
        base = DEFAULT_CLASSES[name]
        if not section.has(name):
            out.append((name, replace(base, weight=0.0)))
            continue
        value = section.raw(name)
        if isinstance(value, dict):
            sub = section.section(name)
            spec = ClassSpec(
                weight=sub.number("weight", 1.0, min=0.0),
                size=_range(sub, "size", base.size),
                altitude=_range(sub, "altitude", base.altitude),
                distance=_range(sub, "distance", base.distance),
                speed=_range(sub, "speed", base.speed),
                radius=_range(sub, "radius", base.radius),
            )
            sub.done()
        else:
            spec = replace(base, weight=section.number(name, min=0.0))
        out.append((name, spec))
    section.done()
    return tuple(out)


def _range(section: Section, name: str, default: tuple[float, float]) -> tuple[float, float]:
    low, high = section.vector(name, 2, default)
    if not 0.0 <= low <= high:
        raise section.error(name, f"needs 0 <= low <= high, got [{low:g}, {high:g}]")
    if name in ("size", "distance") and low <= 0.0:
        raise section.error(name, f"needs a positive low end, got {low:g}")
    return (low, high)


def _object(section: Section) -> ObjectSpec:
    kind = section.string("class", choices=FLYING_CLASSES)
    base = DEFAULT_CLASSES[kind]
    spec = ObjectSpec(
        kind=kind,
        position=section.vector("position", 3),
        motion=section.string("motion", MOTIONS[kind][0], choices=MOTIONS[kind]),
        size=section.number("size", float(np.sqrt(base.size[0] * base.size[1])), min=0.05, max=100.0),
        speed=section.number("speed", float(np.mean(base.speed)), min=0.0, max=400.0),
        heading=section.number("heading", 0.0, min=-2 * np.pi, max=2 * np.pi),
        radius=section.number("radius", float(np.mean(base.radius)), min=1.0, max=10000.0),
        variant=section.integer("variant", 0, min=0, max=1000),
    )
    if spec.position[2] <= 0.0:
        raise section.error("position", f"altitude (z) must be above the ground, got {spec.position[2]:g}")
    section.done()
    return spec
