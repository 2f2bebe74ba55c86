"""Tracking core without ROS: association, gates, life cycle, baselines, frames, synthetic detector."""

from __future__ import annotations

import numpy as np
import pytest

from perception_nodes.tracking.association import greedy, hungarian
from perception_nodes.tracking.baselines import GreedyTracker, KalmanTracker
from perception_nodes.tracking.graph import Gates, build_graph
from perception_nodes.tracking.state import Detections, EgoState, Tracks
from perception_nodes.tracking.synthetic_detector import DetectorNoise, SyntheticDetector
from perception_nodes.tracking.tracker import IdSource, TrackerConfig
from racestack.objects import CLASS_ID, empty_objects

DT = 0.1


def cars(xy: list[tuple[float, float]], classes: list[int] | None = None, score: float = 0.9) -> Detections:
    table = empty_objects(len(xy))
    table["x"], table["y"] = np.array(xy, dtype=np.float64).reshape(-1, 2).T
    table["z"], table["length"], table["width"], table["height"] = 0.6, 4.9, 1.9, 1.2
    table["score"] = score
    if classes is not None:
        table["class_id"] = classes
    return Detections.from_table(table)


def test_greedy_takes_cheapest_pairs_first():
    cost = np.array([[1.0, 0.5], [0.4, 3.0]])
    rows, cols = greedy(cost, np.ones_like(cost, bool))
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 1), (1, 0)]
    cost = np.array([[0.1, 0.2], [0.15, 5.0]])  # greedy takes (0,0) then (1,1); Hungarian (0,1),(1,0)
    valid = np.ones_like(cost, bool)
    assert sorted(zip(*map(list, greedy(cost, valid)), strict=True)) == [(0, 0), (1, 1)]
    assert sorted(zip(*map(list, hungarian(cost, valid)), strict=True)) == [(0, 1), (1, 0)]


def test_assignment_respects_the_gate():
    cost = np.array([[0.1, 0.2], [0.3, 0.4]])
    valid = np.array([[False, True], [False, False]])
    for method in (greedy, hungarian):
        rows, cols = method(cost, valid)
        assert rows.tolist() == [0] and cols.tolist() == [1]
    assert greedy(np.zeros((0, 3)), np.zeros((0, 3), bool))[0].size == 0


@pytest.mark.parametrize("tracker_type", [KalmanTracker, GreedyTracker])
def test_baselines_follow_racing_cars_with_stable_ids(tracker_type):
    tracker = tracker_type(TrackerConfig(association="hungarian"))
    rng = np.random.default_rng(0)
    for k in range(30):
        xy = [(80.0 * k * DT, 0.0), (60.0 * k * DT + 20.0, 6.0)]
        out = tracker.step(cars(np.array(xy) + rng.normal(0, 0.1, (2, 2))), k * DT)
    assert sorted(out["track_id"].tolist()) == [0, 1]
    order = np.argsort(out["y"])
    assert np.allclose(out["vx"][order], [80.0, 60.0], atol=3.0)
    assert np.allclose(out["vy"], 0.0, atol=3.0)


def test_life_cycle_birth_coasting_and_death():
    config = TrackerConfig(max_age=2, coast_score_factor=0.5, new_score_factor=0.5)
    tracker = GreedyTracker(config)
    out = tracker.step(cars([(0.0, 0.0)], score=0.8), 0.0)
    assert out["score"][0] == pytest.approx(0.4)  # seen once: new_score_factor
    tracker.step(cars([(5.0, 0.0)], score=0.8), DT)
    for k, expected in ((2, 0.4), (3, 0.2)):
        out = tracker.step(cars([]), k * DT)
        assert out["score"][0] == pytest.approx(expected)
        assert out["x"][0] == pytest.approx(5.0 + 50.0 * (k - 1) * DT)  # coasting at constant velocity
    assert len(tracker.step(cars([]), 4 * DT)) == 0  # more than max_age missed frames


def test_a_gap_in_the_stream_ends_tracks_that_no_frame_updated():
    tracker = GreedyTracker(TrackerConfig(max_age=8, max_coast_s=1.0))
    first = tracker.step(cars([(0.0, 0.0)]), 0.0)
    assert len(tracker.step(cars([]), 0.9)) == 1  # one missed frame, within the coasting time
    later = tracker.step(cars([(500.0, 0.0)]), 3.0)  # the next frame comes 2.1 s later
    assert len(later) == 1 and later["track_id"][0] != first["track_id"][0]


def test_birth_score_and_min_hits():
    tracker = GreedyTracker(TrackerConfig(birth_score=0.5, min_hits=2))
    assert len(tracker.step(cars([(0.0, 0.0), (0.0, 20.0)], score=0.3), 0.0)) == 0
    tracker.step(cars([(0.0, 0.0)], score=0.9), DT)
    assert len(tracker.step(cars([(1.0, 0.0)], score=0.9), 2 * DT)) == 1


