"""Image encodings, OccupancyGrid geometry and object tables: round trips and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from nav_msgs.msg import OccupancyGrid
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from racestack.cdr import CdrError, StampedTemplate
from racestack.errors import InputError
from racestack.grid import LITE_GRID, BevGrid, grid_to_occupancy, occupancy_to_grid, serialized_occupancy
from racestack.image import _NAMED, array_to_image, encoding_layout, image_to_array, serialized_image
from racestack.objects import (
    OBJECT_DTYPE,
    boxes2d_to_cloud,
    cloud_to_boxes2d,
    cloud_to_objects,
    empty_objects,
    objects_to_cloud,
    objects_to_markers,
    valid_objects,
)
from racestack.pointcloud import xyz_to_cloud

ENCODINGS = [*sorted(_NAMED), "8UC1", "8SC2", "16SC1", "32SC1", "32FC1", "32FC3", "32FC4", "64FC1", "32FC12"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_image_round_trip_every_encoding(encoding: str) -> None:
    dtype, channels = encoding_layout(encoding)
    rng = np.random.default_rng(0)
    values = (rng.random((5, 7, channels)) * 100).astype(dtype)
    msg = deserialize_message(serialize_message(array_to_image(values, encoding)), Image)
    back = image_to_array(msg)
    expected = values[:, :, 0] if channels == 1 else values
    np.testing.assert_array_equal(back, expected)


def test_image_row_padding_and_big_endian() -> None:
    values = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    msg = Image(height=3, width=4, encoding="mono16", is_bigendian=1, step=12)
    rows = [values[r].astype(">u2").tobytes() + b"\x00\x00\x00\x00" for r in range(3)]
    msg.data = b"".join(rows)
    np.testing.assert_array_equal(image_to_array(msg), values)


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"encoding": "weird42"}, "encoding"),
        ({"step": 5}, "layout"),
        ({"height": 4}, "layout"),
        ({"height": 0, "width": 0, "step": 0, "data": b""}, "empty"),
    ],
)
def test_bad_images_are_refused(changes, reason) -> None:
    msg = array_to_image(np.zeros((3, 4, 3), np.uint8), "rgb8")
    for key, value in changes.items():
        setattr(msg, key, value)
    with pytest.raises(InputError) as info:
        image_to_array(msg)
    assert info.value.reason == reason


def test_image_encoding_whitelist() -> None:
    msg = array_to_image(np.zeros((2, 2), np.uint16), "mono16")
    with pytest.raises(InputError, match="not accepted"):
        image_to_array(msg, expect=("rgb8", "bgr8"))


def test_real_camera_frame(real_data) -> None:
    import cv2

    bgr = cv2.imread(str(real_data / "nuscenes_cam_front.jpg"))
    assert bgr.shape == (900, 1600, 3)
    back = image_to_array(array_to_image(bgr, "bgr8"), expect=("bgr8",))
    np.testing.assert_array_equal(back, bgr)


def test_grid_cell_geometry() -> None:
    grid = LITE_GRID
    assert grid.shape == (256, 256) and grid.x_min == pytest.approx(-51.2)
    ix, iy, inside = grid.cell_indices(np.array([[0.1, 0.1], [10.0, -3.9], [60.0, 0.0]]))
    assert inside.tolist() == [True, True, False]
    assert (ix[0], iy[0]) == (128, 128)
    assert (ix[1], iy[1]) == (153, 118)
    xs, ys = grid.cell_centers()
    assert xs[118, 153] == pytest.approx(10.2) and ys[118, 153] == pytest.approx(-3.8)


def test_occupancy_round_trip_keeps_geometry() -> None:
    grid = BevGrid(width=6, height=4, resolution=0.5, x_min=-1.0, y_min=-2.0)
    values = np.arange(24, dtype=np.int8).reshape(4, 6)
    msg = grid_to_occupancy(values, grid, Header(frame_id="base_link"))
    back, geometry = occupancy_to_grid(deserialize_message(serialize_message(msg), type(msg)))
    np.testing.assert_array_equal(back, values)
    assert geometry == grid


@pytest.mark.parametrize(("encoding", "shape"), [("mono8", (3, 5)), ("32FC4", (7, 9, 4)), ("16UC1", (1, 3))])
def test_serialized_image_is_the_serialized_message(encoding: str, shape: tuple[int, ...]) -> None:
    """Byte payloads of every length (no trailing padding to get wrong), compared after a round trip
    because CDR padding bytes are undefined. Frame after frame (the fields are serialized once), each
    frame's stamp and frame id."""
    values = np.random.default_rng(0).integers(0, 200, shape).astype(encoding_layout(encoding)[0])
    for header in _frame_headers():
        built = deserialize_message(serialized_image(values, encoding, header), Image)
        assert built == deserialize_message(serialize_message(array_to_image(values, encoding, header)), Image)
        np.testing.assert_array_equal(image_to_array(built), values)


