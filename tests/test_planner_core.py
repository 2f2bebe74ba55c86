"""MPC planner core: model linearization, the compiled DPP problem, the fallback, the risk field.

No ROS here; the nodes are tested in test_planner_nodes.py.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp

from planning_nodes.mpc.model import linearize, rollout, step
from planning_nodes.mpc.planner import MpcPlanner, PlannerConfig, path_bend
from planning_nodes.mpc.problem import CostWeights, MpcProblem
from planning_nodes.mpc.risk_field import RiskField
from planning_nodes.opponents import plan_collides
from planning_nodes.plan import BRAKING, MPC, EgoState
from planning_nodes.riskmap.geometry import RISK_GRID, RISK_TIMES
from racestack.objects import empty_objects
from simulation.track import oval_track
from simulation.vehicles import Command, VehicleParams, VehicleState, step_ego

VEHICLE = VehicleParams()
DT = 0.1
# no cycle budget: these tests check the solves, not the 8 ms real-time budget, which a loaded machine
# can spend (one suite run got the braking fallback on the overtaking stage of the IPOPT comparison)
HEADLESS = PlannerConfig(use_risk_map=False, time_limit_s=0.0)


@pytest.fixture(scope="module")
def track():
    return oval_track(length=1600.0, turn_radius=170.0, width=12.0)


def start_state(track, speed: float, s: float = 50.0) -> EgoState:
    point = track.racing.point_at(s)
    return EgoState(float(point[0]), float(point[1]), float(track.racing.heading_at(s)), speed)


def test_linearized_model_matches_nonlinear_over_one_step():
    rng = np.random.default_rng(0)
    z = np.column_stack(
        [
            rng.normal(0, 50, 64),
            rng.normal(0, 50, 64),
            rng.uniform(-3, 3, 64),
            rng.uniform(5, 85, 64),
            rng.uniform(-0.3, 0.3, 64),
        ]
    )
    u = np.column_stack([rng.uniform(-1, 1, 64), rng.uniform(-15, 8, 64)])
    lin = linearize(z, u, DT, VEHICLE.wheelbase)
    assert np.allclose(lin.predict(z, u, DT), step(z, u, DT, VEHICLE.wheelbase), atol=1e-9)
    # realistic deviations from the linearization point: half a metre, 2 degrees, 1 m/s, 0.01 rad
    dz = np.column_stack([rng.normal(0, 0.5, 64), rng.normal(0, 0.5, 64), rng.normal(0, 0.035, 64),
                          rng.normal(0, 1.0, 64), rng.normal(0, 0.01, 64)])  # fmt: skip
    du = np.column_stack([rng.normal(0, 0.1, 64), rng.normal(0, 1.0, 64)])
    error = lin.predict(z + dz, u + du, DT) - step(z + dz, u + du, DT, VEHICLE.wheelbase)
    assert np.abs(error[:, :2]).max() < 0.05  # m: second-order terms only
    assert np.abs(error[:, 2]).max() < 0.01  # rad
    assert np.abs(error[:, 3:]).max() < 1e-9  # speed and wheel angle are exact integrators


def test_model_matches_the_simulated_ego():
    """One 0.1 s MPC step against the simulator's 10 ms physics under the same inputs."""
    state = VehicleState(0.0, 0.0, 0.3, 40.0, steer=0.02)
    z0 = np.array([0.0, 0.0, 0.3, 40.0, 0.02])
    inputs = np.array([[0.1, 2.0]])
    predicted = rollout(z0, inputs, DT, VEHICLE.wheelbase)[1]
    for k in range(10):
        target = z0[4] + inputs[0, 0] * DT * (k + 1) / 10
        state = step_ego(state, Command(steering_angle=target, acceleration=2.0), VEHICLE, 0.01)
    assert np.hypot(state.x - predicted[0], state.y - predicted[1]) < 0.02
    assert abs(state.v - predicted[3]) < 1e-6


