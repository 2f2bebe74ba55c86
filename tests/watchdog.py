"""The test run's watchdog, a separate process: a test stuck inside a C call (a DDS entity's deletion
holding the GIL) can run no Python, so no thread of its own process can say where it is stuck.

Reads ``arm SECONDS NODEID`` / ``disarm`` lines on stdin from the pytest process. When an armed
deadline passes it prints the native stacks of every thread (gdb, when installed), asks the process
for its Python stacks (SIGUSR2, faulthandler) and kills it; the last lines printed name the test and
the native frames it is stuck in, so a CI log that shows only its tail still says where.

When the native stacks show a thread inside the deletion of a DDS entity (where Fast DDS can block
for ever with the GIL held; ``racestack.contexts``), it also writes
``stuck-in-dds-deletion NODEID`` to the run's progress file (``RACESTACK_TEST_PROGRESS``), which
``scripts/run_tests.sh`` takes as leave to run the unfinished tests once more.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time

import psutil

GDB_TIMEOUT_S = 90.0
PYTHON_STACKS_GRACE_S = 3.0
SUMMARY_FRAMES = 12
STDIN = 0
DDS_DELETION = re.compile(
    r"delete_datareader|delete_datawriter|delete_participant|~DataReaderImpl|~DataWriterImpl|unregister_timer"
    r"|rmw_destroy_(subscription|publisher|node|service|client)|rcl_(subscription|publisher|node)_fini")
PROGRESS = "RACESTACK_TEST_PROGRESS"
INTERESTING = re.compile(r"fastdds|fastrtps|eprosima|rmw|rcl|rclpy|pthread|futex|lock|wait|cond", re.IGNORECASE)


def native_stacks(pid: int) -> str:
    gdb = shutil.which("gdb")
    if gdb is None:
        return "(gdb not installed: no native stacks)"
    try:
        done = subprocess.run([gdb, "-p", str(pid), "-batch", "-nx", "-ex", "set pagination off",
                               "-ex", "thread apply all bt"], capture_output=True, text=True, timeout=GDB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"(gdb did not finish in {GDB_TIMEOUT_S:.0f} s)"
    return done.stdout + done.stderr[-2000:]


def summary(stacks: str) -> list[str]:
    """The main thread's frames and those of the threads inside ROS/DDS code: where the run is
    stuck, in a few lines."""
    lines: list[str] = []
    for thread in re.split(r"\n(?=Thread \d+ )", stacks):
        frames = [f for f in thread.splitlines()[1:] if f.startswith("#")]
        main = thread.startswith("Thread 1 ")
        if main or any(re.search(r"fastdds|fastrtps|eprosima|rmw_|rcl_", f) for f in frames):
            lines.append(thread.splitlines()[0][:160])
            lines += [re.sub(r"\s+", " ", f)[:200] for f in frames if main or INTERESTING.search(f)][:SUMMARY_FRAMES]
    return lines


def fire(pid: int, nodeid: str, limit_s: float) -> None:
    out = sys.stderr
    out.write(f"\n=== WATCHDOG: {nodeid} still running after {limit_s:.0f} s; native stacks of pid {pid} ===\n")
    out.flush()
    stacks = native_stacks(pid)
    out.write(stacks + "\n=== WATCHDOG: Python stacks ===\n")
    out.flush()
    os.kill(pid, signal.SIGUSR2)
    time.sleep(PYTHON_STACKS_GRACE_S)
    out.write(f"\n=== WATCHDOG SUMMARY: {nodeid} stuck for {limit_s:.0f} s; "
              "main thread and threads in ROS/DDS code ===\n")
    out.write("\n".join(summary(stacks) or ["(none: see the stacks above)"]) + "\n")
    if DDS_DELETION.search(stacks) and os.environ.get(PROGRESS):
        with open(os.environ[PROGRESS], "a") as progress:
            progress.write(f"stuck-in-dds-deletion {nodeid}\n")
        out.write("=== WATCHDOG: a thread is inside a DDS entity's deletion (Fast DDS) ===\n")
    out.write(f"=== WATCHDOG: killed the test run (pid {pid}) and its processes, stuck in {nodeid} ===\n")
    out.flush()
    kill_tree(pid)


def kill_tree(pid: int) -> None:
    """The run and the node processes it started: orphans would hold CI's output open."""
    try:
        root = psutil.Process(pid)
        processes = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        if process.pid != os.getpid():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


def commands(pending: bytes) -> tuple[list[str], bytes]:
    """The whole lines in ``pending`` and the partial line after them."""
    *lines, rest = pending.split(b"\n")
    return [line.decode() for line in lines if line.strip()], rest


def main() -> int:
    """Reads stdin's file descriptor itself: ``sys.stdin``'s buffer would hold an ``arm`` line that
    came in the same read as the ``disarm`` before it, where ``select`` cannot see it, and the stuck
    test it armed for would never be reported."""
    pid = int(sys.argv[1])
    deadline: float | None = None
    nodeid, limit_s = "", 0.0
    pending = b""
    while True:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([STDIN], [], [], wait)
        if not ready:
            fire(pid, nodeid, limit_s)
            return 1
        chunk = os.read(STDIN, 4096)
        if not chunk:
            return 0
        lines, pending = commands(pending + chunk)
        for line in lines:
            command, *rest = line.split(maxsplit=2)
            if command == "arm":
                limit_s, nodeid = float(rest[0]), rest[1].strip()
                deadline = time.monotonic() + limit_s
            else:
                deadline = None


if __name__ == "__main__":
    sys.exit(main())
