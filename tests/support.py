"""Helpers shared by the tests: start graphs through the real launcher, find the real data."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from racestack.graph import graph_to_processes, resolve_graph
from racestack.launcher import LaunchSession

REPO = Path(__file__).resolve().parent.parent
REAL_DATA = Path(os.environ.get("RACESTACK_REAL_DATA", REPO.parent / "shared" / "data" / "real"))


@contextmanager
def launched(
    slots: dict[str, Any],
    parameters: dict[str, Any] | None = None,
    echo=None,
    **resolve_kwargs: Any,
) -> Iterator[LaunchSession]:
    """Start a graph given inline (slot -> node(s)) as real processes; stop them all afterwards."""
    graph = resolve_graph({"name": "test", "slots": slots, "parameters": parameters or {}}, **resolve_kwargs)
    with tempfile.TemporaryDirectory(prefix="racestack-test-") as run_dir:
        session = LaunchSession(graph_to_processes(graph, run_dir), echo=echo or (lambda line: None))
        session.start()
        try:
            yield session
        finally:
            session.stop()


def diagnostics_values(messages: list, node_name: str) -> dict[str, str]:
    """Key/values of the latest DiagnosticStatus of ``node_name`` among DiagnosticArray messages."""
    for msg in reversed(messages):
        for status in msg.status:
            if status.name.lstrip("/") == node_name:
                return {kv.key: kv.value for kv in status.values}
    return {}


def print_niceness() -> int:
    """A ``racestack.entry`` target for tests: this process's CPU niceness."""
    print(os.nice(0))
    return 0
