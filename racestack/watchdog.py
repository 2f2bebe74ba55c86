"""An exit watchdog for racestack's own processes: a process that cannot leave says why and leaves.

Deleting a DDS participant (last node destroyed, or the interpreter's exit) can block for ever in
Fast DDS when TCP (LARGE_DATA) channels to a busy peer are still open. A process that does not end
after its work is done holds a launcher, a test or the car's stack hostage.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import sys

SHUTDOWN_LIMIT_S = 15.0

_OWNED_PROCESS: set[int] = set()  # pids whose racestack entry point owns the process


def own_process() -> None:
    """Called by the entry points (the ``racestack`` command, a node's process): ``exit_if_stuck``
    may end this process. Library callers (tests, notebooks) are never ended by it."""
    _OWNED_PROCESS.add(os.getpid())


def exit_if_stuck(limit_s: float = SHUTDOWN_LIMIT_S) -> None:
    """From now on, a process still running after ``limit_s`` prints every thread's stack and exits 1.

    faulthandler's watchdog is a native thread, so it fires even while the stuck call holds the
    GIL. Only in a process a racestack entry point owns (``own_process``), with a real stderr.
    """
    if os.getpid() not in _OWNED_PROCESS or sys.__stderr__ is None:
        return
    with contextlib.suppress(OSError, ValueError):
        faulthandler.dump_traceback_later(limit_s, exit=True, file=sys.__stderr__)
