"""Spool drain after a day-long outage: its rate, its order, and how fresh live data stays.

A bridge whose link was down for 24 h at the default 10 s interval has 8,640 samples in
its spool. The outage is compressed in time, not in content: the backlog is written into
a real spool through the agent's own ``agent.main.store`` (same payload builder, same
``floor`` from the spool, the agent's ``Scheduler`` deciding which probes each sample
carries), with probe values from one real collection on this PC and the timestamps and
the spool's clock set back over the day. Running the agent itself under a fast clock
would need a hook in its main loop; its output would be the same rows.

The scenario, with real parts: Mosquitto and the collector (a ``bridgewatch-collector``
process, its accepted-message trail at DEBUG), a few pre-outage samples sent and taken
in, the link goes down, the backlog is spooled, the real agent starts and keeps measuring
into the spool, the link comes back. Then the collector's trail says, for every
``(epoch, seq)``, when it arrived: the drain's rate and order, and the age of each live
sample at the collector while the backlog drains behind it (``agent.live_lane``).

Two links: loopback (link down = broker stopped), and a shaped WAN from ``deploy.wan``
(2 Mbit/s, 50 ms round trip; link down = 99.9 % loss), which needs root. On loopback the
drain is shorter than one 10 s interval, so the agent there measures every second (the
backlog stays at 10 s), and the collector, slowed by its DEBUG trail, is the bottleneck:
what a live sample waits behind is then the broker's queue for the collector, not the
agent's window. On the WAN the link is the bottleneck, as on a commune line.

    sudo .venv/bin/python -m bench.drain_bench [--hours 24] [--interval 10] [--wan-mbit 2]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import sqlite3
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import wire
from agent.config import AgentConfig, load_config
from agent.main import store
from agent.probes import REGISTRY, ProbeContext, collect_reports, enabled_probes
from agent.publisher import DEFAULT_WINDOW, Publisher
from agent.scheduler import Scheduler
from agent.spool import Spool
from collector.state import TrailEntry, read_trail
from deploy.localstack import Mosquitto, Process, free_port, wait_until
from tests.collector_client import write_yaml

ROOT = Path(__file__).resolve().parents[1]
INVENTORY = ROOT / "deploy" / "demo-inventory.yaml"
SITE, PROVINCE = "dt-sa-dec", "dong-thap"
PRE_OUTAGE = 3  # samples sent and taken in before the link goes down
KEEPALIVE = 5
LINK_DOWN_LOSS = 0.999


@dataclass(frozen=True)
class Link:
    """Where the agent's traffic goes: loopback (``mbit`` None) or a shaped WAN."""

    name: str
    mbit: float | None = None
    one_way_seconds: float = 0.0


@dataclass
class Drain:
    """What one outage and drain gave, read from the collector's trail and the spool."""

    link: Link
    interval: float
    epoch: int
    backlog_last: int  # the newest seq spooled when the link came back
    backlog_messages: int  # spooled during the outage (after the pre-outage samples)
    backlog_bytes: int
    link_up: float  # wall time
    trail: list[TrailEntry]  # the site's, in the order the collector took them in
    last_seq: int  # the newest seq of the epoch when the agent stopped
    pending_after: int  # rows left in the spool once the agent stopped
    up_polls: list[tuple[float, float | None]]  # (time, bridge_up) during the drain
    metrics_after: dict[str, float]  # the site's series once the collector took all in
    spool: Path

    @functools.cached_property
    def first_deliveries(self) -> dict[int, TrailEntry]:
        """seq -> the entry that accepted it (a seq accepted twice keeps the first)."""
        out: dict[int, TrailEntry] = {}
        for entry in self.trail:
            if entry.verdict == "accepted" and entry.epoch == self.epoch:
                out.setdefault(entry.seq, entry)
        return out

    @functools.cached_property
    def drain_started(self) -> float:
        """When the first message after the link came back reached the collector."""
        return min(e.at for e in self.trail if e.at >= self.link_up)

    @functools.cached_property
    def drained(self) -> float:
        """When the collector took in the last seq of the backlog."""
        return self.first_deliveries[self.backlog_last].at

    @property
    def seconds(self) -> float:
        return self.drained - self.drain_started

    def live(self) -> list[TrailEntry]:
        """Samples the agent made while the backlog drained (after it had connected):
        the live lane's work."""
        return [e for e in self.first_deliveries.values()
                if self.drain_started < e.ts < self.drained]

    def overtaken_by(self, live: TrailEntry) -> int:
        """Backlog messages the collector took in between a live sample's making and its
        arrival: what it waited behind."""
        return sum(1 for e in self.first_deliveries.values()
                   if e.seq < live.seq and live.ts < e.at < live.at)


