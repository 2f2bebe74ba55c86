"""The flying_object_detector node in its own process, over real DDS, with the committed model.

Simulator frames go in (image, CameraInfo, LiDAR cloud); 2D boxes, lifted 3D objects and
/diagnostics come out. Also: the real nuScenes image, wrong encodings, missing and corrupt models.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from support import DISCOVERY_S, diagnostics_values, launched

from perception_nodes.flying_objects.dataset import render_samples
from racestack.image import array_to_image
from racestack.node import ns_to_stamp, stamp_to_ns
from racestack.objects import CLASS_ID, cloud_to_boxes2d, cloud_to_objects
from racestack.pointcloud import array_to_cloud
from racestack.transforms import planar_pose_matrix, transform_points
from simulation.scenario import scenario_path
from simulation.simulation import Simulation

pytestmark = pytest.mark.ros

NODE = "flying_object_detector"
IMAGE, INFO, CLOUD = "/sensing/camera/image_raw", "/sensing/camera/camera_info", "/sensing/lidar/points"
BOXES, OBJECTS = "/perception/flying_objects/detections_2d", "/perception/flying_objects"
# size_prior_drone: the box of the simulator's 1 m drone (span 1.0: 0.81 x 0.56 x 0.17 m), so the
# prior-only lifting case tests the geometry, not how far a class's sizes spread.
PARAMETERS = {
    "backend": "onnxruntime",
    "diagnostics_period": 0.3,
    "max_input_age": 0.0,
    "size_prior_drone": [0.81, 0.56, 0.17],
}


def slot(**parameters) -> dict:
    return {"detector": {"name": NODE, "entry": NODE, "parameters": {**PARAMETERS, **parameters}}}


class Lines:
    """The launched node's output lines (a callable echo for ``launched``)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture(scope="module")
def detector():
    from racestack.probe import Probe

    lines = Lines()
    with launched(slot(), echo=lines) as session, Probe("detector_test_probe") as probe:
        outputs = {
            "boxes": probe.collect(PointCloud2, BOXES, keep=100),
            "objects": probe.collect(PointCloud2, OBJECTS, keep=100),
            "diagnostics": probe.collect(DiagnosticArray, "/diagnostics", keep=100),
        }
        publishers = [
            probe.publisher(t, topic) for t, topic in ((Image, IMAGE), (CameraInfo, INFO), (PointCloud2, CLOUD))
        ]
        ready = probe.wait_for(lambda: all(p.get_subscription_count() > 0 for p in publishers), 120.0)
        assert ready, f"the detector never subscribed: {session.failures or lines.lines[-20:]}"
        assert probe.wait_for(lambda: probe.node.count_publishers(BOXES) > 0, DISCOVERY_S)
        time.sleep(0.5)
        yield probe, outputs, session


def send(probe, topic: str, msg, stamp_ns: int) -> None:
    msg.header.stamp = ns_to_stamp(stamp_ns)
    probe.publish(topic, msg)


def answer(probe, collector, stamp_ns: int, timeout: float = 20.0):
    """The output message carrying ``stamp_ns``, or None."""

    def find():
        return next((m for m in reversed(collector.messages()) if stamp_to_ns(m.header.stamp) == stamp_ns), None)

    probe.wait_for(lambda: find() is not None, timeout)
    return find()


def detect(probe, outputs, image: np.ndarray, encoding: str = "rgb8", extra: tuple = ()) -> tuple:
    """Publish extra (topic, msg) pairs then the image, all with one fresh stamp; (2D msg, 3D msg, stamp)."""
    stamp = probe.now_ns()
    for topic, msg in extra:
        send(probe, topic, msg, stamp)
    if extra:
        time.sleep(0.3)
    send(probe, IMAGE, array_to_image(image, encoding), stamp)
    return answer(probe, outputs["boxes"], stamp), answer(probe, outputs["objects"], stamp, 3.0), stamp


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def corners(table: np.ndarray) -> np.ndarray:
    return np.stack([table["u_min"], table["v_min"], table["u_max"], table["v_max"]], axis=1).astype(np.float64)


