"""Link down for a day's worth of samples, then back: the spool drains in order, bounded,
and live data is not starved.

The scenario is ``bench.drain_bench.run_outage`` with real parts: Mosquitto and the
collector (a ``bridgewatch-collector`` process whose DEBUG trail records every message it
took in), the real agent in the site namespace of ``deploy.wan``, the link shaped to
4 Mbit/s and 50 ms round trip. Three pre-outage samples are taken in, the link goes down,
8,640 samples (24 h at the configured 10 s) are spooled the way the agent builds them,
with timestamps set back over the day (why: the bench's docstring), the agent starts and
keeps measuring, the link comes back. A 20 MB drain needs at least 40 s of this link,
during which the agent makes several live samples; the link, not the collector, is the
bottleneck, so what a live sample waits behind is the agent's window.

Design (``agent.live_lane``): the spool still drains strictly in seq order, and a live
sample goes at once as an early copy beside it; the collector takes the copy as current,
the in-order copy later as a duplicate, and the backlog as history (``collector.state``).

What would fail: a seq lost, accepted twice or left spooled; the backlog leaving the
spool out of order; a live sample waiting behind more than the window of backlog (in seq
order alone it waits behind the whole backlog left: thousands); the bridge flagged down
while fresh samples arrive; the collector counting a loss.
"""

from __future__ import annotations

import collections
from dataclasses import replace
from pathlib import Path

import pytest

from agent import wire
from agent.live_lane import LiveLane, reserve_for
from agent.publisher import DEFAULT_WINDOW
from agent.spool import Spool
from agent.wire import Kind
from bench.drain_bench import PRE_OUTAGE, Drain, Link, run_outage
from collector.state import FleetState
from tests.conftest import require_binary, require_root
from tests.test_collector_state import INVENTORY, Clock, telemetry, topic, value

pytestmark = pytest.mark.real

LINK = Link("WAN 4 Mbit/s, 50 ms RTT", 4.0, 0.025)
HOURS, INTERVAL = 24, 10.0


@pytest.fixture(scope="module")
def drain(tmp_path_factory: pytest.TempPathFactory) -> Drain:
    require_root()
    for binary in ("mosquitto", "ip", "nft", "tc"):
        require_binary(binary)
    result = run_outage(tmp_path_factory.mktemp("outage"), LINK, HOURS, INTERVAL)
    print(f"\noutage drain: {result.backlog_messages} messages in {result.seconds:.1f} s "
          f"({result.backlog_messages / result.seconds:.0f} msg/s); live samples "
          f"{[round(e.at - e.ts, 2) for e in result.live()]} s old at the collector")
    return result


def test_the_backlog_is_a_day_of_samples(drain: Drain) -> None:
    """The scenario really spooled 24 h at the interval (plus the live samples made while
    the link was down)."""
    assert drain.backlog_messages >= HOURS * 3600 / INTERVAL


def test_every_seq_reaches_the_collector_exactly_once(drain: Drain) -> None:
    """1..last of the spool's epoch accepted, each once; the spool empty; no loss counted."""
    accepted = collections.Counter(
        (e.epoch, e.seq) for e in drain.trail if e.verdict == "accepted")
    expected = {(drain.epoch, seq) for seq in range(1, drain.last_seq + 1)}
    assert set(accepted) == expected, sorted(set(accepted) ^ expected)[:20]
    assert [key for key, n in accepted.items() if n > 1] == []
    assert drain.pending_after == 0
    assert drain.metrics_after["bridge_messages_lost_total"] == 0
    duplicates = sum(1 for e in drain.trail if e.verdict == "duplicate")
    assert drain.metrics_after["bridge_messages_duplicate_total"] == duplicates


def test_the_spool_drains_in_seq_order(drain: Drain) -> None:
    """Each seq's last delivery is its in-order one (an early copy comes before it), and
    those come in strictly increasing seq order."""
    last_at: dict[int, int] = {}
    for position, entry in enumerate(drain.trail):
        last_at[entry.seq] = position
    in_order = sorted(last_at, key=last_at.__getitem__)
    assert in_order == sorted(in_order)
    copies = collections.Counter(e.seq for e in drain.trail)
    # Every seq delivered twice was a live sample copied early, none a backlog one, or a
    # pre-outage sample: acknowledged, kept in case the broker dies before its snapshot,
    # and sent again after the agent's restart.
    assert all(seq > drain.backlog_last or seq <= PRE_OUTAGE
               for seq, n in copies.items() if n > 1), copies


