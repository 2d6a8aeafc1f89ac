"""The collector's lean MQTT v5 intake against a real Mosquitto.

What it claims, each tried here: every QoS 1 message arrives with its topic and payload
(large ones and bursts that span reads), the session keeps what was published while the
collector was away, it reconnects after a broker restart, keepalive holds an idle
connection, credentials and TLS work, a refused login is reported, and a failing handler
does not stop intake.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from agent.broker import BrokerSettings, make_client
from collector.mqtt_intake import MqttIntake
from deploy.localstack import Mosquitto, free_port, wait_until
from tests.conftest import require_binary

pytestmark = pytest.mark.real
TOPIC_FILTER = "bw-test/+/data"


class Inbox:
    """Collects what the intake hands over, and its connection changes."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.connections: list[bool] = []
        self.lock = threading.Lock()

    def handler(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.messages.append((topic, payload))

    def count(self) -> int:
        with self.lock:
            return len(self.messages)


def start_intake(settings: BrokerSettings, inbox: Inbox, client_id: str = "collector-test",
                 handler: object = None) -> MqttIntake:
    intake = MqttIntake(settings, client_id, [TOPIC_FILTER], handler or inbox.handler,
                        on_connection=inbox.connections.append)
    intake.start()
    wait_until(lambda: intake.connected, 15, "the intake to connect")
    return intake


def publish(settings: BrokerSettings, messages: list[tuple[str, bytes]]) -> None:
    """Publish with paho at QoS 1 and wait until the broker acknowledged every one."""
    client = make_client(settings, f"publisher-{free_port()}")
    client.connect(settings.host, settings.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(30)
            assert info.rc == mqtt.MQTT_ERR_SUCCESS
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def settings(broker: Mosquitto) -> BrokerSettings:
    return BrokerSettings(port=broker.port, keepalive=5, reconnect_min_seconds=0.2,
                          reconnect_max_seconds=1)


def test_every_message_arrives_intact_across_reads(settings: BrokerSettings) -> None:
    inbox = Inbox()
    intake = start_intake(settings, inbox)
    try:
        burst = [(f"bw-test/s{i % 7}/data", f"message {i}".encode() * (i % 50 + 1))
                 for i in range(5000)]
        large = [("bw-test/big/data", bytes(range(256)) * 240)]  # 60 KiB, many TCP segments
        publish(settings, burst + large)
        wait_until(lambda: inbox.count() == len(burst) + 1, 30, "all messages")
        assert inbox.messages == burst + large  # order kept, nothing lost or altered
        publish(settings, [("bw-test/other/elsewhere", b"not subscribed")])
        publish(settings, [("bw-test/s1/data", b"after")])
        wait_until(lambda: inbox.count() == len(burst) + 2, 10, "the last message")
        assert inbox.messages[-1] == ("bw-test/s1/data", b"after")
    finally:
        intake.stop()


def test_the_session_keeps_what_arrived_while_away(settings: BrokerSettings) -> None:
    inbox = Inbox()
    intake = start_intake(settings, inbox)
    intake.stop()
    away = [(f"bw-test/s{i}/data", str(i).encode()) for i in range(200)]
    publish(settings, away)
    intake = start_intake(settings, inbox)
    try:
        assert intake.session_present
        wait_until(lambda: inbox.count() == 200, 15, "the backlog")
        assert sorted(inbox.messages) == sorted(away)
    finally:
        intake.stop()


def test_it_reconnects_after_a_broker_restart(broker: Mosquitto,
                                              settings: BrokerSettings) -> None:
    inbox = Inbox()
    intake = start_intake(settings, inbox)
    try:
        broker.stop()
        wait_until(lambda: not intake.connected, 10, "the intake to notice")
        broker.start()
        wait_until(lambda: intake.connected, 20, "the intake to reconnect")
        publish(settings, [("bw-test/s1/data", b"after restart")])
        wait_until(lambda: inbox.count() == 1, 10, "a message after the restart")
        assert inbox.connections[:3] == [True, False, True]
    finally:
        intake.stop()


def test_keepalive_holds_an_idle_connection(broker: Mosquitto) -> None:
    settings = BrokerSettings(port=broker.port, keepalive=1, reconnect_min_seconds=0.2)
    inbox = Inbox()
    intake = start_intake(settings, inbox)
    try:
        # Mosquitto drops a client silent for 1.5 x keepalive; wait well past that.
        threading.Event().wait(4)
        assert intake.connected and inbox.connections == [True]
        publish(settings, [("bw-test/s1/data", b"still here")])
        wait_until(lambda: inbox.count() == 1, 10, "a message after idling")
    finally:
        intake.stop()


def test_a_failing_handler_does_not_stop_intake(settings: BrokerSettings,
                                                caplog: pytest.LogCaptureFixture) -> None:
    inbox = Inbox()

    def handler(topic: str, payload: bytes) -> None:
        if payload == b"boom":
            raise RuntimeError("handler bug")
        inbox.handler(topic, payload)

    intake = start_intake(settings, inbox, handler=handler)
    try:
        publish(settings, [("bw-test/s1/data", b"boom"), ("bw-test/s1/data", b"fine")])
        wait_until(lambda: inbox.count() == 1, 10, "the message after the failure")
        assert "handler bug" in caplog.text
    finally:
        intake.stop()


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    """A broker with a password file and a TLS listener, certificates made by openssl."""
    openssl = require_binary("openssl")
    passwd = require_binary("mosquitto_passwd")
    pki = tmp_path / "pki"
    pki.mkdir()

    def run(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, cwd=pki)

    run(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=BridgeWatch test CA")
    run(openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (pki / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run(openssl, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "san.ext")
    run(passwd, "-b", "-c", str(pki / "passwords"), "collector", "s3cret-collector")
    port = free_port()
    listener = (f"listener {port} 127.0.0.1\nallow_anonymous false\n"
                f"password_file {pki / 'passwords'}\ncafile {pki / 'ca.crt'}\n"
                f"certfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\n")
    b = Mosquitto(tmp_path / "mosquitto", port=port, listener_conf=listener)
    b.start()
    yield b, pki
    b.stop()


def test_tls_and_credentials(secured_broker: tuple[Mosquitto, Path], tmp_path: Path) -> None:
    broker, pki = secured_broker
    password = tmp_path / "collector.password"
    password.write_text("s3cret-collector\n")
    settings = BrokerSettings(port=broker.port, username="collector",
                              password_file=str(password), ca_file=str(pki / "ca.crt"),
                              reconnect_min_seconds=0.2, reconnect_max_seconds=1)
    inbox = Inbox()
    intake = start_intake(settings, inbox)
    try:
        publish(settings, [("bw-test/s1/data", b"over TLS")])
        wait_until(lambda: inbox.count() == 1, 10, "a message over TLS")
    finally:
        intake.stop()


def test_a_refused_login_is_reported_and_retried(secured_broker: tuple[Mosquitto, Path],
                                                 tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    broker, pki = secured_broker
    password = tmp_path / "wrong.password"
    password.write_text("guess\n")
    settings = BrokerSettings(port=broker.port, username="collector",
                              password_file=str(password), ca_file=str(pki / "ca.crt"),
                              reconnect_min_seconds=0.2, reconnect_max_seconds=0.5)
    inbox = Inbox()
    intake = MqttIntake(settings, "collector-test", [TOPIC_FILTER], inbox.handler,
                        on_connection=inbox.connections.append)
    intake.start()
    try:
        wait_until(lambda: caplog.text.count("refused the connection") >= 2, 15,
                   "two refused attempts")
        assert not intake.connected and inbox.connections == []
    finally:
        intake.stop()
