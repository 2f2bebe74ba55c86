"""PPN core: BEV geometry and motion compensation, decoder wiring, edge-loss gradients, ONNX parity."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation

from perception_nodes.ppn.bev import BevEncoder
from perception_nodes.ppn.config import LITE, NetConfig, PpnConfig
from perception_nodes.ppn.evaluation import Scores
from perception_nodes.ppn.losses import motion_loss, mssce, reconstruction_loss, segmentation_loss, sobel_edges
from perception_nodes.ppn.models import load_network, network_spec, save_checkpoint
from perception_nodes.ppn.networks import PyramidNet, build
from perception_nodes.ppn.pipeline import PpnPipeline, labels_from_logits
from perception_nodes.ppn.poses import PoseBuffer, odometry_sample, yaw_from_quaternion
from racestack.cdr import CdrError
from racestack.errors import ModelFileError
from racestack.inference import export_onnx, parity

LIDAR_POSE = (1.5, 0.0, 1.2, 0.0, 0.0, 0.0)


def sensor_points(base_xyz: np.ndarray, intensity: float = 0.5) -> np.ndarray:
    """Points given in base_link, returned in the LiDAR frame of LIDAR_POSE (no rotation)."""
    points = np.zeros((base_xyz.shape[0], 4), dtype=np.float32)
    points[:, :3] = base_xyz - np.array(LIDAR_POSE[:3])
    points[:, 3] = intensity
    return points


def to_ego(points_map: np.ndarray, pose: tuple[float, float, float]) -> np.ndarray:
    x, y, yaw = pose
    c, s = math.cos(yaw), math.sin(yaw)
    dx, dy = points_map[:, 0] - x, points_map[:, 1] - y
    return np.stack([c * dx + s * dy, -s * dx + c * dy, points_map[:, 2]], axis=1)


def test_point_lands_in_its_cell_with_features():
    encoder = BevEncoder(LITE.bev, LIDAR_POSE)
    grid = LITE.bev.grid
    # x = 10.1 m forward, y = -3.3 m (right): cell ix = floor((10.1 + 51.2) / 0.4) = 153, iy = 119.
    base = np.array([[10.1, -3.3, 0.9], [10.15, -3.25, 0.1], [-20.0, 7.7, 0.05]])
    bev = encoder.encode(sensor_points(base, intensity=0.25), pose=None).numpy()
    assert bev.shape == (LITE.bev.channels, grid.height, grid.width)
    occupancy = bev[0]
    assert np.argwhere(occupancy > 0).tolist() == [[119, 153]]
    names = LITE.bev.channel_names()
    height, density = bev[names.index("height")], bev[names.index("density")]
    assert height[119, 153] == pytest.approx(0.9 / LITE.bev.height_scale, abs=1e-5)
    assert density[119, 153] > density[int((7.7 + 51.2) / 0.4), int((-20.0 + 51.2) / 0.4)] > 0
    assert bev[names.index("intensity")][119, 153] == pytest.approx(0.25)
    assert np.count_nonzero(density) == 2  # the low point is a ground return: density only


def test_points_outside_grid_or_height_range_are_ignored():
    encoder = BevEncoder(LITE.bev, LIDAR_POSE)
    base = np.array([[60.0, 0.0, 1.0], [0.0, -52.0, 1.0], [5.0, 5.0, 10.0], [5.0, 5.0, -3.0]])
    bev = encoder.encode(sensor_points(base), pose=None)
    assert float(bev.abs().sum()) == 0.0


def _wall(pose: tuple[float, float, float]) -> np.ndarray:
    """A static wall along y = 8 m (map) seen from ``pose``, sampled densely, in the LiDAR frame."""
    xs = np.arange(-100.0, 100.0, 0.05)
    wall_map = np.stack([xs, np.full_like(xs, 8.0), np.full_like(xs, 0.8)], axis=1)
    return sensor_points(to_ego(wall_map, pose))


def _near(cells: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of ``cells`` within one cell (8-neighbourhood) of a ``reference`` cell."""
    return np.count_nonzero(cells & binary_dilation(reference, np.ones((3, 3)))) / np.count_nonzero(cells)