def test_compiled_problem_is_cvxpy_problem(track):
    planner = MpcPlanner(track, VEHICLE, HEADLESS)
    problem: MpcProblem = planner.problem
    assert problem.problem.is_dpp()
    ego = start_state(track, 40.0)
    plan = planner.plan(ego, None, None, 0.0)
    assert plan.kind == MPC
    stage = planner.last_stage
    values = problem.values(stage, CostWeights())
    problem.qp.set_parameters(values)
    for param, value in values.items():
        param.value = value
    P, q, _, A, lower, _ = problem.qp.matrices()
    data, _, _ = problem.problem.get_problem_data(cp.OSQP)
    assert abs(sp.triu(data["P"]) - P).max() < 1e-12
    assert np.abs(data["q"] - q).max() < 1e-12
    assert abs(sp.vstack([data["A"], -data["F"]]) - A).max() < 1e-12
    assert np.abs(np.concatenate([data["b"], -data["G"]]) - lower).max() < 1e-12
    fast = problem.solve(stage, CostWeights(), "OSQP", eps=1e-6, max_iter=20000)
    reference = problem.solve_reference(stage, CostWeights(), "CLARABEL")
    assert fast.ok and reference.ok
    assert abs(fast.cost - reference.cost) <= 1e-3 * abs(reference.cost) + 1e-3
    assert np.abs(fast.states[:, :2] - reference.states[:, :2]).max() < 0.05


def test_mpc_drives_a_lap_section_within_the_track(track):
    planner = MpcPlanner(track, VEHICLE, HEADLESS)
    ego = start_state(track, 30.0)
    state = VehicleState(ego.x, ego.y, ego.yaw, ego.v)
    worst = -np.inf
    for k in range(120):
        plan = planner.plan(EgoState(state.x, state.y, state.yaw, state.v, state.steer), None, None, k * DT)
        command = plan.command(DT)
        for _ in range(10):
            state = step_ego(
                state, Command(command["steering_angle"], command["acceleration"], command["speed"]), VEHICLE, 0.01
            )
        s, d, _ = track.project(np.array([[state.x, state.y]]))
        left, right = track.widths_at(s)
        worst = max(worst, float(np.max(np.abs(d) + VEHICLE.width / 2 - np.where(d > 0, left, right))))
    assert worst < 0.0, f"the car body left the track by {worst:.2f} m"
    assert state.v > 45.0  # it accelerated toward the speed profile
    assert planner.counts["plan_mpc"] >= 115


def test_grip_bound_follows_bends_not_a_one_step_steering_spike():
    wheelbase, window = 3.0, 11
    spike = np.full(30, 0.02)
    spike[17] = 0.1  # a jink of one step in the previous solution
    bent = np.full(30, 0.02)
    bent[10:25] = 0.1  # a bend held for 1.5 s
    assert path_bend(spike, wheelbase, window).max() < 1.5 * np.tan(0.02) / wheelbase
    assert np.allclose(path_bend(bent, wheelbase, window)[15:20], np.tan(0.1) / wheelbase)
    assert path_bend(spike, wheelbase, window).shape == spike.shape
    assert np.array_equal(path_bend(spike, wheelbase, 1), np.abs(np.tan(spike)) / wheelbase)


