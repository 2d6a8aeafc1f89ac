"""The test planner: what the collector orders, when it retries, when it stops, offline
bridges, and never two orders to one bridge. The clock and the nonces are injected."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from agent.wire import Criterion
from collector.readiness.model import DEFAULT_CHECKPOINTS, VIETNAM, Session
from collector.readiness.model import TestRecord as Record
from collector.readiness.planner import Order, make_test_id, new_nonce, plan

H = timedelta(hours=1)
M = timedelta(minutes=1)
S = timedelta(seconds=1)
T = datetime(2026, 3, 12, 8, 0, tzinfo=VIETNAM)  # the session's start
RETRY = 15 * M
ALL = {"dt-trung-tam", "dt-sa-dec", "dt-hong-ngu", "dt-lap-vo", "dt-cai-be"}
LOSS = Criterion("link-loss", False, 0.03, 0.01, "ratio")


def session(sid: str = "dt-2026-03-12-sang", start: datetime = T,
            members: tuple[str, ...] = ("dt-sa-dec",)) -> Session:
    return Session(sid, "Tiếp công dân định kỳ tháng 3/2026", start, 3 * H, "dt-trung-tam",
                   members)


def nonces() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{next(counter):08x}"


def result(order: Order, finished: datetime, passed: bool) -> Record:
    return Record(order.test_id, order.site, finished, passed, () if passed else (LOSS,),
                  order.trigger, "collector", order.session_id)


def run(sessions: list[Session], now: datetime, tests: list[Record] | None = None,
        orders: list[Order] | None = None, online: set[str] = ALL, max_attempts: int = 3,
        nonce: Callable[[], str] | None = None) -> list[Order]:
    return plan(sessions, DEFAULT_CHECKPOINTS, tests or [], orders or [], online, now,
                RETRY, max_attempts, nonce or nonces())


def test_first_orders_only_in_open_windows() -> None:
    """Nothing before test-1's window opens (T-36h) nor between windows; at the opening
    instant every bridge gets a 'schedule' order named after the session and checkpoint,
    with the injected nonce; the confirm checkpoint is never planned."""
    s = session()
    assert run([s], T - 36 * H - S) == []
    assert run([s], T - 10 * H) == []  # between test-1 (closed T-24h) and test-2 (T-4h)
    orders = run([s], T - 36 * H)
    assert orders == [
        Order("dt-sa-dec", s.id, "test-1", "schedule", "dt-2026-03-12-sang/test-1/00000001",
              T - 36 * H),
        Order("dt-trung-tam", s.id, "test-1", "schedule", "dt-2026-03-12-sang/test-1/00000002",
              T - 36 * H),
    ]
    assert {o.checkpoint for o in run([s], T - 2 * H + S)} == {"start"}
    assert {o.checkpoint for o in run([s], T - 2 * H)} == {"test-2"}  # the earlier deadline


def test_retry_after_a_failure_waits_retry_after() -> None:
    """A failed result at +2 min does not free the bridge: the retry comes once retry_after
    has passed since the order (not a second before), as 'retry', and a pass stops it."""
    s = session(members=())
    opened = T - 4 * H
    first = run([s], opened)
    assert [o.trigger for o in first] == ["schedule"]
    failed = [result(first[0], opened + 2 * M, False)]
    assert run([s], opened + RETRY - S, failed, first) == []
    again = run([s], opened + RETRY, failed, first)
    assert [(o.site, o.checkpoint, o.trigger) for o in again] == \
        [("dt-trung-tam", "test-2", "retry")]
    passed = [*failed, result(again[0], opened + RETRY + 2 * M, True)]
    assert run([s], opened + 3 * RETRY, passed, [*first, *again]) == []


def test_timeout_is_retried() -> None:
    """An order that never got a result is in flight for retry_after, then retried."""
    s = session(members=())
    opened = T - 4 * H
    first = run([s], opened)
    assert run([s], opened + RETRY - S, [], first) == []
    assert [o.trigger for o in run([s], opened + RETRY, [], first)] == ["retry"]


def test_max_attempts_per_window() -> None:
    """After max_attempts orders in test-2's window the planner stops for that window (the
    verdict and the alerts take over); the start window is a new window, planned afresh."""
    s = session(members=())
    now, orders, tests = T - 4 * H, [], []
    for _ in range(3):
        new = run([s], now, tests, orders)
        assert len(new) == 1
        orders += new
        tests.append(result(new[0], now + M, False))
        now += RETRY
    assert [o.trigger for o in orders] == ["schedule", "retry", "retry"]
    assert run([s], now, tests, orders) == []
    # At T-2h test-2's window (still spent) closes and the start window opens.
    start = run([s], T - 2 * H, tests, orders)
    assert [(o.checkpoint, o.trigger) for o in start] == [("start", "schedule")]
    with pytest.raises(ValueError):
        run([s], now, max_attempts=0)


def test_offline_bridge_is_ordered_when_back() -> None:
    """An offline bridge gets no order (and spends no attempt); once online, inside the
    window, it gets its first 'schedule' order."""
    s = session()
    opened = T - 4 * H
    first = run([s], opened, online={"dt-trung-tam"})
    assert [o.site for o in first] == ["dt-trung-tam"]
    tests = [result(first[0], opened + 2 * M, True)]
    assert run([s], opened + 40 * M, tests, first, online={"dt-trung-tam"}) == []
    back = run([s], opened + 40 * M, tests, first, online=ALL)
    assert [(o.site, o.trigger) for o in back] == [("dt-sa-dec", "schedule")]


def test_no_double_order_for_two_sessions() -> None:
    """Sa Đéc is in a 08:00 and a 14:00 session whose test-1 windows overlap (from T-30h to
    T-24h): one order, named after the earlier deadline, answers both; while it is in
    flight the bridge gets nothing else; its pass satisfies both windows."""
    morning = session("dt-2026-03-12-sang")
    afternoon = session("dt-2026-03-12-chieu", T + 6 * H, members=("dt-sa-dec", "dt-lap-vo"))
    now = T - 27 * H
    first = run([afternoon, morning], now)
    by_site = {o.site: o for o in first}
    assert sorted(by_site) == ["dt-lap-vo", "dt-sa-dec", "dt-trung-tam"]  # one each
    assert by_site["dt-sa-dec"].session_id == "dt-2026-03-12-sang"
    assert by_site["dt-lap-vo"].session_id == "dt-2026-03-12-chieu"
    assert run([afternoon, morning], now + 5 * M, [], first) == []  # in flight
    tests = [result(o, now + 2 * M, True) for o in first]
    assert run([afternoon, morning], now + RETRY, tests, first) == []


def test_attempts_counted_across_sessions() -> None:
    """Orders placed inside a window are attempts for it whichever session they named: the
    afternoon's test-1 retries Sa Đéc as 'retry' after the morning's order failed, and stops
    at max_attempts counting both."""
    morning = session("dt-2026-03-12-sang")
    afternoon = session("dt-2026-03-12-chieu", T + 6 * H)
    now = T - 24 * H - 10 * M  # both test-1 windows open
    first = [o for o in run([morning, afternoon], now) if o.site == "dt-sa-dec"]
    assert first[0].session_id == morning.id
    failed = [result(first[0], now + M, False)]
    later = T - 24 * H + 10 * M  # the morning window is closed, the afternoon's still open
    again = [o for o in run([morning, afternoon], later, failed, first) if o.site == "dt-sa-dec"]
    assert [(o.session_id, o.trigger) for o in again] == [(afternoon.id, "retry")]
    spent = [o for o in run([morning, afternoon], later, failed, first, max_attempts=1)
             if o.site == "dt-sa-dec"]
    assert spent == []


def test_a_pass_from_any_test_counts() -> None:
    """A technician's own passing test (no session named) in the window means nothing to
    order; a pass before the window opened does not."""
    s = session(members=())
    tech = Record("tech-1", "dt-trung-tam", T - 3 * H, True, (), "technician", "technician")
    assert run([s], T - 3 * H + M, [tech]) == []
    assert len(run([s], T - 2 * H + M, [tech])) == 1  # start window: that test is too early


def test_test_ids() -> None:
    """Test ids are '{session}/{checkpoint}/{8 hex}', at most 64 characters; a bad nonce
    or a too long id is refused, not truncated (the wire would reject it)."""
    assert make_test_id("dt-2026-03-12-sang", "test-2", "0a1b2c3d") == \
        "dt-2026-03-12-sang/test-2/0a1b2c3d"
    longest = make_test_id("x" * 40, "c" * 14, "deadbeef")
    assert len(longest) == 64
    with pytest.raises(ValueError, match="longer"):
        make_test_id("x" * 40, "c" * 15, "deadbeef")
    for bad in ("0A1B2C3D", "0a1b2c3", "0a1b2c3d4", "zzzzzzzz"):
        with pytest.raises(ValueError, match="nonce"):
            make_test_id("s", "test-1", bad)
    assert len(new_nonce()) == 8 and make_test_id("s", "c", new_nonce())
    with pytest.raises(ValueError, match="retry_after"):
        plan([], DEFAULT_CHECKPOINTS, [], [], ALL, T, timedelta(0), 3)


def test_noc_orders_hold_the_bridge_but_spend_no_attempt() -> None:
    """An order from the NOC (trigger 'noc', as the service sends them) is in flight like
    any order: the bridge gets nothing for retry_after. It is not one of the planner's
    attempts: with max_attempts=1 the planner still makes its own 'schedule' order after."""
    s = session(members=())
    now = T - 3 * H
    noc = Order("dt-trung-tam", s.id, "noc", "noc", "dt-2026-03-12-sang/noc/0badf00d", now)
    assert run([s], now + 5 * M, [], [noc], max_attempts=1) == []
    later = run([s], now + RETRY, [], [noc], max_attempts=1)
    assert [(o.checkpoint, o.trigger) for o in later] == [("test-2", "schedule")]
