"""The UDP prober and the "link" probe against real sockets on loopback.

Misbehaving reflectors are small real UDP servers: silent, late, duplicating, reordering
or sending garbage. None of them may crash the prober; each must be counted.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent import wire
from agent.config import AgentConfig, LinkConfig, LinkTarget, ReflectorEndpoint, SpoolConfig
from agent.link import bandwidth, packet, results
from agent.link.icmp import icmp_available
from agent.link.prober import Address
from agent.link.udp import UdpProber
from agent.probes import ProbeContext, load_all, run_probe
from agent.probes import link as link_probe
from collector.inventory import parse_inventory
from collector.reflector import Reflector, ReflectorSettings
from collector.state import FleetState
from deploy.localstack import wait_until
from tests.conftest import require_binary

KEY = b"link-probe-test-key-0123456789"
WAIT = 10.0  # only ever reached when a test is about to fail


@pytest.fixture
def reflector() -> Iterator[Reflector]:
    settings = ReflectorSettings(key=KEY, host="127.0.0.1", udp_port=0, tcp_port=0,
                                 rate_limit_pps=1000)
    with Reflector(settings) as r:
        yield r


@pytest.fixture(autouse=True)
def _stop_link_sessions() -> Iterator[None]:
    yield
    link_probe.shutdown()


Behaviour = Callable[["FakeReflector", object, packet.Packet, bytes], None]


class FakeReflector:
    """A real UDP server that answers (or not) as ``behaviour`` decides."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.held: list[tuple[bytes, object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, address = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            request = packet.decode(data, KEY)
            now = time.time_ns()
            self.behaviour(self, address, request, packet.reply(request, KEY, now, now))

    def send(self, data: bytes, address: object) -> None:
        self.sock.sendto(data, address)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def fake() -> Iterator[Callable[[Behaviour], FakeReflector]]:
    made: list[FakeReflector] = []

    def make(behaviour: Behaviour) -> FakeReflector:
        made.append(FakeReflector(behaviour))
        return made[-1]

    yield make
    for f in made:
        f.close()


def prober(port: int, **kwargs: object) -> UdpProber:
    return UdpProber("127.0.0.1", port, key=KEY, **kwargs)  # type: ignore[arg-type]


# --- the UDP prober ------------------------------------------------------------------------


def test_counts_against_the_reflector(reflector: Reflector) -> None:
    m = prober(reflector.udp_port).measure(20, 0.005)
    c = m.counters
    assert (c.sent, c.received, c.lost, c.late, c.duplicates, c.invalid) == (20, 20, 0, 0, 0, {})
    assert m.method == "udp-reflector" and m.resolved
    if sys.platform.startswith("linux"):
        assert m.timestamps == "kernel"
    assert sorted(seq for seq, _ in m.window.events) == list(range(20))
    assert all(0 < rtt < 2.0 for _, rtt in m.window.events)
    s = m.window.stats
    assert s.rtt is not None and s.rtt[0.0] <= s.rtt[0.5] <= s.rtt[1.0]
    assert s.loss_ratio == 0.0 and s.mos is not None and s.mos > 4.0


def test_continuous_probing_reports_windows(reflector: Reflector) -> None:
    p = prober(reflector.udp_port, interval=0.01)
    p.start()
    try:
        wait_until(lambda: p.counters().received >= 5, WAIT, "five replies")
        first = p.take_window()
        wait_until(lambda: p.counters().received >= 10, WAIT, "five more replies")
        second = p.take_window()
    finally:
        p.stop()
    assert first.events and second.events
    # Each reply is in exactly one window.
    assert max(s for s, _ in first.events) < min(s for s, _ in second.events)
    assert second.stats.jitter_rfc3550 is not None  # chained from the first window


def test_a_silent_reflector_is_total_loss(fake: Callable[[Behaviour], FakeReflector]) -> None:
    silent = fake(lambda *_: None)
    m = prober(silent.port, timeout=0.2).measure(5, 0.005)
    assert (m.counters.sent, m.counters.received, m.counters.lost) == (5, 0, 5)
    s = m.window.stats
    assert s.loss_ratio == 1.0 and s.rtt is None and s.jitter_rfc3550 is None
    assert s.mos is not None and s.mos < 1.5


