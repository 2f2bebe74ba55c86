"""Small training tiles cut from full frames at the network's inference scale.

Flying objects cover a few pixels of a mostly empty frame, so a full 416-pixel training image is
mostly background. Tiles of e.g. 160 x 160 pixels, cut around the objects from the frame scaled
exactly as the node scales it (long side = the network input's long side), keep every object at
the size the network sees at inference while costing ~7x less to train on; a share of tiles is
drawn anywhere, for backgrounds. Objects of rare classes get more tiles (at other offsets), so a
long-lived helicopter seen in many frames does not crowd out the drones and birds. Training on
tiles uses ``imgsz`` = the tile size (no rescaling); evaluation stays on full frames at the
inference size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MIN_VISIBLE = 0.4


@dataclass(frozen=True)
class TileConfig:
    size: int = 160
    long_side: int = 416
    per_frame: int = 2
    background: float = 0.3


def read_labels(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes (N,), boxes (N, 4) x0 y0 x1 y1 in pixels) of a YOLO label file."""
    rows = np.loadtxt(path, ndmin=2) if path.is_file() and path.stat().st_size else np.zeros((0, 5))
    centre, size = rows[:, 1:3] * (width, height), rows[:, 3:5] * (width, height)
    return rows[:, 0].astype(np.int64), np.hstack([centre - size / 2, centre + size / 2])


def tile_origins(
    boxes: np.ndarray, shape: tuple[int, int], config: TileConfig, rng: np.random.Generator, repeats: np.ndarray
) -> list:
    """Top-left corners of the tiles of one scaled frame: ``repeats[i]`` tiles (at random offsets)
    around each of up to ``per_frame`` objects not yet inside a tile, plus maybe one anywhere."""
    height, width = shape
    size = config.size
    origins = []
    covered = np.zeros(len(boxes), dtype=bool)
    for i in rng.permutation(len(boxes))[: config.per_frame]:
        if covered[i]:
            continue
        for _ in range(int(repeats[i])):
            origin = (
                _start(boxes[i, 0], boxes[i, 2], size, width, rng),
                _start(boxes[i, 1], boxes[i, 3], size, height, rng),
            )
            origins.append(origin)
            inside = (boxes[:, 0] >= origin[0]) & (boxes[:, 2] <= origin[0] + size)
            covered |= inside & (boxes[:, 1] >= origin[1]) & (boxes[:, 3] <= origin[1] + size)
    if rng.random() < config.background or not origins:
        origins.append((int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))))
    return origins


def _start(low: float, high: float, size: int, limit: int, rng: np.random.Generator) -> int:
    """A tile start along one axis that keeps [low, high] inside the tile (centred if it cannot)."""
    first, last = max(0.0, high - size), min(low, limit - size)
    start = rng.uniform(first, last) if first <= last else (low + high - size) / 2
    return int(np.clip(start, 0, limit - size))


def cut_tiles(
    image: np.ndarray,
    classes: np.ndarray,
    boxes: np.ndarray,
    config: TileConfig,
    rng: np.random.Generator,
    class_repeats: np.ndarray | None = None,
) -> list[tuple[np.ndarray, list[str]]]:
    """(tile image, YOLO label lines) for each tile of one frame (boxes in the frame's pixels).

    ``class_repeats`` (per class index): how many tiles are cut around each object of the class.
    """
    scale = config.long_side / max(image.shape[:2])
    scaled_size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    scaled = cv2.resize(image, scaled_size, interpolation=cv2.INTER_LINEAR)
    boxes = boxes * scale
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    out = []
    repeats = np.ones(len(classes), dtype=np.int64) if class_repeats is None else class_repeats[classes]
    for u, v in tile_origins(boxes, scaled.shape[:2], config, rng, repeats):
        clipped = np.clip(boxes - [u, v, u, v], 0, config.size)
        visible = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), axis=1)
        keep = visible >= MIN_VISIBLE * np.maximum(areas, 1e-6)
        centre = (clipped[keep, :2] + clipped[keep, 2:]) / 2 / config.size
        extent = (clipped[keep, 2:] - clipped[keep, :2]) / config.size
        lines = [
            f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}"
            for c, (x, y), (w, h) in zip(classes[keep], centre, extent, strict=True)
        ]
        out.append((scaled[v : v + config.size, u : u + config.size], lines))
    return out


def balancing_repeats(classes: list[np.ndarray], cap: int = 4) -> np.ndarray:
    """Tiles per object of each class: about (objects of the commonest class) / (objects of this one)."""
    counts = np.bincount(np.concatenate([*classes, np.zeros(0, np.int64)]).astype(np.int64))
    return np.clip(np.round(counts.max(initial=1) / np.maximum(counts, 1)), 1, cap).astype(np.int64)


def tile_split(source: Path, target: Path, split: str, config: TileConfig, quality: int, seed: int) -> int:
    """Tile every frame of ``source/images/split`` into ``target``; the number of tiles written."""
    images, labels = target / "images" / split, target / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = sorted((source / "images" / split).glob("*.jpg"))
    label_files = [source / "labels" / split / f"{f.stem}.txt" for f in frames]
    repeats = balancing_repeats([read_labels(f, 1, 1)[0] for f in label_files])
    written = 0
    for frame_path, label_file in zip(frames, label_files, strict=True):
        frame = cv2.imread(str(frame_path))
        classes, boxes = read_labels(label_file, frame.shape[1], frame.shape[0])
        for k, (tile, lines) in enumerate(cut_tiles(frame, classes, boxes, config, rng, repeats)):
            cv2.imwrite(str(images / f"{frame_path.stem}_t{k}.jpg"), tile, [cv2.IMWRITE_JPEG_QUALITY, quality])
            (labels / f"{frame_path.stem}_t{k}.txt").write_text("".join(f"{line}\n" for line in lines))
            written += 1
    return written