def test_detects_flying_objects_in_held_out_simulator_frames(detector):
    probe, outputs, _ = detector
    found = total = 0
    for sample in render_samples("heldout/circuit_heldout_b", None, frames=10, every=6, flying_count=30):
        msg, _, _ = detect(probe, outputs, sample.image)
        assert msg is not None, "no 2D detections for a frame"
        boxes = cloud_to_boxes2d(msg)
        assert np.isin(boxes["class_id"], [CLASS_ID[c] for c in ("drone", "bird", "airplane", "helicopter")]).all()
        truth = sample.boxes
        large = truth[np.maximum(truth["u_max"] - truth["u_min"], truth["v_max"] - truth["v_min"]) >= 16]
        total += len(large)
        if len(large) and len(boxes):
            iou = box_iou(corners(large), corners(boxes))
            same = large["class_id"][:, None] == boxes["class_id"][None, :]
            found += int(((iou >= 0.5) & same).any(axis=1).sum())
    assert total >= 8, "too few visible objects in the test frames"
    # A floor under the node's default model, the int8 file at 672x896, which finds 51 of 54 here (stage 5
    # at 320x416 found 18); its held-out mAP50 is 0.83 (models/detector_yolov8n/MODEL_CARD.md).
    assert found >= 0.8 * total, f"found {found} of {total} flying objects of >= 16 px"


def drone_scenario(ahead: float, left: float, altitude: float, size: float, heading: float = 0.0) -> Simulation:
    """An empty oval with one hovering drone at a known spot relative to the ego car, its body
    turned ``heading`` from the ego's heading."""
    data = yaml.safe_load(scenario_path("oval_solo").read_text())
    data["opponents"] = []
    x, y, yaw = Simulation.from_scenario(data).ego_pose
    position = [x + ahead * np.cos(yaw) - left * np.sin(yaw), y + ahead * np.sin(yaw) + left * np.cos(yaw), altitude]
    turned = float(np.angle(np.exp(1j * (yaw + heading))))
    drone = {"class": "drone", "position": position, "size": size, "heading": turned}
    data["flying_objects"] = {"count": 0, "objects": [drone]}
    return Simulation.from_scenario(data)


@pytest.mark.parametrize(
    ("ahead", "left", "altitude", "with_lidar"),
    [(10.0, 0.5, 2.5, True), (10.0, -1.0, 5.0, False)],
    ids=["lidar", "prior"],
)
def test_lifts_a_simulated_drone_within_ten_percent_of_its_range(detector, ahead, left, altitude, with_lidar):
    probe, outputs, _ = detector
    # Without LiDAR the range comes from the prior's largest dimension (0.81 m), so the drone is
    # turned broadside: seen end-on its box is 0.7 times as wide and even the ground-truth box
    # would place it 25 % too far.
    sim = drone_scenario(ahead, left, altitude, size=1.0, heading=0.0 if with_lidar else np.pi / 2)
    frame, sweep = sim.camera_frame(), sim.lidar_sweep()
    truth = sim.flying_objects_table()
    centre = transform_points(
        np.linalg.inv(planar_pose_matrix(*sim.ego_pose)), np.array([[truth["x"][0], truth["y"][0], truth["z"][0]]])
    )[0]
    info: CameraInfo = sim.sensors.camera.info()
    extra = [(INFO, info)] + ([(CLOUD, array_to_cloud(sweep.points))] if with_lidar else [])
    _, objects_msg, _ = detect(probe, outputs, frame.image, extra=tuple(extra))
    assert objects_msg is not None and objects_msg.header.frame_id == "base_link"
    objects = cloud_to_objects(objects_msg)
    drones = objects[objects["class_id"] == CLASS_ID["drone"]]
    assert len(drones) >= 1, f"the drone was not detected (objects: {objects})"
    found = np.stack([drones["x"], drones["y"], drones["z"]], axis=1)
    error = np.linalg.norm(found - centre, axis=1).min()
    # the target, for both paths; from the size prior the range is only as good as the box,
    # whose size error becomes the range error one for one
    assert error <= 0.1 * np.linalg.norm(centre), f"drone at {centre} found at {found} (error {error:.2f} m)"
    key = "lifted_lidar" if with_lidar else "lifted_prior"
    counted = lambda: int(diagnostics_values(outputs["diagnostics"].messages(), NODE).get(key, "0"))  # noqa: E731
    assert probe.wait_for(lambda: counted() >= 1, 5.0), f"no detection was lifted by the {key} path"


