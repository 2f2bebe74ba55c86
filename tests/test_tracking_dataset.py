"""Tracking data from the simulator, a short online training run, and the held-out evaluation command."""

from __future__ import annotations

import numpy as np
import pytest

from perception_nodes.tracking.dataset import export_run, load_sequence, load_sequences, save_sequence
from perception_nodes.tracking.model import load_checkpoint
from perception_nodes.tracking.synthetic_detector import DetectorNoise
from racestack.cli import main as racestack

SCENARIO = "oval_pack"


@pytest.fixture(scope="module")
def sequence_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tracking")
    for seed in (0, 1):
        sequence = export_run(SCENARIO, seed, DetectorNoise(), rate=10.0, duration=6.0, traffic=6)
        save_sequence(folder / "train" / f"{sequence.name}.npz", sequence)
    return folder


def test_sequences_hold_detections_odometry_and_ground_truth(sequence_dir):
    sequence = load_sequence(sorted((sequence_dir / "train").glob("*.npz"))[0])
    assert len(sequence) == 60 and np.allclose(np.diff(sequence.stamps), 0.1)
    assert sequence.meta["scenario"].endswith("oval_pack.yaml") and sequence.meta["traffic"] == 6
    assert np.isfinite(sequence.ego).all()
    matched = near = 0
    for frame in sequence.frames():
        dets, ids = frame.map_detections()
        assert len(dets) == len(ids)
        for row, identity, class_id in zip(dets.boxes, ids, dets.classes, strict=True):
            if identity < 0:
                continue
            truth = frame.gt[frame.gt["track_id"] == identity]
            assert len(truth) == 1, "a true detection names an object of its frame"
            if class_id == 0:  # cars: LiDAR boxes; flying objects far away carry metres of range error
                matched += 1
                near += np.hypot(truth["x"][0] - row[0], truth["y"][0] - row[1]) < 2.0
    assert matched > 50 and near >= 0.95 * matched
    assert 0 < sequence.gt_visible.sum() < sequence.gt_visible.size
    assert (sequence.det_gt == -1).any(), "no false positives"


def test_export_is_deterministic():
    a = export_run(SCENARIO, 3, DetectorNoise(), rate=10.0, duration=1.0, traffic=2)
    b = export_run(SCENARIO, 3, DetectorNoise(), rate=10.0, duration=1.0, traffic=2)
    assert np.array_equal(a.det, b.det) and np.array_equal(a.gt, b.gt)


def test_short_training_run_writes_a_usable_checkpoint(sequence_dir, capsys):
    out = sequence_dir / "model.pt"
    args = ["train", "tracker", "--data", str(sequence_dir / "train"), "--out", str(out)]
    args += ["--epochs", "1", "--clips-per-epoch", "8", "--batch-clips", "4", "--clip-length", "4"]
    args += ["--validation-fraction", "0.5"]
    assert racestack(args) == 0
    model = load_checkpoint(out)
    assert model.cfg.d_model == 64
    assert "val_score" in capsys.readouterr().out


def test_evaluation_command_prints_the_three_trackers(sequence_dir, capsys):
    from perception_nodes.tracking import evaluation

    code = evaluation.main(["--data", str(sequence_dir / "train"), "--checkpoint", str(sequence_dir / "model.pt")])
    assert code == 0
    printed = capsys.readouterr().out
    for method in ("3dmotformer", "kalman", "greedy"):
        assert method in printed
    assert "AMOTA" in printed and "3DMOTFormer AMOTA - Kalman AMOTA" in printed


def test_training_refuses_held_out_scenarios(tmp_path):
    sequence = export_run("heldout/oval_heldout", 0, DetectorNoise(), rate=10.0, duration=0.5)
    save_sequence(tmp_path / f"{sequence.name}.npz", sequence)
    assert len(load_sequences(tmp_path)) == 1
    with pytest.raises(SystemExit, match="held-out"):
        racestack(["train", "tracker", "--data", str(tmp_path), "--out", str(tmp_path / "x.pt")])
