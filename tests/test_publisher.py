"""The real agent (a subprocess) against a real Mosquitto, watched by a real subscriber.

The subscriber keeps a persistent QoS 1 session, like the collector, so anything the
broker accepted while it was away still reaches it; it records every (epoch, seq).
"""

from __future__ import annotations

import re
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml

from agent import wire
from agent.broker import BrokerSettings, connect_async, make_client
from deploy.localstack import Mosquitto, Process, wait_until
from tests.conftest import require_binary

PROVINCE, SITE = "ha-noi", "hn-01"
TELEMETRY = wire.topic(wire.DEFAULT_PREFIX, PROVINCE, SITE, wire.Kind.TELEMETRY)
STATE = wire.topic(wire.DEFAULT_PREFIX, PROVINCE, SITE, wire.Kind.STATE)
CMD = wire.topic(wire.DEFAULT_PREFIX, PROVINCE, SITE, wire.Kind.CMD)
AGENT = [sys.executable, "-m", "agent.main"]

pytestmark = pytest.mark.real


def settings(port: int, **extra: Any) -> BrokerSettings:
    return BrokerSettings(port=port, reconnect_min_seconds=1, reconnect_max_seconds=2, **extra)


class Recorder:
    """A collector-like subscriber: persistent session, QoS 1, decodes what it gets."""

    def __init__(self, port: int, client_id: str = "test-recorder") -> None:
        self.lock = threading.Lock()
        self.telemetry: list[tuple[int, int]] = []
        self.states: list[wire.State] = []
        self.errors: list[str] = []
        self.subscribed = threading.Event()
        self.client = make_client(settings(port), client_id)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        connect_async(self.client, settings(port))
        self.client.loop_start()
        wait_until(self.subscribed.is_set, 10, "recorder subscribed")

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe([(TELEMETRY, 1), (STATE, 1)])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        kind = wire.Kind.TELEMETRY if msg.topic == TELEMETRY else wire.Kind.STATE
        try:
            message = wire.decode(msg.payload, kind)
        except wire.WireError as err:
            with self.lock:
                self.errors.append(str(err))
            return
        with self.lock:
            if isinstance(message, wire.Telemetry):
                self.telemetry.append((message.epoch, message.seq))
            elif isinstance(message, wire.State):
                self.states.append(message)

    def seqs(self) -> set[int]:
        with self.lock:
            return {seq for _, seq in self.telemetry}

    def epochs(self) -> set[int]:
        with self.lock:
            return {epoch for epoch, _ in self.telemetry}

    def last_state(self) -> wire.State | None:
        with self.lock:
            return self.states[-1] if self.states else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def recorder(broker: Mosquitto) -> Iterator[Recorder]:
    rec = Recorder(broker.port)
    yield rec
    rec.close()


def retained_state(port: int) -> wire.State:
    """What a newcomer sees on the state topic: the retained message."""
    got: list[mqtt.MQTTMessage] = []
    client = make_client(settings(port, session_expiry_seconds=0), "test-newcomer")
    client.on_connect = lambda c, *a: c.subscribe(STATE, 1)
    client.on_message = lambda c, u, msg: got.append(msg)
    connect_async(client, settings(port, session_expiry_seconds=0))
    client.loop_start()
    try:
        wait_until(lambda: got, 10, "retained state")
    finally:
        client.disconnect()
        client.loop_stop()
    assert got[0].retain
    state = wire.decode(got[0].payload, wire.Kind.STATE)
    assert isinstance(state, wire.State)
    return state


def start_agent(tmp_path: Path, port: int, name: str = "agent",
                interval: float = 0.2, keep_acked_seconds: float = 120) -> Process:
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "site": SITE, "province": PROVINCE, "interval_seconds": interval,
        "spool": {"path": str(tmp_path / "spool.db"),
                  "keep_acked_seconds": keep_acked_seconds},
        "broker": {"port": port, "reconnect_min_seconds": 1, "reconnect_max_seconds": 2},
    }))
    agent = Process([*AGENT, "run", "--config", str(config)], tmp_path / f"{name}.log")
    agent.start()
    return agent


