"""Simulator core: tracks, scenario validation, vehicle limits, BEV labels, determinism, the expert.

Real tracks, real solver (racing line), real scenarios from config/scenarios; no mocks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from racestack.grid import BevGrid
from racestack.objects import CLASS_ID, OBJECT_DTYPE, empty_objects
from simulation.ground_truth import BARRIER, OTHER, TRACK, VEHICLE, bev_labels
from simulation.scenario import list_scenarios, load_scenario
from simulation.schema import ConfigError
from simulation.simulation import Simulation
from simulation.track import RACING_LINE_MARGIN, circuit_track, load_track, oval_track
from simulation.vehicles import Command, VehicleParams, VehicleState, step_ego

OVAL = {"type": "oval", "length": 2400.0, "turn_radius": 250.0, "width": 14.0}


@pytest.fixture(scope="module")
def oval():
    return oval_track()


@pytest.fixture(scope="module")
def circuits():
    return [circuit_track(seed) for seed in (3, 8, 21)]


# -- tracks ------------------------------------------------------------------------------------


def test_oval_geometry_and_racing_line(oval):
    assert abs(oval.length - 2400.0) < 1.0
    spacing = oval.center.seg_len
    assert spacing.min() > 0.9 and spacing.max() < 1.1, "centre line resampled every ~1 m"
    assert np.hypot(*(oval.centerline[0] - oval.centerline[-1])) < 1.1, "closed, end point not repeated"
    assert np.allclose(oval.left_width + oval.right_width, 14.0)
    # The racing line cuts the turns: it uses the width (edge - apex - edge) and stays inside the margins.
    assert oval.racing_offset.max() > 4.5 and oval.racing_offset.min() < -4.5
    assert (oval.racing_offset <= oval.left_width - RACING_LINE_MARGIN + 1e-6).all()
    assert (oval.racing_offset >= -oval.right_width + RACING_LINE_MARGIN - 1e-6).all()
    assert np.abs(oval.racing.curvature).max() < np.abs(oval.curvature).max()


def test_projection_round_trip(oval, circuits):
    rng = np.random.default_rng(0)
    for track in (oval, *circuits):
        s = rng.uniform(0.0, track.length, 2000)
        d = rng.uniform(-track.right_width.min(), track.left_width.min(), 2000)
        s_back, d_back, index = track.project(track.frenet_to_xy(s, d))
        assert np.abs(track.wrap_ds(s_back - s)).max() < 0.1
        assert np.abs(d_back - d).max() < 0.01
        assert ((index >= 0) & (index < len(track.centerline))).all()


def test_circuits_are_valid_and_varied(circuits):
    lengths = []
    for track in circuits:
        total = track.left_width + track.right_width
        assert total.min() >= 10.0 - 1e-6 and total.max() <= 15.0 + 1e-6
        assert 1.0 / np.abs(track.curvature).max() >= 25.0 - 0.5
        _assert_simple(track.left_barrier_outer)
        _assert_simple(track.right_barrier_outer)
        # distant parts of the track never come closer than both barriers
        left, right = track.left_barrier_outer, track.right_barrier_outer
        _, d, _ = track.project(np.vstack([left, right]))
        width = np.concatenate([track.left_width, track.right_width]) + track.barrier_thickness
        assert np.abs(np.abs(d) - width).max() < 0.05, "each barrier point projects onto its own part of the track"
        lengths.append(track.length)
    assert len({round(x) for x in lengths}) == len(lengths)
    assert circuit_track(8).centerline.tobytes() == circuits[1].centerline.tobytes(), "deterministic per seed"


def _assert_simple(ring: np.ndarray) -> None:
    """No two non-adjacent edges of a closed polyline cross (checked with a coarse sweep of edges)."""
    a, b = ring, np.roll(ring, -1, axis=0)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    for i in range(len(ring)):
        overlap = (lo[:, 0] <= hi[i, 0]) & (hi[:, 0] >= lo[i, 0]) & (lo[:, 1] <= hi[i, 1]) & (hi[:, 1] >= lo[i, 1])
        near = np.flatnonzero(overlap)
        near = near[(np.abs(near - i) > 1) & (np.abs(near - i) < len(ring) - 1)]
        for j in near:
            assert not _segments_cross(a[i], b[i], a[j], b[j]), f"edges {i} and {j} cross"


def _segments_cross(p1, p2, q1, q2) -> bool:
    def orient(a, b, c):
        return np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    return orient(p1, p2, q1) != orient(p1, p2, q2) and orient(q1, q2, p1) != orient(q1, q2, p2)


def test_track_file_round_trip(oval, tmp_path):
    path = oval.save(tmp_path / "oval.npz")
    loaded = load_track(path)
    for name in ("centerline", "left_width", "right_width", "racing_line"):
        assert np.array_equal(getattr(loaded, name), getattr(oval, name))
    assert loaded.name == oval.name and loaded.barrier_thickness == oval.barrier_thickness
    (tmp_path / "broken.npz").write_bytes(b"not a track")
    with pytest.raises(ConfigError, match=r"broken\.npz"):
        load_track(tmp_path / "broken.npz")


# -- scenarios ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        (
            {"track": OVAL, "opponents": [{"gap": 10}, {"gap": 50, "lane": "left"}]},
            r"opponents\[1\]\.lane: expected a number",
        ),
        ({"track": {**OVAL, "lenght": 2000}}, "track.lenght: unknown key"),
        ({"track": {"type": "ovl"}}, "track.type: 'ovl' is not one of"),
        ({}, "track: missing"),
        ({"track": OVAL, "rate": "fast"}, "rate: expected a number"),
        ({"track": OVAL, "rate": 30.0}, "physics_dt: "),
        (
            {"track": OVAL, "opponents": [{"gap": 5, "brakes": [{"at": 3.0}]}]},
            r"opponents\[0\].brakes\[0\].speed: missing",
        ),
        ({"track": OVAL, "opponents": [{"lane": 1.0}]}, r"opponents\[0\].start_s: give exactly one"),
        ({"track": OVAL, "ego": {"vehicle": {"max_speed": -3}}}, "ego.vehicle.max_speed: -3 is below"),
        ({"track": OVAL, "noise": {"odometry": {"yaw": "x"}}}, "noise.odometry.yaw: expected a number"),
    ],
)
def test_bad_scenario_names_the_key(scenario, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_scenario(scenario, "bad.yaml")
    assert str(info.value).startswith("scenario bad.yaml: ")


def test_bad_scenario_file_names_file_and_key(tmp_path):
    path = tmp_path / "oval.yaml"
    path.write_text("track: {type: oval}\nopponents:\n  - {gap: 10}\n  - {gap: 40, lane: left}\n")
    with pytest.raises(ConfigError, match=r"^scenario oval.yaml: opponents\[1\].lane: expected a number"):
        load_scenario(path)
    path.write_text("track: [oval\n")
    with pytest.raises(ConfigError, match=r"scenario oval\.yaml: cannot read"):
        load_scenario(path)


def test_shipped_scenarios_load_and_heldout_is_separate():
    training, heldout = list_scenarios(), list_scenarios(heldout=True)
    assert len(training) >= 6 and len(heldout) >= 3
    assert not {n.split("/")[-1] for n in heldout} & set(training)
    kinds = set()
    for name in training + heldout:
        scenario = load_scenario(name)
        kinds.add(scenario.track.name.split("_")[0])
        assert scenario.duration > 0 and scenario.substeps * scenario.physics_dt * scenario.rate == pytest.approx(1.0)
    assert {"oval", "circuit"} <= kinds


# -- vehicles ----------------------------------------------------------------------------------


def test_ego_obeys_its_limits():
    params = VehicleParams()
    rng = np.random.default_rng(1)
    dt = 0.01
    state = VehicleState(0.0, 0.0, 0.0, 20.0)
    for k in range(3000):
        command = Command(
            steering_angle=float(rng.uniform(-1.0, 1.0)),
            acceleration=float(rng.uniform(-40.0, 40.0)) if k % 97 else math.nan,
            speed=float(rng.uniform(0.0, 150.0)) if k % 5 == 0 else None,
        )
        new = step_ego(state, command, params, dt)
        assert abs(new.steer) <= params.max_steer + 1e-12
        assert abs(new.steer - state.steer) <= params.max_steer_rate * dt + 1e-12
        assert -params.max_brake - 1e-9 <= new.accel <= params.max_accel + 1e-9
        assert 0.0 <= new.v <= params.max_speed
        assert abs(new.lateral_accel) <= params.max_lateral_accel + 1e-9
        assert all(math.isfinite(v) for v in (new.x, new.y, new.yaw, new.v))
        state = new
    # flat out on a straight the car reaches its top speed (>= 80 m/s) and stays there
    state = VehicleState(0.0, 0.0, 0.0, 0.0)
    for _ in range(2000):
        state = step_ego(state, Command(0.0, 100.0), params, dt)
    assert state.v == params.max_speed >= 80.0


# -- ground truth ------------------------------------------------------------------------------


def test_bev_labels_match_the_geometry(circuits):
    track = circuits[0]
    grid = BevGrid.centered(200, 0.25)
    s0 = 300.0
    center = track.point_at(s0)
    pose = (float(center[0]), float(center[1]), float(track.heading_at(s0)) + 0.3)
    car = empty_objects(1)
    car_xy = track.frenet_to_xy(s0 + 12.0, 1.5)
    car["x"], car["y"], car["z"], car["yaw"] = car_xy[0], car_xy[1], 0.6, pose[2] - 0.5
    car["length"], car["width"], car["height"] = 4.9, 1.9, 1.2
    car["class_id"] = CLASS_ID["car"]
    labels = bev_labels(track, pose, car, grid)

    xs, ys = grid.cell_centers()
    c, s = math.cos(pose[2]), math.sin(pose[2])
    world = np.stack([pose[0] + c * xs - s * ys, pose[1] + s * xs + c * ys], axis=-1).reshape(-1, 2)
    s_cells, d_cells, _ = track.project(world)
    left, right = track.widths_at(s_cells)
    expected = np.full(world.shape[0], OTHER)
    expected[(d_cells <= left) & (d_cells >= -right)] = TRACK
    barrier = ((d_cells > left) & (d_cells <= left + track.barrier_thickness)) | (
        (d_cells < -right) & (d_cells >= -right - track.barrier_thickness)
    )
    expected[barrier] = BARRIER
    rel = world - [car["x"][0], car["y"][0]]
    cy, sy = math.cos(car["yaw"][0]), math.sin(car["yaw"][0])
    inside = (np.abs(rel @ [cy, sy]) < 4.9 / 2) & (np.abs(rel @ [-sy, cy]) < 1.9 / 2)
    expected[inside] = VEHICLE
    got = labels.reshape(-1)
    # Cells decided differently sit on a boundary (the bounds are polylines, widths interpolated).
    faces = (left, -right, left + track.barrier_thickness, -right - track.barrier_thickness)
    edge = np.min([np.abs(d_cells - face) for face in faces], axis=0)
    differ = got != expected
    assert differ.mean() < 0.002
    assert (edge[differ] < 0.03).all()
    assert (got[inside] == VEHICLE).all()
    assert {OTHER, TRACK, BARRIER, VEHICLE} <= set(np.unique(got).tolist())
    assert labels.dtype == np.int8 and labels.shape == grid.shape


# -- the simulation ----------------------------------------------------------------------------


def _run(seed: int, frames: int, sensors: bool) -> list[bytes]:
    sim = Simulation.from_scenario("oval_pack", seed=seed)
    out = []
    grid = BevGrid.centered(128, 0.4)
    for _ in range(frames):
        odometry = sim.odometry()
        out += [sim.objects_table().tobytes(), sim.flying_objects_table().tobytes(), sim.bev_labels(grid).tobytes()]
        out.append(np.array([odometry.x, odometry.y, odometry.yaw, odometry.v]).tobytes())
        if sensors and sim.lidar_due():
            sweep = sim.lidar_sweep()
            out += [sweep.points.tobytes(), sweep.semantic.tobytes(), sweep.instance.tobytes()]
        sim.step_frame()
    return out


def test_same_seed_same_run_bit_for_bit():
    first = _run(5, 12, sensors=True)
    assert first == _run(5, 12, sensors=True)
    assert _run(6, 1, sensors=False)[1] != first[1], "another seed, other flying objects"


def test_objects_table_is_ground_truth():
    sim = Simulation.from_scenario("oval_pack")
    for _ in range(10):
        sim.step_frame()
    table = sim.objects_table()
    assert table.dtype == OBJECT_DTYPE and len(table) == len(sim.scenario.opponents)
    assert sorted(table["track_id"].tolist()) == list(range(1, len(table) + 1))
    assert (table["class_id"] == CLASS_ID["car"]).all()
    before = table.copy()
    sim.step_frame()
    after = sim.objects_table()
    dt = 1.0 / sim.scenario.rate
    moved = np.stack([after["x"] - before["x"], after["y"] - before["y"]], axis=1) / dt
    velocity = np.stack([before["vx"] + after["vx"], before["vy"] + after["vy"]], axis=1) / 2.0
    assert np.abs(moved - velocity).max() < 0.5, "vx, vy are the true velocities"


@pytest.mark.parametrize("name", ["oval_solo", "circuit_a"])
def test_expert_laps_without_collision_or_track_limits(name):
    sim = Simulation.from_scenario(name)
    while sim.events.laps < 1:
        sim.step_frame()
        assert sim.time < 120.0, "no lap in two minutes"
    events = sim.events
    assert events.collisions == 0
    assert events.track_limit_violations == 0 and events.max_excursion < -0.1
    assert events.lap_times[0] < 60.0


# -- racestack dataset -------------------------------------------------------------------------


def test_dataset_registry_routes_to_exporters(monkeypatch):
    import argparse

    from simulation import datasets

    for kind in datasets.EXPORTERS:
        module = datasets.exporter(kind)
        parser = argparse.ArgumentParser()
        module.configure(parser)
        assert parser.format_help()
    monkeypatch.setitem(datasets.EXPORTERS, "future", ("perception_nodes.not_written_yet", "a future kind"))
    with pytest.raises(SystemExit, match=r"exporter 'perception_nodes\.not_written_yet' is not available"):
        datasets.exporter("future")


def _random_traffic(seed: int) -> dict:
    """A scenario with random traffic: lanes, speeds, overtakers, braking and lane changes."""
    rng = np.random.default_rng(seed)
    opponents = []
    for _ in range(5):
        car = {"gap": float(rng.uniform(30, 600)), "speed": float(rng.uniform(25, 60)),
               "speed_scale": float(rng.uniform(0.6, 0.95)),
               "lane": "racing" if rng.random() < 0.5 else float(rng.uniform(-3, 3)),
               "overtake": bool(rng.random() < 0.4)}
        if rng.random() < 0.4:
            car["brakes"] = [{"at": float(rng.uniform(3, 20)), "speed": float(rng.uniform(10, 30))}]
        if rng.random() < 0.4:
            car["lane_changes"] = [{"at": float(rng.uniform(3, 20)), "lane": float(rng.uniform(-3, 3))}]
        opponents.append(car)
    track = {"type": "circuit", "seed": 900 + seed}
    return {"seed": seed, "track": track, "ego": {"speed": 30}, "opponents": opponents, "duration": 30,
            "flying_objects": {"count": 0}}


@pytest.mark.parametrize("seed", [3, 16])
def test_expert_is_safe_in_random_traffic(seed):
    sim = Simulation.from_scenario(_random_traffic(seed))
    while not sim.done:
        sim.step_frame()
    assert sim.events.collisions == 0 and sim.events.track_limit_violations == 0
    assert sim.events.distance > 600.0, "it made progress through the traffic"