def test_runs_on_the_real_nuscenes_image(detector, real_data):
    probe, outputs, _ = detector
    image = cv2.cvtColor(cv2.imread(str(real_data / "nuscenes_cam_front.jpg")), cv2.COLOR_BGR2RGB)
    msg, _, _ = detect(probe, outputs, image)
    assert msg is not None, "no answer for the nuScenes frame"
    boxes = cloud_to_boxes2d(msg)
    assert np.isfinite(corners(boxes)).all()
    assert (boxes["u_min"] >= 0).all() and (boxes["u_max"] <= 1600).all() and (boxes["v_max"] <= 900).all()
    assert ((boxes["score"] >= 0.25) & (boxes["score"] <= 1.0)).all()


def test_bgr8_gives_the_same_boxes_as_rgb8(detector):
    probe, outputs, _ = detector
    image = next(iter(render_samples("circuit_c", 5, frames=1, every=1, flying_count=16))).image
    rgb, _, _ = detect(probe, outputs, image)
    bgr, _, _ = detect(probe, outputs, np.ascontiguousarray(image[:, :, ::-1]), "bgr8")
    np.testing.assert_allclose(corners(cloud_to_boxes2d(rgb)), corners(cloud_to_boxes2d(bgr)), atol=1e-3)


def test_debug_image_is_published_while_subscribed(detector):
    probe, outputs, _ = detector
    debug = probe.collect(Image, f"/{NODE}/debug_image", keep=5)
    assert probe.wait_for(lambda: probe.node.count_publishers(f"/{NODE}/debug_image") > 0, DISCOVERY_S)
    time.sleep(0.5)
    image = next(iter(render_samples("circuit_d", 3, frames=1, every=1, flying_count=16))).image
    _, _, stamp = detect(probe, outputs, image)
    msg = answer(probe, debug, stamp, 10.0)
    assert msg is not None and (msg.width, msg.height, msg.encoding) == (640, 480, "rgb8")


def test_wrong_encoding_is_rejected_and_counted(detector):
    probe, outputs, session = detector
    image = np.zeros((480, 640), np.uint8)

    def rejected() -> int:
        return int(diagnostics_values(outputs["diagnostics"].messages(), NODE).get("rejected.encoding", "0"))

    for count, (encoding, values) in enumerate((("mono8", image), ("32FC1", image.astype(np.float32))), start=1):
        msg = array_to_image(values, encoding)
        msg.header.stamp = ns_to_stamp(probe.now_ns())
        probe.publish(IMAGE, msg)
        assert probe.wait_for(lambda count=count: rejected() >= count, 10.0), f"{encoding} was not counted"
    msg, _, _ = detect(probe, outputs, np.full((480, 640, 3), 90, np.uint8))
    assert msg is not None, "the node stopped answering after bad input"
    assert session.running() == [NODE]


@pytest.mark.parametrize("problem", ["missing", "corrupt_pt", "corrupt_onnx"])
def test_missing_or_corrupt_model_fails_at_startup_naming_the_path(tmp_path, problem):
    path = tmp_path / ("weights.onnx" if problem == "corrupt_onnx" else "weights.pt")
    if problem != "missing":
        path.write_bytes(b"not a model\n" * 100)
    lines = Lines()
    with launched(slot(weights=str(path)), echo=lines, heard=False) as session:
        assert session.wait(180.0) == 1, "the node did not stop"  # torch + ultralytics imports, loaded CI
    text = "\n".join(lines.lines)
    assert "start-up error" in text and str(path) in text, text[-2000:]
