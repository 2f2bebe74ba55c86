"""Test isolation: each pytest run gets its own ROS domain and cache folder.

Discovery is left at its default range: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST makes rmw_fastrtps
replace the builtin transports by UDP on loopback, which disables FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA
(shared memory) and makes a 3.2 MB cloud take ~35 ms instead of ~4 ms (measured: bench_transport).
"""

from __future__ import annotations

import os
import random
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
