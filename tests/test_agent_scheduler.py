"""The agent's probe scheduler: shared ticks, no drift, skipped slots."""

from __future__ import annotations

import math

import pytest

from agent.scheduler import Scheduler


def test_everything_due_at_start_then_per_interval() -> None:
    s = Scheduler({"cpu": 10, "disk": 60}, start=100.0)
    assert s.due(100.0) == ["cpu", "disk"]
    assert s.next_wakeup() == 110.0
    assert s.due(109.9) == []
    assert s.due(110.0) == ["cpu"]
    for t in range(120, 160, 10):
        assert s.due(float(t)) == ["cpu"]
    assert s.due(160.0) == ["cpu", "disk"]  # aligned slots share one tick


def test_late_ticks_do_not_drift() -> None:
    s = Scheduler({"cpu": 10}, start=0.0)
    s.due(0.0)
    assert s.due(13.7) == ["cpu"]  # late by 3.7 s...
    assert s.next_wakeup() == 20.0  # ...but the grid does not move


def test_missed_slots_are_skipped_not_replayed() -> None:
    s = Scheduler({"cpu": 10}, start=0.0)
    s.due(0.0)
    assert s.due(95.0) == ["cpu"]
    assert s.next_wakeup() == 100.0
    assert s.due(99.0) == []


def test_float_intervals_stay_on_grid() -> None:
    s = Scheduler({"fast": 0.1}, start=0.0)
    now = 0.0
    for _ in range(1000):
        s.due(now)
        now = s.next_wakeup()
    assert now == pytest.approx(100.0, abs=1e-6)


def test_no_probes_never_wakes() -> None:
    assert Scheduler({}, start=0.0).next_wakeup() == math.inf


def test_rejects_non_positive_interval() -> None:
    with pytest.raises(ValueError):
        Scheduler({"cpu": 0}, start=0.0)