def test_motion_compensation_puts_a_static_wall_back_on_its_cells():
    poses = [(0.0, 0.0, 0.0), (4.0, 0.3, 0.05), (8.0, 0.9, 0.1), (12.0, 1.8, 0.15)]
    encoder = BevEncoder(LITE.bev, LIDAR_POSE)
    for pose in poses:
        bev = encoder.encode(_wall(pose), pose).numpy()
    current = bev[0] > 0
    for age in range(1, LITE.bev.sweeps):
        past = bev[age] > 0
        # Past cells are stored at half a cell, so re-binning may move a cell by one: never more.
        assert _near(past, current) == 1.0, f"sweep t-{age} has wall cells off the current wall"
        assert np.count_nonzero(past) > 0.8 * np.count_nonzero(current)

    naive = BevEncoder(LITE.bev, LIDAR_POSE)
    for pose in poses:
        stacked = naive.encode(_wall(pose), (0.0, 0.0, 0.0)).numpy()
    assert _near(stacked[LITE.bev.sweeps - 1] > 0, current) < 0.2


@pytest.mark.parametrize("lidar_pose", [LIDAR_POSE, (1.2, 0.3, 1.5, 0.02, -0.03, 0.4)])
def test_torch_path_matches_compiled_cpu_path(lidar_pose):
    """The code path a CUDA device takes (torch ops), run on the CPU against the compiled CPU pass,
    also with a rotated LiDAR; a strided (N, 4) view, as a PointCloud2 with padding gives, a packed
    read-only view, as a message's bytes give (each has a compiled loop of its own), and a cloud
    without intensity go through the CPU pass too."""
    poses = [(0.0, 0.0, 0.0), (4.0, 0.3, 0.05), (8.0, 0.9, 0.1), (12.0, 1.8, 0.15)]
    rng = np.random.default_rng(0)
    clutter = sensor_points(rng.uniform([-60, -60, -1.5], [60, 60, 3.0], size=(5000, 3)), intensity=0.3)
    cpu_encoder = BevEncoder(LITE.bev, lidar_pose)
    packed_encoder = BevEncoder(LITE.bev, lidar_pose)
    torch_encoder = BevEncoder(LITE.bev, lidar_pose, use_torch=True)
    for pose in poses:
        points = np.concatenate([_wall(pose), clutter])
        padded = np.zeros((points.shape[0], 6), dtype=np.float32)
        padded[:, :4] = points
        expected = cpu_encoder.encode(padded[:, :4], pose)
        message_view = np.frombuffer(points.astype(np.float32).tobytes(), np.float32).reshape(-1, 4)
        packed = packed_encoder.encode(message_view, pose)
        actual = torch_encoder.encode(points, pose)
        torch.testing.assert_close(packed, expected, atol=0.0, rtol=0.0)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    assert float(expected[0].sum()) > 100 and float(expected[LITE.bev.sweeps - 1].sum()) > 100
    no_intensity = BevEncoder(LITE.bev, lidar_pose).encode(points[:, :3], None)
    names = LITE.bev.channel_names()
    assert float(no_intensity[names.index("intensity")].abs().sum()) == 0.0
    torch.testing.assert_close(no_intensity[0], expected[0])


def test_unknown_pose_drops_history():
    encoder = BevEncoder(LITE.bev, LIDAR_POSE)
    encoder.encode(_wall((0, 0, 0)), (0.0, 0.0, 0.0))
    bev = encoder.encode(_wall((1, 0, 0)), None)
    assert encoder.history_length == 0
    assert float(bev[1 : LITE.bev.sweeps].sum()) == 0.0


TINY = PpnConfig(
    bev=replace(LITE.bev, cells=64),
    segmentation=NetConfig(widths=(4, 4, 8, 8, 16, 16), convs=(1, 1, 1, 1, 1, 1)),
    reconstruction=NetConfig(widths=(4, 4, 8, 8, 16, 16), convs=(1, 1, 1, 1, 1, 1)),
)


@pytest.mark.parametrize("kind", ["segmentation", "reconstruction"])
def test_decoder_uses_every_stage(kind):
    torch.manual_seed(0)
    # Batch statistics keep every stage at unit scale, as after training (a fresh net in eval mode
    # shrinks deep activations so much that their influence hides in rounding).
    net = build(kind, TINY).train()
    x = (torch.rand(2, TINY.bev.channels, 64, 64) > 0.7).float()
    with torch.no_grad():
        reference = net(x)
        for level, stage in enumerate(net.encoder):
            conv = stage[0][0]
            saved = conv.weight.clone()
            conv.weight.add_(torch.randn_like(conv.weight))
            changed = (net(x) - reference).abs()
            conv.weight.copy_(saved)
            # Changing a deep stage must move most of the full-resolution output, not one corner.
            assert float((changed > 1e-3).float().mean()) > 0.5, f"stage {level} barely reaches the output"


