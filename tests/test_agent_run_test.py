"""The collector's ``run-test`` order: command -> full test -> ``TestResult`` on the wire.

First the runner on its own (a stand-in test function, a real spool): argument checks,
one test at a time with at most one waiting, redelivered orders dropped. Then the real
agent (a subprocess) against a real Mosquitto and the real reflector on loopback, watched
by a subscriber that decodes with ``wire.decode`` like the collector; and a technician's
``check`` appending to the spool of that running agent.
"""

from __future__ import annotations

import re
import signal
import subprocess
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
from agent.config import parse_config
from agent.readiness import runner
from agent.readiness.criteria import Facts, Limits, judge
from agent.readiness.fulltest import FullTest
from agent.spool import Spool
from collector.reflector import Reflector, ReflectorSettings
from deploy.localstack import Mosquitto, Process, wait_until

PROVINCE, SITE = "ha-noi", "hn-01"
PREFIX = wire.DEFAULT_PREFIX
TELEMETRY = wire.topic(PREFIX, PROVINCE, SITE, wire.Kind.TELEMETRY)
TEST = wire.topic(PREFIX, PROVINCE, SITE, wire.Kind.TEST)
CMD = wire.topic(PREFIX, PROVINCE, SITE, wire.Kind.CMD)
AGENT = [sys.executable, "-m", "agent.main"]
KEY = b"run-test-reflector-key-0123456789"
LINK_CRITERIA = {"link-rtt", "link-jitter", "link-loss", "link-mos", "bandwidth-up",
                 "bandwidth-down"}


def command(args: dict[str, Any], seq: int = 1) -> wire.Command:
    return wire.Command(PROVINCE, SITE, seq, time.time(), runner.COMMAND, args)


# --- the runner on its own ---------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    ({"trigger": "schedule"}, "test_id must be"),
    ({"test_id": "", "trigger": "schedule"}, "test_id must be"),
    ({"test_id": "x" * 65, "trigger": "schedule"}, "test_id must be"),
    ({"test_id": "a\nb", "trigger": "schedule"}, "test_id must be"),
    ({"test_id": 7, "trigger": "schedule"}, "test_id must be"),
    ({"test_id": "t"}, "trigger must be one of schedule, retry, noc"),
    ({"test_id": "t", "trigger": "technician"}, "trigger must be one of"),
    ({"test_id": "t", "trigger": "noc", "session_seconds": "3h"}, "session_seconds must be"),
    ({"test_id": "t", "trigger": "noc", "session_seconds": True}, "session_seconds must be"),
    ({"test_id": "t", "trigger": "noc", "session_seconds": 59}, "session_seconds must be"),
    ({"test_id": "t", "trigger": "noc", "session_seconds": 86401}, "session_seconds must be"),
    ({"test_id": "t", "trigger": "noc", "sesion_seconds": 3600}, "unknown argument"),
])
def test_bad_orders_are_refused_by_name(args: dict[str, Any], message: str) -> None:
    """Every malformed run-test argument is refused with a reason naming it."""
    with pytest.raises(ValueError, match=re.escape(message)):
        runner.parse_order(args)


def test_good_orders() -> None:
    """Well-formed orders, and the shape of a technician's local test ids."""
    assert runner.parse_order({"test_id": "s-1/test-2/ab12", "trigger": "retry"}) == (
        runner.Order("s-1/test-2/ab12", "retry", None))
    assert runner.parse_order({"test_id": "x" * 64, "trigger": "noc",
                               "session_seconds": 7200}).session_seconds == 7200.0
    assert re.fullmatch(r"local/[0-9a-f]{8}", runner.local_test_id())
    assert re.fullmatch(r"s-1/local/[0-9a-f]{8}", runner.local_test_id("s-1"))


class Gate:
    """A stand-in for the full test that runs only when the test lets it."""

    def __init__(self) -> None:
        self.calls: list[float | None] = []
        self.release = threading.Semaphore(0)
        self.entered = threading.Semaphore(0)

    def __call__(self, config: Any, session_seconds: float | None = None) -> FullTest:
        self.calls.append(session_seconds)
        self.entered.release()
        assert self.release.acquire(timeout=10)
        facts = Facts(0.02, 0.002, 0.0, 4.4, 50e6, 50e6)
        limits = Limits(session_seconds=session_seconds or 10800)
        return FullTest(judge(facts, limits), facts, limits, 1.8e9, 1.8e9 + 20)


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool.db")
    yield s
    s.close()


