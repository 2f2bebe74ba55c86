"""The package builds with colcon (ament_python) like in a full ROS 2 workspace, and runs from the install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO


def _tracked_files() -> list[str]:
    result = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip("not a git checkout: cannot tell which files a workspace would hold")
    return [f for f in result.stdout.splitlines() if (REPO / f).is_file()]


def test_colcon_build_installs_nodes_and_share_files(tmp_path: Path) -> None:
    pytest.importorskip("colcon_core")
    source = tmp_path / "src" / "racestack"
    for name in _tracked_files():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    build = subprocess.run(
        [sys.executable, "-m", "colcon", "build", "--base-paths", "src", "--packages-select", "racestack"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    install = tmp_path / "install" / "racestack"
    scripts = {p.name for p in (install / "lib" / "racestack").iterdir()}
    assert {"racestack", "cloud_relay", "simulator", "bev_segmentation", "tracker", "mpc_planner"} <= scripts
    share = install / "share" / "racestack"
    assert (share / "package.xml").is_file() and (share / "launch" / "graphs" / "default.yaml").is_file()
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "racestack").is_file()
    site = next((install / "lib").glob("python3*/site-packages"))
    env = dict(os.environ, PYTHONPATH=str(site), AMENT_PREFIX_PATH=str(install))
    probe = subprocess.run(
        [sys.executable, "-c", "import racestack.paths as p; print(p.__file__); print(p.share_dir())"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    module_file, share_dir = probe.stdout.split()
    assert module_file.startswith(str(site)) and Path(share_dir) == share
    dry = subprocess.run(
        [str(install / "lib" / "racestack" / "racestack"), "launch", "smoke", "--dry-run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    assert "racestack.entry cloud_relay" in dry.stdout
