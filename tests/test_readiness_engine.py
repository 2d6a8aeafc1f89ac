"""The readiness engine: every verdict state reached and left, window edges, two sessions
sharing a bridge, confirmations, the next deadline. The clock is always passed in."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from agent.wire import Criterion
from collector.readiness.engine import (
    TestIndex,
    confirmation,
    next_deadline,
    session_ready,
    verdicts,
)
from collector.readiness.model import (
    DEFAULT_CHECKPOINTS,
    VIETNAM,
    CheckpointSpec,
    Confirmation,
    Session,
    Verdict,
)
from collector.readiness.model import TestRecord as Record

H = timedelta(hours=1)
S = timedelta(seconds=1)
# A Thursday-morning session of Đồng Tháp, 08:00 Vietnam time (T).
T = datetime(2026, 3, 12, 8, 0, tzinfo=VIETNAM)
CP = {c.name: c for c in DEFAULT_CHECKPOINTS}
LOSS = Criterion("link-loss", False, 0.03, 0.01, "ratio")
BW = Criterion("bandwidth-up", False, 2.1e6, 5e6, "bit/s")
UPS = Criterion("ups-runtime", False, 900.0, 12600.0, "s")
RTT_OK = Criterion("link-rtt", True, 0.042, 0.15, "s")


def session(sid: str = "dt-2026-03-12-sang", start: datetime = T,
            members: tuple[str, ...] = ("dt-sa-dec", "dt-hong-ngu")) -> Session:
    return Session(sid, "Tiếp công dân định kỳ tháng 3/2026", start, 3 * H, "dt-trung-tam",
                   members)


def rec(site: str, finished: datetime, passed: bool, *failing: Criterion,
        test_id: str = "", session_id: str | None = "dt-2026-03-12-sang",
        trigger: str = "schedule") -> Record:
    criteria = (RTT_OK, *failing)
    return Record(test_id or f"{session_id}/x/{int(finished.timestamp()):x}"[-64:], site,
                  finished, passed, criteria, trigger, "collector", session_id)


def one(session_: Session, checkpoint: str, site: str, tests: list[Record],
        now: datetime, confirmations: tuple[Confirmation, ...] = ()) -> Verdict:
    found = [v for v in verdicts(session_, DEFAULT_CHECKPOINTS, tests, confirmations, now)
             if v.checkpoint == checkpoint and v.site == site]
    assert len(found) == 1
    return found[0]


def test_states_reached_and_left() -> None:
    """test-2 (window T-4h..T-2h) of one bridge through pending -> failed -> passed ->
    failed again (a later failure overrides an earlier pass) -> missed after the deadline;
    and a last-minute pass that stays passed after the deadline."""
    s = session()
    fail_1 = rec("dt-sa-dec", T - 3 * H - 50 * 60 * S, False, LOSS, BW, test_id="t-fail-1")
    pass_1 = rec("dt-sa-dec", T - 3 * H - 20 * 60 * S, True, test_id="t-pass-1")
    fail_2 = rec("dt-sa-dec", T - 2 * H - 30 * 60 * S, False, UPS, test_id="t-fail-2")
    tests = [fail_2, pass_1, fail_1]  # any order: the engine sorts by time

    v = one(s, "test-2", "dt-sa-dec", tests, T - 5 * H)
    assert (v.state, v.test_id, v.failing) == ("pending", None, ())
    assert (v.window_start, v.deadline) == (T - 4 * H, T - 2 * H)
    v = one(s, "test-2", "dt-sa-dec", tests, T - 3 * H - 45 * 60 * S)
    assert (v.state, v.test_id, v.failing) == ("failed", "t-fail-1",
                                               ("link-loss", "bandwidth-up"))
    v = one(s, "test-2", "dt-sa-dec", tests, T - 3 * H)
    assert (v.state, v.test_id, v.failing) == ("passed", "t-pass-1", ())
    v = one(s, "test-2", "dt-sa-dec", tests, T - 2 * H - 25 * 60 * S)
    assert (v.state, v.test_id, v.failing) == ("failed", "t-fail-2", ("ups-runtime",))
    v = one(s, "test-2", "dt-sa-dec", tests, T - 2 * H + S)
    assert (v.state, v.test_id, v.failing) == ("missed", "t-fail-2", ("ups-runtime",))

    rescue = rec("dt-sa-dec", T - 2 * H - 5 * 60 * S, True, test_id="t-rescue")
    v = one(s, "test-2", "dt-sa-dec", [*tests, rescue], T + 10 * H)
    assert (v.state, v.test_id) == ("passed", "t-rescue")
    # No test at all: pending up to the deadline, missed after it, no failing criteria.
    assert one(s, "test-2", "dt-hong-ngu", tests, T - 2 * H).state == "pending"
    v = one(s, "test-2", "dt-hong-ngu", tests, T - 2 * H + S)
    assert (v.state, v.test_id, v.failing) == ("missed", None, ())


def test_a_pass_just_inside_a_window() -> None:
    """Windows are closed: a pass exactly at window_start and one exactly at the deadline
    count; one second before window_start or after the deadline does not."""
    s = session()
    after = T + H  # every deadline of test-1 is long past
    ws, dl = CP["test-1"].window_start(s), CP["test-1"].deadline(s)
    assert (ws, dl) == (T - 36 * H, T - 24 * H)
    for finished in (ws, dl):
        v = one(s, "test-1", "dt-sa-dec", [rec("dt-sa-dec", finished, True, test_id="e")], after)
        assert (v.state, v.test_id) == ("passed", "e"), finished
    for finished in (ws - S, dl + S):
        v = one(s, "test-1", "dt-sa-dec", [rec("dt-sa-dec", finished, True, test_id="e")], after)
        assert (v.state, v.test_id) == ("missed", None), finished
    # Before the deadline, a pass one second before the window is still "no test yet".
    v = one(s, "test-1", "dt-sa-dec", [rec("dt-sa-dec", ws - S, True)], ws + H)
    assert v.state == "pending"


def test_now_at_the_deadline_is_still_open() -> None:
    """At exactly the deadline a failed bridge is still 'failed' (a test can still finish
    at that instant); one second later it is 'missed'."""
    s = session()
    tests = [rec("dt-hong-ngu", T - 3 * H, False, BW, test_id="bw")]
    assert one(s, "test-2", "dt-hong-ngu", tests, T - 2 * H).state == "failed"
    assert one(s, "test-2", "dt-hong-ngu", tests, T - 2 * H + S).state == "missed"


def test_records_after_now_are_ignored() -> None:
    """Asking about a past moment gives the answer of that moment: a pass finished after
    ``now`` (e.g. when replaying the day for the report) is not seen yet."""
    s = session()
    tests = [rec("dt-sa-dec", T - 3 * H, True)]
    assert one(s, "test-2", "dt-sa-dec", tests, T - 3 * H - S).state == "pending"
    assert one(s, "test-2", "dt-sa-dec", tests, T - 3 * H).state == "passed"


def test_same_instant_failure_wins() -> None:
    """Two tests of one bridge finished at the same second: the failure is the latest,
    whatever order the records come in (the cautious answer, and deterministic)."""
    s = session()
    at = T - 3 * H
    ok, bad = rec("dt-sa-dec", at, True, test_id="ok"), rec("dt-sa-dec", at, False, LOSS,
                                                            test_id="bad")
    for tests in ([ok, bad], [bad, ok]):
        v = one(s, "test-2", "dt-sa-dec", tests, T - 2 * H - S)
        assert (v.state, v.test_id) == ("failed", "bad")


def test_tests_of_other_bridges_are_ignored() -> None:
    """A pass of Hồng Ngự says nothing about Sa Đéc."""
    s = session()
    tests = [rec("dt-hong-ngu", T - 3 * H, True)]
    assert one(s, "test-2", "dt-hong-ngu", tests, T - 2 * H).state == "passed"
    assert one(s, "test-2", "dt-sa-dec", tests, T - 2 * H).state == "pending"


def test_bridge_in_two_sessions_the_same_day() -> None:
    """Sa Đéc sits in a 08:00 and a 14:00 session. Their test-1 windows overlap (10/3
    20:00 - 11/3 08:00 and 11/3 02:00 - 14:00): one pass at 05:00 on the 11th, ordered for
    the morning session, counts for both. A technician's test naming no session, and a test
    naming the other session, count too (a test is of the bridge). test-2 windows (04:00-06:00
    and 10:00-12:00 on the day) don't overlap, so a morning pass is no afternoon pass."""
    morning = session("dt-2026-03-12-sang")
    afternoon = session("dt-2026-03-12-chieu", T + 6 * H, members=("dt-sa-dec", "dt-lap-vo"))
    assert CP["test-1"].window_start(afternoon) == T - 30 * H
    shared = rec("dt-sa-dec", T - 27 * H, True, test_id="dt-2026-03-12-sang/test-1/0a1b2c3d")
    v_m = one(morning, "test-1", "dt-sa-dec", [shared], T - 24 * H)
    v_a = one(afternoon, "test-1", "dt-sa-dec", [shared], T - 24 * H)
    assert (v_m.state, v_a.state) == ("passed", "passed")
    assert v_a.test_id == "dt-2026-03-12-sang/test-1/0a1b2c3d"

    # A technician's failing test at 07:00 (no session) is the latest for both windows.
    tech = rec("dt-sa-dec", T - 25 * H, False, UPS, session_id=None, trigger="technician")
    assert one(morning, "test-1", "dt-sa-dec", [shared, tech], T - 24 * H).state == "failed"
    assert one(morning, "test-1", "dt-sa-dec", [shared, tech], T - 24 * H + S).state == "missed"
    assert one(afternoon, "test-1", "dt-sa-dec", [shared, tech], T - 24 * H).state == "failed"
    # At 12:00 a test ordered for the afternoon session passes: only its window holds it.
    late = rec("dt-sa-dec", T - 20 * H, True, session_id="dt-2026-03-12-chieu")
    tests = [shared, tech, late]
    assert one(afternoon, "test-1", "dt-sa-dec", tests, T - 18 * H).state == "passed"
    assert one(morning, "test-1", "dt-sa-dec", tests, T - 18 * H).state == "missed"

    morning_t2 = rec("dt-sa-dec", T - 3 * H, True)
    assert one(morning, "test-2", "dt-sa-dec", [morning_t2], T).state == "passed"
    assert one(afternoon, "test-2", "dt-sa-dec", [morning_t2], T).state == "pending"