def test_runner_one_at_a_time_one_waiting_and_no_repeats(spool: Spool) -> None:
    """A running, B waiting; A again (a QoS 1 redelivery) is dropped, C is refused busy.
    The results land in the spool with their own test_id and trigger."""
    config = parse_config({"site": SITE, "province": PROVINCE, "spool": {"path": "x"}},
                          Path("/tmp"))
    gate = Gate()
    wakes: list[int] = []
    tests = runner.Runner(config, spool, wake=lambda: wakes.append(1), run=gate)
    tests.start()
    try:
        tests.submit(command({"test_id": "a", "trigger": "schedule", "session_seconds": 3600}))
        assert gate.entered.acquire(timeout=10)  # A is running
        tests.submit(command({"test_id": "b", "trigger": "retry"}))
        tests.submit(command({"test_id": "a", "trigger": "schedule"}))
        tests.submit(command({"test_id": "c", "trigger": "noc"}))
        with pytest.raises(ValueError):
            tests.submit(command({"test_id": "d", "trigger": "bogus"}))
        gate.release.release()
        assert gate.entered.acquire(timeout=10)  # then B
        gate.release.release()
        wait_until(lambda: tests.counters["run_test_done"] == 2, 10, "both results")
    finally:
        tests.stop()
    assert gate.calls == [3600.0, None]
    assert dict(tests.counters) == {"run_test_accepted": 2, "run_test_duplicate": 1,
                                    "run_test_refused_busy": 1, "run_test_done": 2}
    assert len(wakes) == 2
    results = [wire.decode(payload, wire.Kind.TEST) for _, topic, payload
               in spool.pending(0, 10)]
    assert [(r.test_id, r.trigger, r.seq, r.epoch) for r in results] == [  # type: ignore[union-attr]
        ("a", "schedule", 1, spool.epoch), ("b", "retry", 2, spool.epoch)]
    a = results[0]
    assert isinstance(a, wire.TestResult) and a.passed and a.ts == 1.8e9 + 20
    assert a.criteria == tuple(j.criterion for j in judge(
        Facts(0.02, 0.002, 0.0, 4.4, 50e6, 50e6), Limits(session_seconds=3600)))


def test_runner_stop_drops_waiting_orders(spool: Spool) -> None:
    """Stopping mid-test drops the waiting order and records nothing for the abandoned one."""
    config = parse_config({"site": SITE, "province": PROVINCE, "spool": {"path": "x"}},
                          Path("/tmp"))
    gate = Gate()
    tests = runner.Runner(config, spool, wake=lambda: None, run=gate)
    tests.start()
    tests.submit(command({"test_id": "a", "trigger": "schedule"}))
    assert gate.entered.acquire(timeout=10)
    tests.submit(command({"test_id": "b", "trigger": "schedule"}))
    tests.stop(timeout=0.1)  # A is still inside the test: abandoned, not recorded
    gate.release.release()
    tests.stop()
    assert gate.calls == [None] and spool.pending(0, 10) == []


# --- the real agent, broker and reflector ------------------------------------------------


def settings(port: int) -> BrokerSettings:
    return BrokerSettings(port=port, reconnect_min_seconds=1, reconnect_max_seconds=2)