def test_serialized_occupancy_is_the_serialized_message() -> None:
    """As the image, and info.map_load_time (after the frame id, so at an offset that follows its
    length) carries each frame's stamp too."""
    grid = BevGrid(x_min=-3.0, y_min=-2.0, resolution=0.5, width=5, height=3)
    labels = np.arange(15, dtype=np.int8).reshape(3, 5) - 1
    for header in _frame_headers():
        built = deserialize_message(serialized_occupancy(labels, grid, header), OccupancyGrid)
        assert built == deserialize_message(serialize_message(grid_to_occupancy(labels, grid, header)), OccupancyGrid)
        assert built.info.map_load_time == (header or Header()).stamp
        np.testing.assert_array_equal(occupancy_to_grid(built)[0], labels)
    with pytest.raises(CdrError, match="empty sequence"):
        StampedTemplate(serialize_message(grid_to_occupancy(labels, grid, header)))


def _frame_headers() -> list[Header | None]:
    headers: list[Header | None] = [None]
    for frame_id, sec, nanosec in (("base_link", 12, 345), ("base_link", 13, 999_999_999), ("odom", 0, 7), ("", 1, 0)):
        header = Header(frame_id=frame_id)
        header.stamp.sec, header.stamp.nanosec = sec, nanosec
        headers.append(header)
    return headers


def test_occupancy_refuses_wrong_sizes() -> None:
    grid = BevGrid(width=6, height=4, resolution=0.5, x_min=0.0, y_min=0.0)
    msg = grid_to_occupancy(np.zeros((4, 6), np.int8), grid)
    msg.info.width = 7
    with pytest.raises(InputError, match="expected 7 x 4"):
        occupancy_to_grid(msg)


def test_object_table_round_trip_and_defaults() -> None:
    table = empty_objects(3)
    table["x"] = [1, 2, 3]
    table["length"], table["width"], table["height"] = 4.9, 1.9, 1.2
    table["track_id"] = [7, 8, 9]
    back = cloud_to_objects(objects_to_cloud(table, Header(frame_id="map")))
    np.testing.assert_array_equal(back, table)
    minimal = xyz_to_cloud(np.ones((2, 7), np.float32), ("x", "y", "z", "length", "width", "height", "yaw"))
    read = cloud_to_objects(minimal)
    assert read.dtype == OBJECT_DTYPE and (read["track_id"] == -1).all() and (read["score"] == 1).all()


def test_object_table_missing_required_field() -> None:
    with pytest.raises(InputError, match="yaw") as info:
        cloud_to_objects(xyz_to_cloud(np.ones((2, 6), np.float32), ("x", "y", "z", "length", "width", "height")))
    assert info.value.reason == "missing_field"


def test_valid_objects_flags_nan_and_negative_sizes() -> None:
    table = empty_objects(3)
    table["length"] = table["width"] = table["height"] = 1.0
    table["x"][1] = np.nan
    table["width"][2] = -1.0
    assert valid_objects(table).tolist() == [True, False, False]


def test_boxes2d_and_markers() -> None:
    boxes = np.zeros(2, dtype=[("u_min", "<f4"), ("v_min", "<f4"), ("u_max", "<f4"), ("v_max", "<f4"),
                               ("score", "<f4"), ("class_id", "<i4")])
    boxes["u_max"] = [10, 20]
    np.testing.assert_array_equal(cloud_to_boxes2d(boxes2d_to_cloud(boxes)), boxes)
    table = empty_objects(2)
    markers = objects_to_markers(table, Header(frame_id="map"))
    assert len(markers.markers) == 1 + 3 * 2
