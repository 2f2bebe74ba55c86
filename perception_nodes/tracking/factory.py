"""One place that turns a method name into a tracker (used by the node, evaluation and benchmarks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from perception_nodes.tracking.baselines import GreedyTracker, KalmanConfig, KalmanTracker
from perception_nodes.tracking.tracker import TRACKER_METHODS, IdSource, MOTFormerTracker, Tracker, TrackerConfig


def motformer_runner(
    checkpoint: str | Path | None = None,
    backend: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
    log: Callable[[str], None] = print,
):
    """(runner, latent width) of a 3DMOTFormer checkpoint on the chosen inference backend."""
    from perception_nodes.tracking.model import NETWORK_SPEC, default_checkpoint, load_checkpoint
    from racestack.inference import check_model_file, create_runner

    path = check_model_file(checkpoint or default_checkpoint(), hint="train one with `racestack train tracker`")
    latent_dim = load_checkpoint(path).cfg.d_model
    return create_runner(NETWORK_SPEC, path, backend=backend, device=device, threads=threads, log=log), latent_dim


DEFAULT_ASSOCIATION = {"3dmotformer": "hungarian", "kalman": "hungarian", "greedy": "greedy"}
DEFAULT_AFFINITY_THRESHOLD = 0.3


def method_config(method: str, **overrides) -> TrackerConfig:
    """The life-cycle settings a method runs with by default (the node's defaults too)."""
    if method not in TRACKER_METHODS:
        raise ValueError(f"tracking method '{method}' is not one of {TRACKER_METHODS}")
    defaults = {
        "association": DEFAULT_ASSOCIATION[method],
        "affinity_threshold": DEFAULT_AFFINITY_THRESHOLD,
        "score_source": "model" if method == "3dmotformer" else "detection",
    }
    return TrackerConfig(**{**defaults, **overrides})


def create_tracker(
    method: str,
    config: TrackerConfig | None = None,
    ids: IdSource | None = None,
    runner=None,
    latent_dim: int = 0,
    kalman: KalmanConfig | None = None,
) -> Tracker:
    """A tracker of ``method`` (3dmotformer needs a runner from ``motformer_runner``)."""
    config = config or method_config(method)
    if method == "3dmotformer":
        if runner is None:
            raise ValueError("3dmotformer needs a network runner (see motformer_runner)")
        return MOTFormerTracker(runner, latent_dim, config, ids)
    if method == "kalman":
        return KalmanTracker(config, kalman, ids)
    if method == "greedy":
        return GreedyTracker(config, ids=ids)
    raise ValueError(f"tracking method '{method}' is not one of {TRACKER_METHODS}")
