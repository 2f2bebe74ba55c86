"""mAP50 and mAP50-95 of a detector checkpoint on a YOLO-format split (ultralytics' validator).

``python -m perception_nodes.flying_objects.evaluation --weights W --data D --split test`` prints
the figures; ``racestack train detector`` calls the same function on the held-out split after
training, so the model card and this command report the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from perception_nodes.flying_objects.detector import offline_yolo

MAP50_TARGET = 0.8


def split_images(data_yaml: Path, split: str) -> int:
    """How many images the split lists (a folder of images or a text file of paths)."""
    config = yaml.safe_load(Path(data_yaml).read_text())
    root = Path(config.get("path") or Path(data_yaml).parent)
    if not root.is_absolute():
        root = Path(data_yaml).parent / root
    entries = config.get(split)
    if entries is None:
        raise ValueError(f"{data_yaml} has no '{split}' split")
    total = 0
    for entry in entries if isinstance(entries, list) else [entries]:
        path = root / entry
        if path.is_dir():
            total += sum(1 for p in path.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        elif path.is_file():
            total += sum(1 for line in path.read_text().splitlines() if line.strip())
    return total


def evaluate(weights: str | Path, data: str | Path, split: str = "test", imgsz: int = 416, device: str = "cpu") -> dict:
    """mAP50, mAP50-95 and per-class mAP50-95 of ``weights`` on ``split`` of ``data``."""
    YOLO = offline_yolo()
    model = YOLO(str(weights), task="detect")
    metrics = model.val(
        data=str(data), split=split, imgsz=imgsz, batch=8, device=device, plots=False, workers=0, verbose=False
    )
    names = metrics.names
    per_class = {
        names[int(c)]: round(float(m), 4)
        for c, m in zip(metrics.ap_class_index, metrics.box.maps[metrics.ap_class_index], strict=True)
    }
    return {
        "split": split,
        "images": split_images(Path(data), split),
        "imgsz": imgsz,
        "map50": round(float(metrics.box.map50), 4),
        "map50_95": round(float(metrics.box.map), 4),
        "precision": round(float(metrics.box.mp), 4),
        "recall": round(float(metrics.box.mr), 4),
        "map50_95_per_class": per_class,
    }


def report(result: dict) -> str:
    verdict = "meets" if result["map50"] >= MAP50_TARGET else "BELOW"
    lines = [
        f"split {result['split']}: {result['images']} images at imgsz {result['imgsz']}",
        f"mAP50     {result['map50']:.4f}   (target >= {MAP50_TARGET}: {verdict})",
        f"mAP50-95  {result['map50_95']:.4f}",
        f"precision {result['precision']:.4f}   recall {result['recall']:.4f}",
    ]
    lines += [f"  {name:<12} mAP50-95 {value:.4f}" for name, value in result["map50_95_per_class"].items()]
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