def test_late_replies_are_late_not_received(fake: Callable[[Behaviour], FakeReflector]) -> None:
    def late(f: FakeReflector, address: object, _: packet.Packet, reply: bytes) -> None:
        threading.Timer(0.3, f.send, (reply, address)).start()

    slow = fake(late)
    p = prober(slow.port, timeout=0.05)
    p.start(count=3)
    try:
        wait_until(lambda: p.counters().late == 3, WAIT, "three late replies")
    finally:
        p.stop()
    c = p.counters()
    assert (c.sent, c.received, c.lost, c.late, c.duplicates) == (3, 0, 3, 3, 0)


def test_duplicates_are_counted_once_each(fake: Callable[[Behaviour], FakeReflector]) -> None:
    def twice(f: FakeReflector, address: object, _: packet.Packet, reply: bytes) -> None:
        f.send(reply, address)
        f.send(reply, address)

    m = prober(fake(twice).port).measure(5, 0.005)
    assert (m.counters.received, m.counters.duplicates, m.counters.lost) == (5, 5, 0)
    assert len(m.window.events) == 5  # a copy is not a second RTT sample


def test_reorders_are_counted(fake: Callable[[Behaviour], FakeReflector]) -> None:
    def swap_pairs(f: FakeReflector, address: object, request: packet.Packet,
                   reply: bytes) -> None:
        if request.seq % 2 == 0:
            f.held.append((reply, address))
            return
        f.send(reply, address)
        f.send(*f.held.pop())

    m = prober(fake(swap_pairs).port).measure(6, 0.005)
    assert (m.counters.received, m.counters.reordered, m.counters.lost) == (6, 3, 0)
    assert [seq for seq, _ in m.window.events] == [1, 0, 3, 2, 5, 4]


def test_garbage_is_counted_and_ignored(fake: Callable[[Behaviour], FakeReflector]) -> None:
    def garbage(f: FakeReflector, address: object, request: packet.Packet,
                reply: bytes) -> None:
        now = time.time_ns()
        for junk in (
            b"\0" * 10,
            os.urandom(160),
            packet.reply(request, b"some other key, long enough", now, now),
            packet.encode(request, KEY),  # a request, not a reply
            packet.reply(packet.Packet(request.seq, request.sent_ns, size=100), KEY, now, now),
            packet.reply(packet.Packet(request.seq + 1000, request.sent_ns,
                                       size=request.size), KEY, now, now),
        ):
            f.send(junk, address)
        f.send(reply, address)

    m = prober(fake(garbage).port).measure(4, 0.005)
    assert (m.counters.sent, m.counters.received, m.counters.lost) == (4, 4, 0)
    assert m.counters.invalid == {"malformed": 8, "bad_hmac": 4, "not_reply": 4,
                                  "wrong_size": 4, "unknown_seq": 4}


def _resolver(outcomes: list[bool], port: int) -> Callable[[str, int | None, int], Address]:
    """Resolves to loopback or fails, in the given order (then keeps the last outcome)."""
    def resolve(host: str, _port: int | None, _type: int) -> Address:
        works = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        if not works:
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: Name or service not known")
        return socket.AF_INET, ("127.0.0.1", port)
    return resolve


def test_an_unresolvable_name_is_retried_every_round(reflector: Reflector) -> None:
    p = UdpProber("bridge.example", reflector.udp_port, key=KEY,
                  resolver=_resolver([False], reflector.udp_port))
    m = p.measure(4, 0.005)
    assert p.resolve_attempts == 4 and m.resolved is False
    assert (m.counters.sent, m.counters.lost) == (0, 0)


def test_a_name_that_comes_back_is_probed(reflector: Reflector) -> None:
    p = UdpProber("bridge.example", reflector.udp_port, key=KEY,
                  resolver=_resolver([False, False, True], reflector.udp_port))
    m = p.measure(5, 0.005)
    assert p.resolve_attempts == 3 and m.resolved is True
    assert (m.counters.sent, m.counters.received) == (3, 3)


def test_a_failing_lookup_keeps_probing_the_last_address(reflector: Reflector) -> None:
    p = UdpProber("bridge.example", reflector.udp_port, key=KEY, resolve_every=0.0,
                  resolver=_resolver([True, False], reflector.udp_port))
    m = p.measure(4, 0.005)
    assert m.resolved is False  # DNS is broken now...
    assert (m.counters.sent, m.counters.received) == (4, 4)  # ...the path is not


