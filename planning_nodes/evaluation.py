"""``racestack closed-loop``: the planners driving the simulator, scored against the expert.

Headless (``Simulation``, no ROS) for speed, and without solver time limits (like the lockstep
clock: the figures do not depend on the machine's load), with the inputs the nodes get through the same
contract: odometry, ground-truth tracks as the object list (allowed until perception runs; the
table is the same), and the risk map predicted from them with ground-truth BEV context. Per
scenario and planner: collisions, track-limit violations, lap time (or its distance-normalized
equivalent when no lap completes) and its ratio to the expert's, fallbacks, cycle time; and the L2
error to the expert at 1/2/3 s, open loop along the expert's own run (each planner is given the
expert's situations and its plan is compared with what the expert then did).
"""

from __future__ import annotations

import argparse
import json
import time as wallclock
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from planning_nodes.mpc.node import load_weights
from planning_nodes.mpc.planner import MpcPlanner, PlannerConfig
from planning_nodes.plan import EgoState
from planning_nodes.pure_pursuit import PurePursuit
from racestack.grid import LITE_GRID
from racestack.paths import models_dir
from simulation.scenario import list_scenarios, load_scenario
from simulation.simulation import Simulation
from simulation.vehicles import Command

PLANNERS = ("risk_mpc", "mpc", "pure_pursuit")
L2_TIMES = (1.0, 2.0, 3.0)


@dataclass
class Result:
    scenario: str
    planner: str
    collisions: int = 0
    track_limit_violations: int = 0
    lap_time_s: float = float("nan")
    lap_complete: bool = False
    lap_ratio: float = float("nan")
    l2_m: dict[str, float] = field(default_factory=dict)
    fallbacks: int = 0
    cycle_ms_p50: float = float("nan")
    cycle_ms_p99: float = float("nan")
    distance_m: float = 0.0


class Driver:
    """One planner with the inputs it needs (risk predictor for risk_mpc), in closed or open loop."""

    def __init__(
        self, kind: str, sim: Simulation, weights_file: str, risk_checkpoint: str, object_range: float = 0.0
    ) -> None:
        self.kind, self.track, self.vehicle = kind, sim.track, sim.ego_params
        self.object_range = object_range
        self.risk = None
        if kind == "pure_pursuit":
            self.planner = PurePursuit(sim.track, sim.ego_params)
        else:
            config = PlannerConfig(
                use_risk_map=kind == "risk_mpc", weights=load_weights(weights_file), time_limit_s=0.0
            )
            self.planner = MpcPlanner(sim.track, sim.ego_params, config)
            if kind == "risk_mpc":
                self.risk = _risk_predictor(risk_checkpoint, sim.track)
        self.cycle_ms: list[float] = []

    def plan(self, sim: Simulation, ego: EgoState, time: float):
        objects = within_range(sim.objects_table(), ego, self.object_range)
        field_ = None
        if self.risk is not None:
            from planning_nodes.mpc.risk_field import RiskField
            from planning_nodes.riskmap.geometry import RISK_GRID, RISK_TIMES

            values = self.risk.predict(
                objects, (ego.x, ego.y, ego.yaw), ego.v, ego.steer, ego.accel, time, sim.bev_labels(LITE_GRID)
            )
            field_ = RiskField(values, RISK_GRID, RISK_TIMES, self.vehicle.length, self.vehicle.width)
        start = wallclock.perf_counter()
        if self.kind == "pure_pursuit":
            plan = self.planner.plan(ego, objects, time)
        else:
            plan = self.planner.plan(ego, objects, field_, time)
        self.cycle_ms.append((wallclock.perf_counter() - start) * 1e3)
        return plan

    @property
    def fallbacks(self) -> int:
        counts = getattr(self.planner, "counts", {})
        return int(sum(v for k, v in counts.items() if k.startswith("fallback_")))


def within_range(objects: np.ndarray, ego: EgoState, half_side: float) -> np.ndarray:
    """The objects whose centres lie within ``half_side`` metres of the ego along both of its axes
    (0: all): what a BEV of that size can see, where the simulator's table holds every car on the track."""
    if half_side <= 0.0:
        return objects
    c, s = np.cos(ego.yaw), np.sin(ego.yaw)
    dx, dy = objects["x"] - ego.x, objects["y"] - ego.y
    return objects[(np.abs(c * dx + s * dy) <= half_side) & (np.abs(c * dy - s * dx) <= half_side)]


