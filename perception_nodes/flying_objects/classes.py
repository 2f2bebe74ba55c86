"""Model class names -> racestack class ids (racestack.objects.OBJECT_CLASSES).

A model trained on any data set keeps its own class names; the node publishes the global ids, so
names are matched to the four flying classes by a small alias table and everything else is 'other'.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from racestack.objects import CLASS_ID, FLYING_CLASSES

OTHER = CLASS_ID["other"]
ALIASES: dict[str, str] = {
    "drone": "drone",
    "drones": "drone",
    "uav": "drone",
    "quadcopter": "drone",
    "quadrotor": "drone",
    "multirotor": "drone",
    "bird": "bird",
    "birds": "bird",
    "airplane": "airplane",
    "airplanes": "airplane",
    "aeroplane": "airplane",
    "plane": "airplane",
    "aircraft": "airplane",
    "jet": "airplane",
    "helicopter": "helicopter",
    "helicopters": "helicopter",
    "heli": "helicopter",
    "chopper": "helicopter",
}


def normalize_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name).strip().lower())


def global_class_id(name: str) -> int:
    """The racestack class id of one model class name ('other' when it is none of the flying classes)."""
    canonical = ALIASES.get(normalize_name(name))
    if canonical is None:
        words = normalize_name(name).split()
        canonical = next((ALIASES[w] for w in reversed(words) if w in ALIASES), None)
    return CLASS_ID[canonical] if canonical else OTHER


def global_class_ids(names: Sequence[str]) -> np.ndarray:
    """Lookup array: model class index -> racestack class id."""
    return np.array([global_class_id(n) for n in names], dtype=np.int32)


def training_names() -> list[str]:
    """Class names of the simulator data set, in YOLO label order (index = label id)."""
    return list(FLYING_CLASSES)
