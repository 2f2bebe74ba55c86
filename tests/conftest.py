"""Test isolation: each pytest run gets its own ROS domain, localhost-only discovery and cache folder."""

from __future__ import annotations

import os
import random
import tempfile

os.environ["ROS_DOMAIN_ID"] = os.environ.get("RACESTACK_TEST_DOMAIN") or str(random.Random(os.getpid()).randint(1, 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
os.environ.setdefault("RACESTACK_CACHE", tempfile.mkdtemp(prefix="racestack-test-cache-"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("PYTHONUNBUFFERED", "1")

import pytest  # noqa: E402

from support import REAL_DATA  # noqa: E402


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
