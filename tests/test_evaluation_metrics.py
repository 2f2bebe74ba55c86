"""Evaluation metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from nav_msgs.msg import Odometry

from racestack.evaluation.metrics import (
    average_precision,
    box_iou,
    confusion,
    detection_map,
    segmentation_scores,
    trajectory_l2,
)
from racestack.evaluation.recording import Sample
from racestack.evaluation.scoring import driven_distance
from racestack.objects import BOX2D_DTYPE


def test_segmentation_iou_by_hand() -> None:
    truth = np.array([[1, 1, 2, 3], [0, 0, 2, 3]])
    predicted = np.array([[1, 2, 2, 3], [0, 0, 2, 0]])
    scores = segmentation_scores(confusion(predicted, truth))
    assert scores["iou_track"] == pytest.approx(1 / 2)
    assert scores["iou_barrier"] == pytest.approx(2 / 3)
    assert scores["iou_vehicle"] == pytest.approx(1 / 2)
    assert scores["miou"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)


def _boxes(rows) -> np.ndarray:
    table = np.zeros(len(rows), dtype=BOX2D_DTYPE)
    for i, (u0, v0, u1, v1, score, cls) in enumerate(rows):
        table[i] = (u0, v0, u1, v1, score, cls)
    return table


def test_box_iou() -> None:
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0.0]])


def test_perfect_detections_score_one_and_a_confident_false_positive_costs() -> None:
    truth = _boxes([(0, 0, 10, 10, 1, 1), (20, 20, 40, 40, 1, 3)])
    perfect = detection_map([(truth.copy(), truth)])
    assert perfect["map50"] == pytest.approx(1.0) and perfect["map50_95"] == pytest.approx(1.0)
    with_fp = _boxes([(0, 0, 10, 10, 0.5, 1), (50, 50, 60, 60, 0.9, 1), (20, 20, 40, 40, 0.8, 3)])
    result = detection_map([(with_fp, truth)])
    assert result["ap50_airplane"] == pytest.approx(1.0)
    assert result["ap50_drone"] == pytest.approx(0.5, abs=0.01)
    assert detection_map([(truth[:0], truth)])["map50"] == 0.0


def test_average_precision_of_a_step() -> None:
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx((51 * 1.0 + 50 * 0.5) / 101)


def test_trajectory_l2_at_horizons() -> None:
    actual_t = np.linspace(0, 10, 101)
    actual_xy = np.stack([actual_t * 10.0, np.zeros_like(actual_t)], axis=1)
    times = np.linspace(0, 3, 31)
    plan_xy = np.stack([times * 10.0, times * 1.0], axis=1)
    later = plan_xy + np.array([80.0, 0.0])
    result = trajectory_l2([(0.0, times, plan_xy), (8.0, times + 8.0, later)], actual_t, actual_xy)
    assert result["l2_1s"] == pytest.approx(1.0) and result["l2_2s"] == pytest.approx(2.0)
    assert result["l2_3s"] == pytest.approx(3.0)


def _item(topic: str, time_ms: int):
    from racestack.bag_replay import ReplayItem
    from racestack.bags import BagMessage

    return ReplayItem(topic, BagMessage(topic, "t", time_ms * 1_000_000, b"", ""), time_ms * 1_000_000, None)


def test_latched_state_recorded_after_the_first_sweeps_is_replayed_first() -> None:
    from racestack.evaluation.runner import _state_first

    bag = [_item("/points", 0), _item("/odom", 5), _item("/map/line", 40), _item("/points", 100),
           _item("/map/line", 150), _item("/points", 200)]
    out = list(_state_first(bag, "/points", {"/map/line"}))
    assert [(i.topic, i.time_ns // 1_000_000) for i in out] == [
        ("/map/line", -1000), ("/points", 0), ("/odom", 5), ("/points", 100), ("/map/line", 150), ("/points", 200)]
    assert len(list(_state_first(bag[:3], "/points", {"/map/line"}))) == 3


def test_driven_distance_in_stamp_order_without_repeated_stamps() -> None:
    def odometry(stamp_ns: int, x: float) -> Sample:
        msg = Odometry()
        msg.pose.pose.position.x = x
        return Sample(recv_ns=0, stamp_ns=stamp_ns, msg=msg)

    driven = [odometry(k * 50, 2.0 * k) for k in range(11)]  # 20 m along x
    foreign = odometry(150, -500.0)  # a second publisher repeating a stamp
    shuffled = [driven[3], driven[0], *driven[4:], driven[1], foreign, driven[2]]
    distance, repeated = driven_distance(shuffled)
    assert distance == pytest.approx(20.0) and repeated == 1
    assert driven_distance(driven[:1]) == (None, 0)