def test_opponent_blocking_the_track_yields_braking_fallback(track):
    """A wall of cars across the whole track 25 m ahead at 40 m/s: no feasible plan, braking, no exception."""
    planner = MpcPlanner(track, VEHICLE, HEADLESS)
    ego = start_state(track, 40.0, s=100.0)
    free = planner.plan(ego, None, None, 0.0)
    assert free.kind == MPC
    s_wall = 100.0 + 25.0 + VEHICLE.center_offset
    offsets = np.linspace(-5.0, 5.0, 5)
    wall = empty_objects(offsets.size)
    xy = track.frenet_to_xy(np.full(offsets.size, s_wall), offsets)
    wall["x"], wall["y"], wall["yaw"] = xy[:, 0], xy[:, 1], track.heading_at(s_wall)
    wall["length"], wall["width"], wall["height"] = 4.9, 2.6, 1.2
    wall["track_id"] = np.arange(1, offsets.size + 1)
    ego_next = EgoState(*free.sample(np.array([0.1]))[0, :4])
    plan = planner.plan(ego_next, wall, None, 0.1)
    assert plan.kind == BRAKING, plan.info
    # no plan clears the wall: the soft constraints (either kind) or the solver say so
    assert plan.info["verdict"] in ("opponent_infeasible", "track_infeasible", "collision_course", "solver_failed")
    assert planner.counts["fallback_braking"] == 1
    assert np.all(plan.inputs[:, 1] <= 0.0) and plan.inputs[0, 1] == pytest.approx(-VEHICLE.max_brake)
    s, d, _ = track.project(plan.states[:, :2])
    left, right = track.widths_at(s)
    assert np.all((d < left) & (d > -right)), "the braking trajectory leaves the track"
    # the previous plan drives into the wall, so it is not reused
    from planning_nodes.opponents import forecast

    assert plan_collides(free, forecast(wall, track, np.arange(31) * DT), VEHICLE)


def test_a_pass_given_up_turns_into_following(track):
    """A slower car 50 m ahead: the ego, faster, commits to a side; holding back makes it follow instead."""
    from planning_nodes.mpc.references import PlanFrame
    from planning_nodes.opponents import FOLLOW, OpponentAvoidance, forecast

    car = empty_objects(1)
    xy = track.frenet_to_xy(np.array([150.0]), np.array([0.0]))
    car["x"], car["y"], car["yaw"] = xy[0, 0], xy[0, 1], track.heading_at(150.0)
    car["vx"], car["vy"] = 20.0 * np.cos(car["yaw"]), 20.0 * np.sin(car["yaw"])
    car["length"], car["width"], car["height"], car["track_id"] = 4.9, 2.0, 1.2, 7
    times = np.arange(1, 31) * DT
    fc = forecast(car, track, times)
    ego_s = 100.0 + 40.0 * times
    ego_d = np.zeros_like(times)
    heading = np.column_stack([np.cos(track.heading_at(ego_s)), np.sin(track.heading_at(ego_s))])
    frame = PlanFrame(*track.frenet_to_xy(np.array([100.0]), np.array([0.0]))[0], float(track.heading_at(100.0)))
    avoidance = OpponentAvoidance(track, VEHICLE)
    passing = avoidance.build(fc, ego_s, ego_d, heading, 40.0, frame)
    held = avoidance.build(fc, ego_s, ego_d, heading, 40.0, frame, hold_back=True)
    assert passing.choices[7] != FOLLOW
    assert held.choices[7] == FOLLOW
    assert np.all(held.speed_cap < passing.speed_cap)  # following caps the pace (closing the gap)


def test_no_pass_is_started_on_a_car_pulling_away(track):
    """A car 30 m ahead at 30 m/s: an ego doing 35 m/s commits to a side; an ego doing 25 m/s
    (braking out of a bend, say) follows, however fast it would like to go."""
    from planning_nodes.mpc.references import PlanFrame
    from planning_nodes.opponents import FOLLOW, OpponentAvoidance, forecast

    car = empty_objects(1)
    xy = track.frenet_to_xy(np.array([130.0]), np.array([0.0]))
    car["x"], car["y"], car["yaw"] = xy[0, 0], xy[0, 1], track.heading_at(130.0)
    car["vx"], car["vy"] = 30.0 * np.cos(car["yaw"]), 30.0 * np.sin(car["yaw"])
    car["length"], car["width"], car["height"], car["track_id"] = 4.9, 2.0, 1.2, 7
    times = np.arange(1, 31) * DT
    fc = forecast(car, track, times)
    ego_s, ego_d = 100.0 + 30.0 * times, np.zeros_like(times)
    heading = np.column_stack([np.cos(track.heading_at(ego_s)), np.sin(track.heading_at(ego_s))])
    frame = PlanFrame(*track.frenet_to_xy(np.array([100.0]), np.array([0.0]))[0], float(track.heading_at(100.0)))
    closing = OpponentAvoidance(track, VEHICLE).build(fc, ego_s, ego_d, heading, 45.0, frame, speed_now=35.0)
    falling_back = OpponentAvoidance(track, VEHICLE).build(fc, ego_s, ego_d, heading, 45.0, frame, speed_now=25.0)
    assert closing.choices[7] != FOLLOW
    assert falling_back.choices[7] == FOLLOW


