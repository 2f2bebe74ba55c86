"""Stale Fast DDS shared-memory segments: found by who maps them, removed with their lock files."""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path

import pytest

from racestack.shm import PREFIX, SHM_DIR, mapped_segments, remove_stale_segments, stale_segments

pytestmark = pytest.mark.skipif(not SHM_DIR.is_dir(), reason="no /dev/shm on this machine")


def _segment(name: str, age_s: float) -> Path:
    path = SHM_DIR / name
    path.write_bytes(b"\0" * 4096)
    (SHM_DIR / f"{name}_el").write_bytes(b"")
    old = time.time() - age_s
    os.utime(path, (old, old))
    return path


def test_only_old_unmapped_segments_are_removed_with_their_lock_files() -> None:
    tag = f"{PREFIX}racestacktest{os.getpid()}"
    mapped, dead, young = _segment(f"{tag}a", 60.0), _segment(f"{tag}b", 60.0), _segment(f"{tag}c", 0.0)
    try:
        with open(mapped, "r+b") as handle, mmap.mmap(handle.fileno(), 4096):
            assert mapped.name in mapped_segments()
            stale = {p.name for p in stale_segments()}
            assert dead.name in stale and mapped.name not in stale and young.name not in stale
            removed = remove_stale_segments()
        assert dead.name in removed
        assert not dead.exists() and not (SHM_DIR / f"{dead.name}_el").exists()
        assert mapped.exists() and young.exists()
    finally:
        for path in SHM_DIR.glob(f"{tag}*"):
            path.unlink(missing_ok=True)
