"""The live lane: early copies of fresh rows while the spool drains a backlog.

After a long outage the spool holds a day of samples. Sent in seq order alone, the newest
sample waits behind all of them: a day at 10 s is about 20 MB, over a minute and a half
on a 2 Mbit/s commune line (``bench/drain_bench.py`` measures it), during which the NOC
sees the bridge stale, and a readiness test result the collector ordered meanwhile waits
too, until the order times out and is sent again.

So the publisher's window carries two lanes:

- **in order**: every row in seq order, as always. Only this lane's PUBACK marks a row
  acknowledged (kept a while, then purged: ``agent.spool``), so the spool drains in
  order, its oldest row (the ``floor`` every message carries) keeps its meaning, and
  nothing is lost if the link drops again.
- **live**: while the in-order lane cannot reach the newest row in its current round, the
  newest rows appended since the connection came up are also sent at once as early
  copies, in ``reserve`` slots of the window that the in-order lane leaves free. An early
  copy's PUBACK removes nothing: the row goes again in its turn.

The collector takes the early copy as new and current, drops the in-order copy later as a
duplicate, and keeps the backlog's old samples out of the current view (``collector.state``
treats them as history). The cost is one extra message per live sample during a drain, a
few KB every interval. The benefit besides fresh data: a collector restarted in the middle
of a drain still receives every seq in order from the in-order lane, so its loss
accounting (``collector.dedup``) never depends on an early copy that went to its
previous run. In steady state (nothing behind) the in-order lane reaches the newest row at
once and no copy is made.
"""

from __future__ import annotations

from agent.spool import Spool

Row = tuple[int, str, bytes]  # (seq, topic, payload), as Spool.pending returns them


def reserve_for(window: int) -> int:
    """Slots of a window kept for early copies while a backlog drains."""
    return max(1, window // 8)


class LiveLane:
    """Which fresh rows to copy early; owned by the publisher's sender thread."""

    def __init__(self, spool: Spool, reserve: int) -> None:
        self.spool = spool
        self.reserve = reserve
        self.mark = 0  # rows above this seq were appended since the connection came up
        self.copied = 0  # the newest seq sent early on this connection
        self.inflight: dict[int, int] = {}  # paho mid -> seq of an early copy in flight
        self.sent_total = 0

    def reset(self) -> None:
        """A new connection: what is spooled now is backlog; copies in flight are void."""
        self.mark = self.copied = self.spool.last_seq()
        self.inflight.clear()

    def plan(self, ordered: list[Row], room: int, in_order_inflight: int,
             limit: int) -> tuple[list[Row], list[Row]]:
        """(rows the in-order lane sends now, rows to copy early now).

        ``ordered`` are the next rows in seq order, as many as the ``room`` left in the
        window; ``in_order_inflight`` is that lane's rows still awaiting a PUBACK.
        """
        newest = self.spool.last_seq()
        if not ordered or ordered[-1][0] >= newest:  # in order reaches the newest row now
            return ordered, []
        reserve = min(self.reserve, limit // 2)  # a broker may allow a tiny window
        take = min(reserve - len(self.inflight), room)
        early: list[Row] = []
        if take > 0:
            after = max(self.mark, self.copied, ordered[-1][0], newest - take)
            early = self.spool.pending(after, take)
            if early:
                self.copied = early[-1][0]
        # The in-order lane leaves the reserve free, so the next fresh row goes at once.
        keep = max(0, min(room - len(early), limit - reserve - in_order_inflight))
        return ordered[:keep], early

    def sent(self, mid: int, seq: int) -> None:
        self.inflight[mid] = seq
        self.sent_total += 1

    def settle(self, mid: int) -> bool:
        """True when ``mid`` was an early copy (its PUBACK marks nothing acknowledged)."""
        return self.inflight.pop(mid, None) is not None
