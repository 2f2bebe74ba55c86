"""The cores that export data, train, evaluate and export networks import without rclpy.

They run where ROS is not installed: a GPU machine's own Python, with only the pure-Python message
packages beside the project. rclpy (a compiled extension for one Python version) may be imported
only where a message is serialized or a node runs.
"""

from __future__ import annotations

import subprocess
import sys

from support import REPO, absent_modules_code

from racestack.cli import COMMANDS
from simulation.datasets import EXPORTERS

IMPORT_ALL = "import importlib\nfor module in sys.argv[1:]:\n    importlib.import_module(module)\n"


def offline_modules() -> list[str]:
    training = [module for module, _ in COMMANDS["train"].values()]
    exporting = [COMMANDS[name][0] for name in ("dataset", "export", "build-engines")]
    return training + exporting + [module for module, _ in EXPORTERS.values()] + [
        "perception_nodes.flying_objects.evaluation",
        "perception_nodes.ppn.evaluation",
    ]


def test_training_export_and_evaluation_cores_import_without_rclpy() -> None:
    script = absent_modules_code("rclpy") + IMPORT_ALL
    done = subprocess.run(
        [sys.executable, "-c", script, *offline_modules()], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"a core needs rclpy to import:\n{done.stderr[-3000:]}"
