"""Scenario YAML -> validated dataclasses; a bad or incomplete file fails naming the key.

Sections: ``name``, ``seed``, ``duration``, ``rate``, ``physics_dt``, ``track``, ``ego``, ``expert``,
``opponents``, ``noise`` (validated here), ``sensors`` and ``flying_objects`` (kept as written and
validated by the sensor modules that own them, see docs/simulator.md). Scenario names resolve in
``config/scenarios/`` (``heldout/`` holds the scenarios no training may use).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from racestack.paths import resolve_share_path
from simulation.schema import REQUIRED, ConfigError, Section
from simulation.track import Track, track_from_config
from simulation.vehicles import RACING, BrakeEvent, Lane, LaneChange, OpponentSpec, VehicleParams

SCENARIO_FOLDER = "config/scenarios"
HELDOUT_FOLDER = "config/scenarios/heldout"


@dataclass(frozen=True)
class EgoSpec:
    """Start of the ego: box centre at arc length ``start_s``, offset ``lane``, speed ``speed``."""

    start_s: float = 0.0
    lane: Lane = RACING
    speed: float = 0.0
    params: VehicleParams = field(default_factory=VehicleParams)


@dataclass(frozen=True)
class ExpertSpec:
    """The privileged driver's style: grip use, overtaking distances, lateral safety margins."""

    lateral_accel_scale: float = 0.85
    brake_scale: float = 0.8
    overtake_gap: float = 60.0
    side_clearance: float = 1.4
    follow_gap: float = 10.0
    time_gap: float = 0.6
    track_margin: float = 0.9


@dataclass(frozen=True)
class NoiseSpec:
    """Standard deviations of the noise on /localization/odometry (0 = the true state)."""

    position: float = 0.0
    yaw: float = 0.0
    speed: float = 0.0


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    track: Track
    ego: EgoSpec
    expert: ExpertSpec
    opponents: tuple[OpponentSpec, ...]
    noise: NoiseSpec
    duration: float
    rate: float
    physics_dt: float
    sensors: dict[str, Any] = field(default_factory=dict)
    flying_objects: Any = None
    source: str = ""

    @property
    def substeps(self) -> int:
        """Physics steps per frame."""
        return max(1, round(1.0 / (self.rate * self.physics_dt)))


def timing_problem(rate: float, physics_dt: float) -> str | None:
    """Why a frame rate and physics step do not fit (a frame must be a whole number of steps), or None."""
    steps = 1.0 / (rate * physics_dt)
    if steps < 1.0 - 1e-9 or abs(steps - round(steps)) > 1e-6:
        return f"{physics_dt:g} s does not divide one frame (1/rate = {1 / rate:.6g} s) into whole physics steps"
    return None


def scenario_path(name: str | Path) -> Path:
    """A scenario file from a path or a name in config/scenarios (``heldout/<name>`` too)."""
    try:
        return resolve_share_path(name, SCENARIO_FOLDER, ".yaml")
    except FileNotFoundError as exc:
        available = ", ".join(list_scenarios()) or "none"
        raise ConfigError(str(name), "", f"scenario not found (available: {available})") from exc


def list_scenarios(heldout: bool = False) -> list[str]:
    """Names of the shipped scenarios (training ones by default, or the held-out ones)."""
    from racestack.paths import share_dir

    folder = share_dir() / (HELDOUT_FOLDER if heldout else SCENARIO_FOLDER)
    prefix = "heldout/" if heldout else ""
    return sorted(prefix + p.stem for p in folder.glob("*.yaml"))


def load_scenario(source: str | Path | dict[str, Any], name: str = "") -> Scenario:
    """A validated scenario from a file path, a shipped name, or an already parsed mapping."""
    if isinstance(source, dict):
        return parse_scenario(source, name or str(source.get("name", "scenario")), base_dir=None)
    path = scenario_path(source)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"scenario {path.name}", "", f"cannot read: {exc}") from exc
    return parse_scenario(data, path.name, base_dir=path.parent, default_name=path.stem)