def test_start_checkpoint_has_its_own_window() -> None:
    """'Ready at the start' needs the latest test of the last two hours before T to pass:
    a test-2 pass at T-2h01 doesn't count, one exactly at T-2h counts for both test-2 and
    start, and a failure at T-30min after it makes the start missed."""
    s = session()
    early = rec("dt-sa-dec", T - 2 * H - 60 * S, True, test_id="early")
    assert one(s, "test-2", "dt-sa-dec", [early], T + S).state == "passed"
    assert one(s, "start", "dt-sa-dec", [early], T - H).state == "pending"
    assert one(s, "start", "dt-sa-dec", [early], T + S).state == "missed"
    edge = rec("dt-sa-dec", T - 2 * H, True, test_id="edge")
    assert one(s, "test-2", "dt-sa-dec", [edge], T + S).test_id == "edge"
    v = one(s, "start", "dt-sa-dec", [edge], T + S)
    assert (v.state, v.test_id) == ("passed", "edge")
    worse = rec("dt-sa-dec", T - 30 * 60 * S, False, LOSS, test_id="worse")
    v = one(s, "start", "dt-sa-dec", [edge, worse], T + S)
    assert (v.state, v.test_id, v.failing) == ("missed", "worse", ("link-loss",))


def test_confirmations() -> None:
    """confirm (T-3d): a confirmation at or before the deadline passes; none is pending
    before the deadline and missed after; a late one stays missed but is on record;
    another session's confirmation does not count."""
    s = session()
    deadline = T - timedelta(days=3)
    on_time = Confirmation(s.id, "dt-sa-dec", deadline, "Nguyễn Văn An (UBND phường Sa Đéc)")
    late = Confirmation(s.id, "dt-hong-ngu", deadline + H, "Trần Thị Bình")
    other = Confirmation("dt-2026-03-19-sang", "dt-trung-tam", deadline - H, "Ban TCD tỉnh")
    cs = (late, on_time, other)

    before = deadline - S
    assert one(s, "confirm", "dt-sa-dec", [], before, cs).state == "pending"  # not given yet
    assert one(s, "confirm", "dt-sa-dec", [], deadline, cs).state == "passed"
    v = one(s, "confirm", "dt-sa-dec", [], T, cs)
    assert (v.state, v.deadline, v.window_start) == ("passed", deadline, deadline)
    assert one(s, "confirm", "dt-hong-ngu", [], before, cs).state == "pending"
    assert one(s, "confirm", "dt-hong-ngu", [], deadline + 2 * H, cs).state == "missed"
    assert confirmation(s.id, "dt-hong-ngu", cs) == late
    assert confirmation(s.id, "dt-hong-ngu", cs, now=deadline) is None
    assert one(s, "confirm", "dt-trung-tam", [], T, cs).state == "missed"
    assert confirmation(s.id, "dt-trung-tam", cs) is None


