"""What a racestack process (a node, the ``racestack`` command) owns: Ctrl-C, an exit watchdog, exit codes.

A process started in the background of a script inherits an ignored SIGINT, and Python then never
installs its Ctrl-C handler: the launcher and the user stop racestack with SIGINT, so it is reset.
Deleting a DDS participant (last node destroyed, or the interpreter's exit) can block for ever in
Fast DDS when TCP (LARGE_DATA) channels to a busy peer are still open; a process that does not end
after its work is done holds a launcher, a test or the car's stack hostage, so it says why and leaves.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from racestack.errors import INTERRUPTED_EXIT, interrupted

SHUTDOWN_LIMIT_S = 15.0

_OWNED_PROCESS: set[int] = set()  # pids whose racestack entry point owns the process


def own_process() -> None:
    """Called first by the entry points: Ctrl-C works from here on, SIGUSR1 and a fatal signal
    (SIGSEGV, SIGABRT) print every thread's stack, and ``exit_if_stuck`` may end this process.
    Library callers (tests, notebooks) keep their own handlers and are never ended."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _OWNED_PROCESS.add(os.getpid())
    if sys.__stderr__ is not None:  # ``kill -USR1 <pid>``: where is this process stuck? A crash: where?
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
            faulthandler.enable(file=sys.__stderr__, all_threads=True)


def exit_code(call: Callable[[], int | None], label: str) -> int:
    """``call()``'s exit code; a Ctrl-C (also one a C extension's import turned into ImportError)
    gives 130 and says so instead of a traceback."""
    try:
        result = call()
    except BaseException as exc:
        if not interrupted(exc):
            raise
        print(f"{label}: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    return result if isinstance(result, int) else 0


def exit_if_stuck(limit_s: float = SHUTDOWN_LIMIT_S) -> None:
    """From now on, a process still running after ``limit_s`` prints every thread's stack and exits 1.

    faulthandler's watchdog is a native thread, so it fires even while the stuck call holds the
    GIL. Only in a process a racestack entry point owns (``own_process``), with a real stderr.
    """
    if os.getpid() not in _OWNED_PROCESS or sys.__stderr__ is None:
        return
    with contextlib.suppress(OSError, ValueError):
        faulthandler.dump_traceback_later(limit_s, exit=True, file=sys.__stderr__)


def leave(code: int) -> NoReturn:
    """End the process now that everything it wrote is closed: no interpreter teardown (torch, ONNX
    Runtime, a DDS participant whose deletion hung and was left behind)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