def test_output_shapes_and_classes():
    x = torch.zeros(2, TINY.bev.channels, 64, 64)
    assert build("segmentation", TINY)(x).shape == (2, 4, 64, 64)
    assert build("reconstruction", TINY)(x).shape == (2, 2 + len(TINY.horizons), 64, 64)


def test_labels_are_the_argmax_with_ties_to_the_lower_class():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 4, 40, 30)).astype(np.float32)
    logits[0, 2, :5] = logits[0, 1, :5]  # ties between classes 1 and 2
    logits[0, 3, 5:9] = logits[0].max(axis=0)[5:9]  # ties with the best class
    labels = labels_from_logits(logits)
    assert labels.dtype == np.int8
    np.testing.assert_array_equal(labels, np.argmax(logits[0], axis=0))


def test_sides_that_do_not_divide_by_the_pyramid_are_padded():
    x = torch.zeros(1, TINY.bev.channels, 72, 50)  # like the paper's 1000 cells: not a multiple of 32
    assert build("segmentation", TINY).eval()(x).shape == (1, 4, 72, 50)


def test_edge_loss_has_gradient():
    prediction = torch.rand(1, 1, 16, 16, requires_grad=True)
    target = torch.zeros(1, 1, 16, 16)
    target[..., 4:12, 4:12] = 1.0
    edges = sobel_edges(target)
    assert float(edges[..., 4, 8]) > 0.1 and float(edges[..., 8, 8]) == pytest.approx(0.0, abs=1e-3)
    loss = mssce(prediction, target, alpha=0.0)  # edge terms only
    loss.backward()
    assert prediction.grad is not None and float(prediction.grad.abs().sum()) > 0


def test_losses_train_a_tiny_net_on_one_example():
    torch.manual_seed(0)
    net = PyramidNet(1, 4, NetConfig(widths=(8, 8), convs=(1, 1)))
    x = torch.zeros(1, 1, 16, 16)
    x[..., 4:8, 4:8] = 1.0
    labels = (x[:, 0] > 0).long() * 3
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = segmentation_loss(net(x), labels, torch.ones(4), kind="focal", dice_weight=0.5)
        first = first if first is not None else float(loss.detach())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.3 * first
    raw = torch.zeros(1, 4, 8, 8, requires_grad=True)
    occupancy, height = torch.ones(1, 3, 8, 8), torch.ones(1, 8, 8)
    reconstruction_loss(raw, occupancy, height).backward()
    assert float(raw.grad[:, 1].sum()) < 0 and float(raw.grad[:, 0].sum()) < 0


def test_motion_loss_weights_the_cells_a_car_leaves_and_enters():
    """A horizon that repeats the present is wrong only where the car moves: the motion weight
    multiplies that error, while an error on a static cell keeps about its unweighted cost."""
    occupancy = torch.zeros(1, 2, 16, 16)
    occupancy[:, :, 0, :] = 1.0  # a barrier, now and later
    occupancy[:, 0, 5:7, 2:5] = 1.0  # the car now
    occupancy[:, 1, 5:7, 9:12] = 1.0  # the car at the horizon
    frozen = (occupancy[:, :1] * 2.0 - 1.0) * 8.0
    static_miss = (occupancy[:, 1:] * 2.0 - 1.0) * 8.0
    static_miss[:, :, 0, 3] = -8.0
    frozen_ratio = motion_loss(frozen, occupancy, 30.0) / motion_loss(frozen, occupancy, 0.0)
    static_ratio = motion_loss(static_miss, occupancy, 30.0) / motion_loss(static_miss, occupancy, 0.0)
    assert float(frozen_ratio) > 25.0
    assert float(static_ratio) < 2.0
    raw = torch.zeros(1, 3, 16, 16, requires_grad=True)
    reconstruction_loss(raw, occupancy, torch.zeros(1, 16, 16), motion_weight=30.0).backward()
    assert float(raw.grad[0, 2, 5, 10]) < 0 < float(raw.grad[0, 2, 5, 3])


