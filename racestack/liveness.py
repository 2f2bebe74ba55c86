"""Whether each node's messages reach anyone, and a restart for one whose messages do not.

On this kind of machine Fast DDS has (rarely, under load) started a node process whose discovery
works — its topics are advertised and matched — but whose published samples reach no other process,
even over shared memory on one host (eProsima/Fast-DDS#5244 describes the same symptom). The stack
then waits for ever for that node's outputs. Every racestack node publishes /diagnostics on a timer,
so a node not heard from once its outputs are advertised is such a process: it is restarted once
(a new process gets new transport resources) and named if it stays silent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection

from diagnostic_msgs.msg import DiagnosticArray

from racestack.launcher import LaunchSession
from racestack.probe import Probe

HEARD_TIMEOUT_S = 15.0  # diagnostics come every second; a loaded machine delays the first ones


class Heartbeats:
    """The nodes whose /diagnostics have reached this probe."""

    def __init__(self, probe: Probe) -> None:
        self._names: set[str] = set()
        self._lock = threading.Lock()
        probe.collect(DiagnosticArray, "/diagnostics", keep=1, callback=self._on_diagnostics)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self._lock:
            self._names.update(status.name.lstrip("/") for status in msg.status)

    def forget(self, names: Collection[str]) -> None:
        with self._lock:
            self._names.difference_update(names)

    def silent(self, names: Collection[str]) -> list[str]:
        with self._lock:
            return sorted(set(names) - self._names)

    def wait(self, session: LaunchSession, names: Collection[str], timeout_s: float,
             alive: Callable[[], bool] = lambda: True) -> list[str]:
        """The running nodes among ``names`` not heard from after ``timeout_s`` (sooner if ``alive``
        fails); a node that exited is the launcher's to report, not a silent one."""
        deadline = time.monotonic() + timeout_s
        while alive():
            running = set(session.running())
            silent = [name for name in self.silent(names) if name in running]
            if not silent or time.monotonic() >= deadline:
                return silent
            time.sleep(0.05)
        return []


def restart_silent(session: LaunchSession, heartbeats: Heartbeats, names: Collection[str],
                   timeout_s: float = HEARD_TIMEOUT_S, alive: Callable[[], bool] = lambda: True) -> list[str]:
    """Waits to hear from every node in ``names``, restarting the silent ones once; those still silent."""
    silent = heartbeats.wait(session, names, timeout_s, alive)
    if not silent:
        return []
    session.echo(f"[racestack launch] nothing from {', '.join(silent)} reaches other processes after "
                 f"{timeout_s:.0f} s (no /diagnostics: a DDS transport fault); restarting")
    heartbeats.forget(silent)
    session.restart(silent)
    return heartbeats.wait(session, silent, timeout_s, alive)
