"""Rolling latency statistics, counters and stamp checks for nodes (no rclpy, so tests use them too)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np


class RollingStats:
    """p50/p99/max over the last ``window`` samples (a ring buffer: O(1) per sample)."""

    def __init__(self, window: int = 500) -> None:
        self._values = np.zeros(window, dtype=np.float64)
        self._count = 0

    def add(self, value: float) -> None:
        self._values[self._count % self._values.size] = value
        self._count += 1

    @property
    def count(self) -> int:
        return self._count

    def summary(self) -> dict[str, float]:
        n = min(self._count, self._values.size)
        if n == 0:
            return {}
        window = self._values[:n]
        p50, p99 = np.percentile(window, [50, 99])
        return {"p50": float(p50), "p99": float(p99), "max": float(window.max()), "n": float(n)}


@dataclass
class NodeMonitor:
    """What a node reports on /diagnostics: processing time, input age, frame and reject counters."""

    window: int = 500
    processing_ms: RollingStats = field(init=False)
    input_age_ms: RollingStats = field(init=False)
    counters: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.processing_ms = RollingStats(self.window)
        self.input_age_ms = RollingStats(self.window)

    def report(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for label, stats in (("processing_ms", self.processing_ms), ("input_age_ms", self.input_age_ms)):
            for key, value in stats.summary().items():
                if key != "n":
                    values[f"{label}_{key}"] = f"{value:.3f}"
        for key, value in sorted(self.counters.items()):
            values[key] = str(value)
        values["rejected"] = str(sum(self.rejected.values()))
        for reason, count in sorted(self.rejected.items()):
            values[f"rejected.{reason}"] = str(count)
        return values


class Throttle:
    """Per-key rate limit for log lines: the first occurrence passes, then one per ``period_s``."""

    def __init__(self, period_s: float = 5.0) -> None:
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self._suppressed: Counter = Counter()

    def allow(self, key: str, now: float | None = None) -> tuple[bool, int]:
        """(may log now, how many were suppressed since the last logged one)."""
        now = time.monotonic() if now is None else now
        last = self._last.get(key)
        if last is not None and now - last < self.period_s:
            self._suppressed[key] += 1
            return False, 0
        self._last[key] = now
        return True, self._suppressed.pop(key, 0)


class StampGuard:
    """Rejects stale, duplicate and out-of-order stamps per stream; reports a large jump back in time.

    A jump back of more than ``jump_back_s`` (a bag looping, a simulator reset) is not an error:
    ``check`` returns 'time_jump' so the caller can reset its state and accept the message.
    """

    def __init__(self, max_age_s: float = 1.0, jump_back_s: float = 1.0) -> None:
        self.max_age_ns = int(max_age_s * 1e9)
        self.jump_back_ns = int(jump_back_s * 1e9)
        self._last: dict[str, int] = {}

    def check(self, stream: str, stamp_ns: int, now_ns: int) -> str | None:
        """None when fine, else one of 'time_jump', 'out_of_order', 'duplicate', 'stale', 'no_stamp'."""
        if stamp_ns <= 0:
            return "no_stamp"
        last = self._last.get(stream)
        if last is not None and stamp_ns <= last:
            if last - stamp_ns > self.jump_back_ns:
                self._last = {stream: stamp_ns}
                return "time_jump"
            return "duplicate" if stamp_ns == last else "out_of_order"
        if self.max_age_ns > 0 and now_ns - stamp_ns > self.max_age_ns:
            return "stale"
        self._last[stream] = stamp_ns
        return None

    def reset(self) -> None:
        self._last.clear()
