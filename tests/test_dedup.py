"""SeqTracker: exactly-once accounting with bounded memory."""

from __future__ import annotations

import random

import pytest

from collector import dedup
from collector.dedup import EPOCHS_KEPT, SeqTracker, Verdict


def test_in_order_stream_keeps_no_backlog() -> None:
    t = SeqTracker()
    for seq in range(1, 1001):
        assert t.accept(1, seq, seq) is Verdict.NEW
    assert (t.streams[1].low, t.streams[1].above, t.received, t.lost) == (1000, set(), 1000, 0)


def test_every_resend_order_counts_each_seq_once() -> None:
    rng = random.Random(7)
    sent = list(range(1, 501))
    deliveries = sent + rng.sample(sent, 200)  # QoS 1 re-sends after reconnects
    rng.shuffle(deliveries)
    t = SeqTracker()
    verdicts = [t.accept(1, seq, 1) for seq in deliveries]
    assert verdicts.count(Verdict.NEW) == 500 == t.received
    assert t.duplicates == 200 and t.lost == 0
    assert t.streams[1].low == 500 and not t.streams[1].above


def test_floor_releases_memory_and_counts_what_never_came() -> None:
    t = SeqTracker()
    t.accept(1, 1, 1)
    for seq in range(3, 103):  # 2 was dropped by the agent's spool bound
        t.accept(1, seq, 2)
    assert len(t.streams[1].above) == 100 and t.lost == 0  # 2 may still be in flight
    t.accept(1, 103, 103)  # the agent says: nothing below 103 is coming any more
    assert t.lost == 1 and t.streams[1].low == 103 and not t.streams[1].above
    assert t.accept(1, 2, 2) is Verdict.DUPLICATE  # too late: already counted lost


def test_a_new_epoch_is_a_new_stream_whatever_its_value() -> None:
    t = SeqTracker()
    t.accept(1_795_000_000_000, 10, 1)
    # Reinstalled on a PC whose clock is a day behind: a smaller epoch, still a new spool.
    assert t.accept(1_794_900_000_000, 1, 1) is Verdict.NEW
    # A late re-send from the old spool is still recognised as already counted.
    assert t.accept(1_795_000_000_000, 10, 1) is Verdict.DUPLICATE
    assert t.received == 2 and t.duplicates == 1


def test_only_the_most_recent_epochs_are_kept() -> None:
    t = SeqTracker()
    for epoch in range(1, EPOCHS_KEPT + 2):
        assert t.accept(epoch, 1, 1) is Verdict.NEW
    assert len(t.streams) == EPOCHS_KEPT
    assert t.accept(1, 2, 1) is Verdict.OLD_EPOCH


def test_a_forged_floor_or_seq_jump_is_refused_not_counted_lost() -> None:
    """A floor (or a seq ahead of its floor) further than any spool holds is refused: taken
    as it is, it would add ~2^63 to the lost counter."""
    tracker = SeqTracker()
    assert tracker.accept(1, 1, 1) is Verdict.NEW
    assert tracker.accept(1, 2**62, 2**62) is Verdict.BAD_FLOOR
    assert tracker.accept(1, 2**62, 2) is Verdict.BAD_FLOOR
    assert tracker.accept(7, 2**62, 1) is Verdict.BAD_FLOOR  # a new stream too
    assert tracker.lost == 0 and tracker.received == 1
    assert tracker.accept(1, 2, 2) is Verdict.NEW and tracker.lost == 0


def test_seqs_held_above_a_gap_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gap that never fills (a floor that never passes it) cannot grow memory without
    bound: past MAX_ABOVE seqs the oldest gap is counted lost and the mark moves on."""
    monkeypatch.setattr(dedup, "MAX_ABOVE", 100)
    tracker = SeqTracker()
    tracker.accept(1, 1, 1)
    for seq in range(3, 200):  # seq 2 never comes, and the floor stays at 2
        assert tracker.accept(1, seq, 2) is Verdict.NEW
    stream = tracker.streams[1]
    assert len(stream.above) <= 100
    assert tracker.lost == 1 and stream.low == 199
