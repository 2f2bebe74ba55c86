"""The test run's watchdog (``watchdog.py``) must report a stuck test however its commands arrive."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

WATCHDOG = Path(__file__).with_name("watchdog.py")


@pytest.fixture
def watched():
    """A sleeping process and a watchdog for it, without gdb on its path: the Python side is what is
    checked, and attaching gdb takes seconds. Both are killed after the test."""
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    dog = subprocess.Popen([sys.executable, str(WATCHDOG), str(victim.pid)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    yield victim, dog
    dog.kill()
    victim.kill()
    victim.wait()


def send(dog: subprocess.Popen, text: str) -> None:
    dog.stdin.write(text)
    dog.stdin.flush()


def test_an_arm_sent_in_the_same_write_as_the_disarm_before_it_still_fires(watched) -> None:
    victim, dog = watched
    send(dog, "arm 60 tests/a.py::finished\ndisarm\narm 1 tests/b.py::stuck\n")
    returncode = dog.wait(timeout=30)  # stdin stays open, as the test run keeps it
    output = dog.stdout.read()
    assert returncode == 1, output
    assert victim.wait(timeout=10) is not None
    assert output.rstrip().endswith("stuck in tests/b.py::stuck ===")


def test_a_disarmed_test_is_left_alone_and_a_closed_input_ends_the_watchdog(watched) -> None:
    victim, dog = watched
    send(dog, "arm 1 tests/a.py::quick\ndi")
    send(dog, "sarm\n")
    time.sleep(2.0)
    assert victim.poll() is None and dog.poll() is None
    dog.stdin.close()
    assert dog.wait(timeout=10) == 0


REPO = Path(__file__).resolve().parents[1]
DELETION_STACK = "Thread 3 (Thread 0x7f (LWP 9)):\n#0 0x1 in eprosima::fastdds::dds::Subscriber::delete_datareader ()\n"
OTHER_STACK = "Thread 1 (Thread 0x7f (LWP 8)):\n#0 0x1 in __futex_abstimed_wait_common ()\n"


@pytest.mark.parametrize(("stack", "resumed"), [(DELETION_STACK, True), (OTHER_STACK, False)],
                         ids=["dds-deletion", "other-hang"])
def test_a_run_stuck_in_a_dds_deletion_runs_its_unfinished_tests_once_more(tmp_path, stack, resumed) -> None:
    """``scripts/run_tests.sh`` with a gdb that reports ``stack``: only a deletion hang is resumed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gdb = bin_dir / "gdb"
    gdb.write_text(f"#!/bin/sh\ncat <<'END'\n{stack}END\n")
    gdb.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PY": sys.executable,
           "RACESTACK_WATCHDOG_MARGIN_S": "1", "RACESTACK_STUCK_MARKER": str(tmp_path / "stuck")}
    for inherited in ("RACESTACK_TEST_PROGRESS", "RACESTACK_TEST_RESUME"):
        env.pop(inherited, None)
    for variable in ("RACESTACK_CACHE", "PYTEST_DEBUG_TEMPROOT"):  # a killed run keeps its own: keep them here
        env[variable] = str(tmp_path / variable.lower())
        Path(env[variable]).mkdir()
    done = subprocess.run(["scripts/run_tests.sh", "tests/stuck_once.py", "--timeout=2", "-p", "no:cacheprovider"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    output = done.stdout + done.stderr
    assert "stuck in tests/stuck_once.py::test_stuck_the_first_time" in output
    if resumed:
        assert done.returncode == 0, output[-3000:]
        assert "running the tests after the 1 it finished once more" in output
        assert "2 passed, 1 deselected" in output
    else:
        assert done.returncode != 0
        assert "once more" not in output
