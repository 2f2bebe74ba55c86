"""``python -m racestack.entry NAME [args]``: run a node by its console-script name or ``module:function``.

The launcher starts nodes this way so they run from any install (venv, colcon) without relying on
where console scripts were put.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from importlib.metadata import entry_points

from racestack.errors import INTERRUPTED_EXIT, interrupted
from racestack.graph import NICE_VARIABLE
from racestack.watchdog import own_process


def resolve(name: str):
    """The callable behind a racestack console script, or a ``module:function`` reference."""
    if ":" in name:
        module, _, func = name.partition(":")
        return getattr(importlib.import_module(module), func)
    for ep in entry_points(group="console_scripts"):
        if ep.name == name and ep.value.split(".")[0] in _PACKAGES:
            return ep.load()
    raise SystemExit(f"racestack: no node entry point named '{name}' (is the package installed?)")


_PACKAGES = {"racestack", "perception_nodes", "planning_nodes", "simulation"}


def main() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # see racestack.cli: never inherit an ignored SIGINT
    own_process()
    nice = os.environ.get(NICE_VARIABLE, "")
    if nice:
        os.nice(int(nice))
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m racestack.entry NAME [--ros-args ...]")
    try:
        target = resolve(sys.argv[1])
        sys.argv = [sys.argv[1], *sys.argv[2:]]
        result = target()
    except BaseException as exc:
        if not interrupted(exc):
            raise
        print(f"racestack: {sys.argv[1]} interrupted", file=sys.stderr)
        result = INTERRUPTED_EXIT
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
