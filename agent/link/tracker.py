"""Per-target bookkeeping of probe packets: in flight, received, lost, late, in a window.

Shared by every transport (UDP reflector, ICMP, TCP connect), so loss and timing mean the
same whatever the method. Thread-safe: the sender and receiver threads write, the probe
reads. Memory is bounded for a prober that runs for months: seqs older than a horizon
are forgotten (a reply that old is counted late), and the window keeps at most
``window_seconds`` of events when nobody reads it.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

from agent.link import stats

NS = 1_000_000_000
UNKNOWN_SEQ = "unknown_seq"
CLOCK_STEP = "clock_step"


@dataclass(frozen=True)
class Counters:
    """Cumulative since the prober started; ``late`` is a subset of ``lost``."""

    sent: int
    received: int
    lost: int
    late: int
    duplicates: int
    reordered: int
    in_flight: int
    invalid: dict[str, int] = field(default_factory=dict)  # reason -> replies refused


@dataclass(frozen=True)
class Window:
    """Packets resolved since the previous ``take_window``: received events and losses."""

    events: list[tuple[int, float]]  # (seq, rtt seconds) in arrival order
    lost: int
    stats: stats.WindowStats


class Tracker:
    def __init__(self, timeout_seconds: float, window_seconds: float | None = 300.0) -> None:
        if not timeout_seconds > 0:
            raise ValueError("timeout must be > 0")
        self.timeout_ns = int(timeout_seconds * NS)
        self.window_ns = None if window_seconds is None else int(window_seconds * NS)
        # Long enough that a duplicate arriving a while after its packet is still
        # recognised as one, short enough to stay small.
        self._horizon_ns = max(10 * self.timeout_ns, 60 * NS)
        self._lock = threading.Lock()
        self._arrivals = stats.Arrivals()
        self._pending: OrderedDict[int, int] = OrderedDict()  # seq -> send ns, in send order
        self._history: deque[tuple[int, int]] = deque()  # (seq, send ns) within the horizon
        self._window: deque[tuple[int, int, float | None]] = deque()  # (ns, seq, rtt|None)
        self._next_seq = 0
        self._sent = 0
        self._lost = 0
        self._invalid: Counter[str] = Counter()
        self._jitter = 0.0
        self._last_rtt: float | None = None

    def next_seq(self) -> int:
        """The seq the next packet must carry (seqs are dense: one per packet sent)."""
        with self._lock:
            return self._next_seq

    def sent(self, seq: int, ns: int) -> None:
        """Record a packet as sent at ``ns`` (call before the reply can possibly arrive)."""
        with self._lock:
            self._pending[seq] = ns
            self._history.append((seq, ns))
            self._next_seq = max(self._next_seq, seq + 1)
            self._sent += 1

    def reply(self, seq: int, received_ns: int, residence_ns: int = 0) -> str:
        """Record a reply; returns its verdict (stats.RECEIVED/LATE/DUPLICATE or a refusal)."""
        with self._lock:
            if seq >= self._next_seq or seq < 0:
                self._invalid[UNKNOWN_SEQ] += 1
                return UNKNOWN_SEQ
            sent_ns = self._pending.get(seq)
            if sent_ns is None:  # already resolved, or forgotten: late or duplicate
                return self._arrivals.add(seq, on_time=False)
            rtt_ns = received_ns - sent_ns - residence_ns
            if rtt_ns < 0:  # the wall clock stepped back between send and receive
                self._invalid[CLOCK_STEP] += 1
                return CLOCK_STEP
            rtt = rtt_ns / NS
            verdict = self._arrivals.add(seq, on_time=rtt_ns <= self.timeout_ns)
            del self._pending[seq]
            if verdict == stats.RECEIVED:
                self._append(received_ns, seq, rtt)
            else:  # arrived after its timeout, before the expiry pass noticed
                self._lost += 1
                self._append(received_ns, seq, None)
            return verdict

    def invalid(self, reason: str) -> None:
        """Count a datagram that was not a usable reply (garbage, bad MAC, ...)."""
        with self._lock:
            self._invalid[reason] += 1

    def expire(self, now_ns: int, everything: bool = False) -> None:
        """Declare lost what has waited longer than the timeout (all, when ``everything``)."""
        with self._lock:
            while self._pending:
                seq, sent_ns = next(iter(self._pending.items()))
                if not everything and now_ns - sent_ns <= self.timeout_ns:
                    break
                del self._pending[seq]
                self._lost += 1
                self._append(now_ns, seq, None)
            forgotten = None
            while self._history and now_ns - self._history[0][1] > self._horizon_ns:
                forgotten = self._history.popleft()[0]
            if forgotten is not None:
                self._arrivals.forget_below(forgotten + 1)
            if self.window_ns is not None:
                while self._window and now_ns - self._window[0][0] > self.window_ns:
                    self._window.popleft()

    def _append(self, ns: int, seq: int, rtt: float | None) -> None:
        self._window.append((ns, seq, rtt))

    def take_window(self) -> Window:
        """Everything resolved since the last call, summarised (RFC 3550 jitter chained)."""
        with self._lock:
            entries = list(self._window)
            self._window.clear()
            events = [(seq, rtt) for _, seq, rtt in entries if rtt is not None]
            lost = len(entries) - len(events)
            summary = stats.summarize(events, lost, self._jitter, self._last_rtt)
            if summary.jitter_rfc3550 is not None:
                self._jitter = summary.jitter_rfc3550
            if events:
                self._last_rtt = events[-1][1]
            return Window(events, lost, summary)

    def counters(self) -> Counters:
        with self._lock:
            a = self._arrivals
            return Counters(self._sent, a.received, self._lost, a.late, a.duplicates,
                            a.reordered, len(self._pending), dict(self._invalid))