def parse_scenario(
    data: Any, source: str, base_dir: Path | None = None, default_name: str = "scenario"
) -> Scenario:
    root = Section(data, "", f"scenario {source}")
    seed = root.integer("seed", 0, min=0, max=2**32 - 1)
    rate = root.number("rate", 20.0, min=1.0, max=200.0)
    physics_dt = root.number("physics_dt", 0.01, min=0.001, max=0.05)
    problem = timing_problem(rate, physics_dt)
    if problem:
        raise root.error("physics_dt", problem)
    track = track_from_config(root.section("track", required=True), base_dir=base_dir, seed=seed)
    ego = _ego(root.section("ego"), track)
    scenario = Scenario(
        name=root.string("name", default_name),
        seed=seed,
        track=track,
        ego=ego,
        expert=_dataclass_from(ExpertSpec, root.section("expert")),
        opponents=tuple(_opponent(o, i, track, ego) for i, o in enumerate(root.sections("opponents", []))),
        noise=_noise(root.section("noise")),
        duration=root.number("duration", 120.0, min=0.1, max=86400.0),
        rate=rate,
        physics_dt=physics_dt,
        sensors=root.section("sensors").data,
        flying_objects=root.raw("flying_objects", None),
        source=source,
    )
    root.done()
    return scenario


def _ego(section: Section, track: Track) -> EgoSpec:
    spec = EgoSpec(
        start_s=section.number("start_s", 0.0, min=-track.length, max=track.length),
        lane=_lane(section, "lane", RACING),
        speed=section.number("speed", 0.0, min=0.0, max=150.0),
        params=_vehicle(section.section("vehicle")),
    )
    section.done()
    return spec


def _vehicle(section: Section) -> VehicleParams:
    params = _dataclass_from(VehicleParams, section)
    if params.rear_overhang >= params.length:
        raise section.error("rear_overhang", "must be shorter than the vehicle length")
    return params


def _dataclass_from(kind: type, section: Section):
    """A dataclass of positive float fields, each overridable by the section (unknown keys fail)."""
    values = {f.name: section.number(f.name, f.default, min=1e-6) for f in fields(kind)}
    section.done()
    return kind(**values)


def _noise(section: Section) -> NoiseSpec:
    odometry = section.section("odometry")
    values = {f.name: odometry.number(f.name, f.default, min=0.0, max=100.0) for f in fields(NoiseSpec)}
    spec = NoiseSpec(**values)
    odometry.done()
    section.done()
    return spec


def _lane(section: Section, key: str, default: Lane) -> Lane:
    value = section.raw(key, default)
    if value == RACING:
        return RACING
    if isinstance(value, bool) or not isinstance(value, int | float):
        detail = f"expected a number (lateral offset, m, left > 0) or '{RACING}', got {value!r}"
        raise section.error(key, detail)
    return float(value)


def _opponent(section: Section, index: int, track: Track, ego: EgoSpec) -> OpponentSpec:
    """An opponent; ``gap`` places it that far ahead of the ego's start (negative: behind)."""
    if section.has("start_s") == section.has("gap"):
        detail = "give exactly one of start_s (m on the centre line) or gap (m from the ego)"
        raise section.error("start_s", detail)
    if section.has("start_s"):
        start = section.number("start_s", min=-track.length, max=track.length)
    else:
        start = ego.start_s + section.number("gap", min=-track.length, max=track.length)
    params = _vehicle(section.section("vehicle"))
    spec = OpponentSpec(
        name=section.string("name", f"opponent_{index}"),
        start_s=start,
        lane=_lane(section, "lane", RACING),
        speed=section.number("speed", 70.0, min=0.0, max=150.0),
        speed_scale=section.number("speed_scale", 0.9, min=0.05, max=1.5),
        start_speed=section.number("start_speed", min=0.0, max=150.0) if section.has("start_speed") else None,
        max_accel=section.number("max_accel", 6.0, min=0.1, max=30.0),
        max_brake=section.number("max_brake", 12.0, min=0.1, max=50.0),
        lateral_accel=section.number("lateral_accel", 20.0, min=1.0, max=60.0),
        lane_changes=tuple(_lane_change(c) for c in section.sections("lane_changes", [])),
        brakes=tuple(_brake(b) for b in section.sections("brakes", [])),
        overtake=section.boolean("overtake", False),
        time_gap=section.number("time_gap", 0.8, min=0.0, max=10.0),
        min_gap=section.number("min_gap", 8.0, min=0.0, max=200.0),
        params=params,
    )
    section.done()
    return spec


def _lane_change(section: Section) -> LaneChange:
    change = LaneChange(
        at=section.number("at", min=0.0),
        lane=_lane(section, "lane", REQUIRED),
        duration=section.number("duration", 3.0, min=0.1, max=60.0),
    )
    section.done()
    return change


def _brake(section: Section) -> BrakeEvent:
    event = BrakeEvent(
        at=section.number("at", min=0.0),
        speed=section.number("speed", min=0.0, max=150.0),
        decel=section.number("decel", 10.0, min=0.1, max=50.0),
        hold=section.number("hold", 2.0, min=0.0, max=3600.0),
    )
    section.done()
    return event
