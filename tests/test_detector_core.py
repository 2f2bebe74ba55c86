"""Detector core without ROS: letterbox, decode/NMS/rescale against ultralytics' own code, classes, lifting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ultralytics.data.augment import LetterBox
from ultralytics.utils.nms import non_max_suppression
from ultralytics.utils.ops import scale_boxes

from perception_nodes.flying_objects.classes import global_class_id, global_class_ids
from perception_nodes.flying_objects.lifting import (
    CameraModel,
    LiftingConfig,
    lift_boxes,
    nearest_cluster_depth,
)
from perception_nodes.flying_objects.postprocess import Postprocessor, Thresholds, decode, rescale
from perception_nodes.flying_objects.preprocess import Preprocessor, camera_input_size, letterbox
from racestack.objects import BOX2D_DTYPE, CLASS_ID
from racestack.transforms import camera_optical_matrix

SHAPES = [((480, 640), (320, 416)), ((900, 1600), (320, 416)), ((50, 100), (416, 416)), ((333, 517), (640, 640))]


@pytest.mark.parametrize(("source_hw", "input_hw"), SHAPES)
def test_letterbox_matches_ultralytics_pixel_for_pixel(source_hw, input_hw):
    image = np.random.default_rng(1).integers(0, 256, size=(*source_hw, 3), dtype=np.uint8)
    ours, geometry = letterbox(image, input_hw)
    theirs = LetterBox(input_hw, auto=False, stride=32)(image=image)
    assert ours.shape == (*input_hw, 3)
    np.testing.assert_array_equal(ours, theirs)
    boxes = np.array([[10.0, 20.0, 200.0, 150.0], [0.0, 0.0, input_hw[1], input_hw[0]]], dtype=np.float32)
    expected = scale_boxes(input_hw, torch.from_numpy(boxes.copy()), source_hw).numpy()
    np.testing.assert_allclose(rescale(boxes, geometry), expected, atol=1e-3)


def test_preprocessor_normalizes_and_orders_channels():
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    image[..., 0] = 255
    rgb, _ = Preprocessor((320, 416))(image)
    assert rgb.shape == (1, 3, 320, 416) and rgb.dtype == np.float32
    assert rgb[0, 0, 160, 200] == pytest.approx(1.0) and rgb[0, 2, 160, 200] == 0.0
    assert rgb[0, 0, 0, 0] == pytest.approx(114 / 255)
    bgr, _ = Preprocessor((320, 416))(image, bgr=True)
    assert bgr[0, 2, 160, 200] == pytest.approx(1.0) and bgr[0, 0, 160, 200] == 0.0


def test_camera_input_size_is_the_minimal_stride_aligned_rectangle():
    assert camera_input_size((480, 640), 416) == (320, 416)
    assert camera_input_size((1080, 1920), 640) == (384, 640)


def random_head_output(rng: np.random.Generator, classes: int = 4, anchors: int = 2730) -> np.ndarray:
    """Clusters of overlapping boxes with mixed classes, like a real head output."""
    output = np.zeros((1, 4 + classes, anchors), dtype=np.float32)
    centres = rng.uniform(20, 380, size=(12, 2))
    pick = rng.integers(0, 12, anchors)
    output[0, 0:2] = (centres[pick] + rng.normal(0, 4, size=(anchors, 2))).T
    output[0, 2:4] = rng.uniform(8, 60, size=(2, anchors))
    output[0, 4:] = rng.uniform(0, 1, size=(classes, anchors)) ** 6
    return output


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decode_and_nms_match_ultralytics(seed):
    output = random_head_output(np.random.default_rng(seed))
    thresholds = Thresholds(confidence=0.25, iou=0.7, max_detections=300)
    boxes, scores, classes = decode(output, thresholds)
    (expected,) = non_max_suppression(torch.from_numpy(output), 0.25, 0.7, max_det=300)
    expected = expected.numpy()
    assert boxes.shape[0] == expected.shape[0] > 20
    np.testing.assert_allclose(boxes, expected[:, :4], atol=1e-4)
    np.testing.assert_allclose(scores, expected[:, 4], atol=1e-6)
    np.testing.assert_array_equal(classes, expected[:, 5].astype(int))


def test_postprocessor_filters_classes_and_maps_them_to_global_ids():
    output = random_head_output(np.random.default_rng(3))
    names = ["drone", "bird", "airplane", "helicopter"]
    keep = np.array([0, 3])
    table = Postprocessor(global_class_ids(names), Thresholds(), keep)(
        output, letterbox(np.zeros((480, 640, 3), np.uint8), (320, 416))[1]
    )
    assert table.dtype == BOX2D_DTYPE and table.shape[0] > 0
    assert set(table["class_id"]) <= {CLASS_ID["drone"], CLASS_ID["helicopter"]}
    assert (table["u_min"] >= 0).all() and (table["u_max"] <= 640).all() and (table["v_max"] <= 480).all()
    with pytest.raises(ValueError, match="head output"):
        Postprocessor(global_class_ids(names[:3]), Thresholds())(
            output, letterbox(np.zeros((4, 4, 3), np.uint8), (32, 32))[1]
        )


def test_model_class_names_map_to_racestack_ids():
    assert global_class_id("drone") == CLASS_ID["drone"]
    assert global_class_id("UAV") == CLASS_ID["drone"]
    assert global_class_id("Bird") == CLASS_ID["bird"]
    assert global_class_id("passenger-airplane") == CLASS_ID["airplane"]
    assert global_class_id("aeroplane") == CLASS_ID["airplane"]
    assert global_class_id("military_helicopter") == CLASS_ID["helicopter"]
    assert global_class_id("F-16") == CLASS_ID["other"]
    assert global_class_id("person") == CLASS_ID["other"]


CAMERA = CameraModel.from_values([500.0, 0, 320, 0, 500.0, 240, 0, 0, 1], [], 640, 480)
CAMERA_POSE = [1.0, 0.0, 1.5, 0.0, 0.0, 0.0]


def box_of(points_camera: np.ndarray, class_id: int) -> np.ndarray:
    pixels = CAMERA.project(points_camera)
    box = np.zeros(1, dtype=BOX2D_DTYPE)
    box["u_min"], box["v_min"] = pixels.min(axis=0)
    box["u_max"], box["v_max"] = pixels.max(axis=0)
    box["score"], box["class_id"] = 0.9, class_id
    return box


def cube(centre: np.ndarray, size: float, count: int = 400, seed: int = 0) -> np.ndarray:
    """Points on the camera-facing face of a cube (what a LiDAR sees of it), in the optical frame."""
    rng = np.random.default_rng(seed)
    face = rng.uniform(-size / 2, size / 2, size=(count, 3))
    face[:, 2] = -size / 2
    return centre + face


def test_lifting_uses_the_nearest_lidar_cluster_inside_the_box():
    centre = np.array([2.0, -1.0, 30.0])
    drone = cube(centre, 0.5)
    background = np.column_stack([np.random.default_rng(2).uniform(0.5, 3.5, (300, 2)) - [0, 2.5], np.full(300, 80.0)])
    box = box_of(cube(centre, 0.5, 50), CLASS_ID["drone"])
    camera_to_base = camera_optical_matrix(CAMERA_POSE)
    table, from_lidar = lift_boxes(box, CAMERA, camera_to_base, LiftingConfig(), np.vstack([background, drone]))
    assert from_lidar.tolist() == [True]
    truth = camera_to_base[:3, :3] @ centre + camera_to_base[:3, 3]
    found = np.array([table["x"][0], table["y"][0], table["z"][0]])
    assert np.linalg.norm(found - truth) < 0.05 * np.linalg.norm(centre)
    assert table["class_id"][0] == CLASS_ID["drone"] and table["score"][0] == pytest.approx(0.9)


def test_lifting_falls_back_to_the_size_prior():
    config = LiftingConfig(priors={CLASS_ID["airplane"]: (10.0, 10.0, 3.0)})
    centre = np.array([-20.0, -15.0, 200.0])
    corners = centre + np.array([[sx * 5.0, sy * 1.5, 0.0] for sx in (-1, 1) for sy in (-1, 1)])
    box = box_of(corners, CLASS_ID["airplane"])
    table, from_lidar = lift_boxes(box, CAMERA, camera_optical_matrix(CAMERA_POSE), config, points_camera=None)
    assert from_lidar.tolist() == [False]
    truth = camera_optical_matrix(CAMERA_POSE) @ np.append(centre, 1.0)
    found = np.array([table["x"][0], table["y"][0], table["z"][0]])
    assert np.linalg.norm(found - truth[:3]) < 0.02 * np.linalg.norm(centre)
    assert (table["length"][0], table["width"][0], table["height"][0]) == (10.0, 10.0, 3.0)


def test_nearest_cluster_ignores_isolated_noise_in_front():
    depths = np.array([3.0, 25.1, 25.0, 25.3, 24.9, 60.0, 60.2, 60.1])
    assert nearest_cluster_depth(depths, LiftingConfig(min_points=3)) == pytest.approx(25.05)
    assert np.isnan(nearest_cluster_depth(depths[:3], LiftingConfig(min_points=3)))


def test_distorted_camera_projection_round_trips():
    camera = CameraModel.from_values(
        [500.0, 0, 320, 0, 500.0, 240, 0, 0, 1], [-0.2, 0.05, 0.001, -0.001, 0.0], 640, 480
    )
    points = np.array([[1.0, 0.5, 10.0], [-2.0, -1.0, 8.0], [0.1, 0.2, 3.0]])
    rays = camera.normalized(camera.project(points))
    np.testing.assert_allclose(rays, points[:, :2] / points[:, 2:], atol=1e-5)


def test_camera_model_rejects_unusable_intrinsics():
    from racestack.errors import InputError

    with pytest.raises(InputError, match="intrinsics"):
        CameraModel.from_values([0.0] * 9, [], 640, 480)


def test_tiles_keep_objects_at_the_inference_scale():
    from perception_nodes.flying_objects.tiles import TileConfig, cut_tiles

    frame = np.zeros((480, 640, 3), np.uint8)
    boxes = np.array([[100.0, 50.0, 110.0, 56.0], [600.0, 400.0, 640.0, 440.0], [300.0, 200.0, 330.0, 215.0]])
    classes = np.array([0, 3, 1])
    config = TileConfig(size=160, long_side=416, per_frame=3, background=0.0)
    tiles = cut_tiles(frame, classes, boxes, config, np.random.default_rng(0), np.array([1, 2, 1, 1]))
    assert 1 <= len(tiles) <= 4 and all(t.shape == (160, 160, 3) for t, _ in tiles)
    seen = {}
    for _, lines in tiles:
        for line in lines:
            c, _, _, w, h = map(float, line.split())
            seen.setdefault(int(c), []).append((w * 160, h * 160))
    assert set(seen) == {0, 1, 3}
    scale = 416 / 640
    for c, box in zip(classes, boxes, strict=True):
        full = [(w, h) for w, h in seen[c] if abs(w - (box[2] - box[0]) * scale) < 1e-3]
        assert full and abs(full[0][1] - (box[3] - box[1]) * scale) < 1e-3


def test_near_runs_spawn_drones_and_birds_close_to_the_ego():
    from perception_nodes.flying_objects.dataset import scenario_source
    from simulation.simulation import Simulation

    def spawn_distances(source: str | dict) -> np.ndarray:
        sim = Simulation.from_scenario(source, seed=1500)
        table = sim.flying_objects_table()
        small = np.isin(table["class_id"], [CLASS_ID["drone"], CLASS_ID["bird"]])
        return np.hypot(table["x"][small] - sim.ego_pose[0], table["y"][small] - sim.ego_pose[1])

    source = scenario_source("circuit_b", flying_count=20, near=15.0)
    assert source["flying_objects"]["classes"]["airplane"] == 0.3, "other classes keep the scenario's weights"
    near = spawn_distances(source)
    assert len(near) >= 5 and near.max() <= 15.0 + 1e-6
    far = spawn_distances(scenario_source("circuit_b", flying_count=20))
    assert far.max() > 15.0, "without near runs the same seed spawns some far away"


def test_export_in_parallel_writes_the_same_files(tmp_path):
    from perception_nodes.flying_objects.dataset import write_split

    runs = [("circuit_a", 1000), ("oval_solo", 2000), ("circuit_b", 3000)]
    summaries = {
        jobs: write_split(tmp_path / str(jobs), "train", runs, 3, 2, 1.0, 95, flying_count=12, jobs=jobs)
        for jobs in (1, 2)
    }
    assert summaries[1] == summaries[2] and summaries[1]["images"] == 9
    files = sorted(p.relative_to(tmp_path / "1") for p in (tmp_path / "1").rglob("*") if p.is_file())
    assert len(files) == 18
    for name in files:
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name


def test_first_run_extends_an_export_with_new_runs_only():
    from perception_nodes.flying_objects.dataset import NEAR_SEED_OFFSET, training_runs

    scenarios = ["circuit_a", "oval_solo"]
    old, new = training_runs(scenarios, 3), training_runs(scenarios, 2, first=3)
    assert not set(old) & set(new), "an extension renders none of the old runs again"
    assert sorted(old + new) == sorted(training_runs(scenarios, 5)), "old + new is the larger export"
    near = training_runs(scenarios, 2, first=3, offset=NEAR_SEED_OFFSET)
    assert not {seed for _, seed in near} & {seed for _, seed in training_runs(scenarios, 10)}


def test_mean_ap_counts_found_objects_and_ignores_tiny_ones():
    from perception_nodes.flying_objects.metrics import ImageResult, mean_ap

    truth = np.array([[10, 10, 40, 40], [100, 100, 130, 120], [200, 200, 204, 203]], dtype=np.float64)
    classes = np.array([1, 1, 2])
    perfect = ImageResult(truth, np.array([0.9, 0.8, 0.7]), classes, truth, classes)
    assert mean_ap([perfect], [1, 2])["map50"] == pytest.approx(0.995)  # ultralytics' curve end: at most 0.995
    half = ImageResult(truth[:1], np.array([0.9]), classes[:1], truth, classes)
    figures = mean_ap([half], [1, 2])
    assert figures["ap50_per_class"] == {1: pytest.approx(0.5, abs=0.01), 2: 0.0}
    sized = mean_ap([half], [1, 2], min_size=10.0)
    assert sized["ap50_per_class"] == {1: pytest.approx(0.5, abs=0.01)} and sized["objects"] == 2
    on_tiny = ImageResult(truth[[0, 2]], np.array([0.9, 0.95]), np.array([1, 2]), truth[:2], classes[:2])
    assert mean_ap([on_tiny], [1], min_size=10.0)["map50"] == mean_ap([half], [1])["map50"]


@pytest.mark.parametrize("spinning", [True, False])
def test_pool_spinning_reaches_the_onnx_runtime_session(spinning):
    from perception_nodes.flying_objects.detector import DetectorConfig, FlyingObjectDetector
    from racestack.paths import models_dir

    weights = models_dir() / "detector_yolov8n" / "weights-int8-480x640.onnx"
    config = DetectorConfig(weights=str(weights), backend="onnxruntime", threads=2, spinning=spinning)
    options = FlyingObjectDetector(config, log=lambda _: None).runner.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spinning else "0")
