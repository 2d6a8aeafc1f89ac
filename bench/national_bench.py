"""National-scale load, side by side with mqtt2prometheus in the same run.

For each fleet size, bench/fleet_sim.py plays N bridges, each over its own MQTT
connection as an agent (Last Will, retained state, QoS 1 telemetry every ``--interval``
seconds at its own phase, realistic 2.9-5.2 KB wire-v1 payloads), into a real Mosquitto.
The collector (a real ``collector.main`` process whose FleetState also keeps a histogram of
publish -> state) and Debian's prometheus-mqtt-exporter (deploy/mqtt_exporter.py,
configured for the telemetry fields its config can express) subscribe on the same broker,
and a real Prometheus scrapes both. After a warm-up of one interval, each is measured over
the same window:

- ingest: telemetry taken in per second (collector: /healthz counts; exporter: its own
  ``received_messages`` counter, read at the window's ends);
- intake p50/p99 publish -> state: collector exactly, for every message in the window;
  exporter from the ingest time it stamps on each sample (ms, truncated) minus the marker
  series' value (the agent's ts), for every message a direct GET or a Prometheus scrape
  read before the next one replaced it (see MarkerReads);
- CPU seconds (psutil) and per message, resident memory at the end, its peak, and per bridge;
- /metrics: direct GET time (median of up to 3, fewer when one takes a minute) and size;
  Prometheus's scrape_duration_seconds and scrape_samples_scraped (largest since the
  bridges started: one scrape may outlast the window);
- after the generator stops: how many of its acknowledged messages each took in, waiting
  at most ``--drain-seconds`` (a shortfall is a backlog still queued, or a loss).

Also printed, so a saturated generator or broker shows: the generator's offered and achieved
rate, late messages, Mosquitto's and Prometheus's memory and CPU, and the load average
(the machine may be shared). One Mosquitto holds every bridge when this process may open
enough files (``ulimit -Hn``); beyond that, edge brokers of at most that many connections
each bridge into the core broker the subscribers use, as provinces would.

    .venv/bin/python -m bench.national_bench [--bridges 3400 20000] [--seconds 60] [--interval 10]
    .venv/bin/python -m bench.national_bench --without-peer   # the collector alone
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

from agent import wire
from bench.fleet_sim import Counts, Fleet, raise_fd_limit
from bench.fleetdata import FleetFeed, inventory, inventory_document
from collector.state import FleetState
from deploy.localstack import Mosquitto, Process, Prometheus, free_port, wait_until
from deploy.mqtt_exporter import (
    MARKER,
    Mapping,
    MqttExporter,
    exporter_config,
    received,
    series,
    telemetry_fields,
)

ROOT = Path(__file__).parents[1]
# What the shipped broker keeps apart from the tests' Mosquitto: Debian's autosave period
# (the tests save every second, which would cost a 20,000-session broker dearly).
BROKER_CONF = "autosave_interval 1800\n"
FD_RESERVE = 100  # a broker's own files beyond its client sockets
STAMP_MIDDLE = 0.0005  # exposition timestamps are whole milliseconds, truncated


# -- the collector, timed -----------------------------------------------------------------


class LatencyHistogram:
    """Latencies in buckets 1 % wide from 10 µs: quantiles within 1 %, in constant memory."""

    FLOOR, STEP = 1e-5, math.log(1.01)

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def add(self, seconds: float) -> None:
        bucket = int(math.log(max(seconds, self.FLOOR) / self.FLOOR) / self.STEP)
        self.counts[bucket] = self.counts.get(bucket, 0) + 1

    @classmethod
    def quantile(cls, counts: dict[int, int], q: float) -> float | None:
        """The upper edge of the bucket holding the q-quantile; None without samples."""
        total = sum(counts.values())
        if not total:
            return None
        rank, seen = q * total, 0
        for bucket in sorted(counts):
            seen += counts[bucket]
            if seen >= rank:
                return cls.FLOOR * math.exp((bucket + 1) * cls.STEP)
        raise AssertionError("unreachable")


class TimedFleetState(FleetState):
    """The collector's state, noting publish -> state of every telemetry message it takes."""

    current: TimedFleetState | None = None

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.latency = LatencyHistogram()
        TimedFleetState.current = self

    def _apply(self, state, message, now, changes) -> bool:  # type: ignore[no-untyped-def]
        changed = super()._apply(state, message, now, changes)
        if changed and isinstance(message, wire.Telemetry):
            self.latency.add(time.time() - message.ts)
        return changed


