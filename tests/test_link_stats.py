"""Link arithmetic against hand-computed values and the published E-model reference points."""

from __future__ import annotations

import math

import pytest

from agent.link import stats

MS = 0.001


def test_quantiles_interpolate_between_closest_ranks() -> None:
    q = stats.quantiles([5.0, 1.0, 4.0, 2.0, 3.0])
    assert q == pytest.approx({0.0: 1.0, 0.5: 3.0, 0.9: 4.6, 0.99: 4.96, 1.0: 5.0})
    assert stats.quantiles([7.0]) == dict.fromkeys(stats.QUANTILES, 7.0)
    with pytest.raises(ValueError, match="empty"):
        stats.quantiles([])


def test_rfc3550_jitter_on_a_hand_computed_sequence() -> None:
    # D = 2, 1, 4 ms; J = 2/16 = 0.125; J += (1 - J)/16 -> 0.1796875;
    # J += (4 - J)/16 -> 0.41845703125 (ms).
    rtts = [10 * MS, 12 * MS, 11 * MS, 15 * MS]
    assert stats.rfc3550_jitter(rtts) == pytest.approx(0.41845703125 * MS)
    # Chained: the estimate continues from the previous window's J and last RTT.
    first = stats.rfc3550_jitter(rtts[:2])
    assert stats.rfc3550_jitter(rtts[1:], initial=first) == pytest.approx(0.41845703125 * MS)
    assert stats.rfc3550_jitter([]) == 0.0 and stats.rfc3550_jitter([5.0]) == 0.0


def test_the_two_jitter_definitions_order_differently() -> None:
    """RFC 3550 follows arrival order; the mean absolute difference follows seq order."""
    in_order = [(0, 10 * MS), (1, 12 * MS), (2, 11 * MS), (3, 15 * MS)]
    arrived = [in_order[0], in_order[2], in_order[1], in_order[3]]
    assert stats.mean_abs_diff(arrived) == stats.mean_abs_diff(in_order) == pytest.approx(
        (2 + 1 + 4) / 3 * MS)
    # Arrival order 10, 11, 12, 15: D = 1, 1, 3 ms.
    j = 0.0
    for d in (1.0, 1.0, 3.0):
        j += (d - j) / 16
    assert stats.rfc3550_jitter([r for _, r in arrived]) == pytest.approx(j * MS)


def test_mean_abs_diff_skips_gaps() -> None:
    # seq 2 lost: pairs (0,1) = 2 ms and (3,4) = 4 ms; 12 -> 11 across the gap is not a pair.
    events = [(0, 10 * MS), (1, 12 * MS), (3, 11 * MS), (4, 15 * MS)]
    assert stats.mean_abs_diff(events) == pytest.approx(3 * MS)
    assert stats.mean_abs_diff([(0, 1.0), (2, 2.0)]) is None


def test_arrivals_forget_old_seqs() -> None:
    arrivals = stats.Arrivals()
    assert arrivals.add(1, on_time=True) == stats.RECEIVED
    assert arrivals.add(1, on_time=True) == stats.DUPLICATE
    arrivals.forget_below(2)
    # Forgotten: a copy that old can no longer be told from a late first copy.
    assert arrivals.add(1, on_time=False) == stats.LATE


# --- E-model -----------------------------------------------------------------------------


def test_no_impairment_is_r_93_2_and_mos_4_41() -> None:
    r = stats.r_factor(0.0, 0.0, 0.0)
    assert r == pytest.approx(93.2)
    assert stats.mos(r) == pytest.approx(4.41, abs=0.005)


@pytest.mark.parametrize(("r", "mos"), [  # ITU-T G.107 Table B.1
    (100.0, 4.50), (90.0, 4.34), (80.0, 4.03), (70.0, 3.60), (60.0, 3.10), (50.0, 2.58),
])
def test_mos_matches_g107_annex_b(r: float, mos: float) -> None:
    # The table rounds to two decimals (and lists 4.03 for the formula's 4.024 at R = 80).
    assert stats.mos(r) == pytest.approx(mos, abs=0.01)


def test_mos_is_clipped() -> None:
    assert stats.mos(-5.0) == 1.0 and stats.mos(0.0) == 1.0
    assert stats.mos(120.0) == 4.5
    assert stats.mos(5.0) == 1.0  # the cubic dips below 1 for R < 6.5