def test_every_bridge_times_every_checkpoint() -> None:
    """One verdict per checkpoint x bridge (host, members, national), checkpoint-major, and
    a host also listed as a member judged once (no duplicate series downstream)."""
    s = Session("dt-2026-04-09-sang", "Tiếp công dân định kỳ tháng 4/2026", T, 3 * H,
                "dt-trung-tam", ("dt-sa-dec", "dt-trung-tam", "dt-cai-be"),
                national=("tw-tiep-cong-dan",))
    vs = verdicts(s, DEFAULT_CHECKPOINTS, [], [], T - 10 * 24 * H)
    assert [(v.checkpoint, v.site) for v in vs] == [
        (c.name, site) for c in DEFAULT_CHECKPOINTS
        for site in ("dt-trung-tam", "dt-sa-dec", "dt-cai-be", "tw-tiep-cong-dan")]
    assert {v.state for v in vs} == {"pending"}


def test_next_deadline() -> None:
    """The next checkpoint due walks confirm -> test-1 -> test-2 -> start -> None; a
    deadline equal to now is still the next one (inclusive)."""
    s = session()
    steps = [(T - timedelta(days=5), "confirm"), (T - timedelta(days=3), "confirm"),
             (T - timedelta(days=3) + S, "test-1"), (T - 24 * H + S, "test-2"),
             (T - H, "start"), (T, "start")]
    for now, name in steps:
        found = next_deadline(s, DEFAULT_CHECKPOINTS, now)
        assert found is not None and found[0].name == name, now
        assert found[1] == CP[name].deadline(s)
    assert next_deadline(s, DEFAULT_CHECKPOINTS, T + S) is None