def _car_ahead(track, s: float, d: float, speed: float):
    car = empty_objects(1)
    xy = track.frenet_to_xy(np.array([s]), np.array([d]))
    car["x"], car["y"], car["yaw"] = xy[0, 0], xy[0, 1], track.heading_at(s)
    car["vx"], car["vy"] = speed * np.cos(car["yaw"]), speed * np.sin(car["yaw"])
    car["length"], car["width"], car["height"], car["track_id"] = 4.9, 1.9, 1.2, 96
    return car


def test_a_side_that_can_no_longer_be_reached_is_given_up_for_following(track):
    """The demo's rear-end collision: a car first seen 40 m ahead, 2 m to the left of an ego near the
    right barrier (no room on the right); its young track said 66 m/s, so the left side was committed
    to. A cycle later it says 58 m/s with the ego at 86 m/s and not moved sideways: the 4.3 m side step
    cannot be made in the 1.1 s before the cars meet, so the ego follows (brakes) while braking can
    still stop short. A side the ego has reached is kept."""
    from planning_nodes.mpc.references import PlanFrame
    from planning_nodes.opponents import FOLLOW, LEFT, OpponentAvoidance, forecast

    times = np.arange(1, 31) * DT
    frame = PlanFrame(*track.frenet_to_xy(np.array([100.0]), np.array([0.0]))[0], float(track.heading_at(100.0)))

    def choose(avoidance, car_s, car_speed, ego_d):
        fc = forecast(_car_ahead(track, car_s, -2.5, car_speed), track, times)
        ego_s, ego_dd = 110.0 + 86.0 * times, np.full_like(times, ego_d)
        heading = np.column_stack([np.cos(track.heading_at(ego_s)), np.sin(track.heading_at(ego_s))])
        return avoidance.build(fc, ego_s, ego_dd, heading, 88.0, frame, speed_now=86.0).choices[96]

    chased = OpponentAvoidance(track, VEHICLE)
    assert choose(chased, 158.6, 66.0, -4.5) == LEFT
    assert choose(chased, 154.6, 58.0, -4.5) == FOLLOW
    reached = OpponentAvoidance(track, VEHICLE)
    assert choose(reached, 158.6, 66.0, -4.5) == LEFT
    assert choose(reached, 154.6, 58.0, 0.3) == LEFT


def test_a_pass_squeezed_against_the_barrier_asks_for_the_room_there_is(track):
    """Passing on the left of a car: the full clearance where the track leaves it; near the barrier
    what the barrier leaves, but never less than a 0.4 m gap between the bodies."""
    from planning_nodes.opponents import LEFT, OpponentAvoidance, forecast

    times = np.arange(1, 31) * DT
    ego_s = 100.0 + 30.0 * times
    avoidance = OpponentAvoidance(track, VEHICLE)
    full = (2.0 + VEHICLE.width) / 2.0 + avoidance.lateral_margin
    edge = 6.0 - VEHICLE.width / 2.0 - avoidance.bound_margin
    for d_car, wanted in ((0.0, full), (2.0, edge - 2.0), (3.5, (2.0 + VEHICLE.width) / 2.0 + 0.4)):
        car = empty_objects(1)
        xy = track.frenet_to_xy(np.array([100.0]), np.array([d_car]))
        car["x"], car["y"], car["yaw"] = xy[0, 0], xy[0, 1], track.heading_at(100.0)
        car["vx"], car["vy"] = 30.0 * np.cos(car["yaw"]), 30.0 * np.sin(car["yaw"])
        car["length"], car["width"], car["height"], car["track_id"] = 4.9, 2.0, 1.2, 7
        fc = forecast(car, track, times)
        normal, bound, _ = avoidance._halfspace(fc, 0, LEFT, ego_s, d_car + full, 30.0)
        asked = bound - np.sum(normal * track.point_at(ego_s), axis=1) - fc.d[0]
        np.testing.assert_allclose(asked, wanted, atol=1e-6)


