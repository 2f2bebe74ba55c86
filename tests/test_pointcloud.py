"""numpy <-> PointCloud2: every datatype, layouts with padding, byte orders, bad layouts, real clouds."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from racestack.errors import InputError
from racestack.pointcloud import (
    MAX_CLOUD_FIELDS,
    POINTFIELD_TO_NUMPY,
    array_to_cloud,
    cloud_from_cdr,
    cloud_to_array,
    read_points,
    xyz_to_cloud,
)


@pytest.mark.parametrize("datatype", sorted(POINTFIELD_TO_NUMPY))
@pytest.mark.parametrize("order", ["<", ">"])
def test_round_trip_every_datatype_and_byte_order(datatype: int, order: str) -> None:
    code = POINTFIELD_TO_NUMPY[datatype]
    info = np.iinfo(code) if code[0] in "iu" else np.finfo(code)
    dtype = np.dtype([("x", order + "f4"), ("pad", "u1"), ("value", order + code), ("vec", order + code, (3,))])
    points = np.zeros(7, dtype=dtype)
    points["x"] = np.arange(7)
    points["value"] = np.array([info.min, info.max, 0, 1, 2, 3, 4]).astype(code)
    points["vec"] = np.arange(21).reshape(7, 3).astype(code)
    msg = deserialize_message(serialize_message(array_to_cloud(points)), PointCloud2)
    assert msg.is_bigendian == (order == ">")
    field = next(f for f in msg.fields if f.name == "value")
    assert field.datatype == datatype and field.offset == 5
    vec = next(f for f in msg.fields if f.name == "vec")
    assert vec.count == 3
    back = cloud_to_array(msg)
    np.testing.assert_array_equal(back["value"], points["value"])
    np.testing.assert_array_equal(back["vec"], points["vec"])
    np.testing.assert_array_equal(back["x"], points["x"])


def _same_cloud(parsed, msg: PointCloud2) -> None:
    for name in ("height", "width", "is_bigendian", "point_step", "row_step", "is_dense"):
        assert getattr(parsed, name) == getattr(msg, name), name
    assert parsed.header == msg.header and list(parsed.fields) == list(msg.fields)
    assert bytes(parsed.data) == bytes(msg.data)
    view, expected = cloud_to_array(parsed), cloud_to_array(msg)
    assert view.dtype == expected.dtype and view.shape == expected.shape and view.tobytes() == expected.tobytes()


@pytest.mark.parametrize("order", ["<", ">"])
def test_serialized_cloud_reads_as_the_message(order: str) -> None:
    """cloud_from_cdr against rclpy's deserialization: header, every field, the points in place."""
    dtype = np.dtype([("x", order + "f4"), ("ring", "u1"), ("t", order + "f8"), ("vec", order + "i2", (3,))])
    points = np.zeros((3, 5), dtype=dtype)
    points["x"] = np.arange(15).reshape(3, 5)
    points["t"] = np.nan
    msg = array_to_cloud(points, header=Header(stamp=Time(sec=1_700_000_000, nanosec=123), frame_id="lidår"))
    data = serialize_message(msg)
    parsed = cloud_from_cdr(data)
    _same_cloud(parsed, msg)
    assert np.shares_memory(np.frombuffer(parsed.data, np.uint8), np.frombuffer(data, np.uint8))


def _big_endian_cdr(msg: PointCloud2) -> bytes:
    """The message as a big-endian machine serializes it (encapsulation 0x0000), written field by field."""
    out = bytearray(b"\x00\x00\x00\x00")

    def put(code: str, *values) -> None:
        out.extend(bytes(-(len(out) - 4) % min(struct.calcsize(code), 4)))
        out.extend(struct.pack(">" + code, *values))

    def put_string(text: str) -> None:
        raw = text.encode() + b"\x00"
        put("I", len(raw))
        out.extend(raw)

    put("iI", msg.header.stamp.sec, msg.header.stamp.nanosec)
    put_string(msg.header.frame_id)
    put("II", msg.height, msg.width)
    put("I", len(msg.fields))
    for field in msg.fields:
        put_string(field.name)
        put("I", field.offset)
        put("B", field.datatype)
        put("I", field.count)
    put("B", msg.is_bigendian)
    put("II", msg.point_step, msg.row_step)
    put("I", len(msg.data))
    out.extend(bytes(msg.data))
    put("B", msg.is_dense)
    return bytes(out)


