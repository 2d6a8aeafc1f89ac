"""The simulated bridges against a real Mosquitto: what they send must be what a real agent
could send (every payload decodes, streams and counters behave), or the demo and the
benchmarks would measure a collector fed with impossible data."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent import wire
from collector.inventory import load_inventory
from deploy.localstack import Mosquitto, wait_until

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
INVENTORY = ROOT / "deploy" / "demo-inventory.yaml"
SITES = load_inventory(INVENTORY).sites
REAL = "dt-sa-dec"
INTERVAL = 0.3


class Recorder:
    """A plain subscriber keeping every (topic, payload, retained) it receives."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe(f"{wire.DEFAULT_PREFIX}/#", qos=1)
        self.client.on_message = lambda c, u, m: self.messages.append(
            (m.topic, m.payload, bool(m.retain)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def decoded(self) -> dict[str, list[wire.Message]]:
        by_site: dict[str, list[wire.Message]] = defaultdict(list)
        for topic, payload, _ in list(self.messages):
            _, site, kind = wire.parse_topic(wire.DEFAULT_PREFIX, topic)
            by_site[site].append(wire.decode(payload, kind, now=time.time()))
        return by_site

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def simulate(port: int, *extra: str) -> subprocess.Popen[bytes]:
    agent = Path(sys.executable).parent / "bridgewatch-agent"
    return subprocess.Popen([str(agent), "simulate", "--inventory", str(INVENTORY),
                             "--broker-port", str(port), "--interval", str(INTERVAL), *extra])


def telemetry(messages: list[wire.Message]) -> list[wire.Telemetry]:
    return [m for m in messages if isinstance(m, wire.Telemetry)]


def states(messages: list[wire.Message]) -> list[wire.State]:
    return [m for m in messages if isinstance(m, wire.State)]


def flapped(messages: list[wire.Message]) -> bool:
    """Online, dropped offline (its will), then online again on a newer connection."""
    seen = [(s.state, s.conn) for s in states(messages)]
    for (s1, c1), (s2, c2), (s3, c3) in zip(seen, seen[1:], seen[2:], strict=False):
        if (s1, s2, s3) == ("online", "offline", "online") and c1 == c2 < c3:
            return True
    return False


def test_simulated_bridges_send_what_a_real_agent_could(broker: Mosquitto) -> None:
    started_ms = int(time.time() * 1000)
    recorder = Recorder(broker.port)
    proc = simulate(broker.port, "--seed", "5", "--skip", REAL, "--flaky", "1")
    simulated = set(SITES) - {REAL}
    try:
        wait_until(lambda: all(len(telemetry(recorder.decoded()[s])) >= 5 for s in simulated),
                   20, "5 telemetry messages from every simulated site")
        wait_until(lambda: any(flapped(m) for m in recorder.decoded().values()), 30,
                   "a flaky site to drop offline and come back")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    assert code == 0
    wait_until(lambda: all(states(recorder.decoded()[s])[-1].state == "offline"
                           for s in simulated), 5, "every site's will after the stop")
    recorder.close()

    by_site = recorder.decoded()
    assert set(by_site) == simulated  # the real agent's site is left to the real agent
    epochs = set()
    for site_id, messages in by_site.items():
        site = SITES[site_id]
        assert all(m.province == site.province for m in messages)
        assert all(s.conn >= started_ms for s in states(messages))
        stream = telemetry(messages)
        epochs |= {t.epoch for t in stream}
        assert [t.seq for t in stream] == list(range(1, len(stream) + 1))
        assert all(t.floor == t.seq for t in stream)
        for before, after in itertools.pairwise(stream):
            check_counters(before, after)
            check_rates(site.level, site.bandwidth_bits_per_second, before, after)
        check_sizes(site.level, stream[-1])
    assert len(epochs) == 1  # one stream per site per run
    # The room's slower probes (UPS, storage, clock, ...) come every few rounds.
    room = [t for messages in by_site.values() for t in telemetry(messages) if "ups" in t.probes]
    assert room and all({"devices", "storage", "clock", "software"} <= set(t.probes)
                        for t in room)


def rows(message: wire.Telemetry, probes: Iterable[str] | None = None,
         ) -> dict[tuple[str, tuple[str, ...]], float]:
    names = message.probes.keys() if probes is None else probes
    return {(metric, labels): value for name in names
            for metric, metric_rows in message.probes[name].metrics.items()
            for labels, value in metric_rows}


def check_counters(before: wire.Telemetry, after: wire.Telemetry) -> None:
    """Counters of every probe sent in both messages persist and never go back.

    Gauges may come and go: a window in which every link probe was lost has no RTT."""
    both = before.probes.keys() & after.probes.keys()
    assert {"cpu", "network", "link"} <= both  # the fast probes are in every message
    old, new = rows(before, both), rows(after, both)

    def counters(series: dict[tuple[str, tuple[str, ...]], float]) -> set[tuple[str, ...]]:
        return {key for key in series if wire.CATALOGUE[key[0]].type == "counter"}

    assert counters(old) == counters(new)
    for (metric, labels), value in new.items():
        if wire.CATALOGUE[metric].type == "counter":
            assert value >= old[(metric, labels)], (metric, labels)


def check_rates(level: str, link: float, before: wire.Telemetry, after: wire.Telemetry) -> None:
    """CPU time grows by cores x interval; traffic stays under the site's line."""
    old, new = rows(before), rows(after)
    cores = new[("cpu_logical_cores", ())]
    cpu = sum(v - old[k] for k, v in new.items() if k[0] == "cpu_seconds_total")
    assert cpu == pytest.approx(cores * INTERVAL, abs=0.11)
    for metric in ("network_receive_bytes_total", "network_transmit_bytes_total"):
        grown = sum(v - old[k] for k, v in new.items() if k[0] == metric)
        assert 0 < grown * 8 / INTERVAL < link, (level, metric)


def check_sizes(level: str, message: wire.Telemetry) -> None:
    values = rows(message)
    memory = values[("memory_total_bytes", ())]
    assert (16e9 < memory < 64e9) if level != "member" else (4e9 < memory < 16e9)
    assert 0 < values[("memory_available_bytes", ())] < memory
    sizes = {labels[1]: v for (m, labels), v in values.items() if m == "filesystem_size_bytes"}
    avail = {labels[1]: v for (m, labels), v in values.items() if m == "filesystem_avail_bytes"}
    assert set(sizes) == {"system", "recording", "backup"}
    assert 200e9 < sizes["recording"] < 2e12
    assert all(0 < avail[role] < sizes[role] for role in sizes)
    assert 0 < values[("boot_time_seconds", ())] < time.time()
