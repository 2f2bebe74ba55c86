"""Tracking metrics against hand-computed cases (nuScenes AMOTA, CLEAR-MOT via motmetrics)."""

from __future__ import annotations

import numpy as np
import pytest

from perception_nodes.tracking.metrics import (
    ClearMotAccumulator,
    _accumulate,
    _frames_of_class,
    evaluate_tracking,
    recall_thresholds,
)
from racestack.objects import CLASS_ID, empty_objects


def table(rows: list[tuple[int, float, float, float]], class_id: int = 0) -> np.ndarray:
    """Objects (track_id, x, y, score)."""
    out = empty_objects(len(rows))
    for i, (track_id, x, y, score) in enumerate(rows):
        out[i]["track_id"], out[i]["x"], out[i]["y"], out[i]["score"] = track_id, x, y, score
    out["class_id"] = class_id
    out["length"], out["width"], out["height"] = 4.9, 1.9, 1.2
    return out


def gt_frames(count: int, objects: dict[int, tuple[float, float]], velocity: float = 8.0) -> list[np.ndarray]:
    return [table([(oid, x + velocity * k, y, 1.0) for oid, (x, y) in objects.items()]) for k in range(count)]


def test_perfect_tracking_scores_one():
    gt = gt_frames(6, {1: (0.0, 0.0), 2: (0.0, 10.0)})
    tracks = [table([(7, g[0]["x"] + 0.3, g[0]["y"], 0.8), (9, g[1]["x"], g[1]["y"] - 0.5, 0.6)]) for g in gt]
    summary = evaluate_tracking([(gt, tracks)]).summary()
    assert summary["mota"] == pytest.approx(1.0)
    assert summary["amota"] == pytest.approx(1.0)
    assert summary["ids"] == 0 and summary["fp"] == 0 and summary["fn"] == 0
    assert summary["motp"] == pytest.approx(0.4, abs=1e-5)
    # Recall targets up to 7/12 keep only the 0.8 track (0.3 m off): 21 of the 40; the rest 0.4 m.
    assert summary["amotp"] == pytest.approx((21 * 0.3 + 19 * 0.4) / 40, abs=1e-5)


def test_one_id_switch_counted_once():
    gt = gt_frames(4, {1: (0.0, 0.0)})
    tracks = [table([(10 if k < 2 else 11, g[0]["x"], g[0]["y"], 0.9)]) for k, g in enumerate(gt)]
    metrics = evaluate_tracking([(gt, tracks)]).classes[0]
    assert metrics.ids == 1
    assert metrics.mota == pytest.approx(1.0 - 1 / 4)
    assert metrics.fp == 0 and metrics.fn == 0


def test_distance_threshold_is_two_metres():
    gt = gt_frames(3, {1: (0.0, 0.0)})
    near = [table([(5, g[0]["x"] + 1.9, g[0]["y"], 1.0)]) for g in gt]
    far = [table([(5, g[0]["x"] + 2.1, g[0]["y"], 1.0)]) for g in gt]
    assert evaluate_tracking([(gt, near)]).classes[0].fn == 0
    far_metrics = evaluate_tracking([(gt, far)]).classes[0]
    assert far_metrics.amota == 0.0 and far_metrics.mota == 0.0


def test_amota_of_a_known_case():
    """A: 10 frames of object 1 at score 0.9; B: object 2 in frames 0-4 at 0.5; C: a false track at 0.7.

    Recall targets t_i = 0.1 + i * 0.9 / 39. i <= 18 keeps only A (threshold >= 0.777): MOTAR 1.
    i = 19 (threshold 0.592) keeps A and C: r = 0.5, MOTAR = 1 - (10 + 5 - 10) / 10 = 0.5.
    i = 20..28 (threshold 0.5) keeps all: r = 0.75, MOTAR = 1 - (5 + 5 - 5) / 15 = 2/3.
    i >= 29 needs recall > 0.75, never reached: 0. AMOTA = (19 + 0.5 + 9 * 2/3) / 40 = 0.6375.
    MOTA is 0.5 both with A alone and with all three; the tie goes to the higher recall.
    """
    gt = gt_frames(10, {1: (0.0, 0.0), 2: (0.0, 10.0)})
    tracks = []
    for k, g in enumerate(gt):
        rows = [(100, g[0]["x"], g[0]["y"], 0.9)]
        if k < 5:
            rows.append((200, g[1]["x"], g[1]["y"], 0.5))
            rows.append((300, g[0]["x"], g[0]["y"] + 30.0, 0.7))
        tracks.append(table(rows))
    metrics = evaluate_tracking([(gt, tracks)]).classes[0]
    assert metrics.amota == pytest.approx(25.5 / 40)
    assert metrics.mota == pytest.approx(0.5)
    assert metrics.recall == pytest.approx(0.75)
    assert metrics.fp == 5 and metrics.fn == 5


