"""racestack: an ament_python package that also installs with plain pip into a venv."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "racestack"
DATA_FOLDERS = ("launch", "config", "models")


def data_files() -> list[tuple[str, list[str]]]:
    """launch/, config/ and models/ under share/racestack, keeping their sub-folders."""
    entries = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ]
    for folder in DATA_FOLDERS:
        groups: dict[str, list[str]] = {}
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                groups.setdefault(f"share/{PACKAGE}/{path.parent}", []).append(str(path))
        entries.extend(groups.items())
    return entries


NODES = {
    "cloud_relay": "racestack.utility_nodes:cloud_relay_main",
    "topic_stats": "racestack.utility_nodes:topic_stats_main",
    "simulator": "simulation.sim_node:main",
    "bev_segmentation": "perception_nodes.ppn.nodes:segmentation_main",
    "bev_reconstruction": "perception_nodes.ppn.nodes:reconstruction_main",
    "ppn_sequential": "perception_nodes.ppn.nodes:sequential_main",
    "object_extraction": "perception_nodes.object_extraction_node:main",
    "flying_object_detector": "perception_nodes.flying_objects.node:main",
    "tracker": "perception_nodes.tracking.node:main",
    "risk_map": "planning_nodes.riskmap.node:main",
    "mpc_planner": "planning_nodes.mpc.node:main",
    "pure_pursuit": "planning_nodes.pure_pursuit_node:main",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["racestack*", "perception_nodes*", "planning_nodes*", "simulation*"]),
    data_files=data_files(),
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="racestack developers",
    maintainer_email="racestack@example.com",
    description="Real-time ROS 2 perception and planning for autonomous racing",
    license="Apache-2.0",
    python_requires=">=3.10",
    extras_require={"tensorrt": ["tensorrt-cu13>=10.13", "onnxconverter-common>=1.14"]},
    entry_points={
        "console_scripts": [
            "racestack = racestack.cli:entry",
            *(f"{name} = {target}" for name, target in NODES.items()),
        ]
    },
)
