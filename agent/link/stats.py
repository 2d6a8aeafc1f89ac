"""Pure arithmetic of link quality: no sockets, no clocks, so every number can be checked.

**RTT quantiles.** 0, 0.5, 0.9, 0.99 and 1 of a window, by linear interpolation between
the closest ranks (Hyndman & Fan type 7, numpy's default): 0 is the minimum, 1 the
maximum.

**Jitter**, two stated definitions, both on RTTs:

- ``rfc3550``: the interarrival jitter estimator of RFC 3550 §6.4.1, ``J += (|D| - J)/16``
  with ``D`` the difference between consecutive RTTs *in arrival order*. It is a running
  estimate: a caller chaining windows passes the previous ``J`` and last RTT on.
- ``mean_abs_diff``: the mean of ``|RTT(n+1) - RTT(n)|`` over pairs of *consecutive
  sequence numbers* that both arrived (a lost packet breaks its pairs rather than
  stretching one across two intervals), as IPPM's IPDV (RFC 3393) with consecutive pairs.

**Loss, duplicates, reorders** from ``(seq, rtt)`` arrival events (``Arrivals``): the
first copy of a seq within the timeout is *received*; a first copy after it is *late*
(the packet was already counted lost: a late packet is useless to a call, so ``late`` is
a subset of ``lost``); any further copy is a *duplicate*; a received packet whose seq is
lower than one already received is *reordered*.

**Quality: the ITU-T G.107 E-model** (06/2015), R = R0 - Idd - Ie,eff, with

- ``R0 = 93.2``, the rating G.107 gives with every parameter at its default value
  (Ro - Is - Id at zero delay; §7 and Table 3). Echo is taken as fully controlled (the
  rooms use echo cancelling), so of the delay impairment Id only Idd remains: the
  *simplified* E-model used for network planning (cf. ITU-T G.108, G.114).
- ``Idd``, the impairment of absolute one-way delay Ta (G.107 eq. 7-27, defaults
  mT = 100 ms, sT = 1): 0 for Ta <= 100 ms, else
  ``25 * ((1 + X^6)^(1/6) - 3 * (1 + (X/3)^6)^(1/6) + 2)`` with ``X = log2(Ta / 100 ms)``.
  Ta is the mouth-to-ear delay the network adds: ``RTT/2`` plus a jitter buffer, by
  default ``2 x`` the RFC 3550 jitter (a receiver's de-jitter buffer is sized at a
  small multiple of the jitter; two is the usual planning figure).
- ``Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl)`` (G.107 eq. 7-29), Ppl the
  packet loss in percent, ``BurstR = 1`` (random loss: the probe's 1 packet per second
  cannot see bursts). Codec: **G.711 with packet loss concealment, Ie = 0, Bpl = 25.1**
  (ITU-T G.113 Appendix I). Why a narrowband codec for a video conference: G.107 and its
  MOS scale are narrowband; the wideband codecs conference platforms use (Opus, G.722)
  are rated on G.107.1's different scale (R up to 129), so their figures cannot be put
  in this formula. G.711+PLC is the standard's reference codec, with published values,
  and conservative: a modern wideband codec conceals loss at least as well.

**MOS** (G.107 Annex B, eq. B-4): ``1`` for R < 0, ``4.5`` for R > 100, else
``1 + 0.035 R + 7e-6 R (R - 60)(100 - R)``, clipped to [1, 4.5] (the cubic dips just
below 1 for R < 6.5). R = 93.2 gives MOS 4.41; R = 90, 80, 70, 60, 50 give 4.34, 4.03,
3.60, 3.10, 2.58 (G.107 Table B.1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

QUANTILES = (0.0, 0.5, 0.9, 0.99, 1.0)
R0_DEFAULT = 93.2
RFC3550_GAIN = 1 / 16


@dataclass(frozen=True)
class Codec:
    """E-model figures of a codec: equipment impairment Ie and loss robustness Bpl."""

    name: str
    ie: float
    bpl: float


G711_PLC = Codec("G.711 with PLC (G.113 App. I)", ie=0.0, bpl=25.1)


# ---------------------------------------------------------------------------------------
# Delay distribution


def quantiles(values: Iterable[float], qs: Sequence[float] = QUANTILES) -> dict[float, float]:
    """Quantiles by linear interpolation between closest ranks; ValueError when empty."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("quantiles of an empty window")
    out: dict[float, float] = {}
    last = len(ordered) - 1
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q} outside [0, 1]")
        position = q * last
        low = math.floor(position)
        high = min(low + 1, last)
        out[q] = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
    return out


def rfc3550_jitter(rtts: Iterable[float], initial: float = 0.0) -> float:
    """RFC 3550 §6.4.1 jitter over RTTs in arrival order, starting from ``initial``."""
    jitter = initial
    previous: float | None = None
    for rtt in rtts:
        if previous is not None:
            jitter += (abs(rtt - previous) - jitter) * RFC3550_GAIN
        previous = rtt
    return jitter


