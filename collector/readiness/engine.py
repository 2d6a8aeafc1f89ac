"""Verdicts: where every bridge of a session stands for every checkpoint, at a given moment.

Pure functions over the records (sessions, tests, confirmations) and a clock passed in as
``now`` (an aware datetime), so the same code answers "now" for the NOC and "at 08:00 on
the day" for the report, and tests replay any moment without waiting.

The rules, and why:

* **A test is of the bridge, not of a session.** Every test of a bridge counts for every
  session of that bridge whose window contains it, whichever session its ``session_id``
  names (or none: a NOC or technician test). It is a real measurement of the bridge at that
  time, and one test must not have to be repeated because two sessions share a morning.
* **Records after ``now`` are ignored** (a test finished, a confirmation given later), so
  asking about a past moment gives the answer that was true then.
* **Windows are closed intervals** ``[window_start, deadline]``: a test finished exactly at
  the window's start or exactly at the deadline counts; one second earlier does not.
* **Test and start checkpoints: the latest test in the window decides.** The regulations
  ask that the bridge *pass* its test before the deadline; a bridge that passed at T-3 h and
  then failed at T-2 h 30 is not ready, so a later failure overrides an earlier pass (and a
  later pass clears an earlier failure). Up to and including the deadline the verdict is
  ``passed`` / ``failed`` (with the failing criteria and the test id) / ``pending`` (no test
  in the window yet); strictly after the deadline the latest test in the window is final:
  ``passed`` if it passed, else ``missed`` (with the failing criteria of that last test, if
  there was one). The start checkpoint is the same rule over its own window (the last two
  hours before T): "ready at the start" means the latest test within that window passed.
* **Two tests finished at the same instant:** the failure is the latest (the cautious
  answer), then the test id, so the verdict never depends on the order of the records.
* **Confirm checkpoint:** ``passed`` if the bridge confirmed at or before the deadline,
  ``pending`` before the deadline without one, ``missed`` after it. A confirmation after
  the deadline does not turn ``missed`` into ``passed`` (the invitation round is over and
  the NOC must have chased that bridge); it stays in the records and
  :func:`confirmation` returns it, so the report can say "confirmed late, at ...".
* Every bridge of ``session.bridges`` (host, members, national) is judged, each once even
  if a schedule lists it twice.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from datetime import datetime

from .model import CHECKPOINT_KINDS, CheckpointSpec, Confirmation, Session, TestRecord, Verdict


def _aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")


def _order_key(test: TestRecord) -> tuple[datetime, bool, str]:
    # Sorted ascending, the last element is "the latest": at equal times a failure
    # (not passed -> True) sorts after a pass, then by test id for a stable order.
    return (test.finished, not test.passed, test.test_id)


def failing_criteria(test: TestRecord) -> tuple[str, ...]:
    """The names of the criteria a test failed, in the order the agent reported them."""
    return tuple(c.name for c in test.criteria if not c.ok)


def unique_bridges(session: Session) -> tuple[str, ...]:
    """``session.bridges`` without repeats (a host also listed as a member counts once)."""
    return tuple(dict.fromkeys(session.bridges))


class TestIndex:
    """Tests of each bridge sorted by time, for "the latest test in a window" in log time.

    Built once per evaluation and shared by every session and checkpoint, so a province
    (hundreds of bridges, thousands of tests) is judged without rescanning the records.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, tests: Iterable[TestRecord], now: datetime) -> None:
        _aware(now)
        self.now = now
        by_site: dict[str, list[TestRecord]] = {}
        for test in tests:
            if test.finished <= now:
                by_site.setdefault(test.site, []).append(test)
        self._tests = {site: sorted(rows, key=_order_key) for site, rows in by_site.items()}
        self._times = {site: [t.finished for t in rows] for site, rows in self._tests.items()}

    def latest(self, site: str, start: datetime, end: datetime) -> TestRecord | None:
        """The latest test of ``site`` finished in ``[start, end]``, or None."""
        times = self._times.get(site)
        if not times:
            return None
        i = bisect_right(times, end) - 1
        if i < 0 or times[i] < start:
            return None
        return self._tests[site][i]

    def last(self, site: str) -> TestRecord | None:
        """The latest test of ``site`` at all (up to ``now``)."""
        rows = self._tests.get(site)
        return rows[-1] if rows else None

    def last_per_site(self) -> dict[str, TestRecord]:
        return {site: rows[-1] for site, rows in self._tests.items()}


