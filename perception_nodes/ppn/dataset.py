"""``racestack dataset bev``: PPN training data from headless simulator runs.

Each training scenario (``config/scenarios/*.yaml``, never ``heldout/``) is driven by the expert;
every frame's sweep goes through the same ``BevEncoder`` the nodes use (odometry poses as
published, so its noise is in the data), and every ``stride``-th frame is stored with its targets:
BEV class ids (segmentation), the dense obstacle occupancy and height including cells the LiDAR
did not see, and the obstacle occupancy at each future horizon drawn in the *current* ego frame
(reconstruction). ``scenario_frames`` is also what the evaluation runs on held-out scenarios.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception_nodes.ppn.bev import BevEncoder
from perception_nodes.ppn.config import PpnConfig, preset
from racestack.grid import BevGrid
from racestack.objects import BEV_CLASSES

BARRIER, VEHICLE = BEV_CLASSES.index("barrier"), BEV_CLASSES.index("vehicle")


@dataclass
class Frame:
    """One stored sample (arrays in base_link on the configuration's grid)."""

    scenario: str
    time: float
    bev: np.ndarray  # (C, H, W) float32, the network input
    labels: np.ndarray  # (H, W) int8 BEV class ids
    occupancy: np.ndarray  # (1 + horizons, H, W) bool: obstacles now, then at each horizon
    height: np.ndarray  # (H, W) float32 obstacle height (m), 0 where free
    cars: np.ndarray  # OBJECT_DTYPE ground-truth opponents in base_link
    car_points: np.ndarray  # (len(cars),) LiDAR points that hit each car


def to_ego_table(table: np.ndarray, pose: tuple[float, float, float]) -> np.ndarray:
    """An OBJECT_DTYPE table in ``map`` re-expressed in the base_link of ``pose``."""
    x, y, yaw = pose
    c, s = np.cos(yaw), np.sin(yaw)
    out = table.copy()
    dx, dy = table["x"] - x, table["y"] - y
    out["x"], out["y"] = c * dx + s * dy, -s * dx + c * dy
    out["yaw"] = np.remainder(table["yaw"] - yaw + np.pi, 2 * np.pi) - np.pi
    out["vx"], out["vy"] = c * table["vx"] + s * table["vy"], -s * table["vx"] + c * table["vy"]
    return out


def obstacle_height(labels: np.ndarray, cars: np.ndarray, pose, grid: BevGrid, barrier_height: float) -> np.ndarray:
    from simulation.ground_truth import vehicle_mask

    height = np.where(labels == BARRIER, barrier_height, 0.0).astype(np.float32)
    for row in cars:
        height[vehicle_mask(row[None], pose, grid)] = row["height"]
    return height


def scenario_frames(
    source: str | Path,
    config: PpnConfig,
    count: int,
    stride: int = 1,
    warmup: int = 0,
    seed: int | None = None,
    empty_keep: float = 1.0,
    near_m: float = 55.0,
) -> Iterator[Frame]:
    """Up to ``count`` frames of a scenario: every ``stride``-th frame after ``warmup``.

    Only the sweeps a stored frame stacks are ray-cast (the ``sweeps`` frames ending at it), so a
    large stride costs little more than its physics steps. A frame with no opponent within
    ``near_m`` is kept with probability ``empty_keep`` (vehicles are rare cells; this enriches them).
    """
    from simulation.ground_truth import vehicle_mask
    from simulation.simulation import Simulation

    sim = Simulation.from_scenario(source, seed=seed)
    rig = sim.sensors.lidar
    if rig is None:
        raise ValueError(f"scenario {source} has no LiDAR")
    grid, sweeps = config.bev.grid, config.bev.sweeps
    encoder = BevEncoder(config.bev, rig.pose)
    rng = np.random.default_rng(sim.scenario.seed)
    offsets = [round(h * sim.scenario.rate) for h in config.horizons]
    pending: deque[tuple[int, Frame, tuple[float, float, float]]] = deque()
    future_cars: deque[np.ndarray] = deque(maxlen=max(offsets) + 1)
    produced, index, keep = 0, 0, True
    while produced < count and not sim.done:
        sim.step_frame()
        index += 1
        cars_map = sim.objects_table()
        future_cars.append(cars_map)
        phase = (index - warmup) % stride
        if index - warmup > 0 and stride >= sweeps and phase == stride - sweeps + 1:
            keep = _near(cars_map, sim.ego_pose, near_m) or rng.random() < empty_keep
            encoder.reset()
        if index - warmup > 0 and keep and (phase == 0 or phase > stride - sweeps):
            sweep = sim.lidar_sweep()
            odometry = sim.odometry()
            points = np.stack([sweep.points[n] for n in ("x", "y", "z", "intensity")], axis=1)
            bev = encoder.encode(points, (odometry.x, odometry.y, odometry.yaw))
            if phase == 0:
                pending.append(
                    (index, _frame(sim, bev.numpy().copy(), sweep, cars_map, grid, len(offsets)), sim.ego_pose)
                )
        while pending and index - pending[0][0] >= max(offsets):
            start, frame, pose = pending.popleft()
            barrier = frame.labels == BARRIER
            for h, offset in enumerate(offsets, start=1):
                cars_then = future_cars[-1 - (index - start - offset)]
                frame.occupancy[h] = barrier | vehicle_mask(cars_then, pose, grid)
            yield frame
            produced += 1
            if produced >= count:
                return


def _near(cars: np.ndarray, pose: tuple[float, float, float], distance: float) -> bool:
    return bool(len(cars)) and bool(np.any(np.hypot(cars["x"] - pose[0], cars["y"] - pose[1]) < distance))


def _frame(sim, bev: np.ndarray, sweep, cars_map: np.ndarray, grid: BevGrid, horizons: int) -> Frame:
    """A stored frame with its present targets (future occupancy is filled in later)."""
    pose = sim.ego_pose
    labels = sim.bev_labels(grid)
    ids = cars_map["track_id"]
    counts = np.bincount(sweep.instance[sweep.instance >= 0], minlength=int(ids.max(initial=0)) + 1)
    frame = Frame(
        scenario=sim.scenario.name,
        time=sim.frame_time,
        bev=bev,
        labels=labels,
        occupancy=np.zeros((1 + horizons, *grid.shape), dtype=bool),
        height=obstacle_height(labels, cars_map, pose, grid, sim.track.barrier_height),
        cars=to_ego_table(cars_map, pose),
        car_points=counts[ids] if len(cars_map) else np.zeros(0, np.int64),
    )
    frame.occupancy[0] = (labels == BARRIER) | (labels == VEHICLE)
    return frame


def save_frames(frames: list[Frame], path: Path, config: PpnConfig) -> None:
    """One compressed npz per scenario run: bits for binary maps, float16 for the rest."""
    sweeps = config.bev.sweeps
    bev = np.stack([f.bev for f in frames])
    np.savez_compressed(
        path,
        occupancy_bits=np.packbits(bev[:, :sweeps] > 0, axis=-1),
        features=bev[:, sweeps:].astype(np.float16),
        labels=np.stack([f.labels for f in frames]),
        target_bits=np.packbits(np.stack([f.occupancy for f in frames]), axis=-1),
        height=np.stack([f.height for f in frames]).astype(np.float16),
        time=np.array([f.time for f in frames]),
    )


def load_frames(path: Path, config: PpnConfig) -> dict[str, np.ndarray]:
    """Arrays of one stored run: bev (K, C, H, W) float32, labels, occupancy (bool), height."""
    cells = config.bev.cells
    with np.load(path) as data:
        occupancy = np.unpackbits(data["occupancy_bits"], axis=-1, count=cells).astype(np.float32)
        bev = np.concatenate([occupancy, data["features"].astype(np.float32)], axis=1)
        return {
            "bev": bev,
            "labels": data["labels"].astype(np.int64),
            "occupancy": np.unpackbits(data["target_bits"], axis=-1, count=cells).astype(bool),
            "height": data["height"].astype(np.float32),
        }


def update_manifest(path: Path, config: PpnConfig, runs: list[dict]) -> None:
    """Merge this export's runs into the folder's manifest (read at write time: exports may run side by side)."""
    manifest = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    files = {r["file"] for r in runs}
    manifest["config"] = config.to_dict()
    manifest["runs"] = [r for r in manifest["runs"] if r["file"] not in files] + runs
    path.write_text(json.dumps(manifest, indent=1))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="lite", choices=("lite", "paper"))
    parser.add_argument("--out", type=Path, default=None, help="output folder (default datasets/ppn_<config>)")
    parser.add_argument("--scenarios", nargs="*", default=None, help="training scenarios (default: all)")
    parser.add_argument("--seeds", type=int, nargs="*", default=[None], help="scenario seeds (default: the file's)")
    parser.add_argument("--frames", type=int, default=150, help="most stored frames per scenario run")
    parser.add_argument("--stride", type=int, default=10, help="store every n-th frame")
    parser.add_argument("--warmup", type=int, default=20, help="frames simulated before the first stored one")
    parser.add_argument("--empty-keep", type=float, default=0.35, help="keep ratio of frames with no car near")


def run(args: argparse.Namespace) -> int:
    from simulation.scenario import list_scenarios

    config = preset(args.config)
    names = args.scenarios or list_scenarios()
    held = [n for n in names if "heldout" in str(n)]
    if held:
        raise SystemExit(f"racestack dataset bev: held-out scenarios may not be used for training: {held}")
    out = args.out or Path("datasets") / f"ppn_{config.name}"
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for name in names:
        for seed in args.seeds:
            start = time.perf_counter()
            frames = list(scenario_frames(name, config, args.frames, args.stride, args.warmup, seed, args.empty_keep))
            tag = Path(str(name)).stem + ("" if seed is None else f"_s{seed}")
            save_frames(frames, out / f"{tag}.npz", config)
            runs.append({"scenario": str(name), "seed": seed, "file": f"{tag}.npz", "frames": len(frames)})
            print(f"{tag}: {len(frames)} frames in {time.perf_counter() - start:.0f} s", flush=True)
    update_manifest(out / "manifest.json", config, runs)
    print(f"wrote {sum(r['frames'] for r in runs)} frames to {out}")
    return 0
