"""``racestack train detector``: YOLOv8 trained with ultralytics, fully offline.

The network is built from ultralytics' model YAML (random initialization, nothing downloaded) or
fine-tuned from a user's .pt checkpoint; the data is any YOLO-format data set (the simulator's
export by default, with its own class names). AMP is off (its check downloads a checkpoint) and
plots are off (they download a font). The best checkpoint is copied to ``--out`` together with
``metrics.json`` (held-out mAP, the exact command, seed) for the model card.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import yaml

from perception_nodes.flying_objects.detector import offline_yolo, use_cpu_threads
from perception_nodes.flying_objects.evaluation import evaluate, report

MODEL_FAMILIES = ("yolov8n", "yolov8s", "yolov8m", "yolov8l", "yolov8x")


def model_source(model: str) -> tuple[str, bool]:
    """(what YOLO() loads, whether it is a checkpoint to fine-tune) for a --model value."""
    if model in MODEL_FAMILIES:
        return f"{model}.yaml", False
    path = Path(model)
    if path.suffix in (".yaml", ".yml"):
        return model, False
    if not path.is_file():
        raise SystemExit(f"--model: '{model}' is neither one of {', '.join(MODEL_FAMILIES)} nor an existing file")
    return str(path), True


def output_name(model: str) -> str:
    """detector_yolov8n for a family, the checkpoint's own stem when fine-tuning (detector_<stem>)."""
    stem = model if model in MODEL_FAMILIES else Path(model).stem
    return stem if stem.startswith("detector_") else f"detector_{stem}"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="datasets/detector/data.yaml", help="YOLO-format data.yaml")
    parser.add_argument("--model", default="yolov8n", help=f"{'|'.join(MODEL_FAMILIES)}, a model YAML or a .pt")
    parser.add_argument("--imgsz", type=int, default=416, help="training image size (long side, multiple of 32)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--minutes", type=float, default=0.0, help="stop after this wall time (0: no limit)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="data-loader processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0: every core)")
    parser.add_argument("--optimizer", default="auto", help="ultralytics optimizer (SGD, AdamW, auto)")
    parser.add_argument("--lr0", type=float, default=0.0, help="initial learning rate (0: ultralytics' choice)")
    parser.add_argument("--lrf", type=float, default=0.01, help="final learning rate as a fraction of --lr0")
    parser.add_argument("--patience", type=int, default=100)
    parser.add_argument("--warmup-epochs", type=float, default=1.0, help="learning-rate warm-up (epochs)")
    parser.add_argument(
        "--nbs", type=int, default=0, help="nominal batch for gradient accumulation (0: = batch, a step per batch)"
    )
    parser.add_argument("--close-mosaic", type=int, default=2, help="last epochs trained without mosaic")
    parser.add_argument("--cache", choices=("none", "ram", "disk"), default="ram", help="cache decoded images")
    parser.add_argument("--fraction", type=float, default=1.0, help="fraction of the training images to use")
    parser.add_argument("--runs", type=Path, default=Path("runs/detector"), help="ultralytics' run folder")
    parser.add_argument("--name", default="", help="run name (default: the model name)")
    parser.add_argument(
        "--out", type=Path, default=None, help="where the checkpoint goes (default models/detector_<model>)"
    )
    parser.add_argument("--eval-split", default="test", help="split scored after training (held-out scenarios)")
    parser.add_argument(
        "--eval-imgsz", type=int, default=0, help="image size of that evaluation (0: --imgsz; tiles: the node's 416)"
    )
    parser.add_argument("--scale", type=float, default=0.5, help="scale augmentation (+/- gain)")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")


def train(args: argparse.Namespace) -> Path:
    """Train and return the best checkpoint ultralytics kept."""
    YOLO = offline_yolo()
    read_results_without_polars_if_missing()
    source, fine_tune = model_source(args.model)
    name = args.name or Path(source).stem
    options = {
        "data": str(args.data),
        "epochs": args.epochs,
        "imgsz": args.imgsz,
        "batch": args.batch,
        "workers": args.workers,
        "seed": args.seed,
        "deterministic": True,
        "device": args.device,
        "optimizer": args.optimizer,
        "patience": args.patience,
        "close_mosaic": args.close_mosaic,
        "warmup_epochs": args.warmup_epochs,
        "scale": args.scale,
        "lrf": args.lrf,
        "nbs": args.nbs or args.batch,
        "fraction": args.fraction,
        "cache": False if args.cache == "none" else args.cache,
        "project": str(args.runs.resolve()),
        "name": name,
        "exist_ok": True,
        "amp": False,
        "plots": False,
        "pretrained": fine_tune,
        "verbose": True,
    }
    if args.minutes > 0:
        options["time"] = args.minutes / 60.0
    if args.lr0 > 0:
        options["lr0"] = args.lr0
    model = YOLO(source, task="detect")
    use_cpu_threads(model, args.threads)
    model.train(**options)
    return Path(model.trainer.best if Path(model.trainer.best).is_file() else model.trainer.last)


def read_results_without_polars_if_missing() -> None:
    """ultralytics reads its results.csv with polars when it saves a checkpoint; where polars is not
    installed (a GPU machine's own Python: its runtime is a 54 MB wheel), the csv module reads it."""
    try:
        import polars  # noqa: F401
    except ImportError:
        from ultralytics.engine.trainer import BaseTrainer

        BaseTrainer.read_results_csv = results_as_columns


def results_as_columns(trainer) -> dict[str, list[float]]:
    """The trainer's results.csv as {column: values}, what ultralytics stores in its checkpoints."""
    try:
        with open(trainer.csv, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return {}
    return {name.strip(): [float(row[name]) for row in rows] for name in rows[0]} if rows else {}


def torch_threads() -> int:
    """The threads torch ran on: what the model card's training time was measured with."""
    import torch

    return torch.get_num_threads()


def run(args: argparse.Namespace) -> int:
    started = time.time()
    best = train(args)
    out = args.out or Path("models") / output_name(args.model)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "weights.pt"
    shutil.copyfile(best, checkpoint)
    record = {
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "data": str(args.data),
        "classes": yaml.safe_load(Path(args.data).read_text()).get("names"),
        "model": args.model,
        "imgsz": args.imgsz,
        "seed": args.seed,
        "torch_threads": torch_threads(),
        "train_minutes": round((time.time() - started) / 60.0, 1),
        "checkpoint": str(checkpoint),
        "checkpoint_mb": round(checkpoint.stat().st_size / 2**20, 2),
    }
    if not args.no_eval:
        result = evaluate(
            checkpoint, args.data, args.eval_split, args.eval_imgsz or args.imgsz, args.device, args.threads
        )
        print(report(result))
        record["evaluation"] = result
    (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"checkpoint: {checkpoint} ({record['checkpoint_mb']} MB); figures: {out / 'metrics.json'}")
    return 0