def serve_timed_collector(config: str, snapshot: str) -> int:
    """``collector.main`` as shipped, with TimedFleetState; SIGUSR1 writes the histogram."""
    import collector.main as service

    def dump(signum: int, frame: object) -> None:
        fleet = TimedFleetState.current
        counts = {} if fleet is None else fleet.latency.counts.copy()
        Path(snapshot + ".tmp").write_text(json.dumps({"counts": counts}))
        os.replace(snapshot + ".tmp", snapshot)

    signal.signal(signal.SIGUSR1, dump)
    service.FleetState = TimedFleetState  # type: ignore[misc]
    return service.main(["--config", config, "--log-level", "WARNING"])


class TimedCollector(Process):
    """The collector process of the bench, its HTTP port, and its latency snapshots."""

    def __init__(self, workdir: Path, bridges: int, broker_port: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        (workdir / "inventory.yaml").write_text(
            yaml.safe_dump(inventory_document(bridges), allow_unicode=True))
        config = workdir / "collector.yaml"
        config.write_text(yaml.safe_dump({"inventory": str(workdir / "inventory.yaml"),
                                          "listen": f"127.0.0.1:{self.port}",
                                          "broker": {"port": broker_port}}))
        self.snapshot_path = workdir / "latency.json"
        code = ("import sys; from bench.national_bench import serve_timed_collector as s; "
                "sys.exit(s(*sys.argv[1:]))")
        super().__init__([sys.executable, "-c", code, str(config), str(self.snapshot_path)],
                         workdir / "collector.log", env={**os.environ, "PYTHONPATH": str(ROOT)})

    def start(self) -> None:
        super().start()
        wait_until(lambda: not self.running or self.health()["connected"], 60,
                   "the collector to connect")
        if not self.running:
            raise RuntimeError(f"collector exited:\n{self.log()}")

    def health(self) -> dict:
        url = f"http://127.0.0.1:{self.port}/healthz"
        with urllib.request.urlopen(url, timeout=30) as resp:
            return json.loads(resp.read())

    def taken_in(self, kind: str = "telemetry") -> int:
        return int(self.health()["received"][kind])

    def latency_counts(self) -> dict[int, int]:
        self.snapshot_path.unlink(missing_ok=True)
        self.send_signal(signal.SIGUSR1)
        wait_until(self.snapshot_path.exists, 30, "the collector's latency snapshot")
        return {int(k): v for k, v in json.loads(self.snapshot_path.read_text())["counts"].items()}


# -- reading the two subscribers ----------------------------------------------------------


def timed_get(url: str) -> tuple[float, bytes, float]:
    """(seconds to the whole body, the body, when it was asked for).

    The exporter reads its small message counter as its registry's gathering starts (each
    collector in its own goroutine), long before a big answer is ready: the request's start
    is the counter's time, within the start-up of the gathering.
    """
    started = time.time()
    with urllib.request.urlopen(url, timeout=600) as resp:
        body = resp.read()
    return time.time() - started, body, started


def quantiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    ordered = sorted(values)
    return (ordered[len(ordered) // 2],
            ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))])


def coverage(exposition: bytes, families: list[str], label: str) -> dict[str, int]:
    """How many distinct bridges (by ``label``) expose each family."""
    found: dict[str, set[bytes]] = {name: set() for name in families}
    pattern = re.compile(rb"^(" + b"|".join(re.escape(n.encode()) for n in families)
                         + rb")\{[^}]*\b" + label.encode() + rb'="([^"]*)"', re.M)
    for name, who in pattern.findall(exposition):
        found[name.decode()].add(who)
    return {name: len(who) for name, who in found.items()}