# -- the backlog --------------------------------------------------------------------------


def spool_backlog(config: AgentConfig, count: int, first_ts: float) -> int:
    """Append ``count`` samples 1 interval apart from ``first_ts``, as the agent would
    have built them; returns their payload bytes."""
    intervals = enabled_probes(config)
    clock = {"now": first_ts}
    sc = config.spool
    spool = Spool(sc.path, sc.max_messages, sc.max_age_seconds, sc.max_bytes,
                  clock=lambda: clock["now"])
    # The agent's rows, not its fsyncs: a day of appends synced one by one takes half a
    # minute here, and the file is closed cleanly before the agent opens it.
    spool._db.execute("PRAGMA synchronous=OFF")
    try:
        reports = collect_reports([REGISTRY[n] for n in intervals],
                                  ProbeContext(config, spool_stats=spool.stats), intervals)
        topic = wire.topic(config.prefix, config.province, config.site, wire.Kind.TELEMETRY)
        scheduler = Scheduler(intervals, first_ts)
        before = spool.stats()[1]
        for k in range(count):
            clock["now"] = first_ts + k * config.interval_seconds
            due = scheduler.due(clock["now"])
            store(config, spool, topic, clock["now"], {n: reports[n] for n in due})
        return spool.stats()[1] - before
    finally:
        spool.close()


@dataclass(frozen=True)
class Spooled:
    """A spool in use by the agent, read with plain SQLite beside it."""

    epoch: int
    last_seq: int  # the newest seq ever allocated in the epoch
    rows: int
    payload_bytes: int


def spooled(path: Path) -> Spooled:
    db = sqlite3.connect(path, timeout=10)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        # Rows still awaiting a PUBACK; acknowledged rows the spool keeps for a while (in
        # case the broker dies before its snapshot) are not a backlog.
        rows, size = db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM messages "
            "WHERE acked IS NULL").fetchone()
    finally:
        db.close()
    return Spooled(meta["epoch"], meta["next_seq"] - 1, rows, size)


def send_pre_outage(config: AgentConfig) -> None:
    """The agent's own publisher sends the pre-outage samples, then goes offline."""
    spool = Spool(config.spool.path)
    publisher = Publisher(config, spool)
    publisher.start()
    try:
        wait_until(lambda: not spool.pending(0, 1), 60, "the pre-outage samples acknowledged")
    finally:
        publisher.stop()
        spool.close()


# -- the parts -----------------------------------------------------------------------------


