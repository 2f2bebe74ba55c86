"""mAP50 and mAP50-95 of a detector checkpoint on a YOLO-format split.

Two scorings: ultralytics' validator (every labelled box counts), and the node's own pipeline
(``FlyingObjectDetector`` on ONNX Runtime at the node's input size) scored by ``metrics.mean_ap``,
both with every box and with boxes under ``--min-size`` pixels ignored (COCO area-range rule).
The two differ by their NMS, not their metric: ultralytics' validator keeps every class above the
confidence floor for a box (multi-label NMS: 6915 boxes on the held-out split), the node one class
per box (3916, the same boxes as ultralytics' own predictor). Scored by ``metrics.mean_ap``, the
validator's boxes give its mAP50 (0.358 against its 0.355), and its boxes with their best class only
give the node's (0.290 against 0.302).
``python -m perception_nodes.flying_objects.evaluation --weights W --data D --split test`` prints
them; ``racestack train detector`` calls the same function on the held-out split after training,
so the model card and this command report the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import yaml

from perception_nodes.flying_objects.classes import global_class_ids
from perception_nodes.flying_objects.detector import DetectorConfig, FlyingObjectDetector, offline_yolo, use_cpu_threads
from perception_nodes.flying_objects.metrics import ImageResult, mean_ap
from perception_nodes.flying_objects.postprocess import Thresholds
from perception_nodes.flying_objects.preprocess import camera_input_size
from perception_nodes.flying_objects.tiles import read_labels

MAP50_TARGET = 0.8
MIN_SIZE = 12.0


def split_images(data_yaml: Path, split: str) -> list[Path]:
    """The image files of a split (folders of images or text files of paths)."""
    config = yaml.safe_load(Path(data_yaml).read_text())
    root = Path(data_yaml).parent / config.get("path", "")
    entries = config.get(split)
    if entries is None:
        raise ValueError(f"{data_yaml} has no '{split}' split")
    images: list[Path] = []
    for entry in entries if isinstance(entries, list) else [entries]:
        path = root / entry
        if path.is_dir():
            images += sorted(p for p in path.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        elif path.is_file():
            images += [Path(line.strip()) for line in path.read_text().splitlines() if line.strip()]
    return images


def label_path(image: Path) -> Path:
    """YOLO convention: .../images/<split>/name.jpg -> .../labels/<split>/name.txt."""
    parts = list(image.parts)
    index = len(parts) - 1 - parts[::-1].index("images")
    return Path(*parts[:index], "labels", *parts[index + 1 :]).with_suffix(".txt")


def pipeline_results(weights: str | Path, images: list[Path], names: list[str], long_side: int) -> list[ImageResult]:
    """The node's pipeline (ONNX Runtime, conf 0.001) on every image, with its ground truth."""
    ids = global_class_ids(names)
    detector = None
    results = []
    for path in images:
        image = cv2.imread(str(path))
        if detector is None:
            detector = FlyingObjectDetector(
                DetectorConfig(
                    weights=str(weights),
                    backend="onnxruntime",
                    input_size=camera_input_size(image.shape[:2], long_side),
                    thresholds=Thresholds(confidence=0.001, iou=0.7, max_detections=300),
                ),
                log=lambda _: None,
            )
        table = detector.detect(image, bgr=True)
        classes, boxes = read_labels(label_path(path), image.shape[1], image.shape[0])
        found = np.stack([table["u_min"], table["v_min"], table["u_max"], table["v_max"]], axis=1)
        results.append(ImageResult(found, table["score"], table["class_id"], boxes, ids[classes]))
    return results


def evaluate(
    weights: str | Path,
    data: str | Path,
    split: str = "test",
    imgsz: int = 416,
    device: str = "cpu",
    threads: int = 0,
) -> dict:
    """mAP50, mAP50-95 and per-class mAP50-95 of ``weights`` on ``split`` of ``data``."""
    YOLO = offline_yolo()
    model = YOLO(str(weights), task="detect")
    use_cpu_threads(model, threads)
    metrics = model.val(
        data=str(data), split=split, imgsz=imgsz, batch=8, device=device, plots=False, workers=0, verbose=False
    )
    names = metrics.names
    per_class = {
        names[int(c)]: round(float(m), 4)
        for c, m in zip(metrics.ap_class_index, metrics.box.maps[metrics.ap_class_index], strict=True)
    }
    images = split_images(Path(data), split)
    data_names = [str(n) for n in _names(yaml.safe_load(Path(data).read_text())["names"])]
    results = pipeline_results(weights, images, data_names, imgsz)
    class_ids = sorted(set(global_class_ids(data_names).tolist()))
    return {
        "split": split,
        "images": len(images),
        "imgsz": imgsz,
        "map50": round(float(metrics.box.map50), 4),
        "map50_95": round(float(metrics.box.map), 4),
        "precision": round(float(metrics.box.mp), 4),
        "recall": round(float(metrics.box.mr), 4),
        "map50_95_per_class": per_class,
        "pipeline": _rounded(mean_ap(results, class_ids)),
        "pipeline_min_size": MIN_SIZE,
        "pipeline_sized": _rounded(mean_ap(results, class_ids, MIN_SIZE)),
    }


def _names(names) -> list:
    return [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)


def _rounded(figures: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}


def report(result: dict) -> str:
    verdict = "meets" if result["map50"] >= MAP50_TARGET else "BELOW"
    lines = [
        f"split {result['split']}: {result['images']} images at imgsz {result['imgsz']}",
        f"mAP50     {result['map50']:.4f}   (target >= {MAP50_TARGET}: {verdict})",
        f"mAP50-95  {result['map50_95']:.4f}",
        f"precision {result['precision']:.4f}   recall {result['recall']:.4f}",
    ]
    lines += [f"  {name:<12} mAP50-95 {value:.4f}" for name, value in result["map50_95_per_class"].items()]
    for key, label in (
        ("pipeline", "all boxes"),
        ("pipeline_sized", f"boxes < {result['pipeline_min_size']:g} px ignored"),
    ):
        figures = result[key]
        lines.append(
            f"node pipeline (ONNX Runtime), {label}: mAP50 {figures['map50']:.4f}, mAP50-95 {figures['map50_95']:.4f}, "
            f"{figures['objects']} objects, AP50 per class id {figures['ap50_per_class']}"
        )
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default="models/detector_yolov8n/weights.pt", help="checkpoint")
    parser.add_argument("--data", default="datasets/detector/data.yaml", help="YOLO data.yaml")
    parser.add_argument("--split", default="test", help="split to evaluate (test = held-out scenarios)")
    parser.add_argument("--imgsz", type=int, default=416, help="evaluation image size (long side)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")


def run(args: argparse.Namespace) -> int:
    result = evaluate(args.weights, args.data, args.split, args.imgsz, args.device)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perception_nodes.flying_objects.evaluation", description=__doc__)
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
