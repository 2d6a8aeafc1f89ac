"""Exactly-once accounting of a site's message stream by ``(epoch, seq)``.

QoS 1 and the agent's spool re-send on every reconnect, so duplicates are normal and
must be dropped; gaps must be told apart from late arrivals. The agent's ``floor`` (its
oldest unacknowledged seq when it built the message) says that every seq below it was
already accepted by the broker, hence delivered to us before this message, or dropped by
the agent's spool bound. So memory stays bounded: a low-water mark plus the few seqs
that arrived above it out of order.
"""

from __future__ import annotations

from enum import Enum


class Verdict(Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    OLD_EPOCH = "old_epoch"


class SeqTracker:
    __slots__ = ("above", "duplicates", "epoch", "lost", "low", "received")

    def __init__(self) -> None:
        self.epoch = 0
        self.low = 0  # every seq <= low was accepted or is known lost
        self.above: set[int] = set()
        self.received = 0
        self.duplicates = 0
        self.lost = 0

    def accept(self, epoch: int, seq: int, floor: int) -> Verdict:
        if epoch != self.epoch:
            if epoch < self.epoch:
                return Verdict.OLD_EPOCH
            # A new spool (reinstalled agent): a new stream that starts from seq 1.
            self.epoch, self.low, self.above = epoch, 0, set()
        if seq <= self.low or seq in self.above:
            self.duplicates += 1
            return Verdict.DUPLICATE
        self.received += 1
        self.above.add(seq)
        if floor - 1 > self.low:
            seen_below = sum(1 for s in self.above if s < floor)
            self.lost += floor - 1 - self.low - seen_below
            self.above = {s for s in self.above if s >= floor}
            self.low = floor - 1
        while self.low + 1 in self.above:
            self.low += 1
            self.above.remove(self.low)
        return Verdict.NEW