def test_a_car_alongside_is_forecast_to_leave_room(track):
    """A car on the racing line where the line swings left is forecast to follow it, unless the
    ego is alongside on that side: then it holds a car's width plus 0.8 m off the ego (etiquette)."""
    from planning_nodes.opponents import forecast

    car = empty_objects(1)
    xy = track.frenet_to_xy(np.array([40.0]), track.racing_offset_at(np.array([40.0])))
    car["x"], car["y"], car["yaw"] = xy[0, 0], xy[0, 1], track.heading_at(40.0)
    car["vx"], car["vy"] = 40.0 * np.cos(car["yaw"]), 40.0 * np.sin(car["yaw"])
    car["length"], car["width"], car["height"], car["track_id"] = 4.9, 2.0, 1.2, 7
    times = np.arange(1, 31) * DT
    free = forecast(car, track, times)
    assert free.d[0, -1] - free.d[0, 0] > 5.0  # follows the racing line across the track
    ego_d = 0.5
    alongside = forecast(car, track, times, ego=(41.0, ego_d, 42.0))
    assert np.all(alongside.d[0] <= ego_d - 2.8 + 1e-9)
    far_behind = forecast(car, track, times, ego=(-60.0, ego_d, 42.0))
    np.testing.assert_allclose(far_behind.d, free.d)


def test_solver_failure_shifts_the_previous_plan(track):
    planner = MpcPlanner(track, VEHICLE, PlannerConfig(use_risk_map=False, qp_max_iter=1, accept_residual=0.0))
    good = MpcPlanner(track, VEHICLE, HEADLESS).plan(start_state(track, 40.0), None, None, 0.0)
    planner.last_mpc = good
    ego = EgoState(*good.sample(np.array([0.1]))[0, :4])
    plan = planner.plan(ego, None, None, 0.1)
    assert plan.kind == "shifted"
    assert np.allclose(plan.states[1:10, :2], good.sample(0.1 + DT * np.arange(1, 10))[:, :2], atol=1e-6)
    late = planner.plan(ego, None, None, 1.0)  # past max_shift_s: braking
    assert late.kind == BRAKING


def test_risk_field_local_model():
    """A single occupied blob ahead: value peaks there, the gradient points into it, curvature >= 0."""
    values = np.zeros((len(RISK_TIMES), *RISK_GRID.shape), np.float32)
    X, Y = RISK_GRID.cell_centers()
    values[:] = np.exp(-((X - 40.0) ** 2 + (Y - 2.0) ** 2) / 8.0)
    field = RiskField(values, RISK_GRID, RISK_TIMES)
    centers = np.array([[40.0, 2.0], [40.0, -1.0], [35.0, 2.0], [200.0, 60.0]])
    local = field.local_model(centers, np.zeros(4), np.full(4, 1.0))
    assert local.value[0] > 0.9 and local.value[3] == 0.0
    assert local.grad[1, 1] > 0.0 and local.grad[2, 0] > 0.0  # uphill toward the blob
    assert np.all(local.curv >= 0.0)