def confirmation(session_id: str, site: str, confirmations: Iterable[Confirmation],
                 now: datetime | None = None) -> Confirmation | None:
    """The earliest confirmation of ``site`` for the session (up to ``now``), late or not."""
    found = [c for c in confirmations if c.session_id == session_id and c.site == site
             and (now is None or c.at <= now)]
    return min(found, key=lambda c: c.at, default=None)


def _test_verdict(session: Session, spec: CheckpointSpec, site: str, index: TestIndex,
                  now: datetime) -> Verdict:
    deadline, start = spec.deadline(session), spec.window_start(session)
    test = index.latest(site, start, deadline)
    if test is not None and test.passed:
        state = "passed"
    elif now > deadline:
        state = "missed"
    else:
        state = "failed" if test is not None else "pending"
    return Verdict(session.id, site, spec.name, state, deadline, start,
                   test_id=test.test_id if test is not None else None,
                   failing=failing_criteria(test) if test is not None else ())


def _confirm_verdict(session: Session, spec: CheckpointSpec, site: str,
                     confirmed: dict[str, datetime], now: datetime) -> Verdict:
    deadline, start = spec.deadline(session), spec.window_start(session)
    at = confirmed.get(site)
    if at is not None and at <= deadline:
        state = "passed"
    else:
        state = "missed" if now > deadline else "pending"
    return Verdict(session.id, site, spec.name, state, deadline, start)


def verdicts(session: Session, checkpoints: Sequence[CheckpointSpec],
             tests: Iterable[TestRecord] | TestIndex, confirmations: Iterable[Confirmation],
             now: datetime) -> list[Verdict]:
    """One verdict per checkpoint x bridge of ``session`` at ``now`` (rules: module doc).

    ``tests`` may be a prebuilt :class:`TestIndex` (built with the same ``now``) when many
    sessions are judged at once. Checkpoint-major: checkpoints in the order given, bridges
    in the session's order.
    """
    _aware(now)
    index = tests if isinstance(tests, TestIndex) else TestIndex(tests, now)
    if index.now != now:
        raise ValueError("the TestIndex was built for another moment than now")
    confirmed: dict[str, datetime] = {}
    for c in confirmations:
        if c.session_id == session.id and c.at <= now and (
                c.site not in confirmed or c.at < confirmed[c.site]):
            confirmed[c.site] = c.at
    bridges = unique_bridges(session)
    out: list[Verdict] = []
    for spec in checkpoints:
        if spec.kind not in CHECKPOINT_KINDS:
            raise ValueError(f"checkpoint {spec.name!r}: kind {spec.kind!r} "
                             f"not in {CHECKPOINT_KINDS}")
        for site in bridges:
            if spec.kind == "confirm":
                out.append(_confirm_verdict(session, spec, site, confirmed, now))
            else:
                out.append(_test_verdict(session, spec, site, index, now))
    return out


def next_deadline(session: Session, checkpoints: Sequence[CheckpointSpec],
                  now: datetime) -> tuple[CheckpointSpec, datetime] | None:
    """The checkpoint whose deadline comes next (a deadline equal to ``now`` is still open:
    windows are inclusive), or None once every deadline has passed."""
    _aware(now)
    upcoming = [(spec.deadline(session), i, spec) for i, spec in enumerate(checkpoints)
                if spec.deadline(session) >= now]
    if not upcoming:
        return None
    deadline, _, spec = min(upcoming, key=lambda row: (row[0], row[1]))
    return spec, deadline


def session_ready(verdicts: Iterable[Verdict], checkpoint: str) -> bool:
    """True when every bridge's verdict for ``checkpoint`` is ``passed``.

    Pass the verdicts of one session. No verdict for that checkpoint is not "ready": a
    session without bridges or a misspelt checkpoint must not read as all green.
    """
    states = [v.state for v in verdicts if v.checkpoint == checkpoint]
    return bool(states) and all(state == "passed" for state in states)