@dataclass
class Side:
    """One subscriber's figures."""

    name: str
    rate: float = 0.0  # telemetry taken in per second, over the window
    messages: int = 0  # ... in the window
    p50: float | None = None
    p99: float | None = None
    latency_samples: int = 0
    cpu_seconds: float = 0.0
    rss: int = 0
    rss_peak: int = 0
    rss_base: int = 0  # before the first bridge connected
    get_seconds: float = 0.0
    size: int = 0
    series: int = 0
    scrape_seconds: float | None = None
    scrape_samples: float | None = None
    up: float | None = None
    taken_in_total: int = 0
    coverage: dict[str, int] = field(default_factory=dict)  # family -> bridges exposing it


class CollectorReader:
    """BridgeWatch's side: counts from /healthz, the exact publish -> state histogram."""

    label, poll_seconds = "site", 0.5

    def __init__(self, collector: TimedCollector) -> None:
        self.collector = collector
        self.side = Side("BridgeWatch")
        self.instance = f"127.0.0.1:{collector.port}"
        self.url = f"http://{self.instance}/metrics"
        self.hist0: dict[int, int] = {}
        self.t0, self.n0 = 0.0, 0

    def open(self, since: float) -> None:
        self.hist0 = self.collector.latency_counts()
        self.t0, self.n0 = time.time(), self.collector.taken_in()

    def close(self) -> None:
        t1, n1 = time.time(), self.collector.taken_in()
        hist1 = self.collector.latency_counts()
        side = self.side
        side.rate, side.messages = (n1 - self.n0) / (t1 - self.t0), n1 - self.n0
        window = {b: hist1[b] - self.hist0.get(b, 0) for b in hist1}
        side.p50 = LatencyHistogram.quantile(window, 0.5)
        side.p99 = LatencyHistogram.quantile(window, 0.99)
        side.latency_samples = sum(window.values())

    def read(self, body: bytes) -> None:
        """A /metrics body fetched for timing: nothing more to learn here."""

    def finish(self, prometheus: Prometheus) -> None:
        """Latency is already exact."""

    def taken_in(self) -> int:
        return self.collector.taken_in()


class MarkerReads:
    """The exporter's intake lag, message by message, from every read of its marker series.

    Each sample of the marker is stamped with the exporter's ingest time, truncated to the
    millisecond, and holds the agent's ts: stamp + 0.5 ms (the middle of the stamp's
    millisecond) minus ts is publish -> visible. A read (a direct GET,
    or a Prometheus scrape read back) shows each bridge's latest message; reads are merged
    by (bridge, stamp), so a message read twice counts once. Only messages taken in from
    ``since`` on count: after the first round, when every bridge keeps its rhythm.
    """

    def __init__(self, since: float) -> None:
        self.since = since
        self.lags: dict[tuple[str, float], float] = {}

    def exposition(self, body: bytes) -> None:
        for sensor, (value, stamp) in series(body, MARKER).items():
            if stamp is not None and stamp >= self.since:
                self.lags[(sensor, stamp)] = stamp + STAMP_MIDDLE - value

    def prometheus(self, prometheus: Prometheus, end: float) -> None:
        window = f"[{max(1, math.ceil(end - self.since))}s]"
        for found in prom_at(prometheus, MARKER + window, end):
            sensor = found["metric"].get("sensor", "")
            for stamp, value in found["values"]:
                if float(stamp) >= self.since:
                    self.lags[(sensor, float(stamp))] = float(stamp) + STAMP_MIDDLE - float(value)