def _risk_predictor(checkpoint: str, track):
    from planning_nodes.riskmap.model import RISKMAP_SPEC
    from planning_nodes.riskmap.predictor import RiskPredictor
    from racestack.inference import create_runner

    runner = create_runner(RISKMAP_SPEC, checkpoint, "onnxruntime", "cpu", threads=1, log=lambda _: None)
    return RiskPredictor(runner, track)


def ego_state(sim: Simulation) -> EgoState:
    """What the nodes know from /localization/odometry (wheel angle estimated from the yaw rate)."""
    odo = sim.odometry()
    steer = float(np.arctan(sim.ego_params.wheelbase * odo.yaw_rate / odo.v)) if odo.v > 2.0 else 0.0
    return EgoState(odo.x, odo.y, odo.yaw, odo.v, steer, odo.accel)


def drive(sim: Simulation, driver: Driver | None, plan_every: int, lead: float) -> None:
    """Closed loop until the scenario ends; ``driver`` None = the expert. Commands held between plans."""
    command = None
    while not sim.done:
        if driver is not None and sim.frame % plan_every == 0:
            plan = driver.plan(sim, ego_state(sim), sim.time)
            c = plan.command(lead)
            command = Command(c["steering_angle"], c["acceleration"], c["speed"])
        sim.step_frame(command)


def lap_time(sim: Simulation) -> tuple[float, bool]:
    """The first complete lap's time, else the time a lap takes at the run's average speed."""
    events = sim.events
    if events.lap_times:
        return float(events.lap_times[0]), True
    return float(sim.track.length * sim.time / max(events.distance, 1e-6)), False


def open_loop_l2(name: str, driver_kind: str, args, every_s: float = 0.5) -> dict[str, float]:
    """L2 at 1/2/3 s between the planner's plans and the expert's actual path, along the expert's run."""
    sim = _simulation(name, args.duration)
    driver = Driver(driver_kind, sim, args.weights, args.risk_checkpoint, args.object_range)
    rate = sim.scenario.rate
    every = max(1, round(every_s * rate))
    horizon = round(max(L2_TIMES) * rate)
    plans, log = {}, []
    while not sim.done:
        log.append((sim.time, sim.ego.x, sim.ego.y))
        if sim.frame % every == 0:
            plans[len(log) - 1] = driver.plan(sim, ego_state(sim), sim.time)
        sim.step_frame(None)
    track = np.array(log)
    errors = {t: [] for t in L2_TIMES}
    for index, plan in plans.items():
        if index + horizon >= len(track):
            continue
        for t in L2_TIMES:
            actual = track[index + round(t * rate), 1:]
            predicted = plan.sample(np.array([plan.time + t]))[0, :2]
            errors[t].append(float(np.hypot(*(predicted - actual))))
    return {f"{t:.0f}s": float(np.mean(v)) if v else float("nan") for t, v in errors.items()}


def _simulation(name: str, duration: float) -> Simulation:
    scenario = load_scenario(name)
    return Simulation(replace(scenario, duration=min(duration, scenario.duration)))


def expert_lap(name: str, duration: float, lead: float = 0.05) -> Result:
    """The expert's run of a scenario: the reference every planner's lap time is divided by."""
    sim = _simulation(name, duration)
    drive(sim, None, 1, lead)
    lap, complete = lap_time(sim)
    return Result(
        name,
        "expert",
        sim.events.collisions,
        sim.events.track_limit_violations,
        lap,
        complete,
        1.0,
        distance_m=sim.events.distance,
    )


def planner_result(
    name: str,
    kind: str,
    weights_file: str,
    risk_checkpoint: str,
    duration: float,
    expert: Result,
    plan_rate: float = 10.0,
    lead: float = 0.05,
    object_range: float = 0.0,
) -> Result:
    """One planner's closed-loop run of a scenario, scored against the expert's (no L2)."""
    sim = _simulation(name, duration)
    driver = Driver(kind, sim, weights_file, risk_checkpoint, object_range)
    drive(sim, driver, max(1, round(sim.scenario.rate / plan_rate)), lead)
    lap, complete = lap_time(sim)
    cycle = np.array(driver.cycle_ms)
    return Result(
        scenario=name,
        planner=kind,
        collisions=sim.events.collisions,
        track_limit_violations=sim.events.track_limit_violations,
        lap_time_s=lap,
        lap_complete=complete,
        lap_ratio=lap / expert.lap_time_s,
        fallbacks=driver.fallbacks,
        cycle_ms_p50=float(np.percentile(cycle, 50)),
        cycle_ms_p99=float(np.percentile(cycle, 99)),
        distance_m=sim.events.distance,
    )