def test_big_endian_serialization_reads_the_same() -> None:
    msg = xyz_to_cloud(np.arange(12, dtype=np.float32).reshape(4, 3), header=Header(frame_id="lidar"))
    msg.header.stamp = Time(sec=12, nanosec=345)
    _same_cloud(cloud_from_cdr(_big_endian_cdr(msg)), msg)


def test_serialized_cloud_cut_anywhere_is_a_layout_error() -> None:
    data = serialize_message(xyz_to_cloud(np.ones((4, 3), np.float32), header=Header(frame_id="lidar")))
    cloud_from_cdr(data)
    for end in range(len(data) - 1):
        with pytest.raises(InputError) as info:
            cloud_from_cdr(data[:end])
        assert info.value.reason == "layout", end


@pytest.mark.parametrize(
    "damage, text",
    [
        (lambda d: b"\x07\x07" + d[2:], "encapsulation"),
        (lambda d: d[:12] + b"\xff\xff\xff\x7f" + d[16:], "ends at byte"),
        (lambda d: d.replace(b"lidar\x00", b"lidarX"), "unterminated"),
        (lambda d: d.replace(b"lidar\x00", b"lid\xffr\x00"), "not UTF-8"),
    ],
)
def test_damaged_serialized_clouds_are_named(damage, text) -> None:
    data = serialize_message(xyz_to_cloud(np.ones((4, 3), np.float32), header=Header(frame_id="lidar")))
    with pytest.raises(InputError, match=text) as info:
        cloud_from_cdr(damage(data))
    assert info.value.reason == "layout"


def test_serialized_cloud_with_absurd_field_count_is_refused() -> None:
    msg = _cloud(fields=tuple(f"f{i}" for i in range(MAX_CLOUD_FIELDS + 1)), point_step=4 * (MAX_CLOUD_FIELDS + 1))
    with pytest.raises(InputError, match="fields") as info:
        cloud_from_cdr(serialize_message(msg))
    assert info.value.reason == "layout"


def test_organized_cloud_with_row_padding() -> None:
    height, width, step = 3, 5, 16
    dtype = np.dtype({"names": ["x", "y", "z"], "formats": ["<f4"] * 3, "offsets": [0, 4, 8], "itemsize": step})
    grid = np.zeros((height, width), dtype=dtype)
    grid["x"] = np.arange(15).reshape(3, 5)
    grid["y"] = -grid["x"]
    msg = array_to_cloud(grid)
    padded = bytearray()
    row_step = width * step + 12
    for r in range(height):
        padded += bytes(msg.data[r * width * step : (r + 1) * width * step]) + b"\xff" * 12
    msg.row_step = row_step
    msg.data = padded
    back = cloud_to_array(msg)
    assert back.shape == (height, width)
    np.testing.assert_array_equal(back["x"], grid["x"])
    points, dropped = read_points(msg)
    assert points.shape == (15, 3) and dropped == 0
    np.testing.assert_array_equal(points[:, 1], -np.arange(15, dtype=np.float32))


def test_fast_path_is_a_view_and_nan_points_are_removed() -> None:
    values = np.random.default_rng(1).normal(size=(1000, 4)).astype(np.float32)
    values[[3, 10], 1] = np.nan
    values[20, 2] = np.inf
    msg = xyz_to_cloud(values, ("x", "y", "z", "intensity"), is_dense=False)
    points, dropped = read_points(msg, ("x", "y", "z"), extra=("intensity",))
    assert dropped == 3 and points.shape == (997, 4)
    assert np.isfinite(points).all()
    clean, _ = read_points(xyz_to_cloud(values[:3], ("x", "y", "z", "intensity")), extra=("intensity",))
    assert not clean.flags.owndata
    values = values[30:]
    values[5, 3] = np.nan  # a non-finite intensity drops no point
    kept, dropped = read_points(xyz_to_cloud(values, ("x", "y", "z", "intensity")), extra=("intensity",))
    assert dropped == 0 and kept.shape == values.shape and np.isnan(kept[5, 3])