def test_track_scores_are_averaged_over_the_track():
    """A track whose mean score is below a threshold is dropped in every frame, as in nuScenes."""
    gt = gt_frames(4, {1: (0.0, 0.0)})
    scores = [1.0, 0.1, 0.1, 0.1]  # mean 0.325 for the whole track
    tracks = [table([(3, g[0]["x"], g[0]["y"], s)]) for g, s in zip(gt, scores, strict=True)]
    metrics = evaluate_tracking([(gt, tracks)]).classes[0]
    assert metrics.amota == pytest.approx(1.0)


def test_classes_are_evaluated_separately_and_ids_per_sequence():
    gt_cars = gt_frames(3, {1: (0.0, 0.0)})
    drone = CLASS_ID["drone"]
    gt = [np.concatenate([g, table([(1, 0.0, 50.0, 1.0)], drone)]) for g in gt_cars]
    wrong_class = [table([(4, g[0]["x"], g[0]["y"], 1.0)], drone) for g in gt_cars]
    result = evaluate_tracking([(gt, wrong_class), (gt, wrong_class)])
    names = [c.name for c in result.classes]
    assert names == ["car", "drone"]
    car, flying = result.classes
    assert car.fn == 6 and car.amota == 0.0
    assert flying.fp == 6 and flying.fn == 6


def test_recall_thresholds_mark_unreached_recall():
    thresholds = recall_thresholds(np.array([0.9, 0.8]), gt_count=4, num_thresholds=4, min_recall=0.25)
    assert np.allclose(thresholds[:2], [0.9, 0.8])
    assert np.isnan(thresholds[2:]).all()


def random_sequence(rng: np.random.Generator, frames: int = 60) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Objects wandering close together; a tracker that swaps, drops, fragments and hallucinates."""
    objects = rng.uniform(0.0, 6.0, (5, 2))
    gt, tracks = [], []
    for k in range(frames):
        objects += rng.normal(0.0, 0.4, objects.shape)
        present = rng.random(5) < 0.85
        gt.append(table([(i + 1, x, y, 1.0) for i, (x, y) in enumerate(objects) if present[i]]))
        rows = []
        for i, (x, y) in enumerate(objects):
            if rng.random() < 0.8:
                track_id = 10 * (i + 1) + (k // 15 if i < 2 else 0) + (rng.random() < 0.05)
                rows.append((track_id, x + rng.normal(0, 0.8), y + rng.normal(0, 0.8), float(rng.random())))
        rows += [(900 + k, *rng.uniform(0.0, 6.0, 2), float(rng.random())) for _ in range(rng.poisson(0.7))]
        tracks.append(table(rows))
    return gt, tracks


def test_fast_clear_mot_equals_motmetrics():
    rng = np.random.default_rng(7)
    sequences = [random_sequence(rng) for _ in range(3)]
    frames = [_frames_of_class(gt, tracks, 0) for gt, tracks in sequences]
    for threshold in (None, 0.3, 0.6):
        fast, fast_scores = _accumulate(frames, threshold, 2.0, "fast")
        reference, reference_scores = _accumulate(frames, threshold, 2.0, "motmetrics")
        assert fast.switches > 0 and fast.fragmentations > 0 and fast.false_positives > 0
        for name in ("objects", "matches", "misses", "switches", "false_positives", "fragmentations"):
            assert getattr(fast, name) == getattr(reference, name), name
        assert fast.motp == pytest.approx(reference.motp, rel=1e-9)
        assert np.allclose(np.sort(fast_scores), np.sort(reference_scores))
    fast_metrics = evaluate_tracking(sequences, engine="fast").classes[0]
    reference_metrics = evaluate_tracking(sequences, engine="motmetrics").classes[0]
    for name in ("amota", "amotp", "mota", "motp", "recall"):
        assert getattr(fast_metrics, name) == pytest.approx(getattr(reference_metrics, name)), name
    for name in ("ids", "frag", "fp", "fn", "gt"):
        assert getattr(fast_metrics, name) == getattr(reference_metrics, name), name


def test_accumulator_counts_a_hand_made_switch_and_fragment():
    acc = ClearMotAccumulator()
    one = np.array([[0.5]])
    acc.update(np.array([1]), np.array([7]), one)
    acc.update(np.array([1]), np.array([], int), np.zeros((1, 0)))  # missed
    acc.update(np.array([1]), np.array([8]), one)  # back, with another id
    result = acc.result()
    assert (result.matches, result.misses, result.switches, result.fragmentations) == (1, 1, 1, 1)


def test_rare_class_left_out_of_the_means_on_request():
    cars = gt_frames(6, {1: (0.0, 0.0)})
    birds = [table([(2, 50.0, 5.0, 1.0)], class_id=CLASS_ID["bird"])]
    gt = [np.concatenate([c, birds[0]]) if k == 0 else c for k, c in enumerate(cars)]
    tracks = [table([(7, c[0]["x"], c[0]["y"], 0.9)]) for c in cars]
    metrics = evaluate_tracking([(gt, tracks)])
    assert {c.name: c.gt for c in metrics.classes} == {"car": 6, "bird": 1}
    assert metrics.summary()["amota"] == pytest.approx(0.5)
    assert metrics.summary(min_gt=2)["amota"] == pytest.approx(1.0)
    assert metrics.summary(min_gt=2)["gt"] == 6