def spool_meta(tmp_path: Path) -> dict[str, int]:
    """The spool's counters and backlog, read as another process would (WAL allows it):
    ``pending`` rows await a PUBACK, ``kept`` rows have one and wait to be safe, ``oldest``
    is the oldest seq still in the file (0 when none)."""
    with sqlite3.connect(f"file:{tmp_path / 'spool.db'}?mode=ro", uri=True) as db:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        meta["pending"], meta["kept"], meta["oldest"] = db.execute(
            "SELECT count(*) - count(acked), count(acked), coalesce(min(seq), 0) "
            "FROM messages").fetchone()
    db.close()
    return meta


def stop_cleanly(agent: Process) -> None:
    agent.stop(signal.SIGTERM)
    assert agent.proc is not None and agent.proc.returncode == 0, agent.log()


def test_publishes_telemetry_and_will_on_kill(broker: Mosquitto, recorder: Recorder,
                                              tmp_path: Path) -> None:
    agent = start_agent(tmp_path, broker.port)
    try:
        wait_until(lambda: len(recorder.seqs()) >= 3, 20, "three telemetry messages")
        assert not recorder.errors
        assert min(recorder.seqs()) == 1
        online = wait_until(recorder.last_state, 10, "online state")
        assert online.state == "online" and online.site == SITE
        assert retained_state(broker.port) == online
        assert recorder.epochs() == {spool_meta(tmp_path)["epoch"]}

        agent.kill()  # no clean disconnect: only the broker's Last Will can say offline
        wait_until(lambda: recorder.last_state().state == "offline", 20, "Last Will")
        will = recorder.last_state()
        assert will is not None and will.conn == online.conn
        assert retained_state(broker.port).state == "offline"
    finally:
        agent.kill()


def test_outage_loses_nothing(broker: Mosquitto, recorder: Recorder, tmp_path: Path) -> None:
    agent = start_agent(tmp_path, broker.port, interval=0.05)
    try:
        wait_until(lambda: len(recorder.seqs()) >= 3, 20, "telemetry before the outage")
        broker.stop()
        assert (broker.workdir / "mosquitto.db").exists(), broker.log()  # sessions persist
        # The agent keeps sampling into its spool while the broker is away; more than one
        # send window (64) of backlog, so the catch-up has to refill the window.
        wait_until(lambda: spool_meta(tmp_path)["pending"] >= 100, 30, "samples spooled")
        broker.start()
        wait_until(lambda: spool_meta(tmp_path)["next_seq"] - 1 in recorder.seqs(), 30,
                   "the agent to catch up after the outage")
        stop_cleanly(agent)  # drains what is in flight, then says offline
    finally:
        agent.kill()
    meta = spool_meta(tmp_path)
    assert meta["pending"] == 0, agent.log()
    assert meta["kept"] > 0  # acknowledged within keep_acked_seconds (120 s): still kept
    last = meta["next_seq"] - 1
    wait_until(lambda: recorder.seqs() >= set(range(1, last + 1)), 20, f"every seq 1..{last}")
    assert recorder.seqs() == set(range(1, last + 1))
    assert recorder.epochs() == {meta["epoch"]}
    assert not recorder.errors
    assert recorder.last_state().state == "offline"  # the explicit one from the clean stop


def test_acknowledged_rows_are_kept_then_purged_and_resent_after_a_reconnect(
        broker: Mosquitto, recorder: Recorder, tmp_path: Path) -> None:
    """With ``keep_acked_seconds`` 2: acknowledged rows stay in the spool, the oldest of
    them leave only while the connection stays up; across an outage longer than that
    they stay, and after it they are sent again (the recorder receives them twice), then
    purged on the new connection. Tried: keep_acked_seconds 0 makes ``kept`` stay 0."""
    agent = start_agent(tmp_path, broker.port, interval=0.1, keep_acked_seconds=2)
    try:
        wait_until(lambda: spool_meta(tmp_path)["kept"] >= 5, 20, "acknowledged rows kept")
        wait_until(lambda: spool_meta(tmp_path)["oldest"] > 1, 20, "the oldest purged")
        broker.stop()
        wait_until(lambda: "disconnected from broker" in agent.log(), 30, "the drop seen")
        during = spool_meta(tmp_path)
        time.sleep(4)  # twice keep_acked_seconds, disconnected: nothing may be purged
        assert spool_meta(tmp_path)["oldest"] == during["oldest"]
        assert spool_meta(tmp_path)["kept"] == during["kept"] > 0
        with recorder.lock:
            received = len(recorder.telemetry)
        broker.start()
        wait_until(lambda: "acknowledged before the reconnect" in agent.log(), 30, "resend")
        wait_until(lambda: spool_meta(tmp_path)["oldest"] > during["next_seq"], 30,
                   "rows kept across the outage purged on the new connection")
        with recorder.lock:
            resent = {seq for _, seq in recorder.telemetry[received:]}
        assert during["oldest"] in resent  # sent twice: before the outage and after it
        stop_cleanly(agent)
    finally:
        agent.kill()
    assert recorder.seqs() == set(range(1, spool_meta(tmp_path)["next_seq"]))


