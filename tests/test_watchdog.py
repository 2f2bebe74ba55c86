"""The test run's watchdog (``watchdog.py``) must report a stuck test however its commands arrive."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

WATCHDOG = Path(__file__).with_name("watchdog.py")


def start_watchdog(victim: subprocess.Popen) -> subprocess.Popen:
    """Without gdb on its path: the Python side is what is checked, and attaching gdb takes seconds."""
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    return subprocess.Popen([sys.executable, str(WATCHDOG), str(victim.pid)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def test_an_arm_sent_in_the_same_write_as_the_disarm_before_it_still_fires() -> None:
    victim = sleeper()
    dog = start_watchdog(victim)
    try:
        dog.stdin.write("arm 60 tests/a.py::finished\ndisarm\narm 1 tests/b.py::stuck\n")
        dog.stdin.flush()
        returncode = dog.wait(timeout=30)  # stdin stays open, as the test run keeps it
        output = dog.stdout.read()
        assert returncode == 1, output
        assert victim.wait(timeout=10) is not None
        assert output.rstrip().endswith("stuck in tests/b.py::stuck ===")
    finally:
        dog.kill()
        victim.kill()
        victim.wait()


def test_a_disarmed_test_is_left_alone_and_a_closed_input_ends_the_watchdog() -> None:
    victim = sleeper()
    dog = start_watchdog(victim)
    try:
        dog.stdin.write("arm 1 tests/a.py::quick\ndi")
        dog.stdin.flush()
        dog.stdin.write("sarm\n")
        dog.stdin.flush()
        time.sleep(2.0)
        assert victim.poll() is None and dog.poll() is None
        dog.stdin.close()
        assert dog.wait(timeout=10) == 0
    finally:
        dog.kill()
        victim.kill()
        victim.wait()
