"""Track–detection assignment on a cost matrix restricted to gated pairs: greedy or Hungarian."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

METHODS = ("greedy", "hungarian")
_FORBIDDEN = 1e9


def greedy(cost: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs taken cheapest first, each row and column at most once (CenterPoint's matching).

    Vectorized in rounds: a pair that is the cheapest of both its row and its column among the
    free ones is exactly one that cheapest-first would take, so each round takes all of them.
    """
    remaining = np.where(valid, cost, np.inf)
    taken_rows, taken_cols = [], []
    index = np.arange(cost.shape[0])
    while remaining.size and np.isfinite(remaining).any():
        best_col = remaining.argmin(axis=1)
        best_row = remaining.argmin(axis=0)
        mutual = np.isfinite(remaining[index, best_col]) & (best_row[best_col] == index)
        rows, cols = index[mutual], best_col[mutual]
        taken_rows.append(rows)
        taken_cols.append(cols)
        remaining[rows, :] = np.inf
        remaining[:, cols] = np.inf
    if not taken_rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(taken_rows).astype(np.int64), np.concatenate(taken_cols).astype(np.int64)


def hungarian(cost: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum total cost over valid pairs (most valid pairs first, as AB3DMOT's gated assignment)."""
    if not valid.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, cols = linear_sum_assignment(np.where(valid, cost, _FORBIDDEN))
    keep = valid[rows, cols]
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)


def associate(cost: np.ndarray, valid: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, column indices) of the matched pairs."""
    if method == "greedy":
        return greedy(cost, valid)
    if method == "hungarian":
        return hungarian(cost, valid)
    raise ValueError(f"association method '{method}' is not one of {METHODS}")