def test_ids_are_shared_between_trackers_and_survive_reset():
    ids = IdSource()
    a, b = GreedyTracker(ids=ids), KalmanTracker(ids=ids)
    first = a.step(cars([(0.0, 0.0)]), 0.0)["track_id"]
    second = b.step(cars([(0.0, 0.0)]), 0.0)["track_id"]
    a.reset()
    third = a.step(cars([(0.0, 0.0)]), 1.0)["track_id"]
    assert first.tolist() == [0] and second.tolist() == [1] and third.tolist() == [2]


def test_time_must_advance():
    tracker = GreedyTracker()
    tracker.step(cars([(0.0, 0.0)]), 1.0)
    with pytest.raises(ValueError, match="not after"):
        tracker.step(cars([(0.0, 0.0)]), 1.0)


def test_gates_are_class_specific_and_fitted_to_racing_speed():
    gates = Gates()
    track = Tracks.born(cars([(0.0, 0.0)]), np.array([0]), 0.0)
    # A new car track (velocity unknown) may have moved 95 m/s x 0.1 s + 2 m; a drone not.
    dets = cars([(11.0, 0.0), (12.0, 0.0), (5.0, 0.0)], classes=[0, 0, CLASS_ID["drone"]])
    assert gates.mask(track, dets, DT).tolist() == [[True, False, False]]
    track.velocity_known[:] = True
    track.velocity[:] = [[80.0, 0.0]]  # predicted 8 m ahead; 2 m + 10 m/s x 0.1 s around it
    dets = cars([(8.0, 2.9), (8.0, 3.1)])
    assert gates.mask(track, dets, DT).tolist() == [[True, False]]


def test_graph_shapes_masks_and_ego_relative_features():
    track = Tracks.born(cars([(100.0, 50.0), (300.0, 50.0)]), np.array([0, 1]), 0.0)
    dets = cars([(101.0, 50.0), (102.0, 52.0), (500.0, 0.0)])
    graph = build_graph(track, dets, DT, EgoState(x=90.0, y=50.0), Gates())
    assert graph.edge_feats.shape == (1, 3, 2, 14) and graph.track_feats.shape[:2] == (1, 2)
    assert graph.edge_mask[0].tolist() == [[1, 0], [1, 0], [0, 0]]
    assert graph.det_mask[0].diagonal().tolist() == [1, 1, 1] and graph.det_mask[0, 0, 1] == 1
    moved = build_graph(track, dets, DT, EgoState(x=90.0, y=50.0), Gates())
    shifted = Tracks.born(cars([(1100.0, 50.0), (1300.0, 50.0)]), np.array([0, 1]), 0.0)
    far_dets = cars([(1101.0, 50.0), (1102.0, 52.0), (1500.0, 0.0)])
    far = build_graph(shifted, far_dets, DT, EgoState(x=1090.0, y=50.0), Gates())
    assert np.allclose(moved.det_feats, far.det_feats) and np.allclose(moved.edge_feats, far.edge_feats, atol=1e-5)


def test_ego_state_moves_base_link_tables_into_map():
    table = empty_objects(1)
    table["x"], table["y"], table["yaw"], table["vx"] = 10.0, 0.0, 0.1, 5.0
    out = EgoState(x=1.0, y=2.0, yaw=np.pi / 2).to_map(table)
    assert out["x"][0] == pytest.approx(1.0, abs=1e-5) and out["y"][0] == pytest.approx(12.0)
    assert out["yaw"][0] == pytest.approx(np.pi / 2 + 0.1) and out["vy"][0] == pytest.approx(5.0)


def test_synthetic_detector_misses_occluded_cars_and_adds_false_positives():
    rng = np.random.default_rng(3)
    detector = SyntheticDetector(DetectorNoise(), rng)
    gt = empty_objects(3)
    gt["x"], gt["y"] = [20.0, 40.0, 200.0], [0.0, 0.0, 0.0]  # the second hides behind the first
    gt["length"], gt["width"], gt["height"], gt["z"] = 4.9, 1.9, 1.2, 0.6
    gt["track_id"] = [1, 2, 3]
    seen, false = {1: 0, 2: 0}, 0
    for _ in range(300):
        det, ids, visible = detector.detect(gt, EgoState())
        assert visible.tolist() == [True, False, False]  # hidden, out of range
        for key in seen:
            seen[key] += int((ids == key).any())
        false += int((ids == -1).sum())
        assert np.isfinite(det["score"]).all() and ((det["score"] > 0) & (det["score"] < 1)).all()
    assert seen[1] > 250 and seen[2] < 30
    assert 50 < false < 600
