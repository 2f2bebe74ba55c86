"""Test isolation: each pytest run gets its own ROS domain and cache folder.

Discovery is left at its default range: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST makes rmw_fastrtps
replace the builtin transports by UDP on loopback, which disables FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA
(shared memory) and makes a 3.2 MB cloud take ~35 ms instead of ~4 ms (measured: bench_transport).
"""

from __future__ import annotations

import faulthandler
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from racestack.graph import FASTDDS_TRANSPORTS

os.environ["ROS_DOMAIN_ID"] = os.environ.get("RACESTACK_TEST_DOMAIN") or str(random.Random(os.getpid()).randint(1, 200))
os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", FASTDDS_TRANSPORTS)  # use_stack_transports(), E402-clean
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("PYTHONUNBUFFERED", "1")

import pytest
from support import REAL_DATA

from racestack.contexts import share_one_context
from racestack.shm import remove_stale_segments


def _own_temp_folder(variable: str, prefix: str) -> str | None:
    """Points ``variable`` at a new temporary folder unless the caller set it; the folder, if made."""
    if os.environ.get(variable):
        return None
    os.environ[variable] = folder = tempfile.mkdtemp(prefix=prefix)
    return folder


# Own temp root per session: pytest deletes all but the 3 newest numbered folders of a shared root,
# which removes a long session's files when other sessions run beside it on the same machine. These
# folders (0.5-0.7 GB a session: bags, exports) are removed when the session passes.
OWN_TEMP_FOLDERS = [
    folder
    for folder in (
        _own_temp_folder("RACESTACK_CACHE", "racestack-test-cache-"),
        _own_temp_folder("PYTEST_DEBUG_TEMPROOT", "racestack-pytest-"),
    )
    if folder
]

WATCHDOG_MARGIN_S = float(os.environ.get("RACESTACK_WATCHDOG_MARGIN_S", "60"))  # after pytest-timeout's limit
WATCHDOG_FALLBACK_S = 180.0  # after the watchdog process's own limit, gdb and the kill included
FAILURE_TAIL_CHARS = 4000
TERMINAL = pytest.StashKey()
WATCHDOG = pytest.StashKey()
EXIT_STATUS = pytest.StashKey()
PROGRESS = "RACESTACK_TEST_PROGRESS"
RESUME = "RACESTACK_TEST_RESUME"


@pytest.fixture
def real_data():
    """The shared real sensor samples; the test is skipped when they are not on this machine."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real sensor data not found at {REAL_DATA} (set RACESTACK_REAL_DATA)")
    return REAL_DATA


@pytest.fixture
def probe():
    from racestack.probe import Probe

    with Probe("test_probe") as p:
        yield p


def pytest_sessionstart(session) -> None:
    remove_stale_segments()  # segments of processes killed by an earlier run would disturb this one


def pytest_configure(config) -> None:
    share_one_context()  # one DDS participant for every probe, recorder and replayer of the run
    terminal = config.stash[TERMINAL] = os.fdopen(os.dup(2), "w")  # fd 2 is a capture file while tests run
    faulthandler.register(signal.SIGUSR2, file=terminal, all_threads=True)
    config.stash[WATCHDOG] = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("watchdog.py")), str(os.getpid())],
        stdin=subprocess.PIPE, stdout=terminal, stderr=terminal, text=True, start_new_session=True)


def pytest_sessionfinish(session, exitstatus) -> None:
    session.config.stash[EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config) -> None:
    """Ends the process without deleting the shared DDS participant (``racestack.contexts``): its
    deletion can block for ever inside Fast DDS."""
    watchdog = config.stash.get(WATCHDOG, None)
    if watchdog is not None:
        watchdog.stdin.close()
        watchdog.wait(timeout=10)
    status = config.stash.get(EXIT_STATUS, 0)
    for folder in OWN_TEMP_FOLDERS:
        if status in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"kept for inspection: {folder}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _tell_watchdog(config, line: str) -> None:
    watchdog = config.stash[WATCHDOG]
    watchdog.stdin.write(line + "\n")
    watchdog.stdin.flush()


def _terminal(config):
    return config.stash[TERMINAL]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A test stuck inside a C call (a DDS participant's deletion) never sees pytest-timeout's
    SIGALRM: the watchdog process (``watchdog.py``) then prints its native and Python stacks and ends
    the run, so CI fails saying where; faulthandler's own timer ends it if the watchdog cannot."""
    timeout = item.config.getoption("timeout", None)
    limit_s = float(timeout) + WATCHDOG_MARGIN_S if timeout else 0.0
    if limit_s:
        _tell_watchdog(item.config, f"arm {limit_s} {item.nodeid}")
        faulthandler.dump_traceback_later(limit_s + WATCHDOG_FALLBACK_S, exit=True, file=_terminal(item.config))
    try:
        yield
    finally:
        if limit_s:
            faulthandler.cancel_dump_traceback_later()
            _tell_watchdog(item.config, "disarm")


def _record_progress(report) -> None:
    """``done`` for each finished test and ``failed`` for each failure, in ``RACESTACK_TEST_PROGRESS``:
    what ``scripts/run_tests.sh`` needs to run only the unfinished tests after a stuck one."""
    path = os.environ.get(PROGRESS)
    if not path or report.when == "collect":
        return
    with open(path, "a") as progress:
        if report.failed:
            progress.write(f"failed {report.nodeid}\n")
        if report.when == "teardown":
            progress.write(f"done {report.nodeid}\n")


def pytest_collection_modifyitems(config, items) -> None:
    """With ``RACESTACK_TEST_RESUME`` naming an earlier run's progress file, the tests it finished
    are left out."""
    path = os.environ.get(RESUME)
    if not path:
        return
    done = {line.split(" ", 1)[1].strip() for line in Path(path).read_text().splitlines() if line.startswith("done ")}
    finished = [item for item in items if item.nodeid in done]
    items[:] = [item for item in items if item.nodeid not in done]
    config.hook.pytest_deselected(items=finished)


def pytest_runtest_logreport(report) -> None:
    """A failure is printed when it happens: a run cut short (CI's time limit) still says why."""
    _record_progress(report)
    if not report.failed or report.when == "collect":
        return
    text = report.longreprtext[-FAILURE_TAIL_CHARS:]
    for title, content in report.sections:
        if "stderr" in title:
            text += f"\n--- {title} (tail) ---\n{content[-FAILURE_TAIL_CHARS // 2:]}"
    sys.__stderr__.write(f"\n=== FAILED {report.nodeid} ({report.when}) ===\n{text}\n")
    sys.__stderr__.flush()
