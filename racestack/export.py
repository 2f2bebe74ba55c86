"""``racestack export <network|all>``: ONNX files with named I/O, verified against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from racestack.inference import check_model_file, export_onnx, onnx_path_for, parity
from racestack.networks import NETWORKS, resolve_networks


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("networks", nargs="*", default=["all"], help=f"one or more of: all, {', '.join(NETWORKS)}")
    parser.add_argument("-o", "--output", default="", help="folder for the ONNX files (default: the cache)")
    parser.add_argument("--checkpoint", default="", help="checkpoint to export (one network only)")
    parser.add_argument("--list", action="store_true", help="list the networks and their checkpoints")


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name, entry in NETWORKS.items():
            print(f"{name:<22} models/{entry.checkpoint}")
        return 0
    failures = 0
    for spec, checkpoint in resolve_networks(args.networks, args.checkpoint):
        check_model_file(checkpoint)
        out = Path(args.output) / f"{spec.name}.onnx" if args.output else onnx_path_for(spec, checkpoint)
        export_onnx(spec, checkpoint, out, verify=False)
        difference = parity(spec, checkpoint, out)
        verdict = "ok" if difference <= spec.tolerance else "MISMATCH"
        failures += verdict != "ok"
        print(f"{spec.name:<22} {out}  max |onnxruntime - torch| = {difference:.2e} "
              f"(tolerance {spec.tolerance:.0e}) {verdict}")
    return 1 if failures else 0
