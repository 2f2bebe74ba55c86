"""The risk map's grid, horizon and cell meaning, shared by the model, the node, the data and the MPC.

Cell value (documented in docs/interfaces.md): at horizon step t (``RISK_TIMES[t]`` seconds after the
stamp) and cell c of ``RISK_GRID`` (in ``base_link`` at the stamp), ``P(c's centre lies inside an
opponent's footprint at that time) x severity`` in [0, 1]. Severity rates the harm of hitting that
opponent: ``clip(0.25 + 0.75 · |v_ego − v_opp| / 20 m/s, 0.25, 1)`` with both velocities taken at the
stamp, so a car braking in front or sitting sideways is worse than one moving with the ego.
"""

from __future__ import annotations

import numpy as np

from racestack.grid import BevGrid

# forward-biased: at 85 m/s the ego covers 255 m in the 3 s horizon
RISK_GRID = BevGrid(width=256, height=128, resolution=1.0, x_min=-16.0, y_min=-64.0)
RISK_TIMES = np.arange(7, dtype=np.float64) * 0.5
SEVERITY_FLOOR = 0.25
SEVERITY_SPEED = 20.0


def severity(ego_velocity: np.ndarray, opponent_velocity: np.ndarray) -> np.ndarray:
    """Harm weight in [0.25, 1] from the speed difference (vectors (..., 2) in one frame)."""
    closing = np.linalg.norm(np.asarray(opponent_velocity) - np.asarray(ego_velocity), axis=-1)
    return np.clip(SEVERITY_FLOOR + (1.0 - SEVERITY_FLOOR) * closing / SEVERITY_SPEED, SEVERITY_FLOOR, 1.0)
