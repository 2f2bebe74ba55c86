"""3DMOTFormer network: ONNX Runtime parity with PyTorch, masking, batching, checkpoint errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perception_nodes.tracking.factory import create_tracker
from perception_nodes.tracking.model import (
    NETWORK_SPEC,
    ModelConfig,
    MOTFormer,
    default_checkpoint,
    example_inputs,
    load_checkpoint,
    save_checkpoint,
)
from perception_nodes.tracking.state import Detections, EgoState
from perception_nodes.tracking.training import ModuleRunner, collate
from racestack.errors import ModelFileError
from racestack.inference import OnnxRunner, TorchRunner, export_onnx
from racestack.objects import empty_objects

PARITY = 1e-4


def scene_graphs(runner, latent_dim: int, count: int, frames: int = 4):
    """(graph, latent) pairs a tracker really builds: ``count`` cars at racing speed, noisy."""
    rng = np.random.default_rng(count)
    tracker = create_tracker("3dmotformer", runner=runner, latent_dim=latent_dim)
    start = rng.uniform(-40.0, 40.0, (count, 2))
    out = []
    for k in range(frames):
        table = empty_objects(count)
        table["x"] = start[:, 0] + 70.0 * k * 0.1 + rng.normal(0, 0.2, count)
        table["y"] = start[:, 1] + rng.normal(0, 0.2, count)
        table["z"], table["length"], table["width"], table["height"] = 0.6, 4.9, 1.9, 1.2
        table["score"] = rng.uniform(0.3, 1.0, count)
        dets = Detections.from_table(table)
        ego = EgoState(x=60.0 * k * 0.1, vx=60.0)
        graph = tracker.graph(dets, k * 0.1, ego)
        out.append(graph.inputs(tracker.track_latent()))
        tracker.step(dets, k * 0.1, ego)
    return out


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    """The committed checkpoint, exported to ONNX the way nodes do it (with the built-in parity check)."""
    checkpoint = default_checkpoint()
    onnx_file = export_onnx(NETWORK_SPEC, checkpoint, tmp_path_factory.mktemp("onnx") / "tracker.onnx")
    return checkpoint, onnx_file


def test_onnx_runtime_matches_pytorch_on_tracker_graphs(committed):
    checkpoint, onnx_file = committed
    reference = TorchRunner(NETWORK_SPEC, checkpoint, threads=1)
    candidate = OnnxRunner(NETWORK_SPEC, onnx_file, threads=1)
    latent_dim = load_checkpoint(checkpoint).cfg.d_model
    worst = {name: 0.0 for name in NETWORK_SPEC.output_names}
    for count in (1, 7, 40):
        for inputs in scene_graphs(reference, latent_dim, count):
            for name, a, b in zip(NETWORK_SPEC.output_names, reference(*inputs), candidate(*inputs), strict=True):
                assert a.shape == b.shape
                worst[name] = max(worst[name], float(np.abs(a - b).max()))
    assert max(worst.values()) <= PARITY, worst


def test_dynamic_shapes_export(tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "random.pt"
    save_checkpoint(MOTFormer(ModelConfig.preset("lite")), checkpoint)
    onnx_file = export_onnx(NETWORK_SPEC, checkpoint, tmp_path / "random.onnx")
    reference, candidate = TorchRunner(NETWORK_SPEC, checkpoint), OnnxRunner(NETWORK_SPEC, onnx_file)
    model = load_checkpoint(checkpoint)
    for tracks, dets in ((1, 1), (3, 11), (17, 2)):
        inputs = [t.numpy() for t in example_inputs(model, tracks, dets, seed=tracks)]
        for a, b in zip(reference(*inputs), candidate(*inputs), strict=True):
            assert np.abs(a - b).max() <= PARITY


def test_masked_tracks_do_not_influence_detections():
    torch.manual_seed(1)
    model = MOTFormer(ModelConfig.preset("lite")).eval()
    inputs = list(example_inputs(model, tracks=4, dets=3, seed=2))
    inputs[4][:] = 1.0
    inputs[4][0, :, 3] = 0.0  # track 3: no edges
    inputs[6][0, 3, :] = inputs[6][0, :, 3] = 0.0  # and no self-attention with others
    inputs[6][0, 3, 3] = 1.0
    with torch.no_grad():
        before = model(*inputs)
        inputs[1][0, 3] += 5.0
        inputs[2][0, 3] -= 3.0
        inputs[3][0, :, 3] *= -2.0
        after = model(*inputs)
    assert torch.allclose(before[0][..., :3], after[0][..., :3], atol=1e-6)
    for index in (1, 2, 3):
        assert torch.allclose(before[index], after[index], atol=1e-6)


def test_batched_padded_graphs_equal_single_graphs():
    torch.manual_seed(2)
    model = MOTFormer(ModelConfig.preset("lite")).eval()
    runner = ModuleRunner(model)
    graphs = []
    for count in (2, 5):
        tracker = create_tracker("3dmotformer", runner=runner, latent_dim=model.cfg.d_model)
        for inputs in scene_graphs(runner, model.cfg.d_model, count, frames=3)[-1:]:
            graphs.append(inputs)
        del tracker
    singles = [runner(*g) for g in graphs]
    from perception_nodes.tracking.graph import Graph

    as_graphs = [Graph(g[0], g[1], g[3], g[4], g[5], g[6]) for g in graphs]
    batch = collate(as_graphs, [torch.from_numpy(g[2][0]) for g in graphs])
    with torch.no_grad():
        batched = [o.numpy() for o in model(*batch)]
    for b, single in enumerate(singles):
        d, t = single[0].shape[1:]
        assert np.allclose(batched[0][b, :d, :t], single[0][0], atol=1e-5)
        assert np.allclose(batched[1][b, :d], single[1][0], atol=1e-5)
        assert np.allclose(batched[3][b, :d], single[3][0], atol=1e-5)


def test_corrupt_or_missing_checkpoint_names_the_path(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match=r"corrupt\.pt"):
        load_checkpoint(corrupt)
    with pytest.raises(ModelFileError, match=r"missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")