class ExporterReader:
    """mqtt2prometheus's side: its own message counter, and its marker series' lags."""

    label, poll_seconds = "sensor", 2.0

    def __init__(self, exporter: MqttExporter) -> None:
        self.exporter = exporter
        self.side = Side("mqtt2prometheus")
        self.instance = f"127.0.0.1:{exporter.port}"
        self.url = exporter.url
        self.markers = MarkerReads(0.0)
        self.t0, self.n0 = 0.0, 0.0

    def _count(self) -> tuple[float, float]:
        _, body, at = timed_get(self.url)
        self.read(body)
        return at, received(body).get("success", 0.0)

    def open(self, since: float) -> None:
        self.markers = MarkerReads(since)
        self.t0, self.n0 = self._count()

    def close(self) -> None:
        t1, n1 = self._count()
        self.side.rate = (n1 - self.n0) / (t1 - self.t0)
        self.side.messages = round(n1 - self.n0)

    def read(self, body: bytes) -> None:
        self.markers.exposition(body)

    def finish(self, prometheus: Prometheus) -> None:
        self.markers.prometheus(prometheus, time.time())
        lags = list(self.markers.lags.values())
        self.side.p50, self.side.p99 = quantiles(lags)
        self.side.latency_samples = len(lags)

    def taken_in(self) -> int:
        return round(received(self.exporter.scrape()).get("success", 0.0))


Reader = CollectorReader | ExporterReader


# -- the run ------------------------------------------------------------------------------


def _pid(process: Process) -> int:
    assert process.proc is not None, "not started"
    return process.proc.pid


class Usage:
    """CPU seconds and resident memory of a group of processes (psutil), with the peak."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(pid) for pid in pids]
        self.peak = 0

    def cpu(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.procs)

    def rss(self) -> int:
        value = sum(p.memory_info().rss for p in self.procs)
        self.peak = max(self.peak, value)
        return value


@dataclass
class Result:
    bridges: int
    interval: float
    seconds: float
    topology: str
    connect_seconds: float
    load: tuple[float, float]  # 1-minute load average at the window's start and end
    bw: Side
    peer: Side | None
    offered: float
    achieved: float
    window: Counts  # the generator's, in the window
    final: Counts  # the generator's, at the end
    cpu: dict[str, float]  # in the window, by part
    rss: dict[str, int]  # at the window's end, by part
    drain_seconds: float


def prom_at(prometheus: Prometheus, expr: str, at: float) -> list[dict]:
    query = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/query?{query}", timeout=120) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise RuntimeError(f"query {expr!r} failed: {body}")
    return body["data"]["result"]


def scrape_figures(prometheus: Prometheus, reader: Reader, start: float, end: float) -> None:
    """The largest scrape time and sample count, and the lowest ``up``, from ``start`` to
    ``end`` (a scrape is recorded when it is over: at 20,000 bridges one may outlast the
    measured window)."""
    labels, window = f'{{instance="{reader.instance}"}}', f"[{max(1, round(end - start))}s]"
    for attr, expr in (("scrape_seconds", "max_over_time(scrape_duration_seconds{}{})"),
                       ("scrape_samples", "max_over_time(scrape_samples_scraped{}{})"),
                       ("up", "min_over_time(up{}{})")):
        result = prom_at(prometheus, expr.format(labels, window), end)
        setattr(reader.side, attr, float(result[0]["value"][1]) if result else None)


def time_metrics(reader: Reader, families: list[str]) -> None:
    """Direct GETs of /metrics: median time of up to 3 (fewer past a minute), size, coverage."""
    gets: list[tuple[float, bytes, float]] = []
    while len(gets) < 3 and sum(g[0] for g in gets) < 60:
        gets.append(timed_get(reader.url))
        reader.read(gets[-1][1])
    body, side = gets[-1][1], reader.side
    side.get_seconds = statistics.median(g[0] for g in gets)
    side.size = len(body)
    side.series = body.count(b"\n") - body.count(b"\n#") - body.startswith(b"#")
    side.coverage = coverage(body, families, reader.label)


def settle(read: Callable[[], int], target: int, interval: float, limit: float,
           quiet_seconds: float = 30) -> int:
    """Poll ``read`` until it reaches ``target``, stops moving, or ``limit`` seconds pass; its
    last value (a shortfall is a figure to report, not a reason to stop the bench)."""
    value, began = read(), time.monotonic()
    moved_at = began
    while (value < target and time.monotonic() - moved_at < quiet_seconds
           and time.monotonic() - began < limit):
        time.sleep(interval)
        now = read()
        if now != value:
            value, moved_at = now, time.monotonic()
    return value


def sample_payloads() -> list[bytes]:
    """Telemetry with and without the room probes: every field a bridge sends."""
    feed = FleetFeed(inventory(2))
    return [payload for _ in range(2) for _, payload in feed.next_round()]


def edge_conf(core_port: int, number: int) -> str:
    """An edge broker bridging its bridges' topics into the core (as provinces would)."""
    prefix = f"{wire.DEFAULT_PREFIX}/v{wire.WIRE_VERSION}/+/+"
    return (f"connection core\naddress 127.0.0.1:{core_port}\ncleansession false\n"
            f"remote_clientid bw-edge-{number}\n"
            + "".join(f"topic {prefix}/{kind.value} out 1\n"
                      for kind in (wire.Kind.TELEMETRY, wire.Kind.STATE, wire.Kind.TEST))
            + f"topic {prefix}/{wire.Kind.CMD.value} in 1\n")


