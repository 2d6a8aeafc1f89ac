"""Per-probe intervals on a fixed grid: probes due together share one telemetry message.

Every probe's slots are ``start + k * interval``. After a late tick the next slot is the
first one still ahead, so lateness never accumulates (no drift) and a stalled agent does
not fire a burst of catch-up samples.
"""

from __future__ import annotations

import math


class Scheduler:
    def __init__(self, intervals: dict[str, float], start: float) -> None:
        if any(not interval > 0 for interval in intervals.values()):
            raise ValueError("every interval must be > 0")
        self._intervals = dict(intervals)
        self._next = dict.fromkeys(intervals, start)

    def due(self, now: float) -> list[str]:
        """The probes whose slot has come (sorted); each moves to its next slot after ``now``."""
        names = sorted(name for name, at in self._next.items() if at <= now)
        for name in names:
            interval = self._intervals[name]
            slot = self._next[name]
            slot += (math.floor((now - slot) / interval) + 1) * interval
            while slot <= now:  # float rounding in the division above
                slot += interval
            self._next[name] = slot
        return names

    def next_wakeup(self) -> float:
        """When the earliest probe is next due (infinity with no probes)."""
        return min(self._next.values(), default=math.inf)