def test_missing_optional_field_is_zero_filled() -> None:
    msg = xyz_to_cloud(np.ones((4, 3), np.float32))
    points, _ = read_points(msg, ("x", "y", "z"), extra=("intensity",))
    assert points.shape == (4, 4) and (points[:, 3] == 0).all()


def test_mixed_byte_orders_are_refused() -> None:
    with pytest.raises(ValueError, match="byte order"):
        array_to_cloud(np.zeros(2, dtype=[("x", "<f4"), ("y", ">f4")]))


def test_is_dense_reflects_non_finite_values() -> None:
    points = np.zeros(3, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    assert array_to_cloud(points).is_dense
    points["z"][1] = np.nan
    assert not array_to_cloud(points).is_dense


def _cloud(point_step=16, row_step=None, count=10, data_len=None, fields=("x", "y", "z")) -> PointCloud2:
    msg = PointCloud2(height=1, width=count, point_step=point_step)
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate(fields)]
    msg.row_step = point_step * count if row_step is None else row_step
    msg.data = bytes(msg.row_step if data_len is None else data_len)
    return msg


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"data_len": 100}, "data has 100 bytes"),
        ({"row_step": 40}, "row_step 40 < width"),
        ({"point_step": 8}, "exceeds point_step 8"),
        ({"point_step": 0, "row_step": 0}, "point_step is 0"),
    ],
)
def test_inconsistent_layouts_are_rejected(kwargs, text) -> None:
    with pytest.raises(InputError, match=text) as info:
        cloud_to_array(_cloud(**kwargs))
    assert info.value.reason == "layout"


def test_missing_x_field_is_named() -> None:
    with pytest.raises(InputError, match="lacks field") as info:
        read_points(_cloud(fields=("a", "y", "z")))
    assert info.value.reason == "missing_field"


def test_empty_cloud_reads_as_no_points() -> None:
    points, dropped = read_points(_cloud(count=0))
    assert points.shape == (0, 3) and dropped == 0


def test_real_kitti_scan_round_trip(real_data) -> None:
    raw = np.fromfile(real_data / "kitti_000008_velodyne.bin", dtype=np.float32).reshape(-1, 4)
    msg = xyz_to_cloud(raw, ("x", "y", "z", "intensity"))
    points, dropped = read_points(msg, ("x", "y", "z"), extra=("intensity",))
    assert points.shape == (17238, 4) and dropped == 0
    np.testing.assert_array_equal(points, raw)


def test_real_ouster_bag_decodes(real_data) -> None:
    from rosbags.highlevel import AnyReader

    with AnyReader([real_data / "ouster_os1_64_bag"]) as reader:
        connections = [c for c in reader.connections if c.topic == "/os1_cloud_node/points"]
        raw = [data for _, _, data in reader.messages(connections=connections)]
    assert len(raw) == 2
    msg = deserialize_message(bytes(raw[0]), PointCloud2)
    _same_cloud(cloud_from_cdr(raw[0]), msg)
    cloud = cloud_to_array(msg)
    assert cloud.shape == (64, 2048)
    assert msg.point_step == 48
    names = cloud.dtype.names
    assert {"x", "y", "z", "intensity", "t", "reflectivity", "ring", "noise", "range"} <= set(names)
    for field in msg.fields:
        assert cloud[field.name].dtype == np.dtype(POINTFIELD_TO_NUMPY[field.datatype])
    assert cloud.dtype.fields["ring"][1] == 26 and cloud["reflectivity"].dtype == np.dtype("<u2")
    rings = cloud["ring"]
    assert rings.min() == 0 and rings.max() == 63
    points, dropped = read_points(msg, ("x", "y", "z"), extra=("intensity",))
    assert points.shape[0] + dropped == 64 * 2048
    ranges = np.linalg.norm(points[:, :3], axis=1)
    valid = ranges > 0.5
    assert valid.sum() > 10000
    measured = cloud["range"].reshape(-1)[np.isfinite(cloud["x"].reshape(-1))][valid] / 1000.0
    assert np.median(np.abs(measured - ranges[valid])) < 0.1
