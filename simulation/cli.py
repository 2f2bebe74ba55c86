"""``racestack sim``: run the simulator node alone (the same node the launcher starts).

    racestack sim --scenario oval_pack                # real time, the expert drives, stops at the end
    racestack sim --scenario circuit_a --lockstep --drive command   # wait for the stack each frame
    racestack sim --list                              # the shipped scenarios
"""

from __future__ import annotations

import argparse

from racestack.graph import use_stack_transports
from simulation.scenario import list_scenarios


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="oval_pack", help="scenario name in config/scenarios or a YAML path")
    parser.add_argument("--list", action="store_true", help="list the shipped scenarios and exit")
    parser.add_argument("--duration", type=float, default=0.0, help="simulated seconds (0: the scenario's)")
    parser.add_argument("--forever", action="store_true", help="run until interrupted")
    parser.add_argument("--lockstep", action="store_true", help="step only when the stack answered each frame")
    parser.add_argument("--timeout", type=float, default=1.0, help="lockstep: seconds to wait for a command")
    parser.add_argument("--drive", choices=("expert", "command"), default="expert", help="who drives the ego")
    parser.add_argument("--rate", type=float, default=0.0, help="frame rate in Hz (0: the scenario's)")
    parser.add_argument("--seed", type=int, default=-1, help="replace the scenario's seed")
    parser.add_argument("--realtime-factor", type=float, default=1.0, help="simulated seconds per wall second")
    parser.add_argument("--no-lidar", action="store_true", help="do not publish the LiDAR")
    parser.add_argument("--no-camera", action="store_true", help="do not publish the camera")
    parser.add_argument("--no-ground-truth", action="store_true", help="do not publish ground-truth topics")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE", help="any node parameter")


def ros_arguments(args: argparse.Namespace) -> list[str]:
    """The node's ``--ros-args`` for these options."""
    params = {
        "scenario": args.scenario,
        "duration": -1.0 if args.forever else float(args.duration),
        "exit_at_end": "true",
        "clock_mode": "lockstep" if args.lockstep else "realtime",
        "lockstep_timeout": float(args.timeout),
        "drive": args.drive,
        "rate": float(args.rate),
        "seed": int(args.seed),
        "realtime_factor": float(args.realtime_factor),
        "publish_lidar": str(not args.no_lidar).lower(),
        "publish_camera": str(not args.no_camera).lower(),
        "publish_ground_truth": str(not args.no_ground_truth).lower(),
        "publish_bev_labels": str(not args.no_ground_truth).lower(),
    }
    out = ["simulator", "--ros-args"]
    for name, value in params.items():
        out += ["-p", f"{name}:={value}"]
    for item in args.param:
        out += ["-p", item]
    return out


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name in list_scenarios() + list_scenarios(heldout=True):
            print(name)
        return 0
    use_stack_transports()
    from racestack.node import run_node
    from simulation.sim_node import SimulatorNode

    return run_node(SimulatorNode, ros_arguments(args))
