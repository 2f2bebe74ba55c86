"""MPC planner: cycle time (risk-map lookup + SCP + solve) and the CasADi + IPOPT peer, in one run.

Inputs are recorded first: the risk-map MPC drives scenarios with opponents in closed loop
(ground-truth tracks, risk maps from the committed network), storing each cycle's ego state,
objects and risk map. They are then replayed through a fresh planner and every cycle is timed
(warm starts as in closed loop). Targets (issue 7): p50 <= 5 ms, p99 <= 10 ms at N = 30.

Peer: on every ``--peer-every``-th replayed cycle, the last SCP stage (same linearization data,
risk model, half-spaces) is solved (a) by the SCP run to convergence on that stage and (b) by
CasADi + IPOPT on the nonlinear problem; printed: times, their ratio to the real-time cycle, and
the cost difference (target: the same optimum within 1 %). Both trajectories are costed by one
function, the nonlinear objective with each slack at the least value its constraint allows (IPOPT's
own objective credits its 1e-8 bound relaxation). The real-time cycle's own plan is also
costed on the nonlinear problem (rolled out through the model) to show what one warm iteration gives.

Run: ``.venv/bin/python -m bench.bench_planner`` (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

P50_TARGET_MS, P99_TARGET_MS, COST_TARGET = 5.0, 10.0, 0.01
SCENARIOS = ("oval_overtakes", "circuit_b")


@dataclass
class Frame:
    time: float
    ego: object
    objects: np.ndarray
    risk: np.ndarray | None


def record(scenario: str, seconds: float, risk_checkpoint: str) -> tuple[object, list[Frame]]:
    """Closed-loop inputs of the risk-map MPC on a scenario at 10 Hz."""
    from planning_nodes.evaluation import Driver, _simulation, ego_state
    from racestack.grid import LITE_GRID
    from simulation.vehicles import Command

    sim = _simulation(scenario, seconds)
    kind = "risk_mpc" if risk_checkpoint else "mpc"
    driver = Driver(kind, sim, "models/mpc_weights/weights.yaml", risk_checkpoint)
    frames, command = [], None
    every = max(1, round(sim.scenario.rate / 10.0))
    while not sim.done:
        if sim.frame % every == 0:
            ego, objects = ego_state(sim), sim.objects_table()
            values = None
            if driver.risk is not None:
                values = driver.risk.predict(
                    objects, (ego.x, ego.y, ego.yaw), ego.v, ego.steer, ego.accel, sim.time, sim.bev_labels(LITE_GRID)
                )
            frames.append(Frame(sim.time, ego, objects, values))
            plan = driver.planner.plan(ego, objects, _field(values, sim.ego_params), sim.time)
            c = plan.command(0.05)
            command = Command(c["steering_angle"], c["acceleration"], c["speed"])
        sim.step_frame(command)
    return sim, frames


def _field(values, vehicle):
    if values is None:
        return None
    from planning_nodes.mpc.risk_field import RiskField
    from planning_nodes.riskmap.geometry import RISK_GRID, RISK_TIMES

    return RiskField(values, RISK_GRID, RISK_TIMES, vehicle.length, vehicle.width)


def replay(sim, frames: list[Frame], peer_every: int, weights_file: str) -> dict:
    from planning_nodes.mpc.casadi_peer import CasadiPeer
    from planning_nodes.mpc.model import rollout
    from planning_nodes.mpc.node import load_weights
    from planning_nodes.mpc.planner import MpcPlanner, PlannerConfig, converge_stage

    config = PlannerConfig(use_risk_map=frames[0].risk is not None, weights=load_weights(weights_file))
    planner = MpcPlanner(sim.track, sim.ego_params, config)
    peer = CasadiPeer(sim.ego_params, config.horizon, config.dt, config.opponent_slots, config.slack)
    cycle_ms, cpu_ms, peer_rows = [], [], []
    for i, frame in enumerate(frames):
        start, cpu = time.perf_counter(), time.process_time()
        field = _field(frame.risk, sim.ego_params)
        plan = planner.plan(frame.ego, frame.objects, field, frame.time)
        cycle_ms.append((time.perf_counter() - start) * 1e3)
        cpu_ms.append((time.process_time() - cpu) * 1e3)
        if i % peer_every or plan.kind != "mpc" or planner.last_stage is None:
            continue
        stage, weights = planner.last_stage, config.weights
        local = planner.problem.solve(stage, weights, "OSQP", eps=1e-3, max_iter=config.qp_max_iter)
        start = time.perf_counter()
        converged = converge_stage(
            planner.problem, stage, weights, (local.states, local.inputs), config.dt, sim.ego_params.wheelbase,
            solver="CLARABEL",
        )  # fmt: skip
        scp_ms = (time.perf_counter() - start) * 1e3
        ipopt = peer.solve(stage, weights, (local.states, local.inputs))
        if not (converged is not None and converged.ok and ipopt.ok):
            continue
        realtime = rollout(stage.z0, local.inputs, config.dt, sim.ego_params.wheelbase)
        realtime_cost = peer.evaluate(stage, weights, realtime, local.inputs)
        apart_m = float(np.max(np.hypot(*(converged.states[:, :2] - ipopt.states[:, :2]).T)))
        scp_cost = peer.evaluate(stage, weights, converged.states, converged.inputs)
        recheck = float("nan")
        if abs(scp_cost - ipopt.cost) >= COST_TARGET * abs(ipopt.cost):
            # two local optima of a nonconvex stage, or one solver short of its optimum: IPOPT
            # started from SCP's point tells which
            again = peer.solve(stage, weights, (converged.states, converged.inputs))
            recheck = again.cost if again.ok else float("nan")
        peer_rows.append((cycle_ms[-1], scp_ms, ipopt.solve_ms, scp_cost, ipopt.cost, realtime_cost, apart_m, recheck))
    counts = planner.counts
    return {
        "cycle_ms": np.array(cycle_ms),
        "cpu_ms": np.array(cpu_ms),
        "peer": np.array(peer_rows),
        "counts": dict(counts),
    }


def report(results: list[dict]) -> None:
    cycle = np.concatenate([r["cycle_ms"] for r in results])
    peer = np.concatenate([r["peer"] for r in results if r["peer"].size])
    counts: dict[str, int] = {}
    for r in results:
        for key, value in r["counts"].items():
            counts[key] = counts.get(key, 0) + value
    p50, p99 = np.percentile(cycle, [50, 99])
    fallbacks = sum(v for k, v in counts.items() if k.startswith("fallback_"))
    print(f"planner cycle (risk-map lookup + SCP + solve), N = 30, OSQP, {cycle.size} cycles:")
    print(f"  p50 {p50:.2f} ms (target <= {P50_TARGET_MS:.0f})   p99 {p99:.2f} ms (target <= {P99_TARGET_MS:.0f})")
    print(f"  max {cycle.max():.2f} ms   fallbacks {fallbacks}   approximate QPs {counts.get('approximate_qp', 0)}")
    cpu = np.concatenate([r["cpu_ms"] for r in results])
    print(f"  process CPU time per cycle (less sensitive to a shared machine): p50 {np.median(cpu):.2f} ms,"
          f" p99 {np.percentile(cpu, 99):.2f} ms")  # fmt: skip
    if not peer.size:
        print("peer: no comparable cycles")
        return
    cycle_ms, scp_ms, ipopt_ms, scp_cost, ipopt_cost, rt_cost, apart_m, recheck = peer.T
    gap = np.abs(scp_cost - ipopt_cost) / np.maximum(np.abs(ipopt_cost), 1e-9)
    rt_gap = (rt_cost - ipopt_cost) / np.maximum(np.abs(ipopt_cost), 1e-9)
    print(f"CasADi + IPOPT on the same problems ({len(peer)} stages):")
    print(f"  IPOPT p50 {np.median(ipopt_ms):.1f} ms, p99 {np.percentile(ipopt_ms, 99):.1f} ms")
    print(f"  SCP to convergence p50 {np.median(scp_ms):.1f} ms; real-time cycle p50 {np.median(cycle_ms):.2f} ms")
    print(f"  time ratio IPOPT / real-time cycle: p50 {np.median(ipopt_ms / cycle_ms):.1f}x")
    print(f"  time ratio IPOPT / converged SCP: p50 {np.median(ipopt_ms / scp_ms):.1f}x")
    print(
        f"  cost difference converged SCP vs IPOPT: median {100 * np.median(gap):.3f} %, max {100 * gap.max():.3f} %"
        f" (target < {100 * COST_TARGET:.0f} %); stages within target: {100 * np.mean(gap < COST_TARGET):.0f} %"
    )
    apart = gap >= COST_TARGET
    if apart.any():  # a nonconvex stage (opponent half-spaces, grip) can have two local optima
        lower = scp_cost[apart] < ipopt_cost[apart]
        print(f"  stages apart: SCP lower in {lower.sum()}, IPOPT lower in {(~lower).sum()}; their costs (SCP / IPOPT,"
              f" median stage {np.median(ipopt_cost):.3g}), largest distance between the two paths, and IPOPT"
              f" started from SCP's point:")
        for a, b, m, c in zip(scp_cost[apart], ipopt_cost[apart], apart_m[apart], recheck[apart], strict=True):
            print(f"    {a:.4g} / {b:.4g}, {100 * m:.1f} cm; IPOPT from SCP's point: {c:.4g}")
    print(f"  largest distance between the SCP and IPOPT paths: median {100 * np.median(apart_m):.2f} cm, "
          f"max {100 * apart_m.max():.1f} cm")
    print(
        f"  real-time QP plan (rolled out through the model) vs the IPOPT optimum: +{100 * np.median(rt_gap):.2f} %"
        f" median; stages within 1 %: {100 * np.mean(rt_gap < 0.01):.0f} %, within 10 %:"
        f" {100 * np.mean(rt_gap < 0.1):.0f} %"
    )


def main(argv: list[str] | None = None) -> int:
    from racestack.paths import models_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="recorded closed loop per scenario")
    parser.add_argument("--peer-every", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="15 s per scenario")
    parser.add_argument("--weights", default="models/mpc_weights/weights.yaml")
    args = parser.parse_args(argv)
    checkpoint = models_dir() / "riskmap" / "riskmap.pt"
    risk = str(checkpoint) if checkpoint.is_file() else ""
    if not risk:
        print(f"note: {checkpoint} missing: timing the MPC without risk map")
    seconds = 15.0 if args.quick else args.seconds
    results = []
    for scenario in SCENARIOS:
        sim, frames = record(scenario, seconds, risk)
        results.append(replay(sim, frames, args.peer_every, args.weights))
    report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
