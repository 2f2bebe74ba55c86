"""One planning cycle: references, opponents, risk model, 1–3 SCP iterations, status check, fallback.

The SCP linearizes the bicycle model, the track half-spaces, the opponents' half-spaces and the risk
map along the current guess (the previous plan shifted to now, or the racing line on a cold start),
solves the convex subproblem, and repeats until the path moves less than ``tolerance`` or the
iteration/time budget is spent. A solution is accepted only when the solver says optimal and the
soft constraints hold within ``max_track_slack``/``max_opponent_slack``; anything else goes to the
fallback (previous plan shifted, then braking), counted by kind.
"""

from __future__ import annotations

import time as wallclock
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np

from planning_nodes.mpc.fallback import Fallback, shift_plan
from planning_nodes.mpc.model import NU, NX, STEER, YAW, V, linearize
from planning_nodes.mpc.problem import CostWeights, MpcProblem, SlackWeights, Solution, Stage
from planning_nodes.mpc.references import PlanFrame, RaceReference
from planning_nodes.mpc.risk_field import LocalRisk, RiskField
from planning_nodes.opponents import KeepClear, OpponentAvoidance, body_overlaps, forecast, ground_objects
from planning_nodes.plan import MPC, EgoState, Plan
from simulation.track import Track
from simulation.vehicles import VehicleParams


@dataclass(frozen=True)
class PlannerConfig:
    """Horizon, solver and safety settings (node parameters of the same names)."""

    horizon: int = 30
    dt: float = 0.1
    opponent_slots: int = 4
    solver: str = "OSQP"
    eps: float = 1e-3
    qp_max_iter: int = 1000  # the node's time_limit_ms bounds it in real time
    accept_residual: float = 0.05
    max_iterations: int = 1  # warm cycles: one SCP iteration (real-time iteration); cold: cold_iterations
    cold_iterations: int = 3
    tolerance: float = 0.3
    time_limit_s: float = 0.008  # cycle budget of the SCP solves; 0: none (headless evaluation: load-independent)
    use_risk_map: bool = True
    max_track_slack: float = 0.2
    max_opponent_slack: float = 0.6
    grip_scale: float = 0.85  # share of the tyres' lateral grip used, as the expert (ExpertSpec)
    bound_margin: float = 0.45
    lateral_margin: float = 0.9
    longitudinal_margin: float = 3.0
    max_shift_s: float = 0.5
    check_s: float = 1.0  # horizon checked for contact with the forecast opponents
    bend_window: int = 11  # steps over which the guess's bends are averaged for the grip bound
    weights: CostWeights = field(default_factory=CostWeights)
    slack: SlackWeights = field(default_factory=SlackWeights)


SQUEEZED = ("opponent_infeasible", "track_infeasible", "collision_course")


