"""Fast DDS shared-memory segments that a dead process left behind, found and removed.

A process that ends without closing its participant (SIGKILL, a watchdog exit, a crash) leaves its
segments in /dev/shm. Fast DDS is meant to reclaim them, but on this machine a graph started after a
few such deaths matched some topics and not others (a whole real-time run with no detected objects
downstream) until the files were removed. A segment is stale when no live process maps it; it is
removed with its lock file and semaphore, and only when it is old enough not to be one a starting
process has created but not mapped yet. Only this user's segments are considered: /dev/shm is
sticky, and another user's processes, which cannot be inspected, could not write this user's files.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

SHM_DIR = Path("/dev/shm")
PREFIX = "fastdds_"
MIN_AGE_S = 10.0


def mapped_segments(proc: Path = Path("/proc")) -> set[str]:
    """Names of the Fast DDS files in /dev/shm that a live process (one this user may inspect) maps."""
    names: set[str] = set()
    for maps in proc.glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except (FileNotFoundError, PermissionError):  # ended while we looked; not ours to inspect
            continue
        names.update(line.rsplit("/", 1)[1] for line in text.splitlines() if f"{SHM_DIR}/{PREFIX}" in line)
    return names


def stale_segments(shm_dir: Path = SHM_DIR, min_age_s: float = MIN_AGE_S) -> list[Path]:
    """This user's Fast DDS segments (not their lock files) that no process maps, older than ``min_age_s``."""
    if not shm_dir.is_dir():
        return []
    mapped = mapped_segments()
    now, uid = time.time(), os.getuid()
    stale = []
    for path in shm_dir.glob(f"{PREFIX}*"):
        if path.name.endswith("_el") or path.name in mapped:
            continue
        try:
            info = path.stat()
            if info.st_uid == uid and now - info.st_mtime >= min_age_s:
                stale.append(path)
        except FileNotFoundError:
            continue
    return sorted(stale)


def remove_stale_segments(shm_dir: Path = SHM_DIR, min_age_s: float = MIN_AGE_S) -> list[str]:
    """Removes the stale segments with their lock files and semaphores; the names removed."""
    removed = []
    for segment in stale_segments(shm_dir, min_age_s):
        for path in (segment, shm_dir / f"{segment.name}_el", shm_dir / f"sem.{segment.name}_mutex"):
            path.unlink(missing_ok=True)
        removed.append(segment.name)
    return removed
