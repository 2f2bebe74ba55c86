"""Test isolation: each pytest run gets its own ROS domain and cache folder.

Discovery is left at its default range: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST makes rmw_fastrtps
replace the builtin transports by UDP on loopback, which disables FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA
(shared memory) and makes a 3.2 MB cloud take ~35 ms instead of ~4 ms (measured: bench_transport).
"""

from __future__ import annotations

import faulthandler
import os
import random
import sys
import tempfile

os.environ["ROS_DOMAIN_ID"] = os.environ.get("RACESTACK_TEST_DOMAIN") or str(random.Random(os.getpid()).randint(1, 200))
os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
os.environ.setdefault("RACESTACK_CACHE", tempfile.mkdtemp(prefix="racestack-test-cache-"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("PYTHONUNBUFFERED", "1")
# Own temp root per session: pytest deletes all but the 3 newest numbered folders of a shared root,
# which removes a long session's files when other sessions run beside it on the same machine.
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.mkdtemp(prefix="racestack-pytest-"))

import pytest
from support import REAL_DATA

from racestack.shm import remove_stale_segments

WATCHDOG_MARGIN_S = 60.0
FAILURE_TAIL_CHARS = 4000
TERMINAL = pytest.StashKey()


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
    config.stash[TERMINAL] = os.fdopen(os.dup(2), "w")  # fd 2 is a capture file while tests run


def _terminal(config):
    return config.stash[TERMINAL]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A test stuck inside a C call (a DDS participant's deletion) never sees pytest-timeout's
    SIGALRM: a native watchdog then prints every stack and ends the run, so CI fails saying where."""
    timeout = item.config.getoption("timeout", None)
    limit_s = float(timeout) + WATCHDOG_MARGIN_S if timeout else 0.0
    if limit_s:
        faulthandler.dump_traceback_later(limit_s, exit=True, file=_terminal(item.config))
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def pytest_runtest_logreport(report) -> None:
    """A failure is printed when it happens: a run cut short (CI's time limit) still says why."""
    if not report.failed or report.when == "collect":
        return
    text = report.longreprtext[-FAILURE_TAIL_CHARS:]
    for title, content in report.sections:
        if "stderr" in title:
            text += f"\n--- {title} (tail) ---\n{content[-FAILURE_TAIL_CHARS // 2:]}"
    sys.__stderr__.write(f"\n=== FAILED {report.nodeid} ({report.when}) ===\n{text}\n")
    sys.__stderr__.flush()
