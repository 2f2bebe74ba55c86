"""``python -m racestack.entry NAME [args]``: run a node by its console-script name or ``module:function``.

The launcher starts nodes this way so they run from any install (venv, colcon) without relying on
where console scripts were put.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points

from racestack.graph import NICE_VARIABLE
from racestack.process import exit_code, own_process


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
    own_process()
    nice = os.environ.get(NICE_VARIABLE, "")
    if nice:
        os.nice(int(nice))
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m racestack.entry NAME [--ros-args ...]")
    name = sys.argv[1]
    sys.argv = [name, *sys.argv[2:]]
    sys.exit(exit_code(lambda: resolve(name)(), f"racestack: {name}"))


if __name__ == "__main__":
    main()