class Collector:
    """Subscribes like the collector (QoS 1) to the site's telemetry and test results."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.telemetry: list[tuple[int, int]] = []  # (epoch, seq)
        self.results: list[wire.TestResult] = []
        self.errors: list[str] = []
        subscribed = threading.Event()
        self.client = make_client(settings(port), "test-collector")
        self.client.on_connect = lambda c, *a: c.subscribe([(TELEMETRY, 1), (TEST, 1)])
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        connect_async(self.client, settings(port))
        self.client.loop_start()
        wait_until(subscribed.is_set, 10, "collector subscribed")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        kind = wire.Kind.TEST if msg.topic == TEST else wire.Kind.TELEMETRY
        try:
            message = wire.decode(msg.payload, kind)
        except wire.WireError as err:
            with self.lock:
                self.errors.append(str(err))
            return
        with self.lock:
            if isinstance(message, wire.TestResult):
                self.results.append(message)
            else:
                assert isinstance(message, wire.Telemetry)
                self.telemetry.append((message.epoch, message.seq))

    def order(self, args: dict[str, Any], seq: int = 1) -> None:
        payload = wire.encode(wire.Command(PROVINCE, SITE, seq, time.time(), runner.COMMAND, args))
        self.client.publish(CMD, payload, qos=1).wait_for_publish(10)

    def result(self, test_id: str) -> wire.TestResult | None:
        with self.lock:
            found = [r for r in self.results if r.test_id == test_id]
        return found[0] if found else None

    def ids(self) -> list[str]:
        with self.lock:
            return [r.test_id for r in self.results]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector(broker: Mosquitto) -> Iterator[Collector]:
    c = Collector(broker.port)
    yield c
    c.close()


@pytest.fixture
def reflector() -> Iterator[Reflector]:
    with Reflector(ReflectorSettings(key=KEY, host="127.0.0.1", udp_port=0, tcp_port=0)) as r:
        yield r


def agent_config(tmp_path: Path, port: int, reflector: Reflector) -> Path:
    (tmp_path / "reflector.key").write_bytes(KEY)
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({
        "site": SITE, "province": PROVINCE, "interval_seconds": 0.5,
        "spool": {"path": "spool.db"},
        "broker": {"port": port, "reconnect_min_seconds": 1, "reconnect_max_seconds": 2},
        "link": {"reflector": {"host": "127.0.0.1", "udp_port": reflector.udp_port,
                               "tcp_port": reflector.tcp_port, "key_file": "reflector.key"},
                 "required_bandwidth_mbps": 1},
        "readiness": {"link_seconds": 1, "bandwidth_seconds": 0.5},
        "recording_volume": str(tmp_path),
        "storage": {"recording_bitrate_mbps": 0.01},
    }), encoding="utf-8")
    return path


@pytest.fixture
def agent(tmp_path: Path, broker: Mosquitto, reflector: Reflector,
          collector: Collector) -> Iterator[Process]:
    process = Process([*AGENT, "run", "--config", str(agent_config(tmp_path, broker.port,
                                                                   reflector))],
                      tmp_path / "agent.log")
    process.start()
    try:
        wait_until(lambda: collector.telemetry, 20, "the agent's first telemetry")
        yield process
    finally:
        process.kill()


def stop_cleanly(agent: Process) -> str:
    agent.stop(signal.SIGTERM)
    assert agent.proc is not None and agent.proc.returncode == 0, agent.log()
    return agent.log()


def test_run_test_order_is_answered_on_the_test_topic(agent: Process,
                                                      collector: Collector) -> None:
    """The collector orders a test for a 1-hour session: the agent answers with the same
    test_id and trigger, judged against 3600 s, in the same stream (epoch) as its
    telemetry with a seq of its own."""
    collector.order({"test_id": "s-1/test-2/ab12", "trigger": "schedule",
                     "session_seconds": 3600})
    result = wait_until(lambda: collector.result("s-1/test-2/ab12"), 60, "the test result")
    assert (result.province, result.site, result.trigger) == (PROVINCE, SITE, "schedule")
    criteria = {c.name: c for c in result.criteria}
    assert set(criteria) == LINK_CRITERIA | {"recording-space"}
    assert result.passed, result.criteria
    assert criteria["recording-space"].limit == 3600
    assert criteria["bandwidth-up"].limit == 1e6
    wait_until(lambda: max(s for _, s in collector.telemetry) > result.seq, 20,
               "telemetry after the result")
    assert {e for e, _ in collector.telemetry} == {result.epoch}
    assert result.seq not in {s for _, s in collector.telemetry}
    assert not collector.errors
    log = stop_cleanly(agent)
    assert "run-test s-1/test-2/ab12 (schedule): READY" in log


def test_bad_repeated_and_excess_orders(agent: Process, collector: Collector) -> None:
    """Bad args are refused and counted without a crash; a redelivered test_id is not run
    twice; a third order while one runs and one waits is refused as busy."""
    for seq, args in enumerate([
            {"test_id": "x" * 65, "trigger": "schedule"},
            {"test_id": "t", "trigger": "technician"},
            {"test_id": "t", "trigger": "noc", "session_seconds": "long"},
            {"test_id": "a", "trigger": "schedule"},
            {"test_id": "a", "trigger": "schedule"},
            {"test_id": "b", "trigger": "retry"},
            {"test_id": "c", "trigger": "noc"}], start=1):
        collector.order(args, seq)
    wait_until(lambda: collector.result("b"), 60, "the waiting order's result")
    assert collector.ids() == ["a", "b"]
    assert agent.running
    log = stop_cleanly(agent)
    assert log.count("command run-test") == 3 and "refused: test_id must be" in log
    assert "run-test c refused: busy" in log
    assert "'commands_bad_args': 3" in log and "'commands_run_test': 4" in log
    assert collector.ids() == ["a", "b"]


def test_technician_check_beside_the_running_agent(agent: Process, collector: Collector,
                                                   tmp_path: Path) -> None:
    """``check`` appends its result to the spool the running agent holds open: the agent
    sends it in its own stream, with a seq no telemetry has, and every seq arrives once."""
    done = subprocess.run([*AGENT, "check", "--config", str(tmp_path / "agent.yaml"),
                           "--session", "s-1"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    test_id = done.stdout.splitlines()[0].rsplit(" ", 1)[1]
    result = wait_until(lambda: collector.result(test_id), 30, "the technician's result")
    assert result.trigger == "technician" and test_id.startswith("s-1/local/")
    wait_until(lambda: max(s for _, s in collector.telemetry) > result.seq, 20,
               "telemetry after the result")
    telemetry = {s for _, s in collector.telemetry}
    assert {e for e, _ in collector.telemetry} == {result.epoch}
    assert result.seq not in telemetry
    top = max(telemetry)
    assert telemetry | {result.seq} >= set(range(1, top + 1))  # nothing skipped
    with collector.lock:
        assert len(collector.telemetry) == len(telemetry)  # nothing twice
    stop_cleanly(agent)
