"""SeqTracker: exactly-once accounting with bounded memory."""

from __future__ import annotations

import random

from collector.dedup import SeqTracker, Verdict


def test_in_order_stream_keeps_no_backlog() -> None:
    t = SeqTracker()
    for seq in range(1, 1001):
        assert t.accept(1, seq, seq) is Verdict.NEW
    assert (t.low, t.above, t.received, t.lost) == (1000, set(), 1000, 0)


def test_every_resend_order_counts_each_seq_once() -> None:
    rng = random.Random(7)
    sent = list(range(1, 501))
    deliveries = sent + rng.sample(sent, 200)  # QoS 1 re-sends after reconnects
    rng.shuffle(deliveries)
    t = SeqTracker()
    verdicts = [t.accept(1, seq, 1) for seq in deliveries]
    assert verdicts.count(Verdict.NEW) == 500 == t.received
    assert t.duplicates == 200 and t.lost == 0 and t.low == 500 and not t.above


def test_floor_releases_memory_and_counts_what_never_came() -> None:
    t = SeqTracker()
    t.accept(1, 1, 1)
    for seq in range(3, 103):  # 2 was dropped by the agent's spool bound
        t.accept(1, seq, 2)
    assert len(t.above) == 100 and t.lost == 0  # 2 may still be in flight
    t.accept(1, 103, 103)  # the agent says: nothing below 103 is coming any more
    assert t.lost == 1 and t.low == 103 and not t.above
    assert t.accept(1, 2, 2) is Verdict.DUPLICATE  # too late: already counted lost


def test_epochs() -> None:
    t = SeqTracker()
    t.accept(5, 10, 1)
    assert t.accept(4, 11, 1) is Verdict.OLD_EPOCH
    assert t.accept(6, 1, 1) is Verdict.NEW and t.low == 1