def mean_abs_diff(events: Iterable[tuple[int, float]]) -> float | None:
    """Mean |RTT(n+1) - RTT(n)| over consecutive seqs both received; None without a pair."""
    by_seq = dict(events)
    diffs = [abs(by_seq[seq + 1] - rtt) for seq, rtt in by_seq.items() if seq + 1 in by_seq]
    return sum(diffs) / len(diffs) if diffs else None


# ---------------------------------------------------------------------------------------
# Loss, duplicates, reorders

RECEIVED = "received"
LATE = "late"
DUPLICATE = "duplicate"


class Arrivals:
    """Classifies replies by sequence number as they arrive (see the module docstring).

    Incremental, so the live prober and the pure ``count_events`` share one definition.
    ``forget_below`` bounds memory on a prober that runs for months.
    """

    def __init__(self) -> None:
        self.received = 0
        self.late = 0
        self.duplicates = 0
        self.reordered = 0
        self._seen: set[int] = set()
        self._highest: int | None = None

    def add(self, seq: int, on_time: bool) -> str:
        """Record one reply; returns RECEIVED, LATE or DUPLICATE."""
        if seq in self._seen:
            self.duplicates += 1
            return DUPLICATE
        self._seen.add(seq)
        if not on_time:
            self.late += 1
            return LATE
        self.received += 1
        if self._highest is not None and seq < self._highest:
            self.reordered += 1
        else:
            self._highest = seq
        return RECEIVED

    def forget_below(self, seq: int) -> None:
        """Stop remembering seqs lower than ``seq`` (their replies are stale by now)."""
        self._seen = {s for s in self._seen if s >= seq}


def delay_impairment(one_way_seconds: float) -> float:
    """Idd of G.107 eq. 7-27 (mT = 100 ms, sT = 1) for the one-way delay Ta."""
    ta_ms = one_way_seconds * 1000.0
    if ta_ms <= 100.0:
        return 0.0
    x = math.log2(ta_ms / 100.0)
    return 25.0 * ((1 + x**6) ** (1 / 6) - 3 * (1 + (x / 3) ** 6) ** (1 / 6) + 2)


def effective_equipment_impairment(loss_percent: float, codec: Codec = G711_PLC,
                                   burst_r: float = 1.0) -> float:
    """Ie,eff of G.107 eq. 7-29 for a packet loss probability in percent."""
    if not 0.0 <= loss_percent <= 100.0:
        raise ValueError(f"packet loss {loss_percent}% outside [0, 100]")
    return codec.ie + (95.0 - codec.ie) * loss_percent / (loss_percent / burst_r + codec.bpl)


def r_factor(rtt_seconds: float, jitter_seconds: float, loss_ratio: float,
             codec: Codec = G711_PLC, jitter_buffer_seconds: float | None = None,
             r0: float = R0_DEFAULT) -> float:
    """Transmission rating R from RTT, jitter and loss (0..1); see the module docstring."""
    buffer = 2.0 * jitter_seconds if jitter_buffer_seconds is None else jitter_buffer_seconds
    one_way = rtt_seconds / 2.0 + buffer
    return r0 - delay_impairment(one_way) - effective_equipment_impairment(
        100.0 * loss_ratio, codec)


def mos(r: float) -> float:
    """MOS-CQE from R (G.107 Annex B), clipped to [1, 4.5]."""
    if r <= 0.0:
        return 1.0
    if r >= 100.0:
        return 4.5
    return min(4.5, max(1.0, 1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)))


# ---------------------------------------------------------------------------------------
# A window, summarised


@dataclass(frozen=True)
class WindowStats:
    """What one window of replies says about the link; None where it cannot say."""

    received: int
    lost: int
    rtt: dict[float, float] | None  # QUANTILES -> seconds
    rtt_mean: float | None
    jitter_rfc3550: float | None
    jitter_mean_abs_diff: float | None
    loss_ratio: float | None
    r_factor: float | None
    mos: float | None


def summarize(events: Sequence[tuple[int, float]], lost: int, jitter_initial: float = 0.0,
              previous_rtt: float | None = None, codec: Codec = G711_PLC) -> WindowStats:
    """Summarise received ``(seq, rtt)`` events (arrival order) and a count of lost ones.

    ``jitter_initial`` and ``previous_rtt`` carry the RFC 3550 estimator over from the
    window before, so a continuous prober reports one running estimate.
    """
    rtts = [rtt for _, rtt in events]
    resolved = len(rtts) + lost
    if not resolved:
        return WindowStats(0, 0, None, None, None, None, None, None, None)
    loss_ratio = lost / resolved
    if not rtts:
        r = r_factor(0.0, 0.0, loss_ratio, codec)
        return WindowStats(0, lost, None, None, None, None, loss_ratio, r, mos(r))
    chained = rtts if previous_rtt is None else [previous_rtt, *rtts]
    has_pair = len(chained) > 1
    jitter = rfc3550_jitter(chained, jitter_initial) if has_pair else None
    mean = sum(rtts) / len(rtts)
    r = r_factor(mean, jitter or 0.0, loss_ratio, codec)
    return WindowStats(len(rtts), lost, quantiles(rtts), mean, jitter, mean_abs_diff(events),
                       loss_ratio, r, mos(r))