# --- the "link" probe --------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port that accepts and closes connections (a stand-in for a platform's :443)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def link_config(tmp_path: Path, reflector: Reflector, *targets: LinkTarget) -> AgentConfig:
    key_file = tmp_path / "reflector.key"
    key_file.write_bytes(KEY)
    link = LinkConfig(
        reflector=ReflectorEndpoint("127.0.0.1", key_file, reflector.udp_port,
                                    reflector.tcp_port),
        targets=targets, packet_interval_seconds=0.02, connect_interval_seconds=0.05)
    return AgentConfig(site="hn-01", province="ha-noi",
                       spool=SpoolConfig(path=tmp_path / "spool.db"), link=link)


def run_link(config: AgentConfig) -> wire.ProbeReport:
    return run_probe(load_all()["link"], ProbeContext(config), 10.0)


def rows(report: wire.ProbeReport, metric: str) -> dict[tuple[str, ...], float]:
    return dict(report.metrics.get(metric, []))


def test_probe_reports_every_target_in_wire_rows(tmp_path: Path, reflector: Reflector,
                                                 listener: int) -> None:
    config = link_config(tmp_path, reflector,
                         LinkTarget("platform", "127.0.0.1", "tcp-connect", listener),
                         LinkTarget("gateway", "127.0.0.1", "icmp", listener))
    first = run_link(config)
    assert first.ok, first.error
    second = run_link(config)  # the window since the first run
    assert second.ok, second.error
    message = wire.Telemetry("ha-noi", "hn-01", 1, 1, 1, time.time(), {"link": second})
    decoded = wire.decode(wire.encode(message), wire.Kind.TELEMETRY, now=time.time())
    assert isinstance(decoded, wire.Telemetry)
    assert decoded.probes["link"].metrics == second.metrics
    # ... and the collector exposes it per site and target.
    fleet = FleetState(parse_inventory({"provinces": {"ha-noi": {}}, "sites": [
        {"id": "hn-01", "province": "ha-noi"}]}), render_delay=0)
    full = wire.Telemetry("ha-noi", "hn-01", 1, 1, 1, time.time(), {"link": first})
    assert fleet.apply(wire.topic(wire.DEFAULT_PREFIX, "ha-noi", "hn-01", wire.Kind.TELEMETRY),
                       wire.encode(full))
    body = fleet.render().decode()
    site = 'province="ha-noi",site="hn-01",level="member"'
    assert f'bridge_link_mos{{{site},target="reflector"}}' in body
    assert f'bridge_link_rtt_seconds{{{site},target="platform",method="tcp-connect",' \
           'quantile="0.5"}' in body

    gateway = "icmp" if icmp_available() else "tcp-connect"  # the fallback, labelled
    expected = {("reflector", "udp-reflector"), ("platform", "tcp-connect"),
                ("gateway", gateway)}
    sent = rows(first, "link_packets_sent_total")
    assert set(sent) == expected
    later = rows(second, "link_packets_sent_total")
    assert all(later[k] >= sent[k] > 0 for k in expected)  # cumulative counters
    assert all(v > 0 for v in rows(first, "link_packets_received_total").values())
    quantiles = {labels[:2] for labels in rows(first, "link_rtt_seconds")}
    assert quantiles == expected
    assert {labels[2] for labels in rows(first, "link_rtt_seconds")} == {
        "0", "0.5", "0.9", "0.99", "1"}
    assert {labels[2] for labels in rows(first, "link_jitter_seconds")} == {
        "rfc3550", "mean_abs_diff"}
    assert set(rows(first, "link_mos")) == {("reflector",), ("platform",), ("gateway",)}
    assert all(1.0 <= v <= 4.5 for v in rows(first, "link_mos").values())
    assert rows(first, "link_target_resolved") == {
        ("reflector",): 1.0, ("platform",): 1.0, ("gateway",): 1.0}
    assert ("platform",) in rows(first, "link_connect_seconds")