class MpcPlanner:
    """The learning-based MPC of racestack (core: no ROS)."""

    def __init__(self, track: Track, vehicle: VehicleParams, config: PlannerConfig | None = None) -> None:
        self.config = config = config or PlannerConfig()
        self.track, self.vehicle = track, vehicle
        self.reference = RaceReference(track, vehicle, config.grip_scale, config.bound_margin)
        self.avoidance = OpponentAvoidance(
            track,
            vehicle,
            config.opponent_slots,
            config.lateral_margin,
            config.longitudinal_margin,
            bound_margin=config.bound_margin,
            brake=0.8 * vehicle.max_brake,
        )
        self.problem = MpcProblem(vehicle, config.horizon, config.dt, config.opponent_slots, config.slack)
        self.fallback = Fallback(track, vehicle, self.reference.clearance, config.max_shift_s)
        self.step_times = config.dt * np.arange(1, config.horizon + 1)
        self.last_mpc: Plan | None = None
        self.last_stage: Stage | None = None
        self.previous_command = np.zeros(NU)
        self.counts: Counter = Counter()

    def reset(self) -> None:
        """Forget the previous plan (after a time jump or a track change)."""
        self.last_mpc = None
        self.avoidance.reset()
        self.problem.qp.reset_warm_start()

    def set_weights(self, weights: CostWeights) -> None:
        self.config = replace(self.config, weights=weights)

    # -- the cycle --------------------------------------------------------------------------------

    def plan(self, ego: EgoState, objects: np.ndarray | None, risk: RiskField | None, time: float) -> Plan:
        """A plan starting at ``time`` from ``ego``; objects in ``map`` (OBJECT_DTYPE), risk in the plan frame."""
        cfg = self.config
        start = wallclock.perf_counter()
        frame = PlanFrame(ego.x, ego.y, ego.yaw)
        table = ground_objects(objects) if objects is not None and objects.size else None
        fc = forecast(table, self.track, self.step_times, ego=self._ego_frenet(ego)) if table is not None else None
        z0 = np.array([0.0, 0.0, 0.0, ego.v, ego.steer])
        guess_z, guess_u, warm = self._initial_guess(ego, frame, time)
        iterations = cfg.max_iterations if warm else cfg.cold_iterations
        scp = partial(self._scp, start, z0, (guess_z, guess_u), iterations, frame, fc, risk, ego)
        solution, done, moved = scp(hold_back=False)
        verdict = self._verdict(solution, frame, fc)
        if verdict in SQUEEZED and fc is not None and fc.count:
            # the pass does not fit (too close to the opponent or off the track): stay behind instead
            # of the fallback's braking, as a driver would
            self.counts["passes_given_up"] += 1
            solution, more, moved = scp(hold_back=True)
            done += more
            verdict = self._verdict(solution, frame, fc)
        elapsed_ms = (wallclock.perf_counter() - start) * 1e3
        info = {
            "status": solution.status if solution is not None else "not_run",
            "iterations": float(done),
            "cycle_ms": elapsed_ms,
            "cost": solution.cost if solution is not None and solution.ok else float("nan"),
            "track_slack": solution.track_slack if solution is not None else float("nan"),
            "opponent_slack": solution.opponent_slack if solution is not None else float("nan"),
            "last_move_m": moved,
            "verdict": verdict,
        }
        if verdict == "ok":
            plan = self._to_map(solution, frame, time, info)
            self.last_mpc = plan
        else:
            plan = self.fallback.plan(self.last_mpc, ego, time, fc, cfg.horizon, cfg.dt)
            plan.info.update(info)
            self.counts[f"fallback_{plan.kind}"] += 1
            self.problem.qp.reset_warm_start()
        self.counts[f"plan_{plan.kind}"] += 1
        if solution is not None and solution.status.startswith("approximate"):
            self.counts["approximate_qp"] += 1
        self.previous_command = plan.inputs[0].copy()
        return plan

    def _scp(
        self,
        start: float,
        z0: np.ndarray,
        guess: tuple[np.ndarray, np.ndarray],
        iterations: int,
        frame: PlanFrame,
        fc,
        risk: RiskField | None,
        ego: EgoState,
        hold_back: bool,
    ) -> tuple[Solution | None, int, float]:
        """(solution, QP solves, last move) of up to ``iterations`` SCP iterations from ``guess``."""
        cfg = self.config
        guess_z, guess_u = guess
        solution: Solution | None = None
        moved = np.inf
        done = 0
        for _ in range(iterations):
            stage = self._stage(z0, guess_z, guess_u, frame, fc, risk if cfg.use_risk_map else None, ego, hold_back)
            self.last_stage = stage
            # each solve gets what is left of the cycle budget (at least 1 ms)
            left_s = max(cfg.time_limit_s - (wallclock.perf_counter() - start), 1e-3) if cfg.time_limit_s > 0 else 0.0
            result = self.problem.solve(
                stage,
                cfg.weights,
                cfg.solver,
                left_s,
                cfg.eps,
                warm=(guess_z, guess_u),
                max_iter=cfg.qp_max_iter,
                accept_residual=cfg.accept_residual,
            )
            done += 1
            if not result.ok:
                return result, done, moved
            moved = float(np.max(np.abs(result.states[:, :2] - guess_z[:, :2])))
            guess_z, guess_u, solution = result.states, result.inputs, result
            over_time = cfg.time_limit_s > 0 and wallclock.perf_counter() - start > cfg.time_limit_s
            if moved < cfg.tolerance or over_time:
                break
        return solution, done, moved

    def _verdict(self, solution: Solution | None, frame: PlanFrame, fc) -> str:
        cfg = self.config
        if solution is None or not solution.ok:
            return "solver_failed"
        if solution.track_slack > cfg.max_track_slack:
            return "track_infeasible"
        if solution.opponent_slack > cfg.max_opponent_slack:
            return "opponent_infeasible"
        if fc is not None and fc.count and self._collides_soon(solution, frame, fc):
            return "collision_course"
        return "ok"

    def _collides_soon(self, solution: Solution, frame: PlanFrame, fc) -> bool:
        """Whether the plan's body meets a forecast opponent within ``check_s`` (the keep-clear
        half-spaces ramp in over a side step, which a car closing fast can outrun)."""
        steps = max(1, round(self.config.check_s / self.config.dt))
        states = solution.states[1 : steps + 1].copy()
        states[:, :2] = frame.to_map(states[:, :2])
        states[:, YAW] += frame.yaw
        return body_overlaps(states, fc, self.vehicle, margin=0.0)

    # -- pieces -----------------------------------------------------------------------------------

    def _ego_frenet(self, ego: EgoState) -> tuple[float, float, float]:
        """(s, d, speed) of the ego's body centre, for the opponents' forecast."""
        offset = self.vehicle.center_offset
        centre = np.array([[ego.x + offset * np.cos(ego.yaw), ego.y + offset * np.sin(ego.yaw)]])
        s, d, _ = self.track.project(centre)
        return float(s[0]), float(d[0]), ego.v

    def _initial_guess(self, ego: EgoState, frame: PlanFrame, time: float) -> tuple[np.ndarray, np.ndarray, bool]:
        """(states (N+1, 5), inputs (N, 2), warm) in the plan frame."""
        cfg = self.config
        previous = self.last_mpc
        if previous is not None and 0.0 <= time - previous.time <= cfg.max_shift_s:
            shifted = shift_plan(previous, time, self.vehicle, 0.5 * self.vehicle.max_brake)
            states = shifted.states.copy()
            states[:, :2] = frame.to_local(states[:, :2])
            yaw = np.unwrap(states[:, YAW] - frame.yaw)
            states[:, YAW] = yaw - 2.0 * np.pi * np.round(yaw[0] / (2.0 * np.pi))
            states[0] = [0.0, 0.0, 0.0, ego.v, ego.steer]
            return states, shifted.inputs, True
        return self._cold_guess(ego, frame), np.zeros((cfg.horizon, NU)), False

    def _cold_guess(self, ego: EgoState, frame: PlanFrame) -> np.ndarray:
        """The racing line ahead at the current speed (positions and headings only need be plausible)."""
        cfg = self.config
        racing = self.track.racing
        s0, _, _ = racing.project(np.array([[ego.x, ego.y]]))
        speed = max(ego.v, 1.0)
        s = s0[0] + speed * cfg.dt * np.arange(cfg.horizon + 1)
        states = np.zeros((cfg.horizon + 1, NX))
        states[:, :2] = frame.to_local(racing.point_at(s))
        states[:, YAW] = np.unwrap(racing.heading_at(s) - frame.yaw)
        states[:, YAW] -= 2.0 * np.pi * np.round(states[0, YAW] / (2.0 * np.pi))
        states[:, V] = ego.v
        states[0] = [0.0, 0.0, 0.0, ego.v, ego.steer]
        return states

    def _stage(
        self,
        z0: np.ndarray,
        guess_z: np.ndarray,
        guess_u: np.ndarray,
        frame: PlanFrame,
        fc,
        risk: RiskField | None,
        ego: EgoState,
        hold_back: bool = False,
    ) -> Stage:
        cfg, veh = self.config, self.vehicle
        lin = linearize(guess_z[:-1], guess_u, cfg.dt, veh.wheelbase)
        points = guess_z[1:, :2]
        yaw = guess_z[1:, YAW]
        heading_local = np.column_stack([np.cos(yaw), np.sin(yaw)])
        centers_local = points + veh.center_offset * heading_local
        points_map = frame.to_map(points)
        ref = self.reference.horizon(points_map, yaw, frame)
        if fc is not None and fc.count:
            # body centres on the centre line from the rear axles' projection (no second projection)
            relative = yaw + frame.yaw - self.track.heading_at(ref.s)
            s_c = ref.s + veh.center_offset * np.cos(relative)
            d_c = ref.d + veh.center_offset * np.sin(relative)
            heading_map = np.column_stack([np.cos(yaw + frame.yaw), np.sin(yaw + frame.yaw)])
            # overtaking is judged on the pace the car wants (the profile ahead), not the pace it has
            # while stuck behind someone
            desired = max(ego.v, float(np.max(ref.speed[: max(1, cfg.horizon // 3)])))
            keep = self.avoidance.build(fc, s_c, d_c, heading_map, desired, frame, ego.v, hold_back)
        else:
            keep = KeepClear.inactive(cfg.opponent_slots, cfg.horizon)
        local = (
            risk.local_model(centers_local, yaw, self.step_times) if risk is not None else LocalRisk.zero(cfg.horizon)
        )
        # grip: a speed bound from the racing line's profile (which brakes ahead of bends) and from the
        # guess's own bends, never below what braking from the current speed reaches (a hard bound
        # on the wheel angle instead makes ADMM crawl at speed)
        t = self.step_times
        grip = cfg.grip_scale * veh.max_lateral_accel
        bend = path_bend(guess_z[1:, STEER], veh.wheelbase, cfg.bend_window)
        speed_max = np.minimum(ref.speed, np.sqrt(grip / np.maximum(bend, 1e-6)))
        speed_max = np.clip(speed_max, z0[V] - 0.9 * veh.max_brake * t, veh.max_speed)
        speed_max = np.maximum(speed_max, 0.0)
        # the reference: that bound, no faster than the cars being followed allow, where the actuators
        # can take the car from the current speed
        wanted = np.minimum(speed_max, keep.speed_cap)
        speed_ref = np.clip(wanted, z0[V] - 0.8 * veh.max_brake * t, z0[V] + veh.max_accel * t)
        return Stage(
            z0=z0,
            u_prev=self.previous_command,
            lin=lin,
            track_normal=ref.track_normal,
            track_low=ref.track_low,
            track_high=ref.track_high,
            line_normal=ref.line_normal,
            line_offset=ref.line_offset,
            yaw_ref=ref.yaw,
            speed_ref=speed_ref,
            risk_grad=local.grad,
            risk_curv=local.curv,
            risk_point=points,
            opp_normal=keep.normal,
            opp_offset=keep.offset,
            accel_max=np.full(cfg.horizon, veh.max_accel),
            speed_max=speed_max,
        )

    def _to_map(self, solution: Solution, frame: PlanFrame, time: float, info: dict) -> Plan:
        states = solution.states.copy()
        states[:, :2] = frame.to_map(states[:, :2])
        states[:, YAW] = states[:, YAW] + frame.yaw
        return Plan(time, self.config.dt, states, solution.inputs.copy(), MPC, info)


def path_bend(steer: np.ndarray, wheelbase: float, window: int) -> np.ndarray:
    """Curvature magnitude (N,) of a path, averaged over ``window`` steps: the grip bound follows the
    bends the car will drive, not a one-step steering spike of the previous solution (a jink of 0.1 rad
    once set the bound to 24 m/s two seconds ahead, the plan braked for it, and the pass stalled)."""
    bend = np.abs(np.tan(steer)) / wheelbase
    if window <= 1:
        return bend
    padded = np.pad(bend, window // 2, mode="edge")
    return np.convolve(padded, np.full(window, 1.0 / window), mode="valid")[: bend.size]


def converge_stage(
    problem: MpcProblem,
    stage: Stage,
    weights: CostWeights,
    guess: tuple[np.ndarray, np.ndarray],
    dt: float,
    wheelbase: float,
    iterations: int = 20,
    tolerance: float = 1e-5,
    solver: str = "OSQP",
    eps: float = 1e-6,
) -> Solution:
    """SCP on one stage's data with only the dynamics re-linearized, to convergence (the peer's optimum)."""
    guess_z, guess_u = guess
    result = None
    for _ in range(iterations):
        stage = replace(stage, lin=linearize(guess_z[:-1], guess_u, dt, wheelbase))
        result = problem.solve(stage, weights, solver, eps=eps, warm=(guess_z, guess_u))
        if not result.ok:
            return result
        moved = float(np.max(np.abs(result.states - guess_z)))
        guess_z, guess_u = result.states, result.inputs
        if moved < tolerance:
            break
    return result