def metrics(port: int) -> dict[str, float]:
    """The site's fleet series on the collector's /metrics, by family name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    label = f'site="{SITE}"'
    out: dict[str, float] = {}
    for line in text.splitlines():
        if label in line and not line.startswith("#"):
            out.setdefault(line.split("{", 1)[0], float(line.rsplit(" ", 1)[1]))
    return out


def collector_process(work: Path, broker_port: int, http_port: int) -> Process:
    config = write_yaml(work / "collector.yaml", {
        "inventory": str(INVENTORY), "listen": f"127.0.0.1:{http_port}",
        "broker": {"host": "127.0.0.1", "port": broker_port, "keepalive": KEEPALIVE,
                   "reconnect_max_seconds": 1}})
    return Process([sys.executable, "-m", "collector.main", "--config", str(config),
                    "--log-level", "DEBUG"], work / "collector.log")


def agent_config(work: Path, host: str, port: int, interval: float) -> Path:
    return write_yaml(work / "agent.yaml", {
        "site": SITE, "province": PROVINCE, "interval_seconds": interval,
        "broker": {"host": host, "port": port, "keepalive": KEEPALIVE,
                   "reconnect_max_seconds": 2},
        "spool": {"path": str(work / "spool.sqlite")}})


class Network:
    """Link up/down and where each side runs; loopback or ``deploy.wan``."""

    def __init__(self, link: Link, work: Path, stack: contextlib.ExitStack) -> None:
        self.link = link
        self.wan: Any = None
        self.broker: Mosquitto | None = None
        self.central: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext
        if link.mbit is not None:
            from deploy.wan import Wan
            from tests.test_readiness_e2e import inside

            self.wan = stack.enter_context(Wan(work / "wan"))
            for direction in ("up", "down"):
                self.wan.set_bandwidth(direction, link.mbit)
                self.wan.set_delay(direction, link.one_way_seconds)
            self.central = lambda: inside(self.wan.names["central"])

    @property
    def broker_host(self) -> str:
        return "127.0.0.1" if self.wan is None else self.wan.central_ip

    def start_broker(self, work: Path, port: int) -> None:
        listener = f"listener {port} {'127.0.0.1' if self.wan is None else '0.0.0.0'}\n"
        with self.central():
            self.broker = Mosquitto(work / "mosquitto", port=port,
                                    listener_conf=listener + "allow_anonymous true\n")
            self.broker.start()

    def down(self) -> None:
        if self.wan is None:
            assert self.broker is not None
            self.broker.stop()  # its persistence keeps the collector's session and backlog
        else:  # (1.0 is refused by deploy.wan's nft rule; a TCP handshake never gets through)
            self.wan.set_loss("up", LINK_DOWN_LOSS)
            self.wan.set_loss("down", LINK_DOWN_LOSS)

    def up(self) -> None:
        if self.wan is None:
            assert self.broker is not None
            self.broker.start()
        else:
            self.wan.set_loss("up", 0.0)
            self.wan.set_loss("down", 0.0)

    def run_agent(self, config: Path, log: Path) -> Process:
        argv = [sys.executable, "-m", "agent.main", "run", "--config", str(config)]
        if self.wan is not None:
            return self.wan.run("site", argv, log)
        agent = Process(argv, log)
        agent.start()
        return agent


def run_outage(work: Path, link: Link, hours: float = 24.0, interval: float = 10.0,
               live_interval: float | None = None, timeout: float = 900.0) -> Drain:
    """One outage of ``hours`` at ``interval`` and its drain over ``link``; the running
    agent measures every ``live_interval`` (default: the same)."""
    work.mkdir(parents=True, exist_ok=True)
    broker_port, http_port = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        net = Network(link, work, stack)
        net.start_broker(work, broker_port)
        stack.callback(lambda: net.broker and net.broker.stop())
        with net.central():
            collector = collector_process(work, broker_port, http_port)
            collector.start()
        stack.callback(collector.stop)
        wait_until(lambda: "collector up" in collector.log() or not collector.running, 30,
                   "the collector to start")
        config_path = agent_config(work, net.broker_host, broker_port, live_interval or interval)
        config = dataclasses.replace(load_config(config_path), interval_seconds=interval)
        day_start = time.time() - hours * 3600
        spool_backlog(config, PRE_OUTAGE, day_start - PRE_OUTAGE * interval)
        with net.central():  # the publisher reaches the broker the way the collector does
            send_pre_outage(dataclasses.replace(
                config, broker=dataclasses.replace(config.broker, host="127.0.0.1")))
        wait_until(lambda: len(_site_trail(collector)) >= PRE_OUTAGE, 30,
                   "the pre-outage samples at the collector")

        net.down()
        spool_backlog(config, int(hours * 3600 / interval), day_start)
        agent = net.run_agent(config_path, work / "agent.log")
        stack.callback(agent.stop)
        backlog = int(hours * 3600 / interval)
        wait_until(lambda: spooled(config.spool.path).last_seq > PRE_OUTAGE + backlog, 60,
                   "the agent's first live sample, spooled while the link is down")
        before = spooled(config.spool.path)
        link_up = time.time()
        net.up()
        polls: list[tuple[float, float | None]] = []

        def drained() -> bool:
            with net.central(), contextlib.suppress(OSError):
                polls.append((time.time(), metrics(http_port).get("bridge_up")))
            return any(e.seq == before.last_seq and e.verdict == "accepted"
                       for e in _site_trail(collector))

        wait_until(drained, timeout, "the backlog at the collector", interval=0.5)
        agent.stop()  # SIGTERM: what is left is sent before it exits
        end = spooled(config.spool.path)
        wait_until(lambda: any(e.seq == end.last_seq for e in _site_trail(collector))
                   or end.rows, 30, "the agent's last sample at the collector")
        trail = _site_trail(collector)
        taken = sum(1 for e in trail if e.verdict == "accepted")

        def rendered() -> dict[str, float] | None:  # counters are rendered within a second
            with net.central():
                after = metrics(http_port)
            return after if after.get("bridge_messages_received_total") == taken else None

        after = wait_until(rendered, 30, "the collector's counters rendered")
        return Drain(link, live_interval or interval, end.epoch, before.last_seq, before.rows,
                     before.payload_bytes, link_up, trail, end.last_seq, end.rows, polls,
                     after, config.spool.path)


def _site_trail(collector: Process) -> list[TrailEntry]:
    return [e for e in read_trail(collector.log()) if e.site == SITE]


# -- the figures ---------------------------------------------------------------------------


def report(drain: Drain) -> list[str]:
    link = drain.link
    rate = drain.backlog_messages / drain.seconds
    kbps = drain.backlog_bytes / 1000 / drain.seconds
    ages = [e.at - e.ts for e in drain.live()]
    waited = [drain.overtaken_by(e) for e in drain.live()]
    lines = [
        f"{link.name}: {drain.backlog_messages} spooled messages "
        f"({drain.backlog_bytes / 1e6:.1f} MB payload) drained in {drain.seconds:.1f} s "
        f"(+{drain.drain_started - drain.link_up:.1f} s to reconnect): "
        f"{rate:.0f} msg/s, {kbps:.0f} KB/s",
    ]
    if link.mbit is not None:
        lines.append(f"  payload goodput {kbps * 8 / 1000 / link.mbit:.0%} of the "
                     f"{link.mbit:g} Mbit/s link")
    if ages:
        lines.append(
            f"  live samples (every {drain.interval:g} s) during the drain: {len(ages)}, "
            f"age at the collector median "
            f"{statistics.median(ages):.2f} s, max {max(ages):.2f} s (in seq order alone: up "
            f"to {drain.seconds:.0f} s); backlog messages each waited behind: max "
            f"{max(waited)} (agent window {DEFAULT_WINDOW}"
            f"{'' if max(waited) <= DEFAULT_WINDOW else '; the rest queued for the collector'})")
    else:
        lines.append("  no live sample was made while the backlog drained (drain shorter "
                     f"than the {drain.interval:g} s interval)")
    up = [v for t, v in drain.up_polls if v is not None and t >= drain.drain_started]
    after = drain.metrics_after
    lines.append(f"  bridge_up during the drain: {sum(1 for v in up if v == 1)}/{len(up)} "
                 f"scrapes at 1; collector lost {after.get('bridge_messages_lost_total')}, "
                 f"duplicates dropped {after.get('bridge_messages_duplicate_total')}")
    return lines


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="drain-bench-") as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drain_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--loopback-live-interval", type=float, default=1.0,
                        help="the agent's interval on loopback, where the drain is shorter "
                             "than one 10 s interval (the backlog stays at --interval)")
    parser.add_argument("--wan-mbit", type=float, default=2.0)
    parser.add_argument("--wan-rtt-ms", type=float, default=50.0)
    parser.add_argument("--skip-wan", action="store_true")
    args = parser.parse_args(argv)
    links = [(Link("loopback"), args.loopback_live_interval)]
    if not args.skip_wan:
        links.append((Link(f"WAN {args.wan_mbit:g} Mbit/s, {args.wan_rtt_ms:g} ms RTT",
                           args.wan_mbit, args.wan_rtt_ms / 2000), args.interval))
    print(f"spool drain after a {args.hours:g} h outage at a {args.interval:g} s interval "
          f"(site {SITE}, real Mosquitto, collector and agent)")
    for link, live_interval in links:
        with _workdir() as work:
            try:
                drain = run_outage(work, link, args.hours, args.interval, live_interval)
            except Exception as err:  # a link that fails (no root for the WAN) hides no other
                print(f"{link.name}: not measured: {err}")
                continue
        print("\n".join(report(drain)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
