"""``flying_object_detector``: camera image -> 2D flying-object boxes, lifted to 3D with the LiDAR.

Subscribes the image (sensor QoS, depth 1), its CameraInfo and the LiDAR cloud; publishes the 2D
box table (camera_optical), the 3D object table (base_link) for the tracker, and an annotated
debug image while someone subscribes to it. Every output keeps the image's stamp.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from perception_nodes.flying_objects.detector import (
    DEFAULT_INPUT_SIZE,
    DEFAULT_WEIGHTS,
    DetectorConfig,
    FlyingObjectDetector,
)
from perception_nodes.flying_objects.lifting import SIZE_PRIORS, CameraModel, LiftingConfig, lift_boxes
from perception_nodes.flying_objects.postprocess import Thresholds
from perception_nodes.flying_objects.preprocess import check_input_size
from racestack.errors import InputError, ModelFileError
from racestack.image import image_to_array, serialized_image
from racestack.inference import BACKENDS
from racestack.node import RacestackNode, node_main, result_qos, sensor_qos, stamp_to_ns
from racestack.objects import CLASS_ID, FLYING_CLASSES, OBJECT_CLASSES, boxes2d_to_cloud, objects_to_cloud
from racestack.params import Param
from racestack.paths import resolve_share_path
from racestack.pointcloud import SerializedCloud, read_points
from racestack.publishing import publish_serialized
from racestack.stats import RollingStats
from racestack.transforms import camera_optical_matrix, pose_matrix, transform_points

ENCODINGS = ("rgb8", "bgr8")
BOX_COLORS = {1: (60, 150, 255), 2: (240, 200, 40), 3: (160, 80, 230), 4: (50, 230, 120), 5: (200, 200, 200)}


def _input_size_problem(value: list[int]) -> str | None:
    try:
        check_input_size(value)
    except ValueError as exc:
        return str(exc)
    return None


def _pose_problem(value: list[float]) -> str | None:
    return None if len(value) == 6 else f"expected [x, y, z, roll, pitch, yaw], got {len(value)} values"


def _size_problem(value: list[float]) -> str | None:
    return None if len(value) == 3 and min(value) > 0 else "expected [length, width, height], all > 0"


PARAMS: tuple[Param, ...] = (
    Param("weights", DEFAULT_WEIGHTS, "YOLOv8 .pt checkpoint or .onnx file (path, or relative to models/)."),
    Param("backend", "auto", "Inference backend (auto: TensorRT on a GPU, else ONNX Runtime).", choices=BACKENDS),
    Param("device", "cpu", "cpu or cuda:N."),
    Param("threads", 0, "CPU threads for inference (0: RACESTACK_THREADS / library default).", min=0, max=256),
    Param(
        "pool_spinning",
        True,
        "ONNX Runtime's idle pool threads spin between operators instead of sleeping (5 ms less a frame at "
        "2 threads; turn off where the pool shares its cores; no pool at 1 thread).",
    ),
    Param(
        "input_size",
        list(DEFAULT_INPUT_SIZE),
        "Network input [h, w] or [s] in pixels, multiples of 32 (an ONNX file's fixed size wins).",
        check=_input_size_problem,
        element_type=int,
    ),
    Param("confidence_threshold", 0.25, "Minimum class score of a detection.", min=0.0, max=1.0),
    Param("iou_threshold", 0.7, "IoU above which NMS suppresses a box of the same class.", min=0.0, max=1.0),
    Param("max_detections", 100, "Most detections per image.", min=1, max=1000),
    Param(
        "classes",
        [*FLYING_CLASSES, "other"],
        "racestack classes to publish (model classes map to these; unknown names are 'other').",
        choices=OBJECT_CLASSES,
        element_type=str,
    ),
    Param("class_names", "", "Comma-separated class names overriding the model's (empty: the model's own)."),
    Param("warmup_runs", 2, "Inference runs on a blank image at start-up.", min=0, max=100),
    Param("image_topic", "/sensing/camera/image_raw", "Camera image (rgb8 or bgr8)."),
    Param("camera_info_topic", "/sensing/camera/camera_info", "CameraInfo of the image (for lifting)."),
    Param("cloud_topic", "/sensing/lidar/points", "LiDAR cloud used to lift detections to 3D."),
    Param("detections_2d_topic", "/perception/flying_objects/detections_2d", "2D box table output."),
    Param("objects_topic", "/perception/flying_objects", "3D object table output (base_link)."),
    Param("debug_image_topic", "~/debug_image", "Annotated image output."),
    Param("debug_image", True, "Publish the annotated image while it has subscribers."),
    Param("camera_pose", [1.0, 0.0, 1.4, 0.0, 0.0, 0.0], "Camera body pose in base_link.", check=_pose_problem),
    Param("lidar_pose", [1.5, 0.0, 1.2, 0.0, 0.0, 0.0], "LiDAR pose in base_link.", check=_pose_problem),
    Param("lift_with_lidar", True, "Use LiDAR depth inside boxes (else size priors only)."),
    Param("max_cloud_offset", 0.15, "Largest |cloud stamp - image stamp| (s) for lifting.", min=0.0),
    Param("min_lidar_points", 3, "LiDAR points a box needs for a LiDAR depth.", min=1, max=10000),
    Param("box_shrink", 0.15, "Fraction cut from each side of a box before gathering points.", min=0.0, max=0.45),
    *(
        Param(f"size_prior_{name}", list(size), f"Prior [l, w, h] (m) of a {name}.", check=_size_problem)
        for name, size in SIZE_PRIORS.items()
    ),
)


def resolve_weights(value: str) -> Path:
    try:
        return resolve_share_path(value, "models")
    except FileNotFoundError as exc:
        raise ModelFileError(value, "detector model does not exist", "train one: racestack train detector") from exc


class FlyingObjectDetectorNode(RacestackNode):
    def __init__(self) -> None:
        super().__init__("flying_object_detector", PARAMS)
        p = self.p
        log = self.get_logger().info
        self.detector = FlyingObjectDetector(
            DetectorConfig(
                weights=str(resolve_weights(p.weights)),
                backend=p.backend,
                device=p.device,
                input_size=p.input_size,
                thresholds=Thresholds(p.confidence_threshold, p.iou_threshold, p.max_detections),
                class_names=[n.strip() for n in p.class_names.split(",") if n.strip()],
                classes=p.classes,
                threads=p.threads or None,
                spinning=p.pool_spinning,
            ),
            log=log,
        )
        self.detector.warmup(p.warmup_runs)
        self.lifting = LiftingConfig(
            min_points=p.min_lidar_points,
            shrink=p.box_shrink,
            priors={CLASS_ID[n]: tuple(getattr(p, f"size_prior_{n}")) for n in SIZE_PRIORS},
        )
        self.camera_to_base = camera_optical_matrix(p.camera_pose)
        self.lidar_to_camera = np.linalg.inv(self.camera_to_base) @ pose_matrix(p.lidar_pose)
        self.camera: CameraModel | None = None
        self.cloud: SerializedCloud | None = None
        self.cloud_points: np.ndarray | None = None
        self.stage_ms = {name: RollingStats(p.stats_window) for name in self.detector.timing_ms}
        self.boxes_pub = self.create_publisher(PointCloud2, p.detections_2d_topic, result_qos())
        self.objects_pub = self.create_publisher(PointCloud2, p.objects_topic, result_qos())
        self.debug_pub = self.create_publisher(Image, p.debug_image_topic, result_qos(2))
        self.create_subscription(Image, p.image_topic, self.on_image, sensor_qos())
        self.create_subscription(CameraInfo, p.camera_info_topic, self.on_camera_info, sensor_qos())
        if p.lift_with_lidar:
            self.create_cloud_subscription(p.cloud_topic, self.on_cloud, sensor_qos())
        self.add_diagnostics(self.diagnostics)
        log(
            f"detector ready: {self.detector.info.path} ({', '.join(self.detector.names)}), "
            f"backend {self.detector.backend}, input {self.detector.input_hw}"
        )

    def on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self.camera = CameraModel.from_values(msg.k, msg.d, msg.width, msg.height)
        except InputError as exc:
            self.reject_error(exc, self.p.camera_info_topic)

    def on_cloud(self, msg: SerializedCloud) -> None:
        self.cloud, self.cloud_points = msg, None

    def on_image(self, msg: Image) -> None:
        if not self.accept_stamp("image", msg.header.stamp):
            return
        with self.frame(msg.header.stamp):
            try:
                pixels = image_to_array(msg, expect=ENCODINGS)
            except InputError as exc:
                self.reject_error(exc, self.p.image_topic)
                return
            boxes = self.detector.detect(pixels, bgr=msg.encoding == "bgr8")
            for name, value in self.detector.timing_ms.items():
                self.stage_ms[name].add(value)
            self.count("detections", int(boxes.shape[0]))
            self.boxes_pub.publish(boxes2d_to_cloud(boxes, header=msg.header))
            self.publish_objects(msg, boxes)
            if self.p.debug_image and self.debug_pub.get_subscription_count():
                annotated = draw_boxes(pixels, boxes, bgr=msg.encoding == "bgr8")
                publish_serialized(self.debug_pub, serialized_image(annotated, msg.encoding, header=msg.header))

    def publish_objects(self, msg: Image, boxes: np.ndarray) -> None:
        camera = self.camera
        if camera is None or (camera.width, camera.height) != (msg.width, msg.height):
            self.count("no_camera_info")
            self.warn_limited("camera_info", "no CameraInfo matching the image yet: 3D objects not published")
            return
        points = self.points_for(msg) if boxes.shape[0] else None
        table, from_lidar = lift_boxes(boxes, camera, self.camera_to_base, self.lifting, points)
        self.count("lifted_lidar", int(from_lidar.sum()))
        self.count("lifted_prior", int((~from_lidar).sum()))
        header = Header(stamp=msg.header.stamp, frame_id="base_link")
        self.objects_pub.publish(objects_to_cloud(table, header=header))

    def points_for(self, image: Image) -> np.ndarray | None:
        """LiDAR points in the camera optical frame, if the latest cloud is close enough in time."""
        cloud = self.cloud
        if cloud is None:
            return None
        offset_s = abs(stamp_to_ns(cloud.header.stamp) - stamp_to_ns(image.header.stamp)) / 1e9
        if offset_s > self.p.max_cloud_offset:
            self.count("cloud_too_far_in_time")
            return None
        if self.cloud_points is None:
            try:
                xyz, _ = read_points(cloud, ("x", "y", "z"))
            except InputError as exc:
                self.reject_error(exc, self.p.cloud_topic)
                self.cloud = None
                return None
            self.cloud_points = transform_points(self.lidar_to_camera, xyz)
        return self.cloud_points

    def diagnostics(self) -> dict[str, str]:
        values = {
            "backend": self.detector.backend,
            "model": str(self.detector.info.path),
            "input_size": "x".join(map(str, self.detector.input_hw)),
        }
        for name, stats in self.stage_ms.items():
            summary = stats.summary()
            if summary:
                values[f"{name}_ms_p50"] = f"{summary['p50']:.3f}"
        return values


def draw_boxes(image: np.ndarray, boxes: np.ndarray, bgr: bool = False) -> np.ndarray:
    """A copy of the image with each box and its class and score drawn on it."""
    canvas = np.ascontiguousarray(image).copy()
    for row in boxes:
        color = BOX_COLORS.get(int(row["class_id"]), (255, 255, 255))
        color = color[::-1] if bgr else color
        top_left = (int(row["u_min"]), int(row["v_min"]))
        cv2.rectangle(canvas, top_left, (int(row["u_max"]), int(row["v_max"])), color, 2)
        label = f"{OBJECT_CLASSES[int(row['class_id'])]} {row['score']:.2f}"
        cv2.putText(canvas, label, (top_left[0], max(top_left[1] - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1)
    return canvas


main = node_main(FlyingObjectDetectorNode)