def evaluate_scenario(name: str, planners: list[str], args) -> list[Result]:
    expert = expert_lap(name, args.duration, args.lead)
    results = [expert]
    for kind in planners:
        result = planner_result(
            name,
            kind,
            args.weights,
            args.risk_checkpoint,
            args.duration,
            expert,
            args.plan_rate,
            args.lead,
            args.object_range,
        )
        if not args.no_l2:
            result.l2_m = open_loop_l2(name, kind, args)
        results.append(result)
        print(_row(results[-1]), flush=True)
    return results


HEADER = (
    f"{'scenario':<28}{'planner':<14}{'coll':>5}{'limits':>7}{'lap s':>8}{'ratio':>7}"
    f"{'L2@1s':>7}{'L2@2s':>7}{'L2@3s':>7}{'fallb':>7}{'p50 ms':>8}{'p99 ms':>8}"
)


def _row(r: Result) -> str:
    lap = f"{r.lap_time_s:.1f}" + ("" if r.lap_complete else "*")
    l2 = [r.l2_m.get(f"{t:.0f}s", float("nan")) for t in L2_TIMES]
    return (
        f"{r.scenario:<28}{r.planner:<14}{r.collisions:>5}{r.track_limit_violations:>7}{lap:>8}{r.lap_ratio:>7.3f}"
        f"{l2[0]:>7.2f}{l2[1]:>7.2f}{l2[2]:>7.2f}{r.fallbacks:>7}{r.cycle_ms_p50:>8.2f}{r.cycle_ms_p99:>8.2f}"
    )


def _mean_measured(values: list[float]) -> float:
    """Mean of the measured values; nan when none was measured (``--no-l2``)."""
    measured = [v for v in values if not np.isnan(v)]
    return float(np.mean(measured)) if measured else float("nan")


def summary(results: list[Result]) -> list[str]:
    lines = []
    for kind in sorted({r.planner for r in results} - {"expert"}, key=PLANNERS.index):
        rows = [r for r in results if r.planner == kind]
        l2 = {t: _mean_measured([r.l2_m.get(f"{t:.0f}s", np.nan) for r in rows]) for t in L2_TIMES}
        lines.append(
            f"{kind:<14} collisions {sum(r.collisions for r in rows)}, track-limit violations "
            f"{sum(r.track_limit_violations for r in rows)}, worst lap ratio {max(r.lap_ratio for r in rows):.3f}, "
            f"L2 1/2/3 s {l2[1.0]:.2f}/{l2[2.0]:.2f}/{l2[3.0]:.2f} m, fallbacks {sum(r.fallbacks for r in rows)}"
        )
    return lines


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenarios", nargs="*", default=None, help="names (default: the suite and the held-out ones)")
    parser.add_argument("--planners", nargs="*", default=list(PLANNERS), choices=PLANNERS)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per run (capped by the scenario)")
    parser.add_argument("--plan-rate", type=float, default=10.0, help="planning cycles per second")
    parser.add_argument("--lead", type=float, default=0.05, help="command lead (s), as the nodes' command_lead")
    parser.add_argument("--weights", default="models/mpc_weights/weights.yaml", help="MPC weights ('' = defaults)")
    parser.add_argument("--risk-checkpoint", default=str(models_dir() / "riskmap" / "riskmap.pt"))
    parser.add_argument(
        "--object-range",
        type=float,
        default=0.0,
        help="give the planners only the cars within this many metres of the ego along each axis, as a BEV "
        "of that half-side sees them (0: every car; the lite BEV: 51.2)",
    )
    parser.add_argument("--no-l2", action="store_true", help="skip the open-loop L2 runs (faster)")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")


def run(args: argparse.Namespace) -> int:
    names = args.scenarios or [*list_scenarios(), *list_scenarios(heldout=True)]
    results: list[Result] = []
    print(HEADER)
    for name in names:
        scenario_results = evaluate_scenario(name, args.planners, args)
        print(_row(scenario_results[0]), flush=True)
        results.extend(scenario_results)
    print("\n* lap not completed in the run: time a lap takes at the run's average speed")
    for title, group in (
        ("suite", [r for r in results if not r.scenario.startswith("heldout/")]),
        ("held-out", [r for r in results if r.scenario.startswith("heldout/")]),
    ):
        if group:
            print(f"\n{title}:")
            for line in summary(group):
                print("  " + line)
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=2))
    bad = sum(r.collisions + r.track_limit_violations for r in results if r.planner == "risk_mpc")
    return 1 if bad else 0