def test_probe_without_a_link_section_does_nothing(tmp_path: Path) -> None:
    config = AgentConfig(site="hn-01", province="ha-noi",
                         spool=SpoolConfig(path=tmp_path / "spool.db"))
    report = run_link(config)
    assert report.ok and report.metrics == {}


def test_probe_reports_an_unresolvable_target_and_keeps_the_others(
        tmp_path: Path, reflector: Reflector) -> None:
    # A label over 63 characters cannot be looked up: it fails here, with no DNS query.
    bad = "x" * 64 + ".example"
    config = link_config(tmp_path, reflector, LinkTarget("dns", bad, "udp-reflector", 8620))
    report = run_link(config)
    assert not report.ok and report.error is not None
    assert f"target dns: cannot resolve {bad}" in report.error
    assert rows(report, "link_target_resolved") == {("reflector",): 1.0, ("dns",): 0.0}
    assert rows(report, "link_packets_sent_total")[("dns", "udp-reflector")] == 0
    assert rows(report, "link_packets_received_total")[("reflector", "udp-reflector")] > 0
    session = link_probe.session(config.link)  # type: ignore[arg-type]
    attempts = session.probers["dns"].resolve_attempts
    wait_until(lambda: session.probers["dns"].resolve_attempts > attempts, WAIT,
               "another lookup")


def test_probe_reports_an_unreadable_key_and_retries(tmp_path: Path,
                                                     reflector: Reflector) -> None:
    config = link_config(tmp_path, reflector)
    (tmp_path / "reflector.key").unlink()
    report = run_link(config)
    assert not report.ok and "target reflector:" in (report.error or "")
    assert report.metrics == {}
    (tmp_path / "reflector.key").write_bytes(KEY)  # installed later: picked up next run
    assert run_link(config).ok


def test_probe_reports_the_last_bandwidth_test(tmp_path: Path, reflector: Reflector) -> None:
    config = link_config(tmp_path, reflector)
    results.save(config, [bandwidth.BandwidthResult("upload", 4.8e6, 3_000_000, 5.0, 4.5),
                          bandwidth.BandwidthResult("download", 12e6, 7_500_000, 5.0, 4.5)],
                 1_700_000_000.0)
    report = run_link(config)
    assert report.ok, report.error
    assert rows(report, "link_bandwidth_bits_per_second") == {
        ("reflector", "upload"): 4.8e6, ("reflector", "download"): 12e6}
    assert rows(report, "link_bandwidth_test_timestamp_seconds") == {
        ("reflector",): 1_700_000_000.0}
    results.path_for(config).write_text('{"ts": "soon"}')
    broken = run_link(config)
    assert not broken.ok and "bandwidth results" in (broken.error or "")
    assert rows(broken, "link_packets_sent_total")  # the rest is still reported


def test_without_cap_net_raw_icmp_falls_back_to_tcp_connect(tmp_path: Path,
                                                            reflector: Reflector,
                                                            listener: int) -> None:
    """A real agent process without CAP_NET_RAW: the gateway is measured by tcp-connect."""
    (tmp_path / "reflector.key").write_bytes(KEY)
    (tmp_path / "agent.yaml").write_text(f"""
site: hn-01
province: ha-noi
spool: {{path: spool.db}}
link:
  reflector: {{host: 127.0.0.1, udp_port: {reflector.udp_port}, key_file: reflector.key}}
  targets:
    - {{name: gateway, host: 127.0.0.1, method: icmp, port: {listener}}}
  packet_interval_seconds: 0.02
  connect_interval_seconds: 0.05
probes: {{cpu: {{enabled: false}}}}
""")
    argv = [sys.executable, "-m", "agent.main", "sample", "--config",
            str(tmp_path / "agent.yaml")]
    if os.geteuid() == 0:  # root has CAP_NET_RAW: drop it for this process
        argv = [require_binary("setpriv"), "--bounding-set", "-net_raw", *argv]
    done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    message = json.loads(done.stdout)
    link = message["probes"]["link"]
    assert link["ok"], (link["error"], done.stderr)
    sent = {tuple(r[:-1]): r[-1] for r in link["metrics"]["link_packets_sent_total"]}
    assert set(sent) == {("reflector", "udp-reflector"), ("gateway", "tcp-connect")}
    assert all(v > 0 for v in sent.values())