def start_brokers(stack: ExitStack, work: Path, bridges: int,
                  per_broker: int | None) -> tuple[list[Mosquitto], str]:
    """The core broker, plus edges when one Mosquitto may not open enough files; a summary."""
    hard = raise_fd_limit(FD_RESERVE)  # soft = hard, inherited by the brokers started here
    per_broker = per_broker or hard - FD_RESERVE
    edges = 0 if bridges <= per_broker else math.ceil(bridges / per_broker)
    brokers = []
    for number in range(-1, edges):
        conf = BROKER_CONF if number < 0 else BROKER_CONF + edge_conf(brokers[0].port, number)
        broker = Mosquitto(work / f"mosquitto{'' if number < 0 else f'-edge-{number}'}",
                           extra_conf=conf)
        broker.start()
        stack.callback(broker.stop)
        brokers.append(broker)
    if not edges:
        return brokers, "1 Mosquitto"
    return brokers, (f"{edges} edge Mosquittos of <= {per_broker} connections (ulimit -Hn "
                     f"{hard}) bridged into 1 core Mosquitto")


def run_scale(bridges: int, seconds: float, interval: float, work: Path,
              scrape_interval: str = "15s", warmup: float | None = None,
              per_broker: int | None = None, rounds: int = 6, drain_seconds: float = 300,
              with_peer: bool = True, progress: Callable[[str], None] = lambda s: None
              ) -> Result:
    """One fleet size, from start to drain; every process is stopped on the way out."""
    mapping = telemetry_fields(sample_payloads())
    with ExitStack() as stack:
        brokers, topology = start_brokers(stack, work, bridges, per_broker)
        core = brokers[0]
        collector = TimedCollector(work / "collector", bridges, core.port)
        stack.callback(collector.stop)
        collector.start()
        readers: list[Reader] = [CollectorReader(collector)]
        if with_peer:
            exporter = MqttExporter(work / "exporter",
                                    exporter_config(core.port, mapping, interval))
            stack.callback(exporter.stop)
            exporter.start()
            readers.append(ExporterReader(exporter))
        prometheus = Prometheus(work / "prometheus", [r.instance for r in readers],
                                scrape_interval)
        stack.callback(prometheus.stop)
        prometheus.start()
        fleet = Fleet([b.port for b in brokers[1:]] or [core.port], bridges, interval,
                      work / "fleet", rounds=rounds)
        stack.callback(fleet.kill)
        uses = {"BridgeWatch": Usage([_pid(collector)]),
                "Mosquitto": Usage([_pid(b) for b in brokers]),
                "Prometheus": Usage([_pid(prometheus)])}
        if with_peer:
            uses["mqtt2prometheus"] = Usage([_pid(exporter)])
        for reader in readers:
            reader.side.rss_base = uses[reader.side.name].rss()

        progress(f"connecting {bridges} bridges")
        connect_seconds = fleet.start()
        uses["generator"] = Usage(fleet.pids)
        wait_until(lambda: collector.taken_in("state") >= bridges, 300,
                   "the collector to see every bridge's online state", interval=0.5)
        begin = time.time() + 1
        fleet.go(begin)
        warmup = interval + 2 if warmup is None else warmup
        progress(f"warming up {warmup:.0f} s")
        time.sleep(max(0.0, begin + warmup - time.time()))

        for reader in reversed(readers):  # the collector's reading last: nearest the start
            reader.open(since=begin + interval)
        load0, gen0 = os.getloadavg()[0], fleet.counts()
        cpu0 = {name: use.cpu() for name, use in uses.items()}
        start = time.time()
        progress(f"measuring {seconds:.0f} s")
        while time.time() < start + seconds:
            for use in uses.values():
                use.rss()
            time.sleep(min(1.0, max(0.0, start + seconds - time.time())))
        end = time.time()
        cpu = {name: use.cpu() - cpu0[name] for name, use in uses.items()}
        gen1, load1 = fleet.counts(), os.getloadavg()[0]
        rss = {name: use.rss() for name, use in uses.items()}
        for reader in readers:
            reader.close()
            reader.side.cpu_seconds = cpu[reader.side.name]
            reader.side.rss = rss[reader.side.name]
            reader.side.rss_peak = uses[reader.side.name].peak

        progress("timing /metrics")
        families = sorted({f.prom_name for f in mapping.fields})
        for reader in readers:
            time_metrics(reader, families)
        for reader in readers:
            scrape_figures(prometheus, reader, begin, time.time())
            reader.finish(prometheus)

        progress("draining")
        final = fleet.stop()
        for reader in readers:
            reader.side.taken_in_total = settle(reader.taken_in, final.acked,
                                                reader.poll_seconds, drain_seconds)

    return Result(
        bridges=bridges, interval=interval, seconds=end - start,
        topology=f"{len(fleet.shares)} simulator process(es) -> {topology}",
        connect_seconds=connect_seconds, load=(load0, load1), bw=readers[0].side,
        peer=readers[1].side if with_peer else None, offered=bridges / interval,
        achieved=(gen1.acked - gen0.acked) / (gen1.t - gen0.t),
        window=Counts(**{k: v - getattr(gen0, k) for k, v in gen1.__dict__.items()}),
        final=final, cpu=cpu, rss=rss, drain_seconds=drain_seconds)