def test_live_samples_overtake_the_backlog(drain: Drain) -> None:
    """Every sample made during the drain reached the collector behind at most the
    window of backlog messages, not behind the backlog left (thousands)."""
    live = drain.live()
    assert len(live) >= 2, "the drain was too short to make live samples"
    waited = {e.seq: drain.overtaken_by(e) for e in live}
    assert max(waited.values()) <= DEFAULT_WINDOW, waited
    remaining = {e.seq: drain.backlog_last - max(s for s, f in drain.first_deliveries.items()
                                                 if s <= drain.backlog_last and f.at < e.ts)
                 for e in live}
    assert max(remaining.values()) > 10 * DEFAULT_WINDOW, "no live sample had much to beat"


def test_the_bridge_stays_up_while_the_backlog_drains(drain: Drain) -> None:
    """From the first live sample on, every scrape during the drain shows bridge_up 1:
    the backlog's day-old samples are history, not a reason to call the bridge stale."""
    first_live = min(e.at for e in drain.live())
    during = [v for t, v in drain.up_polls if first_live < t < drain.drained]
    assert during and all(v == 1 for v in during), during


def test_an_old_sample_after_a_fresh_one_is_history() -> None:
    """In-process, deterministic: a day-old spooled sample arriving after a fresh one is
    counted but changes neither the current values nor last-seen, even for a probe the
    fresh sample did not carry; a newer seq is current even if the agent's clock stepped
    back an hour, and so is a new spool's first sample whatever its clock."""
    clock = Clock()
    fleet = FleetState(INVENTORY, "bridgewatch", clock=clock, render_delay=0)
    site, t = "dt-xa-my-an", topic("dt-xa-my-an", Kind.TELEMETRY)
    fleet.apply(t, telemetry(site, 100, clock.now, memory=2e9, floor=1))
    seen = value(fleet, "bridge_last_seen_timestamp_seconds", site)
    clock.now += 5
    old = wire.decode(telemetry(site, 50, clock.now - 86400, memory=9e9, floor=1),
                      Kind.TELEMETRY)
    assert isinstance(old, wire.Telemetry)
    load = wire.ProbeReport(True, 0.001, 60.0, None, {"load1": [((), 7.0)]})
    assert fleet.apply(t, wire.encode(replace(old, probes={**old.probes, "load": load})))
    assert value(fleet, "bridge_memory_available_bytes", site) == 2e9
    assert value(fleet, "bridge_load1", site) is None
    assert value(fleet, "bridge_last_seen_timestamp_seconds", site) == seen
    assert value(fleet, "bridge_messages_received_total", site) == 2
    clock.now += 25  # 30 s after the fresh sample: stale without a newer one
    fleet.apply(t, telemetry(site, 101, clock.now - 3600, memory=3e9, floor=1))
    assert value(fleet, "bridge_memory_available_bytes", site) == 3e9
    assert value(fleet, "bridge_up", site) == 1
    # Reinstalled (a new spool) on a PC whose clock is two hours behind: current at once;
    # then a late re-send from the old spool is history again.
    fleet.apply(t, telemetry(site, 1, clock.now - 7200, memory=4e9, epoch=2))
    fleet.apply(t, telemetry(site, 60, clock.now - 86400, memory=5e9, floor=1))
    assert value(fleet, "bridge_memory_available_bytes", site) == 4e9
    assert value(fleet, "bridge_messages_received_total", site) == 5


def test_the_live_lane_copies_fresh_rows_only_while_a_backlog_drains(tmp_path: Path) -> None:
    """In-process, with a real spool: at reconnect a backlog is in order only and leaves
    the reserve free; a row appended then is copied at once, once; an early copy's PUBACK
    is told apart; with nothing behind, and in a window too small for a reserve, no copy."""
    spool = Spool(tmp_path / "spool.sqlite")
    for _ in range(100):
        spool.append("t", lambda seq, floor: b"x")
    lane = LiveLane(spool, reserve_for(64))
    lane.reset()  # connected with 100 rows spooled: all backlog
    rows, early = lane.plan(spool.pending(0, 64), 64, 0, 64)
    assert (len(rows), early) == (56, [])
    fresh = spool.append("t", lambda seq, floor: b"live")
    rows, early = lane.plan(spool.pending(56, 8), 8, 56, 64)
    assert ([r[0] for r in early], rows) == ([fresh], [])
    lane.sent(7, fresh)
    assert lane.plan(spool.pending(56, 7), 7, 56, 64) == ([], [])  # copied once
    assert lane.settle(7) and not lane.settle(8)
    spool.ack(*range(1, fresh + 1))
    steady = spool.append("t", lambda seq, floor: b"next")
    assert lane.plan(spool.pending(fresh, 64), 64, 0, 64) == (spool.pending(fresh, 64), [])
    lane.reset()
    for _ in range(10):
        spool.append("t", lambda seq, floor: b"x")
    rows, early = lane.plan(spool.pending(steady, 1), 1, 0, 1)  # a broker's window of 1
    assert (len(rows), early) == (1, [])
    spool.close()
