"""Run by ``test_watchdog.py`` only (its name keeps it out of the suite): the middle test is stuck
where pytest-timeout cannot reach it (SIGALRM blocked) the first time it runs, as a test stuck in a
C call is."""

import os
import signal
import time
from pathlib import Path


def test_before() -> None:
    pass


def test_stuck_the_first_time() -> None:
    marker = Path(os.environ["RACESTACK_STUCK_MARKER"])
    if not marker.exists():
        marker.touch()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(120)


def test_after() -> None:
    pass