# -- printing -----------------------------------------------------------------------------

MB = 1 << 20


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:,.1f}"


def _ratio(ours: float | None, theirs: float | None, higher_is_better: bool) -> str:
    if not ours or not theirs:
        return "-"
    return f"{(ours / theirs if higher_is_better else theirs / ours):.2f}x"


def _rows(r: Result) -> list[tuple[str, Callable[[Side], str],
                                   Callable[[Side], float | None] | None, bool]]:
    """(label, how a side's cell reads, the figure a ratio compares if any, higher is
    better)."""
    def per_msg(s: Side) -> float:
        return s.cpu_seconds / max(1, s.messages)

    def opt(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    return [
        ("ingest, msg/s", lambda s: f"{s.rate:,.1f}", lambda s: s.rate, True),
        ("intake p50, ms", lambda s: _ms(s.p50), lambda s: s.p50, False),
        ("intake p99, ms", lambda s: _ms(s.p99), lambda s: s.p99, False),
        ("  messages behind the quantiles", lambda s: f"{s.latency_samples:,}", None, True),
        ("CPU s in the window (us/msg)",
         lambda s: f"{s.cpu_seconds:.1f} ({per_msg(s) * 1e6:,.0f})", per_msg, False),
        ("RSS MB at the end (peak)", lambda s: f"{s.rss / MB:,.0f} ({s.rss_peak / MB:,.0f})",
         lambda s: s.rss, False),
        ("RSS KB per bridge (over idle)", lambda s: f"{s.rss / r.bridges / 1024:.1f} "
         f"({(s.rss - s.rss_base) / r.bridges / 1024:.1f})", None, False),
        ("/metrics GET s (median of <= 3)", lambda s: f"{s.get_seconds:.3f}",
         lambda s: s.get_seconds, False),
        ("/metrics MB (series per bridge)",
         lambda s: f"{s.size / MB:.1f} ({s.series / r.bridges:.0f})", None, False),
        ("Prometheus scrape s (largest in the run)", lambda s: opt(s.scrape_seconds, ".3f"),
         lambda s: s.scrape_seconds, False),
        ("Prometheus samples per scrape", lambda s: opt(s.scrape_samples, ",.0f"), None,
         False),
        ("Prometheus up (lowest)", lambda s: opt(s.up, ".0f"), None, False),
        (f"taken in of {r.final.acked:,} (drain <= {r.drain_seconds:.0f} s)",
         lambda s: f"{s.taken_in_total:,}", None, False),
    ]


def report(r: Result) -> str:
    def row(label: str, a: str, b: str, ratio: str = "") -> str:
        return f"  {label:<40} {a:>14} {b:>16} {ratio:>9}"

    peer = r.peer
    lines = [
        f"{r.bridges:,} bridges over {r.bridges:,} MQTT connections: {r.topology}; telemetry "
        f"every {r.interval:g} s ({r.offered:,.0f} msg/s offered), {r.seconds:.0f} s window",
        f"  load average (1 min) {r.load[0]:.2f} at the start, {r.load[1]:.2f} at the end, "
        f"{os.cpu_count()} cores; connecting every bridge took {r.connect_seconds:.1f} s",
        row("", "BridgeWatch", "mqtt2prometheus", "BW ahead"),
    ]
    for label, cell, figure, higher in _rows(r):
        lines.append(row(label, cell(r.bw), cell(peer) if peer else "(not run)",
                         _ratio(figure(r.bw), figure(peer), higher) if peer and figure
                         else ""))
    cpu, rss = r.cpu, r.rss
    lines += [
        f"  generator: achieved {r.achieved:,.1f} msg/s acknowledged of {r.offered:,.1f} "
        f"offered; in the window sent {r.window.sent:,}, late (>1 s) {r.window.late}; "
        f"connections closed {r.final.closed}; CPU {cpu['generator']:.1f} s",
        f"  Mosquitto: RSS {rss['Mosquitto'] / MB:,.0f} MB, CPU {cpu['Mosquitto']:.1f} s; "
        f"Prometheus: RSS {rss['Prometheus'] / MB:,.0f} MB, CPU {cpu['Prometheus']:.1f} s",
    ]
    return "\n".join(lines)


def mapping_summary(mapping: Mapping) -> str:
    families = sorted({f.prom_name for f in mapping.fields})
    return (f"mqtt2prometheus is configured for {len(mapping.fields)} fields per bridge in "
            f"{len(families)} families: {', '.join(families)}.\nIt cannot express "
            f"{len(mapping.unmapped)} families BridgeWatch exposes from the same payload "
            f"(deploy/mqtt_exporter.py says why): {', '.join(sorted(mapping.unmapped))}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bridges", type=int, nargs="+", default=[3400, 20000])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--interval", type=float, default=10.0, help="telemetry interval")
    parser.add_argument("--scrape-interval", default="15s", help="Prometheus (shipped: 15s)")
    parser.add_argument("--drain-seconds", type=float, default=300,
                        help="longest wait for each subscriber to take in the rest")
    parser.add_argument("--per-broker", type=int, default=None,
                        help="connections per Mosquitto (default: what ulimit -Hn allows)")
    parser.add_argument("--without-peer", action="store_true",
                        help="BridgeWatch alone: its figures without the exporter's CPU load")
    args = parser.parse_args()
    print(f"Prometheus scrapes every {args.scrape_interval}. Ratios: >1 means BridgeWatch is "
          "ahead (faster, smaller or more).", flush=True)
    print(mapping_summary(telemetry_fields(sample_payloads())), flush=True)
    for bridges in args.bridges:
        with tempfile.TemporaryDirectory(prefix="bw-national-") as tmp:
            began = time.monotonic()
            result = run_scale(bridges, args.seconds, args.interval, Path(tmp),
                               args.scrape_interval, per_broker=args.per_broker,
                               drain_seconds=args.drain_seconds,
                               with_peer=not args.without_peer,
                               progress=lambda s, t=began: print(
                                   f"  ... {time.monotonic() - t:5.0f} s: {s}",
                                   file=sys.stderr, flush=True))
        print(report(result), flush=True)


if __name__ == "__main__":
    main()
