"""Exactly-once accounting of a site's message streams by ``(epoch, seq)``.

QoS 1 and the agent's spool re-send on every reconnect, so duplicates are normal and
must be dropped; gaps must be told apart from late arrivals. The agent's ``floor`` (the
oldest seq its spool still kept when it built the message, unacknowledged or acknowledged
but kept until the broker has it on disk: ``agent.spool``) says that every seq below it
sat on the broker across a snapshot, hence was delivered to us before this message, or
was dropped by the agent's spool bound. A seq at or above it may come again (the agent
resends kept rows after a reconnect), so it is taken as new when it arrives after later
seqs (``above``). So memory stays bounded: a low-water mark plus the seqs that arrived
above it out of order.

A stream this process first meets in the middle (the collector restarted, or the site's
spool was already numbering before it subscribed) starts at its first message: the seqs
below that one may have been taken by the collector's previous run, which kept no record,
so a seq missing below ``start`` is not counted lost (the agent's own
``agent_spool_dropped_total`` still counts what its spool dropped). Counting them made
every site report its whole history as lost after each collector restart. Above ``start``
a gap is a real loss: the broker delivers in the order it received, so a seq sent after
the first one we saw cannot have gone to the previous run, unless the agent sent it
earlier than its turn (``agent.live_lane``), and those early copies are sent again in
their turn, so nothing counted here rests on them. What a run took in but had not yet
acknowledged when it was stopped (its last read batch at most) is delivered again and
counted by the next run too; each run's counters start from zero for Prometheus anyway,
and counting it once across runs would need these marks stored durably before each
acknowledgement.

An epoch names one spool (a reinstalled agent starts a new one). Epochs are told apart,
never ordered: a PC whose clock is behind may create a "smaller" epoch than its last. The
few most recent epochs are tracked side by side, so a late message of the previous spool
is still counted once.
"""

from __future__ import annotations

from enum import Enum

EPOCHS_KEPT = 4
# Bounds against a broken or hostile agent: seqs held above the low-water mark (one spool's
# worth, 200k by default, never waits this long for one gap), and how far one message may
# move the mark (further than any spool holds: a forged floor would add it all as "lost").
MAX_ABOVE = 262_144
MAX_FLOOR_JUMP = 10_000_000


class Verdict(Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    OLD_EPOCH = "old_epoch"  # from a spool we stopped tracking EPOCHS_KEPT epochs ago
    BAD_FLOOR = "bad_floor"  # a floor further ahead than any spool can be: refused, not counted


class Stream:
    """One epoch's sequence numbers: a low-water mark and what arrived above it."""

    __slots__ = ("above", "low", "start")

    def __init__(self, seq: int, floor: int) -> None:
        # Below the first message's floor everything reached the broker before that message
        # was built, so it was delivered before it: to us, or to a previous run.
        self.low = floor - 1  # every seq <= low was accepted or is known lost
        self.start = seq  # the first seq this process saw: gaps below it are not losses
        self.above: set[int] = set()


class SeqTracker:
    __slots__ = ("duplicates", "lost", "received", "retired", "streams")

    def __init__(self) -> None:
        self.streams: dict[int, Stream] = {}  # epoch -> stream, oldest first
        self.retired: set[int] = set()
        self.received = 0
        self.duplicates = 0
        self.lost = 0

    def accept(self, epoch: int, seq: int, floor: int) -> Verdict:
        if seq - floor > MAX_FLOOR_JUMP:  # more unacknowledged than any spool holds
            return Verdict.BAD_FLOOR
        stream = self.streams.get(epoch)
        if stream is None:
            if epoch in self.retired:
                return Verdict.OLD_EPOCH
            stream = self.streams[epoch] = Stream(seq, floor)
            if len(self.streams) > EPOCHS_KEPT:
                oldest = next(iter(self.streams))
                del self.streams[oldest]
                if len(self.retired) < 1024:
                    self.retired.add(oldest)
        if seq <= stream.low or seq in stream.above:
            self.duplicates += 1
            return Verdict.DUPLICATE
        if floor - 1 - stream.low > MAX_FLOOR_JUMP:
            return Verdict.BAD_FLOOR
        self.received += 1
        stream.above.add(seq)
        if len(stream.above) > MAX_ABOVE:
            # The oldest gap will not be filled any more: count it lost and move on.
            floor = max(floor, min(stream.above))
        if floor - 1 > stream.low:
            first = max(stream.low + 1, stream.start)
            seen = sum(1 for s in stream.above if first <= s < floor)
            self.lost += max(0, floor - first) - seen
            stream.above = {s for s in stream.above if s >= floor}
            stream.low = floor - 1
        while stream.low + 1 in stream.above:
            stream.low += 1
            stream.above.remove(stream.low)
        return Verdict.NEW
