"""End to end with real parts: agent -> Mosquitto -> collector -> Prometheus.

Every process here is the real program started as an operator would start it; the test
only writes their configuration files and watches from outside.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from agent import wire
from agent.spool import Spool
from deploy.localstack import Mosquitto, Process, Prometheus, free_port, wait_until
from tests.conftest import require_binary

SITE, PROVINCE = "dt-xa-my-an", "dong-thap"
SELECTOR = f'site="{SITE}"'


@dataclass
class Stack:
    broker: Mosquitto
    collector: Process
    collector_port: int
    workdir: Path

    def collector_samples(self) -> dict[tuple[str, str], float]:
        """(metric, site) -> value from the collector's /metrics."""
        url = f"http://127.0.0.1:{self.collector_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        return {(s.name, s.labels.get("site", "")): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def agent(self, interval: float = 0.5, name: str = "agent") -> Process:
        config = {
            "site": SITE, "province": PROVINCE,
            "broker": {"host": "127.0.0.1", "port": self.broker.port, "keepalive": 5,
                       "reconnect_max_seconds": 1},
            "spool": {"path": str(self.workdir / "spool.sqlite")},
            "interval_seconds": interval,
            "recording_volume": str(self.workdir),
        }
        path = self.workdir / "agent.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return Process([sys.executable, "-m", "agent.main", "run", "--config", str(path)],
                       self.workdir / f"{name}.log")


@pytest.fixture
def stack(broker: Mosquitto, tmp_path: Path) -> Iterator[Stack]:
    inventory = {"provinces": {PROVINCE: {"name": "Đồng Tháp"}}, "sites": [
        {"id": SITE, "province": PROVINCE, "name": "UBND xã Mỹ An", "level": "member"}]}
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump(inventory, allow_unicode=True),
                                             encoding="utf-8")
    port = free_port()
    (tmp_path / "collector.yaml").write_text(yaml.safe_dump({
        "inventory": "inventory.yaml", "listen": f"127.0.0.1:{port}",
        "broker": {"host": "127.0.0.1", "port": broker.port, "reconnect_max_seconds": 1}}))
    collector = Process([sys.executable, "-m", "collector.main", "--config",
                         str(tmp_path / "collector.yaml")], tmp_path / "collector.log")
    collector.start()
    s = Stack(broker, collector, port, tmp_path)
    try:
        wait_until(lambda: s.collector_samples().get(("bridge_collector_mqtt_connected", "")),
                   20, "the collector to connect")
        yield s
    finally:
        collector.stop()


@pytest.fixture
def prometheus(stack: Stack, tmp_path: Path) -> Iterator[Prometheus]:
    require_binary("prometheus")
    prom = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{stack.collector_port}"], "1s")
    prom.start()
    yield prom
    prom.stop()


def retained_state(port: int) -> dict:
    """Read the site's retained state from the broker as a fresh subscriber would."""
    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)

    def on_message(c: mqtt.Client, u: object, message: mqtt.MQTTMessage) -> None:
        got.append(message.payload)
        done.set()

    client.on_message = on_message
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(
        wire.topic(wire.DEFAULT_PREFIX, PROVINCE, SITE, wire.Kind.STATE), qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert done.wait(10), "no retained state on the broker"
    finally:
        client.disconnect()
        client.loop_stop()
    return json.loads(got[0])


def test_a_value_measured_by_the_agent_arrives_in_prometheus(
        stack: Stack, prometheus: Prometheus) -> None:
    agent = stack.agent(interval=1.0)
    agent.start()
    try:
        total = wait_until(lambda: prometheus.value(f"bridge_memory_total_bytes{{{SELECTOR}}}"),
                           60, "bridge_memory_total_bytes in Prometheus")
        assert total == psutil.virtual_memory().total
        assert prometheus.value(f"bridge_up{{{SELECTOR}}}") == 1
        assert prometheus.value(
            f'bridge_filesystem_avail_bytes{{{SELECTOR},role="recording"}}') > 0
        assert prometheus.value(f'bridge_site_info{{{SELECTOR},name="UBND xã Mỹ An"}}') == 1
        failed = prometheus.query(f"bridge_probe_success{{{SELECTOR}}} == 0")
        assert failed == [], f"probes failing on this machine: {failed}"
    finally:
        agent.stop()


def test_a_killed_agent_goes_down_and_its_retained_state_says_offline(
        stack: Stack, prometheus: Prometheus) -> None:
    agent = stack.agent(interval=1.0)
    agent.start()
    wait_until(lambda: prometheus.value(f"bridge_up{{{SELECTOR}}}") == 1, 60, "bridge_up 1")
    online = retained_state(stack.broker.port)
    assert online["state"] == "online"
    agent.stop(signal.SIGKILL)
    # The broker publishes the Last Will as soon as the TCP connection drops.
    wait_until(lambda: prometheus.value(f"bridge_up{{{SELECTOR}}}") == 0, 30, "bridge_up 0")
    offline = retained_state(stack.broker.port)
    assert offline["state"] == "offline" and offline["conn"] == online["conn"]
    assert prometheus.value(f"bridge_agent_connected{{{SELECTOR}}}") == 0
    # Measured series are gone (stale), not frozen at their last value.
    wait_until(lambda: prometheus.value(f"bridge_memory_total_bytes{{{SELECTOR}}}") is None,
               30, "bridge_memory_total_bytes to go stale")


def test_a_broker_outage_loses_nothing_and_counts_nothing_twice(stack: Stack) -> None:
    agent = stack.agent(interval=0.2)
    agent.start()
    spool_path = stack.workdir / "spool.sqlite"
    try:
        wait_until(lambda: stack.collector_samples().get(
            ("bridge_messages_received_total", SITE), 0) >= 5, 30, "first messages")
        stack.broker.stop()  # SIGTERM: the broker saves its sessions and goes away
        received_before = stack.collector_samples()[("bridge_messages_received_total", SITE)]
        # The agent keeps sampling into its spool while the broker is gone.
        wait_until(lambda: Spool(spool_path).stats()[0] >= 15, 30, "samples to pile up")
        stack.broker.start()
        wait_until(lambda: stack.collector_samples().get(
            ("bridge_messages_received_total", SITE), 0) >= received_before + 15, 60,
            "the spool to drain after the broker came back")
    finally:
        agent.stop()  # SIGTERM: clean stop
    last_seq = Spool(spool_path).last_seq()
    assert last_seq >= received_before + 15
    wait_until(lambda: stack.collector_samples()[("bridge_messages_received_total", SITE)]
               == last_seq, 30, f"all {last_seq} messages at the collector")
    final = stack.collector_samples()
    assert final[("bridge_messages_lost_total", SITE)] == 0
    assert Spool(spool_path).stats()[0] == 0, "nothing left unacknowledged"


def test_healthz_is_a_small_json_summary(stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.collector_port}/healthz"
    with urllib.request.urlopen(url, timeout=5) as resp:
        health = json.loads(resp.read())
    assert health["connected"] is True and health["sites"] == 1
    assert set(health["received"]) == {"telemetry", "state", "test"}