def test_restart_continues_seq_and_bumps_conn(broker: Mosquitto, recorder: Recorder,
                                              tmp_path: Path) -> None:
    agent = start_agent(tmp_path, broker.port)
    try:
        wait_until(lambda: len(recorder.seqs()) >= 3, 20, "telemetry from the first run")
        stop_cleanly(agent)
    finally:
        agent.kill()
    first = spool_meta(tmp_path)
    last = first["next_seq"] - 1
    wait_until(lambda: recorder.seqs() >= set(range(1, last + 1)), 20, "first run delivered")
    offline = recorder.last_state()
    assert offline is not None and offline.state == "offline" and offline.conn == first["conn"]

    agent = start_agent(tmp_path, broker.port, "agent2")
    try:
        wait_until(lambda: max(recorder.seqs()) >= last + 3, 20, "telemetry from the restart")
        online = recorder.last_state()
        assert online is not None and online.state == "online"
        assert online.conn == first["conn"] + 1
        assert recorder.epochs() == {first["epoch"]}
        assert recorder.seqs() >= set(range(1, last + 4))  # continues at last + 1, no gap
    finally:
        stop_cleanly(agent)


def test_commands_are_logged_and_bad_ones_rejected(broker: Mosquitto, recorder: Recorder,
                                                   tmp_path: Path) -> None:
    agent = start_agent(tmp_path, broker.port)
    try:
        wait_until(recorder.last_state, 20, "agent online")
        now = time.time()
        ping = wire.encode(wire.Command(PROVINCE, SITE, 7, now, "ping"))
        other = wire.encode(wire.Command(PROVINCE, "hn-02", 8, now, "ping"))
        unknown = wire.encode(wire.Command(PROVINCE, SITE, 9, now, "reboot"))
        for payload in (b"{not json", other, unknown, ping):
            recorder.client.publish(CMD, payload, qos=1).wait_for_publish(10)
        wait_until(lambda: "ping command (seq 7)" in agent.log(), 20, "ping logged")
        log = agent.log()
        assert "rejected a command" in log and "malformed_json" in log
        assert "addressed to ha-noi/hn-02" in log
        assert "unknown command 'reboot'" in log
        assert agent.running  # bad input never crashes it
    finally:
        stop_cleanly(agent)


def test_refused_publishes_stay_spooled_until_allowed(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    base = f"topic read {wire.DEFAULT_PREFIX}/#\ntopic readwrite {STATE}\ntopic read {CMD}\n"
    acl.write_text(base)
    require_binary("mosquitto")
    broker = Mosquitto(tmp_path / "mosquitto", extra_conf=f"acl_file {acl}\n")
    broker.start()
    recorder = Recorder(broker.port)
    agent = start_agent(tmp_path, broker.port)
    try:
        wait_until(lambda: "broker refused message" in agent.log(), 20, "refusal logged")
        wait_until(lambda: spool_meta(tmp_path)["pending"] >= 10, 20, "refused rows kept")
        assert recorder.seqs() == set()
        acl.write_text(base + f"topic write {TELEMETRY}\n")
        broker.send_signal(signal.SIGHUP)  # mosquitto reloads its ACL
        wait_until(lambda: len(recorder.seqs()) >= 10, 90, "delivery once allowed")
        stop_cleanly(agent)
        last = spool_meta(tmp_path)["next_seq"] - 1
        wait_until(lambda: recorder.seqs() >= set(range(1, last + 1)), 20, "nothing lost")
        log = agent.log()
        assert log.count("broker refused message") == 1, log  # once, not once per retry
        assert "Not authorized (0x87)" in log
        assert "as conn 2" not in log  # a refusal is not a reason to reconnect
        refused = int(re.search(r"'publish_refused': (\d+)", log).group(1))  # type: ignore
        # Back-off: a few windows of refusals, not a hot loop of thousands.
        assert 1 <= refused <= 5 * 20, log
    finally:
        agent.kill()
        recorder.close()
        broker.stop()
