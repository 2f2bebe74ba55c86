"""Helpers shared by the tests: start graphs through the real launcher, find the real data."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
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
    heard: bool = True,
    **resolve_kwargs: Any,
) -> Iterator[LaunchSession]:
    """Start a graph given inline (slot -> node(s)) as real processes, each heard from (``heard``);
    stop them all afterwards. Tests whose nodes are meant to fail at start-up pass ``heard=False``:
    there is nothing to hear from them."""
    graph = resolve_graph({"name": "test", "slots": slots, "parameters": parameters or {}}, **resolve_kwargs)
    with tempfile.TemporaryDirectory(prefix="racestack-test-") as run_dir:
        session = LaunchSession(graph_to_processes(graph, run_dir), echo=echo or (lambda line: None))
        session.start()
        try:
            if heard:
                _restart_silent_nodes(session)
            yield session
        finally:
            session.stop()


DISCOVERY_S = 60.0  # a peer's endpoint seen by the probe: seconds on a loaded 2-core machine, rarely tens
HEARD_TIMEOUT_S = 60.0  # a loaded machine takes seconds to load a model and send the first diagnostics


def _restart_silent_nodes(session: LaunchSession) -> None:
    """A node whose messages reach no one, or that has not matched a peer, is restarted before the
    test starts, as the evaluation runner does (``racestack.liveness``); one that exits is the test's."""
    from racestack.liveness import Heartbeats, ensure_live
    from racestack.probe import Probe

    with Probe("test_liveness_probe") as probe:
        problem = ensure_live(session, Heartbeats(probe), session.running(), heard_timeout_s=HEARD_TIMEOUT_S,
                              link_timeout_s=HEARD_TIMEOUT_S)
    assert problem is None, problem


def wait_or_restart(session: LaunchSession, ready, names: list[str], timeout_s: float = DISCOVERY_S) -> bool:
    """``ready()`` within the timeout, or else after the named nodes are restarted once."""
    from racestack.liveness import ready_or_restarted

    return ready_or_restarted(session, ready, timeout_s, lambda: names)


def diagnostics_values(messages: list, node_name: str) -> dict[str, str]:
    """Key/values of the latest DiagnosticStatus of ``node_name`` among DiagnosticArray messages."""
    for msg in reversed(messages):
        for status in msg.status:
            if status.name.lstrip("/") == node_name:
                return {kv.key: kv.value for kv in status.values}
    return {}


def links_matched(diagnostics, node_name: str, inputs: list[str] = (), outputs: list[str] = ()) -> bool:
    """True once ``node_name`` reports a matched writer on each input and a matched reader on each
    output (its diagnostics): a sample sent before its reader matched the writer is lost to it."""
    from racestack.node import MATCHED_PUBLISHERS, MATCHED_SUBSCRIBERS

    values = diagnostics_values(diagnostics.messages(), node_name)
    return (all(int(values.get(MATCHED_PUBLISHERS + t, 0)) >= 1 for t in inputs)
            and all(int(values.get(MATCHED_SUBSCRIBERS + t, 0)) >= 1 for t in outputs))


def print_niceness() -> int:
    """A ``racestack.entry`` target for tests: this process's CPU niceness."""
    print(os.nice(0))
    return 0


STACKS_GRACE_S = 3.0


def run_command(
    cmd: list[str], timeout: float, meanwhile: Callable[[subprocess.Popen], None] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess:
    """``subprocess.run`` with output captured; a command still running after ``timeout`` fails the
    test showing its output and stacks (``stuck``). ``meanwhile`` runs once the process has started."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs) as process:
        if meanwhile is not None:
            meanwhile(process)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise stuck(process, f"still running after {timeout:.0f} s") from None
    return subprocess.CompletedProcess(cmd, process.returncode, stdout, stderr)


def thread_states(pid: int) -> str:
    """Each thread's name, state and kernel wait channel: where a native thread waits, which Python's
    stacks do not show."""
    states = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            states.append(f"{(task / 'comm').read_text().strip()} {state} {(task / 'wchan').read_text() or '-'}")
        except OSError:
            continue
    return "; ".join(states)


def stuck(process: subprocess.Popen, what: str) -> AssertionError:
    """Asks a process that should have ended for its stacks (racestack processes print them on
    SIGUSR1), kills it, and says where it was."""
    states = thread_states(process.pid)
    process.send_signal(signal.SIGUSR1)
    try:
        stdout, stderr = process.communicate(timeout=STACKS_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    output = f"{(stdout or '')[-3000:]}\n{(stderr or '')[-8000:]}"
    return AssertionError(
        f"{' '.join(map(str, process.args))} {what}; its threads (name, state, wait): {states}; "
        f"its output and stacks:\n{output}"
    )


def absent_modules_code(*names: str) -> str:
    """Python source that makes ``names`` (top-level packages) fail to import in the process that runs
    it, as on a machine without them (a GPU machine's own Python has neither rclpy nor polars)."""
    return (
        "import sys\n"
        "class _Absent:\n"
        "    def find_spec(self, name, path, target=None):\n"
        f"        if name.split('.')[0] in {tuple(names)!r}:\n"
        "            raise ImportError(f'no module named {name!r} (absent in this test)')\n"
        "sys.meta_path.insert(0, _Absent())\n"
    )