def test_rendered_risk_windows_match_the_whole_grid_computation():
    """Two cars (one half off the grid's edge): the windowed float32 rendering against the stated
    cell meaning, 1 - prod_j (1 - P_j severity_j), evaluated in float64 on every cell."""
    import torch

    from planning_nodes.riskmap.model import footprint_probability_torch, render_window

    rng = np.random.default_rng(3)
    steps, modes = len(RISK_TIMES), 3
    start = np.array([[40.0, 3.0], [120.0, RISK_GRID.y_min + 1.0]])
    drift = np.array([12.0, 0.5]) * RISK_TIMES[:, None]  # (T, 2)
    mean = start[:, None, None, :] + drift[None, None] + rng.normal(0.0, 1.0, (2, modes, steps, 2))
    sigma = rng.uniform(0.4, 3.0, (2, modes, steps, 2))
    yaw = rng.uniform(-0.4, 0.4, (2, modes, steps))
    weight = rng.dirichlet(np.ones(modes), 2)
    length, width, severity = np.array([4.9, 4.5]), np.array([2.0, 1.9]), np.array([0.6, 1.0])
    rendered = render_window(mean, sigma, yaw, weight, length, width, severity)

    xs, ys = RISK_GRID.cell_centers()
    p = footprint_probability_torch(
        torch.from_numpy(xs), torch.from_numpy(ys),
        *(torch.from_numpy(a)[..., None, None, :] for a in (mean, sigma)),
        torch.from_numpy(yaw)[..., None, None],
        torch.from_numpy(length)[:, None, None, None, None], torch.from_numpy(width)[:, None, None, None, None],
    )  # fmt: skip
    per_car = torch.einsum("mk,mktyx->mtyx", torch.from_numpy(weight), p).numpy() * severity[:, None, None, None]
    expected = 1.0 - np.prod(1.0 - np.clip(per_car, 0.0, 1.0 - 1e-6), axis=0)
    assert rendered.shape == expected.shape and rendered.dtype == np.float32
    assert expected.max() > 0.5
    assert np.abs(rendered - expected).max() < 1e-5


def test_converged_scp_and_ipopt_reach_the_same_optimum(track):
    """The bench's peer comparison on one stage with a slower car ahead (half-spaces active): both
    trajectories costed by one function, and IPOPT's cost is its trajectory's, not its own objective
    (which credits slacks relaxed below zero)."""
    from planning_nodes.mpc.casadi_peer import CasadiPeer
    from planning_nodes.mpc.planner import converge_stage

    config = HEADLESS
    planner = MpcPlanner(track, VEHICLE, config)
    car = empty_objects(1)
    xy = track.frenet_to_xy(np.array([90.0]), np.array([0.0]))
    car["x"], car["y"], car["yaw"] = xy[0, 0], xy[0, 1], track.heading_at(90.0)
    car["vx"], car["vy"] = 25.0 * np.cos(car["yaw"]), 25.0 * np.sin(car["yaw"])
    car["length"], car["width"], car["height"], car["track_id"] = 4.9, 2.0, 1.2, 3
    ego = start_state(track, 40.0)
    for k in range(3):
        plan = planner.plan(ego, car, None, k * DT)
    assert plan.kind == MPC
    stage, weights = planner.last_stage, config.weights
    local = planner.problem.solve(stage, weights, "OSQP", eps=1e-3, max_iter=config.qp_max_iter)
    converged = converge_stage(
        planner.problem, stage, weights, (local.states, local.inputs), DT, VEHICLE.wheelbase, solver="CLARABEL"
    )
    peer = CasadiPeer(VEHICLE, config.horizon, config.dt, config.opponent_slots, config.slack)
    ipopt = peer.solve(stage, weights, (local.states, local.inputs))
    assert converged.ok and ipopt.ok
    assert ipopt.cost == pytest.approx(peer.evaluate(stage, weights, ipopt.states, ipopt.inputs))
    scp_cost = peer.evaluate(stage, weights, converged.states, converged.inputs)
    assert abs(scp_cost - ipopt.cost) <= 0.01 * abs(ipopt.cost)
    assert np.abs(converged.states[:, :2] - ipopt.states[:, :2]).max() < 0.1


def test_a_risk_map_survives_its_message() -> None:
    """(T, H, W) in, the node's serialized 32FC<T> image, (T, H, W) out: what the planner reads."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from planning_nodes.messages import image_to_risk, serialized_risk

    values = np.random.default_rng(4).random((len(RISK_TIMES), RISK_GRID.height, RISK_GRID.width), np.float32)
    msg = deserialize_message(serialized_risk(values, Header(frame_id="base_link")), Image)
    np.testing.assert_array_equal(image_to_risk(msg), values)
