"""Average the weights of ultralytics detector checkpoints of one architecture.

Two fine-tunes from one parent sit in the same basin, and their mean often scores above either
(the model card's stage 16: stage 13 and its fine-tune on twice the data). Usage:
``python -m perception_nodes.flying_objects.averaging A.pt B.pt --out MEAN.pt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def load_checkpoint(path: Path) -> dict:
    """An ultralytics checkpoint (a dict holding the module under ``model``); a clear error otherwise."""
    if not path.is_file():
        raise SystemExit(f"checkpoint not found: {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), torch.nn.Module):
        raise SystemExit(f"{path} is not an ultralytics checkpoint (no 'model' module)")
    return checkpoint


def network(checkpoint: dict) -> torch.nn.Module:
    """The weights ultralytics would load: the EMA of a mid-training checkpoint, else the model."""
    ema = checkpoint.get("ema")
    return ema if isinstance(ema, torch.nn.Module) else checkpoint["model"]


def average_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mean of each floating-point tensor (computed in float32, stored in its own dtype); counters
    such as BatchNorm's ``num_batches_tracked`` are taken from the first state."""
    keys = states[0].keys()
    for index, state in enumerate(states[1:], start=1):
        if state.keys() != keys or any(state[k].shape != states[0][k].shape for k in keys):
            raise SystemExit(f"checkpoint {index + 1} has another architecture than the first")
    return {
        key: torch.stack([s[key].float() for s in states]).mean(0).to(value.dtype)
        if value.is_floating_point()
        else value
        for key, value in states[0].items()
    }


def average_checkpoints(paths: list[Path]) -> dict:
    """The last checkpoint with its model's weights replaced by the mean over ``paths``."""
    if len(paths) < 2:
        raise SystemExit("averaging needs at least two checkpoints")
    checkpoints = [load_checkpoint(p) for p in paths]
    networks = [network(c) for c in checkpoints]
    result = checkpoints[-1]
    result["model"] = networks[-1]
    result["model"].load_state_dict(average_state([n.state_dict() for n in networks]))
    result["ema"] = None
    result["averaged_from"] = [str(p) for p in paths]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perception_nodes.flying_objects.averaging", description=__doc__)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="ultralytics .pt files of one architecture")
    parser.add_argument("--out", type=Path, required=True, help="where the averaged checkpoint goes")
    args = parser.parse_args(argv)
    averaged = average_checkpoints(args.checkpoints)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(averaged, args.out)
    print(f"mean of {len(args.checkpoints)} checkpoints: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