def test_session_ready() -> None:
    """Ready only when every bridge passed that checkpoint; nothing to judge is not ready."""
    s = session()
    tests = [rec(site, T - 3 * H, True) for site in ("dt-trung-tam", "dt-sa-dec")]
    vs = verdicts(s, DEFAULT_CHECKPOINTS, tests, [], T - 2 * H)
    assert not session_ready(vs, "test-2")  # Hồng Ngự hasn't tested
    tests.append(rec("dt-hong-ngu", T - 2 * H, True))
    vs = verdicts(s, DEFAULT_CHECKPOINTS, tests, [], T - 2 * H)
    assert session_ready(vs, "test-2")
    assert not session_ready(vs, "test-1")
    assert not session_ready(vs, "tets-2")
    assert not session_ready([], "test-2")


def test_index_shared_between_sessions_and_bad_input() -> None:
    """A TestIndex built once serves many sessions but only for its own moment; a naive
    clock and an unknown checkpoint kind are refused rather than guessed."""
    s = session()
    now = T - 2 * H
    tests = [rec("dt-sa-dec", T - 3 * H, True)]
    index = TestIndex(tests, now)
    assert verdicts(s, DEFAULT_CHECKPOINTS, index, [], now) == \
        verdicts(s, DEFAULT_CHECKPOINTS, tests, [], now)
    with pytest.raises(ValueError, match="another moment"):
        verdicts(s, DEFAULT_CHECKPOINTS, index, [], now + S)
    with pytest.raises(ValueError, match="aware"):
        verdicts(s, DEFAULT_CHECKPOINTS, tests, [], now.replace(tzinfo=None))
    with pytest.raises(ValueError, match="kind"):
        verdicts(s, [CheckpointSpec("rehearsal", "rehearse", -H)], tests, [], now)
    assert index.last("dt-sa-dec") == tests[0] and index.last("dt-lap-vo") is None
    assert index.last_per_site() == {"dt-sa-dec": tests[0]}
