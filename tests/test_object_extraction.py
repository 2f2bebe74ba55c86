"""Object extraction core: vehicle cells -> oriented boxes with heights from the points."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perception_nodes.object_extraction import extract_objects
from racestack.grid import LITE_GRID
from racestack.objects import CLASS_ID, empty_objects
from simulation.ground_truth import vehicle_mask


def cars_table(rows: list[tuple[float, float, float]]) -> np.ndarray:
    table = empty_objects(len(rows))
    for row, (x, y, yaw) in zip(table, rows, strict=True):
        row["x"], row["y"], row["yaw"] = x, y, yaw
        row["length"], row["width"], row["height"] = 4.9, 1.9, 1.2
        row["class_id"] = CLASS_ID["car"]
    return table


def labels_with(cars: np.ndarray) -> np.ndarray:
    labels = np.ones(LITE_GRID.shape, np.int8)
    labels[vehicle_mask(cars, (0.0, 0.0, 0.0), LITE_GRID)] = 3
    return labels


def test_boxes_match_rasterized_cars():
    cars = cars_table([(12.3, -3.1, 0.0), (-20.0, 8.0, 0.6), (35.0, 20.0, -1.2)])
    points = np.array([[12.0, -3.0, 1.15], [12.5, -2.8, 0.4], [-20.0, 8.0, 0.9]])
    boxes = extract_objects(labels_with(cars), LITE_GRID, points)
    assert len(boxes) == 3
    for car in cars:
        box = boxes[np.argmin(np.hypot(boxes["x"] - car["x"], boxes["y"] - car["y"]))]
        assert math.hypot(box["x"] - car["x"], box["y"] - car["y"]) < 0.3
        assert box["length"] == pytest.approx(4.9, abs=0.5) and box["width"] == pytest.approx(1.9, abs=0.5)
        assert abs(math.remainder(float(box["yaw"] - car["yaw"]), math.pi)) < 0.15
        assert box["class_id"] == CLASS_ID["car"] and box["track_id"] == -1
    by_x = boxes[np.argsort(boxes["x"])]
    assert by_x[0]["height"] == pytest.approx(0.9) and by_x[1]["height"] == pytest.approx(1.15)
    assert by_x[2]["height"] == pytest.approx(1.2)  # no point on it: the prior


def test_two_cars_nose_to_tail_are_split_and_specks_ignored():
    cars = cars_table([(10.0, 0.0, 0.0), (15.0, 0.0, 0.0)])
    labels = labels_with(cars)
    labels[10, 10] = 3  # a one-cell speck
    boxes = extract_objects(labels, LITE_GRID)
    assert len(boxes) == 2
    assert sorted(np.round(boxes["x"]).tolist()) == pytest.approx([10.0, 15.0], abs=0.6)


def test_no_vehicle_cells_no_boxes():
    assert len(extract_objects(np.ones(LITE_GRID.shape, np.int8), LITE_GRID)) == 0
