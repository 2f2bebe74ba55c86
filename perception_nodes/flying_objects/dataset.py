"""``racestack dataset detector``: YOLO-format flying-object images from simulator runs.

Training images come from the training scenarios only (``config/scenarios``), each run with a few
seeds (new flying objects, sky and light per seed); the validation split uses one more seed of the
same scenarios; the test split comes from the held-out scenarios (``config/scenarios/heldout``),
which are used for nothing else. Each image gets a label file of its visible flying objects
(``class cx cy w h``, normalized; classes drone, bird, airplane, helicopter) from the renderer's
occlusion-aware ground-truth boxes. Layout: ``images/{train,val,test}``, ``labels/...``,
``data.yaml`` (relocatable: no absolute path) and ``manifest.json`` (what was exported, counts).
``--near-seeds N`` adds N training runs per scenario in which drones and birds spawn within
``--near-distance`` metres, so the training set holds close, large boxes too.

``--tiles-from FRAMES`` instead cuts the train and validation frames of an export into small tiles
at the network's inference scale (``tiles.py``: ~7x cheaper training for few-pixel objects); its
test split stays the full held-out frames of FRAMES.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import yaml

from perception_nodes.flying_objects.classes import training_names
from perception_nodes.flying_objects.tiles import TileConfig, tile_split
from racestack.objects import FLYING_CLASSES

SEED_STRIDE = 1000
VAL_SEED = 999
NEAR_SEED_OFFSET = 500
# Drones and birds are the classes that come close to a race car. In the shipped scenarios they
# spawn 4-120 m away (log-uniform), and 12 % of the training boxes are 32 px or more at 640x480.
NEAR_CLASSES = ("drone", "bird")


@dataclass
class Sample:
    """One exported camera frame: the RGB image, its flying-object boxes and their YOLO label lines."""

    image: np.ndarray
    boxes: np.ndarray
    labels: list[str]
    classes: np.ndarray


def flying_boxes(boxes: np.ndarray) -> np.ndarray:
    """The rows of a BOX2D table that are flying objects (cars are not the detector's business)."""
    return boxes[(boxes["class_id"] >= 1) & (boxes["class_id"] <= len(FLYING_CLASSES))]


def yolo_labels(flying: np.ndarray, width: int, height: int) -> tuple[list[str], np.ndarray]:
    """Label lines (``class cx cy w h``, normalized) and class indices of flying-object boxes."""
    classes = flying["class_id"].astype(np.int64) - 1
    cx = (flying["u_min"] + flying["u_max"]) / 2 / width
    cy = (flying["v_min"] + flying["v_max"]) / 2 / height
    w = (flying["u_max"] - flying["u_min"]) / width
    h = (flying["v_max"] - flying["v_min"]) / height
    lines = [f"{c} {x:.6f} {y:.6f} {bw:.6f} {bh:.6f}" for c, x, y, bw, bh in zip(classes, cx, cy, w, h, strict=True)]
    return lines, classes


def scenario_source(scenario: str, flying_count: int = 0, near: float = 0.0) -> str | dict:
    """The scenario name, or its parsed file with ``flying_objects.count`` replaced (0: as shipped)
    and, where ``near`` > 0, drones and birds spawned within ``near`` metres of the ego."""
    if flying_count <= 0 and near <= 0:
        return scenario
    from simulation.flying_objects import DEFAULT_CLASSES
    from simulation.scenario import scenario_path

    data = yaml.safe_load(scenario_path(scenario).read_text())
    flying = dict(data.get("flying_objects") or {})
    if flying_count > 0:
        flying["count"] = flying_count
    if near > 0:
        weights = flying.get("classes") or {name: spec.weight for name, spec in DEFAULT_CLASSES.items()}
        flying["classes"] = {
            name: {**_class_section(value), "distance": [min(DEFAULT_CLASSES[name].distance[0], near), near]}
            if name in NEAR_CLASSES
            else value
            for name, value in weights.items()
        }
    data["flying_objects"] = flying
    data.setdefault("name", Path(scenario).name)
    return data


def _class_section(value: float | dict) -> dict:
    """A ``flying_objects.classes`` entry as a mapping (a bare number is its weight)."""
    return dict(value) if isinstance(value, dict) else {"weight": float(value)}


def render_samples(
    scenario: str,
    seed: int | None,
    frames: int,
    every: int,
    flying_count: int = 0,
    start: int = 10,
    near: float = 0.0,
) -> Iterator[Sample]:
    """``frames`` camera frames of one run (seed None: the scenario's own), ``every`` frames apart,
    the first after ``start`` frames; ``flying_count`` and ``near`` as in ``scenario_source``."""
    from simulation.simulation import Simulation

    sim = Simulation.from_scenario(scenario_source(scenario, flying_count, near), seed=seed)
    for _ in range(start):
        sim.step_frame()
    for _ in range(frames):
        frame = sim.camera_frame()
        if frame is None:
            raise SystemExit(f"scenario '{scenario}' has no camera (sensors.camera.enabled is false)")
        height, width = frame.image.shape[:2]
        flying = flying_boxes(frame.boxes)
        lines, classes = yolo_labels(flying, width, height)
        yield Sample(frame.image, flying, lines, classes)
        for _ in range(every):
            sim.step_frame()
            if sim.done:
                return


@dataclass(frozen=True)
class Export:
    """How a split's runs are rendered and written (shared by every run of the split)."""

    images: Path
    labels: Path
    frames: int
    every: int
    empty_keep: float
    quality: int
    flying_count: int = 0
    start: int = 10
    near: float = 0.0


def write_run(export: Export, run: tuple[str, int | None]) -> tuple[int, np.ndarray]:
    """Export one run's frames; the images written and their objects per class."""
    scenario, seed = run
    keep_empty = np.random.default_rng(seed or 0)
    counts = np.zeros(len(FLYING_CLASSES), dtype=np.int64)
    written = 0
    kind = "_near" if export.near > 0 else ""
    samples = render_samples(
        scenario, seed, export.frames, export.every, export.flying_count, export.start, export.near
    )
    for index, sample in enumerate(samples):
        if not sample.labels and keep_empty.random() >= export.empty_keep:
            continue
        stem = f"{Path(scenario).name}{kind}_s{'default' if seed is None else seed}_{index:05d}"
        bgr = np.ascontiguousarray(sample.image[:, :, ::-1])
        cv2.imwrite(str(export.images / f"{stem}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, export.quality])
        (export.labels / f"{stem}.txt").write_text("".join(f"{line}\n" for line in sample.labels))
        counts += np.bincount(sample.classes, minlength=len(FLYING_CLASSES))
        written += 1
    return written, counts


def write_split(
    root: Path,
    split: str,
    runs: list[tuple[str, int | None]],
    frames: int,
    every: int,
    empty_keep: float,
    quality: int,
    flying_count: int = 0,
    start: int = 10,
    near: float = 0.0,
    jobs: int = 1,
) -> dict:
    """Export the runs' frames into ``root/images/split`` and ``root/labels/split``; counts per class.

    Runs are independent (each seeds its own simulation), so ``jobs`` processes render them at once
    and the export is the same for any ``jobs``."""
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    export = Export(images, labels, frames, every, empty_keep, quality, flying_count, start, near)
    counts = np.zeros(len(FLYING_CLASSES), dtype=np.int64)
    written = 0
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for (scenario, seed), (run_written, run_counts) in zip(
            runs, pool.map(partial(write_run, export), runs), strict=True
        ):
            written += run_written
            counts += run_counts
            print(f"{split}: {scenario} (seed {seed}): {written} images so far", flush=True)
    return {"images": written, "objects": dict(zip(FLYING_CLASSES, counts.tolist(), strict=True))}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("datasets/detector"), help="output folder")
    parser.add_argument("--scenarios", nargs="*", default=None, help="training scenarios (default: all shipped)")
    parser.add_argument("--heldout", nargs="*", default=None, help="test scenarios (default: all held-out ones)")
    parser.add_argument("--seeds", type=int, default=3, help="training runs per scenario (different seeds)")
    parser.add_argument("--frames", type=int, default=80, help="exported frames per training run")
    parser.add_argument("--val-frames", type=int, default=30, help="exported frames per validation run")
    parser.add_argument("--test-frames", type=int, default=100, help="exported frames per held-out scenario")
    parser.add_argument("--every", type=int, default=12, help="simulator frames between exported frames")
    parser.add_argument("--start", type=int, default=10, help="simulator frames before the first exported one")
    parser.add_argument("--empty-keep", type=float, default=0.1, help="share of frames without objects kept")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality")
    parser.add_argument("--jobs", type=int, default=1, help="runs rendered at once (processes)")
    parser.add_argument("--tiles-from", type=Path, default=None, help="tile this frame export instead of rendering")
    parser.add_argument("--tile", type=int, default=160, help="tile size (pixels, at the inference scale)")
    parser.add_argument("--long-side", type=int, default=416, help="network input long side (inference scale)")
    parser.add_argument(
        "--flying-count",
        type=int,
        default=12,
        help="flying objects around the ego in training/validation runs (0: the scenario's own); test: as shipped",
    )
    parser.add_argument(
        "--near-seeds", type=int, default=0, help="extra training runs per scenario with drones and birds close by"
    )
    parser.add_argument(
        "--near-distance", type=float, default=25.0, help="metres within which the near runs spawn drones and birds"
    )
    parser.add_argument(
        "--first-run",
        type=int,
        default=0,
        help="index of the first training and near run per scenario: extends an export made with fewer runs",
    )


def write_tiles(args: argparse.Namespace) -> int:
    """Tile the train/val splits of a frame export; the test split stays the export's full frames."""
    source, out = args.tiles_from, args.out
    config = TileConfig(size=args.tile, long_side=args.long_side)
    counts = {
        split: tile_split(source, out, split, config, args.quality, seed) for seed, split in enumerate(("train", "val"))
    }
    test = os.path.relpath(source / "images" / "test", out)
    data = {"train": "images/train", "val": "images/val", "test": test, "names": training_names()}
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    manifest = {"command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]), "frames": str(source), "tiles": counts}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"tiles {counts} ({args.tile} px at long side {args.long_side}); data set: {out / 'data.yaml'}")
    return 0


def training_runs(scenarios: list[str], count: int, first: int = 0, offset: int = 0) -> list[tuple[str, int]]:
    """Runs ``first`` .. ``first + count - 1`` of each scenario; run k of an export is run k of any
    larger one, so ``--first-run`` adds new runs to an export without rendering its old ones again."""
    return [(s, (k + 1) * SEED_STRIDE + offset) for s in scenarios for k in range(first, first + count)]


def near_split(out: Path, training: list[str], args: argparse.Namespace, dense: dict) -> dict:
    """The extra training runs with drones and birds close by (none without ``--near-seeds``)."""
    if args.near_seeds <= 0:
        return {}
    if args.near_distance <= 0:
        raise SystemExit(f"--near-distance must be positive, got {args.near_distance:g}")
    runs = training_runs(training, args.near_seeds, args.first_run, NEAR_SEED_OFFSET)
    return {"train_near": write_split(out, "train", runs, args.frames, **dense, near=args.near_distance)}


def run(args: argparse.Namespace) -> int:
    if args.tiles_from is not None:
        return write_tiles(args)
    from simulation.scenario import list_scenarios

    training = args.scenarios if args.scenarios is not None else list_scenarios()
    heldout = args.heldout if args.heldout is not None else list_scenarios(heldout=True)
    leaked = sorted(set(training) & set(heldout)) + [s for s in training if "heldout" in s]
    if leaked:
        raise SystemExit(f"held-out scenario(s) {', '.join(sorted(set(leaked)))} cannot be used for training")
    out = args.out
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be at least 1, got {args.jobs}")
    if args.first_run < 0:
        raise SystemExit(f"--first-run must be 0 or more, got {args.first_run}")
    common = {
        "every": args.every,
        "empty_keep": args.empty_keep,
        "quality": args.quality,
        "start": args.start,
        "jobs": args.jobs,
    }
    dense = {**common, "flying_count": args.flying_count}
    splits = {
        "train": write_split(
            out,
            "train",
            training_runs(training, args.seeds, args.first_run),
            args.frames,
            **dense,
        ),
        **near_split(out, training, args, dense),
        "val": write_split(out, "val", [(s, VAL_SEED) for s in training], args.val_frames, **dense),
        "test": write_split(out, "test", [(s, None) for s in heldout], args.test_frames, **common),
    }
    data = {"train": "images/train", "val": "images/val", "test": "images/test", "names": training_names()}
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    manifest = {
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "training_scenarios": training,
        "test_scenarios": heldout,
        "splits": splits,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for split, summary in splits.items():
        print(f"{split}: {summary['images']} images, objects {summary['objects']}")
    print(f"data set: {out / 'data.yaml'}")
    return 0
