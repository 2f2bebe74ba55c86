"""Training and inference with the network disabled: nothing may be downloaded (issue 5).

The children also run without rclpy and polars, as on a GPU machine's own Python: data export,
training, export and inference need neither (docs/training.md).

A tiny YOLO data set is exported from the simulator, then ``racestack train detector`` runs one
short epoch and ``racestack export detector`` plus ONNX Runtime inference run on its checkpoint,
each in a child process whose every attempt to open a network connection or resolve a host name
is refused and recorded (an audit hook; also a network namespace where ``unshare`` allows one).
YOLO_OFFLINE is removed from the children's environment: the project must set it itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from support import REPO, absent_modules_code, run_command

GUARD = textwrap.dedent(
    """
    import socket
    import sys
    import traceback

    LOG = {log!r}


    def _refuse(event, args):
        if event not in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
            return
        if event == "socket.connect" and args[0].family == socket.AF_UNIX:
            return
        with open(LOG, "a") as handle:
            handle.write(f"{{event}} {{args[1] if event == 'socket.connect' else args[0]!r}}\\n")
            handle.write("".join(traceback.format_stack(limit=12)))
        raise OSError(f"network disabled by the test ({{event}})")


    sys.addaudithook(_refuse)
    """
)


def offline_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    log = tmp_path / "network_attempts.log"
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD.format(log=str(log)) + absent_modules_code("rclpy", "polars"))
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "YOLO_OFFLINE"}
    env["PYTHONPATH"] = os.pathsep.join([str(guard), str(REPO), env.get("PYTHONPATH", "")])
    env["YOLO_CONFIG_DIR"] = str(tmp_path / "ultralytics_config")
    return env, log


def isolated(command: list[str]) -> list[str]:
    """The command in a fresh network namespace (no interface but loopback) when the OS allows it."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn", *command]
    return command


def run_offline(command: list[str], env: dict[str, str], cwd: Path) -> str:
    result = run_command(isolated(command), timeout=270, env=env, cwd=cwd)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def test_training_and_inference_never_touch_the_network(tmp_path):
    env, log = offline_env(tmp_path)
    data = tmp_path / "data"
    racestack = [sys.executable, "-m", "racestack.cli"]
    export = [
        *racestack, "dataset", "detector", "--out", str(data), "--scenarios", "circuit_a",
        "--heldout", "heldout/oval_heldout", "--seeds", "1", "--frames", "6", "--val-frames", "2",
        "--test-frames", "2", "--every", "2", "--flying-count", "16",
    ]  # fmt: skip
    run_offline(export, env, tmp_path)
    assert yaml.safe_load((data / "data.yaml").read_text())["names"] == ["drone", "bird", "airplane", "helicopter"]
    assert len(list((data / "labels" / "train").glob("*.txt"))) >= 3
    out = tmp_path / "model"
    train = [
        *racestack, "train", "detector", "--data", str(data / "data.yaml"), "--epochs", "1", "--imgsz", "128",
        "--batch", "4", "--workers", "0", "--threads", "2", "--cache", "none",
        "--runs", str(tmp_path / "runs"), "--out", str(out),
    ]  # fmt: skip
    output = run_offline(train, env, tmp_path)
    assert (out / "weights.pt").is_file() and (out / "metrics.json").is_file(), output[-2000:]
    onnx_dir = tmp_path / "onnx"
    run_offline(
        [*racestack, "export", "detector", "--checkpoint", str(out / "weights.pt"), "-o", str(onnx_dir)], env, tmp_path
    )
    script = textwrap.dedent(
        f"""
        import numpy as np
        from perception_nodes.flying_objects.detector import DetectorConfig, FlyingObjectDetector
        onnx = next(__import__("pathlib").Path({str(onnx_dir)!r}).glob("*.onnx"))
        detector = FlyingObjectDetector(DetectorConfig(weights=str(onnx), backend="onnxruntime"))
        table = detector.detect(np.full((480, 640, 3), 120, np.uint8))
        print("detections", table.shape[0], detector.backend)
        """
    )
    output = run_offline([sys.executable, "-c", script], env, tmp_path)
    assert "onnxruntime" in output
    attempts = log.read_text() if log.exists() else ""
    assert not attempts, f"network access attempted:\n{attempts}"
    metrics = yaml.safe_load((out / "metrics.json").read_text())
    assert np.isfinite(float(metrics["evaluation"]["map50"]))
    assert metrics["torch_threads"] == 2, "ultralytics' own choice (cores - 1) replaced --threads"


@pytest.mark.parametrize(("model", "parameters"), [("yolov8n", 3.0e6), ("yolov8m", 25.8e6)])
def test_models_build_from_their_yaml_without_downloads(model, parameters):
    from perception_nodes.flying_objects.detector import offline_yolo
    from perception_nodes.flying_objects.training import model_source

    source, fine_tune = model_source(model)
    assert not fine_tune
    network = offline_yolo()(source, task="detect").model
    count = sum(p.numel() for p in network.parameters())
    assert abs(count - parameters) < 0.1 * parameters


def test_averaged_checkpoint_holds_the_mean_weights_and_loads(tmp_path):
    import torch

    from perception_nodes.flying_objects.averaging import main as average
    from perception_nodes.flying_objects.detector import offline_yolo

    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        network = offline_yolo()("yolov8n.yaml", task="detect").model
        paths.append(tmp_path / f"s{seed}.pt")
        torch.save({"model": network, "ema": None}, paths[-1])
    assert average([*map(str, paths), "--out", str(tmp_path / "mean.pt")]) == 0
    first, second = (torch.load(p, weights_only=False)["model"].state_dict() for p in paths)
    key = next(k for k in first if k.endswith("conv.weight") and not torch.equal(first[k], second[k]))
    mean = offline_yolo()(str(tmp_path / "mean.pt"), task="detect").model.state_dict()
    torch.testing.assert_close(mean[key], (first[key] + second[key]) / 2)
    torch.save({"model": offline_yolo()("yolov8s.yaml", task="detect").model}, tmp_path / "s.pt")
    with pytest.raises(SystemExit, match="another architecture"):
        average([str(paths[0]), str(tmp_path / "s.pt"), "--out", str(tmp_path / "bad.pt")])