def test_delay_impairment_idd() -> None:
    assert stats.delay_impairment(0.0) == 0.0
    assert stats.delay_impairment(0.100) == 0.0  # none up to mT = 100 ms
    # Ta = 200 ms: X = log2(2) = 1, Idd = 25 (2^(1/6) - 3 (1 + 3^-6)^(1/6) + 2).
    by_hand = 25 * (2 ** (1 / 6) - 3 * (1 + 3 ** -6) ** (1 / 6) + 2)
    assert stats.delay_impairment(0.200) == pytest.approx(by_hand)
    assert by_hand == pytest.approx(3.04, abs=0.01)
    # Ta = 400 ms: X = 2, Idd = 25 (65^(1/6) - 3 (1 + (2/3)^6)^(1/6) + 2) = 24.07.
    assert stats.delay_impairment(0.400) == pytest.approx(24.07, abs=0.01)


def test_r_uses_half_the_rtt_plus_a_jitter_buffer_of_twice_the_jitter() -> None:
    # RTT 400 ms, no jitter: Ta = 200 ms.
    assert stats.r_factor(0.400, 0.0, 0.0) == pytest.approx(
        93.2 - stats.delay_impairment(0.200))
    # RTT 0, jitter 50 ms: buffer 100 ms, Ta = 100 ms, still no delay impairment.
    assert stats.r_factor(0.0, 0.050, 0.0) == pytest.approx(93.2)
    # RTT 100 ms, jitter 50 ms: Ta = 50 + 100 = 150 ms.
    assert stats.r_factor(0.100, 0.050, 0.0) == pytest.approx(
        93.2 - stats.delay_impairment(0.150))
    # A configured buffer replaces the default.
    assert stats.r_factor(0.100, 0.050, 0.0, jitter_buffer_seconds=0.0) == pytest.approx(93.2)


def test_loss_impairment_for_g711_with_plc() -> None:
    # Ie,eff = 0 + 95 * 2 / (2 / 1 + 25.1) = 7.011 at 2 % random loss.
    assert stats.effective_equipment_impairment(2.0) == pytest.approx(95 * 2 / 27.1)
    assert stats.r_factor(0.0, 0.0, 0.02) == pytest.approx(93.2 - 95 * 2 / 27.1)
    assert stats.effective_equipment_impairment(0.0) == 0.0
    with pytest.raises(ValueError, match="outside"):
        stats.effective_equipment_impairment(101.0)
    # Everything lost: R = 93.2 - 95 * 100 / 125.1 = 17.26.
    assert stats.r_factor(0.0, 0.0, 1.0) == pytest.approx(17.26, abs=0.01)


def test_r_falls_with_every_impairment() -> None:
    base = stats.r_factor(0.050, 0.002, 0.0)
    assert stats.r_factor(0.500, 0.002, 0.0) < base
    assert stats.r_factor(0.050, 0.100, 0.0) < base
    assert stats.r_factor(0.050, 0.002, 0.05) < base


# --- a window ----------------------------------------------------------------------------


def test_summarize_a_window() -> None:
    events = [(0, 10 * MS), (1, 12 * MS), (3, 11 * MS)]
    s = stats.summarize(events, lost=1)
    assert (s.received, s.lost, s.loss_ratio) == (3, 1, 0.25)
    assert s.rtt == pytest.approx({0.0: 10 * MS, 0.5: 11 * MS, 0.9: 11.8 * MS,
                                   0.99: 11.98 * MS, 1.0: 12 * MS})
    assert s.rtt_mean == pytest.approx(11 * MS)
    assert s.jitter_rfc3550 == pytest.approx(stats.rfc3550_jitter([r for _, r in events]))
    assert s.jitter_mean_abs_diff == pytest.approx(2 * MS)
    assert s.r_factor == pytest.approx(stats.r_factor(11 * MS, s.jitter_rfc3550, 0.25))
    assert s.mos == pytest.approx(stats.mos(s.r_factor))


def test_summarize_edge_windows() -> None:
    empty = stats.summarize([], lost=0)
    assert empty.r_factor is None and empty.rtt is None and empty.loss_ratio is None
    all_lost = stats.summarize([], lost=4)
    assert all_lost.loss_ratio == 1.0 and all_lost.rtt is None
    assert all_lost.r_factor == pytest.approx(stats.r_factor(0.0, 0.0, 1.0))
    single = stats.summarize([(5, 0.02)], lost=0)
    assert single.jitter_rfc3550 is None and single.jitter_mean_abs_diff is None
    chained = stats.summarize([(5, 0.02)], lost=0, jitter_initial=0.001, previous_rtt=0.018)
    assert chained.jitter_rfc3550 == pytest.approx(0.001 + (0.002 - 0.001) / 16)
    assert all(math.isfinite(v) for v in (single.r_factor, single.mos))  # type: ignore[arg-type]