@pytest.mark.parametrize("kind", ["segmentation", "reconstruction"])
def test_onnx_runtime_matches_pytorch(tmp_path, kind):
    torch.manual_seed(1)
    net = build(kind, TINY)
    for module in net.modules():  # non-trivial BN statistics, so folding is exercised
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    checkpoint = tmp_path / f"{kind}.pt"
    save_checkpoint(checkpoint, kind, net, TINY)
    spec = network_spec(kind)
    onnx_file = export_onnx(spec, checkpoint, tmp_path / f"{kind}.onnx", verify=False)
    assert parity(spec, checkpoint, onnx_file) < 1e-4


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_reconstruction_is_published_channels_last(tmp_path, backend):
    """Occupancy probability, height in metres, then each horizon's probability, per cell (32FC4)."""
    torch.manual_seed(2)
    net = build("reconstruction", TINY).eval()
    checkpoint = tmp_path / "rec.pt"
    save_checkpoint(checkpoint, "reconstruction", net, TINY)
    bev = (torch.rand(1, TINY.bev.channels, 64, 64) > 0.7).float()
    with torch.inference_mode():
        raw = net(bev)[0]
    pipeline = PpnPipeline({"reconstruction": checkpoint}, backend, log=lambda text: None)
    scene = pipeline.reconstruction(bev)
    assert scene.shape == (64, 64, 2 + len(TINY.horizons)) and scene.flags.c_contiguous
    np.testing.assert_allclose(scene[..., 0], torch.sigmoid(raw[0]).numpy(), atol=1e-4)
    np.testing.assert_allclose(scene[..., 1], raw[1].numpy(), atol=1e-4)
    np.testing.assert_allclose(scene[..., 2:], torch.sigmoid(raw[2:]).permute(1, 2, 0).numpy(), atol=1e-4)


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(ModelFileError, match=r"missing\.pt"):
        load_network(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match=r"corrupt\.pt"):
        load_network(corrupt)
    save_checkpoint(tmp_path / "seg.pt", "segmentation", build("segmentation", TINY), TINY)
    with pytest.raises(ModelFileError, match="expected reconstruction"):
        load_network(tmp_path / "seg.pt", "reconstruction")


def test_pose_buffer_interpolates_and_extrapolates():
    buffer = PoseBuffer(tolerance_s=0.2)
    buffer.add(0.0, 0.0, 0.0, 0.0, vx=10.0)
    buffer.add(0.1, 1.0, 0.0, 0.2, vx=10.0, wz=2.0)
    x, y, yaw = buffer.pose_at(0.05)
    assert (x, y, yaw) == pytest.approx((0.5, 0.0, 0.1))
    x, y, yaw = buffer.pose_at(0.2)
    assert x == pytest.approx(1.0 + 10 * 0.1 * math.cos(0.3), abs=1e-6) and yaw == pytest.approx(0.4)
    assert buffer.pose_at(0.5) is None
    buffer.add(0.05, 0.0, 0.0, 0.0)  # time jumped back: old samples are forgotten
    assert len(buffer) == 1


@pytest.mark.parametrize("frame_ids", [("map", "base_link"), ("", "b"), ("odom_frame", "")])
def test_odometry_is_read_from_its_bytes(frame_ids):
    """Frame ids of other lengths move the doubles (8-aligned) to other offsets."""
    from nav_msgs.msg import Odometry
    from rclpy.serialization import serialize_message

    msg = Odometry()
    msg.header.frame_id, msg.child_frame_id = frame_ids
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_000, 250_000_000
    pose, twist = msg.pose.pose, msg.twist.twist
    pose.position.x, pose.position.y, pose.position.z = 12.5, -3.25, 0.5
    pose.orientation.z, pose.orientation.w = math.sin(0.35), math.cos(0.35)
    msg.pose.covariance = [float(k) for k in range(36)]
    twist.linear.x, twist.linear.y, twist.linear.z, twist.angular.z = 40.0, -1.5, 9.0, 0.25
    data = serialize_message(msg)
    sample = odometry_sample(data)
    assert sample == pytest.approx((1_700_000_000.25, 12.5, -3.25, yaw_from_quaternion(0, 0, math.sin(0.35),
                                                                                    math.cos(0.35)), 40.0, -1.5, 0.25))
    assert sample[3] == pytest.approx(0.7)
    with pytest.raises(CdrError, match="twist"):
        odometry_sample(data[: len(data) - 36 * 8 - 40])


def test_scores_iou_and_cell_recall_of_a_predicted_car():
    """A prediction covering half of a future car plus as many empty cells: IoU 1/3, recall 1/2."""
    scores = Scores(classes=4, horizons=1)
    truth = np.zeros((8, 8), bool)
    truth[2:4, 2:6] = True
    predicted = np.zeros((8, 8), bool)
    predicted[2:4, 4:8] = True
    scores.add_iou("future_0_moving", predicted, truth)
    assert scores.iou("future_0_moving") == pytest.approx(4 / 12)
    assert scores.cell_recall("future_0_moving") == pytest.approx(0.5)
    scores.add_iou("future_0_moving_frozen", np.zeros_like(truth), truth)
    assert scores.cell_recall("future_0_moving_frozen") == 0.0
