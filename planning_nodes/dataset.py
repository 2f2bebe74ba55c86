"""``racestack dataset planning``: expert driving and the future of every car, from simulator runs.

Each run (one scenario variant, headless, the privileged expert driving) becomes one ``.npz`` with
time series sampled at ``--rate``: the ego state and the expert's command, every opponent's box
and velocity in ``map``, the BEV class fractions per patch (the risk map's context tokens), and the
track. Everything the planners train on is derived from these series: risk-map labels (future
footprints at the horizon's steps, rendered when training) and expert trajectories (the ego's next
3 s). Variants perturb the opponents' starts, speeds and manoeuvre times with a seeded generator.
Held-out scenarios are only exported with ``--heldout`` into a separate folder (evaluation only).
"""

from __future__ import annotations

import argparse
import time as wallclock
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from planning_nodes.riskmap.features import bev_tokens
from racestack.grid import LITE_GRID
from simulation.scenario import Scenario, list_scenarios, load_scenario
from simulation.simulation import Simulation
from simulation.track import Track

OBJECT_FIELDS = ("x", "y", "yaw", "vx", "vy", "length", "width")
EGO_FIELDS = ("x", "y", "yaw", "v", "steer", "accel")


@dataclass
class Run:
    """One exported run: series (F, ...) at ``rate`` Hz; objects (F, M, 7) NaN where absent."""

    name: str
    track: Track
    rate: float
    time: np.ndarray
    ego: np.ndarray
    command: np.ndarray
    objects: np.ndarray
    bev: np.ndarray

    @property
    def frames(self) -> int:
        return int(self.time.shape[0])


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="datasets/planning", help="output folder (train/ and heldout/ inside)")
    parser.add_argument("--scenarios", nargs="*", default=None, help="scenario names (default: the training suite)")
    parser.add_argument("--heldout", action="store_true", help="export the held-out scenarios (evaluation only)")
    parser.add_argument("--variants", type=int, default=3, help="perturbed runs per scenario")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per run (capped by the scenario)")
    parser.add_argument("--rate", type=float, default=10.0, help="samples per second")
    parser.add_argument("--seed", type=int, default=0, help="seed of the perturbations")
    parser.add_argument("--no-bev", action="store_true", help="skip BEV context (faster; tokens are zeros)")


def run(args: argparse.Namespace) -> int:
    names = args.scenarios or list_scenarios(heldout=args.heldout)
    if not names:
        print("dataset planning: no scenarios found in config/scenarios")
        return 1
    if not args.heldout and any(name.startswith("heldout/") for name in names):
        print("dataset planning: held-out scenarios may not be used for training (pass --heldout)")
        return 2
    folder = Path(args.out) / ("heldout" if args.heldout else "train")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for name in names:
        base = load_scenario(name)
        for variant in range(args.variants):
            scenario = base if variant == 0 else perturb(base, rng)
            start = wallclock.perf_counter()
            data = record(scenario, args.rate, min(args.duration, scenario.duration), not args.no_bev)
            path = folder / f"{Path(name).name}-{variant:02d}.npz"
            save_run(path, data)
            print(f"{path}: {data.frames} samples, {wallclock.perf_counter() - start:.1f} s")
    return 0


def perturb(scenario: Scenario, rng: np.random.Generator) -> Scenario:
    """Opponents moved by up to ±40 m, their pace by ±8 %, manoeuvres by ±3 s; ego start speed ±20 %."""
    opponents = []
    for spec in scenario.opponents:
        shift = float(rng.uniform(-3.0, 3.0))
        opponents.append(
            replace(
                spec,
                start_s=spec.start_s + float(rng.uniform(-40.0, 40.0)),
                speed_scale=float(np.clip(spec.speed_scale * rng.uniform(0.92, 1.08), 0.05, 1.5)),
                lane_changes=tuple(replace(c, at=max(c.at + shift, 0.0)) for c in spec.lane_changes),
                brakes=tuple(replace(b, at=max(b.at + shift, 0.0)) for b in spec.brakes),
            )
        )
    ego = replace(scenario.ego, speed=float(scenario.ego.speed * rng.uniform(0.8, 1.2)))
    return replace(scenario, opponents=tuple(opponents), ego=ego, seed=int(rng.integers(0, 2**31)))


def record(scenario: Scenario, rate: float, duration: float, with_bev: bool = True) -> Run:
    """Drive the scenario with the expert and sample the series every 1/rate s."""
    sim = Simulation(replace(scenario, duration=duration))
    every = max(1, round(scenario.rate / rate))
    rows: dict[str, list] = {"time": [], "ego": [], "command": [], "objects": [], "bev": []}
    while not sim.done:
        if sim.frame % every == 0:
            _sample(sim, rows, with_bev)
        sim.step_frame(None)
    return Run(
        name=scenario.name,
        track=scenario.track,
        rate=scenario.rate / every,
        time=np.asarray(rows["time"]),
        ego=np.asarray(rows["ego"]),
        command=np.asarray(rows["command"]),
        objects=np.asarray(rows["objects"]).reshape(len(rows["time"]), len(scenario.opponents), len(OBJECT_FIELDS)),
        bev=np.asarray(rows["bev"], dtype=np.float16),
    )


def _sample(sim: Simulation, rows: dict[str, list], with_bev: bool) -> None:
    ego = sim.ego
    table = sim.objects_table()
    rows["time"].append(sim.time)
    rows["ego"].append([ego.x, ego.y, ego.yaw, ego.v, ego.steer, ego.accel])
    rows["command"].append([sim.last_command.steering_angle, sim.last_command.acceleration])
    rows["objects"].append(np.stack([table[k] for k in OBJECT_FIELDS], axis=1) if table.size else [])
    rows["bev"].append(bev_tokens(sim.bev_labels(LITE_GRID) if with_bev else None)[:, :4])


def save_run(path: Path, run: Run) -> None:
    track = run.track
    np.savez_compressed(
        path,
        name=np.str_(run.name),
        rate=np.float64(run.rate),
        time=run.time,
        ego=run.ego,
        command=run.command,
        objects=run.objects,
        bev=run.bev,
        track_name=np.str_(track.name),
        track_centerline=track.centerline,
        track_left=track.left_width,
        track_right=track.right_width,
        track_racing=track.racing_line,
    )


def load_run(path: str | Path) -> Run:
    with np.load(path, allow_pickle=False) as data:
        track = Track(
            name=str(data["track_name"]),
            centerline=data["track_centerline"],
            left_width=data["track_left"],
            right_width=data["track_right"],
            racing_line=data["track_racing"],
        )
        return Run(
            name=str(data["name"]),
            track=track,
            rate=float(data["rate"]),
            time=data["time"],
            ego=data["ego"],
            command=data["command"],
            objects=data["objects"],
            bev=data["bev"].astype(np.float32),
        )


def load_runs(folder: str | Path) -> list[Run]:
    paths = sorted(Path(folder).glob("*.npz"))
    if not paths:
        raise FileNotFoundError(f"no runs (*.npz) in {folder}: run `racestack dataset planning` first")
    return [load_run(p) for p in paths]
