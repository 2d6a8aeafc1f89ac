"""Which tests the collector should order now, so every bridge passes before each deadline.

:func:`plan` is pure: the records and the clock go in, the orders to send come out; the
caller publishes them and stores them (they are the ``orders`` of the next call).

What gets ordered:

* Every **open window** of a test or start checkpoint (``window_start <= now <= deadline``;
  the start checkpoint needs its own test in the last two hours before T, so it is
  planned like a test), for every bridge of the session whose **latest test in the window
  so far** did not pass (the engine's rule: no test yet, or the latest one failed).
* Only bridges that are **online**: an offline agent cannot run a test, and an order to it
  would only burn an attempt. It is ordered as soon as it is back (its window still open).
* **One order to a bridge at a time**, even when two sessions want it: a test is of the
  bridge and counts for every window that contains it, so one order answers both. The
  order names the most urgent slot (earliest deadline, then session id, then checkpoint
  order); the other windows get the result all the same.

The retry policy:

* A bridge gets **at most one order per** ``retry_after``. An order younger than that is
  in flight (or just answered); after ``retry_after`` without a result it has timed out.
  A *failed* result does not shorten the wait on purpose: a failure is a fault (a cable,
  a flat UPS battery, a full disk) that needs a technician, and an immediate re-test
  would spend every attempt in the first minutes of the window and leave none for after
  the repair. The technician's own test (trigger ``technician``) counts as soon as it
  passes, without waiting for the collector.
* At most ``max_attempts`` orders per bridge per window: the planner's orders (trigger
  ``schedule`` or ``retry``) to that bridge placed inside the window, whichever session
  they named (they are attempts at the same thing). When they are spent the planner stops;
  the verdict stays ``failed`` and then ``missed``, which is what the alerts are for.
  Orders of the NOC (any other trigger) hold the bridge while in flight like any order,
  but spend none of the planner's attempts: a NOC operator checking a bridge must not
  leave it without its scheduled re-tests.
* ``trigger`` is ``schedule`` for the first order of a window, ``retry`` after it
  (a failure or a timeout).
* Test ids are ``"{session_id}/{checkpoint}/{nonce}"`` with 8 hex characters of nonce,
  at most 64 characters (the wire's limit), so a result names what it was ordered for.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .engine import TestIndex, unique_bridges
from .model import CheckpointSpec, Session, TestRecord

MAX_TEST_ID = 64  # agent.wire caps test_id at 64 characters
_NONCE = re.compile(r"[0-9a-f]{8}")
PLANNED_KINDS = ("test", "start")
PLANNER_TRIGGERS = ("schedule", "retry")  # the triggers of the orders plan() makes


@dataclass(frozen=True)
class Order:
    """A test the collector asked one bridge to run, and when."""

    site: str
    session_id: str
    checkpoint: str
    trigger: str  # "schedule" (first order in the window) or "retry"
    test_id: str  # "{session_id}/{checkpoint}/{nonce}"
    at: datetime  # when it was ordered: the retry timing and attempt count rest on it


def new_nonce() -> str:
    """8 random hex characters: unique enough among a window's few orders per bridge."""
    return secrets.token_hex(4)


def make_test_id(session_id: str, checkpoint: str, nonce: str) -> str:
    if not _NONCE.fullmatch(nonce):
        raise ValueError(f"nonce {nonce!r} is not 8 lowercase hex characters")
    value = f"{session_id}/{checkpoint}/{nonce}"
    if len(value) > MAX_TEST_ID:
        raise ValueError(f"test id {value!r} is longer than {MAX_TEST_ID} characters")
    return value


@dataclass(frozen=True)
class _Slot:
    deadline: datetime
    session_id: str
    rank: int  # the checkpoint's position in the configuration
    checkpoint: str
    attempts: int


def plan(sessions: Iterable[Session], checkpoints: Sequence[CheckpointSpec],
         tests: Iterable[TestRecord] | TestIndex, orders: Iterable[Order], online: set[str],
         now: datetime, retry_after: timedelta, max_attempts: int,
         nonce: Callable[[], str] = new_nonce) -> list[Order]:
    """The orders to send at ``now`` (rules and retry policy: module doc), by urgency."""
    if retry_after <= timedelta(0):
        raise ValueError("retry_after must be positive")
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    index = tests if isinstance(tests, TestIndex) else TestIndex(tests, now)
    if index.now != now:
        raise ValueError("the TestIndex was built for another moment than now")
    placed: dict[str, list[datetime]] = {}  # every order: one in flight blocks the bridge
    planned: dict[str, list[datetime]] = {}  # the planner's own: they are the attempts
    for order in orders:
        if order.at <= now:
            placed.setdefault(order.site, []).append(order.at)
            if order.trigger in PLANNER_TRIGGERS:
                planned.setdefault(order.site, []).append(order.at)

    wanted: dict[str, list[_Slot]] = {}
    for session in sessions:
        for rank, spec in enumerate(checkpoints):
            if spec.kind not in PLANNED_KINDS:
                continue
            start, deadline = spec.window_start(session), spec.deadline(session)
            if not start <= now <= deadline:
                continue
            for site in unique_bridges(session):
                if site not in online:
                    continue
                latest = index.latest(site, start, now)
                if latest is not None and latest.passed:
                    continue
                attempts = sum(start <= at <= deadline for at in planned.get(site, ()))
                if attempts < max_attempts:
                    wanted.setdefault(site, []).append(
                        _Slot(deadline, session.id, rank, spec.name, attempts))

    chosen: list[tuple[str, _Slot]] = []
    for site, slots in wanted.items():
        if any(now - at < retry_after for at in placed.get(site, ())):
            continue  # in flight, or answered too recently: one order per retry_after
        chosen.append((site, min(slots, key=lambda s: (s.deadline, s.session_id, s.rank))))
    chosen.sort(key=lambda row: (row[1].deadline, row[0]))
    return [Order(site, slot.session_id, slot.checkpoint,
                  "schedule" if slot.attempts == 0 else "retry",
                  make_test_id(slot.session_id, slot.checkpoint, nonce()), now)
            for site, slot in chosen]
