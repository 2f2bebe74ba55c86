"""The ``racestack`` command: each subcommand lives in its own module with configure(parser)/run(args).

Modules are imported only when their command runs, so ``racestack --help`` stays fast and a command
whose heavy dependencies are missing does not break the others.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from functools import partial

from racestack.contexts import share_one_context
from racestack.graph import use_stack_transports
from racestack.process import exit_code, exit_if_stuck, leave, own_process

# command -> (module, one-line help); a dict value groups subcommands (train ppn, export detector...).
COMMANDS: dict[str, tuple[str, str] | dict[str, tuple[str, str]]] = {
    "demo": ("racestack.demo", "closed loop in the simulator with every node, then a report"),
    "launch": ("racestack.launcher", "start a graph of nodes, each in its own process"),
    "sim": ("simulation.cli", "run the simulator alone"),
    "record": ("racestack.bag_record", "record topics to a rosbag2 (MCAP or sqlite3)"),
    "replay": ("racestack.bag_replay", "replay a rosbag2 with /clock"),
    "evaluate": ("racestack.evaluation_cli", "replay a bag through the stack and compute metrics"),
    "ablate": ("racestack.ablation", "compare graph variants on scenarios or bags"),
    "closed-loop": ("planning_nodes.evaluation", "planners driving the simulator headless, scored against the expert"),
    "dataset": ("simulation.datasets", "export training data from simulator runs"),
    "train": {
        "ppn": ("perception_nodes.ppn.training", "BEV segmentation and reconstruction networks"),
        "detector": ("perception_nodes.flying_objects.training", "YOLOv8 flying-object detector"),
        "tracker": ("perception_nodes.tracking.training", "3DMOTFormer tracker"),
        "riskmap": ("planning_nodes.riskmap.training", "risk map transformer"),
        "mpc": ("planning_nodes.mpc.learning", "MPC cost weights from expert driving"),
    },
    "export": ("racestack.export", "export networks to ONNX"),
    "quantize": {"detector": ("perception_nodes.flying_objects.quantization", "int8 ONNX file for the CPU")},
    "build-engines": ("racestack.engines", "build TensorRT engines from the ONNX files"),
    "bench": ("bench.__main__", "run the benchmarks"),
}


def _help_of(entry) -> str:
    return entry[1] if isinstance(entry, tuple) else "one of: " + ", ".join(entry)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # every racestack command talks to nodes the launcher started on the stack's transports
    use_stack_transports()
    # SIGTERM unwinds like Ctrl-C, so every command's clean-up (stopping nodes, closing bags) runs.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    top = argparse.ArgumentParser(prog="racestack", description="racestack: perception and planning for racing")
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    for name, entry in COMMANDS.items():
        commands.add_parser(name, help=_help_of(entry), add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        top.parse_args(argv or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    entry = COMMANDS[name]
    prog = f"racestack {name}"
    if isinstance(entry, dict):
        sub = argparse.ArgumentParser(prog=prog)
        choices = sub.add_subparsers(dest="target", metavar="TARGET")
        for target, (_, text) in entry.items():
            choices.add_parser(target, help=text, add_help=False)
        if not rest or rest[0] not in entry:
            sub.parse_args(rest or ["--help"])
            return 2
        entry, prog, rest = entry[rest[0]], f"{prog} {rest[0]}", rest[1:]
    return exit_code(partial(_run_command, entry, prog, rest), prog)


def _run_command(entry: tuple[str, str], prog: str, rest: list[str]) -> int | None:
    module = importlib.import_module(entry[0])
    parser = argparse.ArgumentParser(prog=prog, description=entry[1])
    module.configure(parser)
    return module.run(parser.parse_args(rest))


def entry() -> None:
    """The ``racestack`` console script: ``main`` in a process of its own."""
    own_process()
    share_one_context()  # the evaluator's probe, recorder and replayer: one participant, never deleted
    code = main()
    if "rclpy" not in sys.modules:
        sys.exit(code)
    exit_if_stuck()
    leave(code)


if __name__ == "__main__":
    entry()
