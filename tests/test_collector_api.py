"""The collector's HTTP API and the readiness service behind it, on a real server.

A real ``CollectorServer`` on loopback with a real SQLite store, and a real Mosquitto
for the test orders it sends; what each test tried is in its docstring.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from agent import wire
from agent.broker import BrokerSettings
from collector.api import Api
from collector.apitokens import ApiTokens
from collector.commands import CommandSender
from collector.http import CollectorServer
from collector.inventory import load_inventory
from collector.readiness.config import ReadinessConfig
from collector.readiness.model import VIETNAM
from collector.readiness.service import ReadinessService
from collector.readiness.store import Store
from collector.schedule import import_document
from collector.state import FleetState
from deploy.localstack import Mosquitto, wait_until

INVENTORY = Path(__file__).resolve().parent.parent / "deploy" / "demo-inventory.yaml"
TOKEN = "x" * 32


class Stack:
    def __init__(self, tmp: Path, broker: Mosquitto) -> None:
        self.inventory = load_inventory(INVENTORY)
        self.state = FleetState(self.inventory, render_delay=0)
        self.store = Store(tmp / "readiness.sqlite")
        settings = BrokerSettings(port=broker.port)
        self.sender = CommandSender(settings, "api-test-cmd", wire.DEFAULT_PREFIX)
        self.sender.start()
        self.service = ReadinessService(self.store, ReadinessConfig(tmp / "r.sqlite"),
                                        self.inventory, self.state, self.sender)
        self.state.on_test = self.service.on_test
        tokens = tmp / "tokens"
        tokens.write_text(f"noc-an {TOKEN}\n")
        self.server = CollectorServer(("127.0.0.1", 0), self.state,
                                      Api(self.service, ApiTokens.load(tokens)))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def request(self, method: str, path: str, body: bytes | None = None,
                token: str | None = TOKEN, content_type: str = "application/json",
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        sent = {"Content-Type": content_type, **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=sent)
        answer = conn.getresponse()
        data = answer.read()
        conn.close()
        try:
            return answer.status, json.loads(data)
        except ValueError:
            return answer.status, data

    def close(self) -> None:
        self.server.shutdown()
        self.sender.stop()
        self.store.close()


@pytest.fixture
def stack(tmp_path: Path, broker: Mosquitto) -> Iterator[Stack]:
    s = Stack(tmp_path, broker)
    yield s
    s.close()


def schedule(start: datetime, session_id: str = "tcd-api") -> bytes:
    return yaml.safe_dump({"sessions": [{
        "id": session_id, "title": "Tiếp công dân định kỳ", "start": start.isoformat(),
        "duration": "3h", "host": "dt-trung-tam", "members": ["dt-sa-dec", "dt-hong-ngu"]}]},
        allow_unicode=True).encode()


def tomorrow() -> datetime:
    return (datetime.now(VIETNAM) + timedelta(days=1)).replace(microsecond=0)


def test_writes_need_a_valid_token_reads_do_not(stack: Stack) -> None:
    """No token, a wrong token and a token of the wrong shape: 401 with a Bearer
    challenge, nothing imported; the list stays readable without a token."""
    body = schedule(tomorrow())
    for token in (None, "y" * 32, TOKEN[:-1], TOKEN + "x"):
        status, answer = stack.request("POST", "/api/sessions", body, token=token,
                                       content_type="application/yaml")
        assert status == 401, (token, answer)
    assert stack.request("GET", "/api/sessions", token=None) == (200, [])
    status, answer = stack.request("POST", "/api/sessions", body,
                                   content_type="application/yaml")
    assert status == 200, answer
    status, sessions = stack.request("GET", "/api/sessions", token=None)
    assert [s["id"] for s in sessions] == ["tcd-api"]


def test_a_bad_schedule_is_refused_whole_with_lines(stack: Stack) -> None:
    """A schedule with an unknown bridge: 422, the error names its line, nothing stored."""
    text = schedule(tomorrow()).decode().replace("dt-hong-ngu", "dt-khong-co")
    status, answer = stack.request("POST", "/api/sessions", text.encode(),
                                   content_type="application/yaml")
    assert status == 422
    assert any(issue["line"] and "dt-khong-co" in json.dumps(issue, ensure_ascii=False)
               for issue in answer["issues"]), answer
    assert stack.store.sessions() == []


def test_bodies_are_bounded_and_understood_exactly(stack: Stack) -> None:
    """Oversized body (413), no length (411), not JSON / not an object / unknown field /
    missing field / non-slug id (400), unknown session (404), wrong method (405)."""
    stack.request("POST", "/api/sessions", schedule(tomorrow()),
                  content_type="application/yaml")
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    conn.putrequest("POST", "/api/tests")
    conn.putheader("Content-Length", str(2 << 20))
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    conn.putrequest("POST", "/api/tests")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()
    for body in (b"{", b"[1]", b'{"site": "dt-sa-dec", "priority": 1}', b"{}",
                 b'{"site": "DT SA DEC"}'):
        status, answer = stack.request("POST", "/api/tests", body)
        assert status == 400, (body, answer)
    assert stack.request("GET", "/api/sessions/khong-co")[0] == 404
    assert stack.request("PUT", "/api/sessions")[0] == 405
    assert stack.request("GET", "/api/sessions/tcd-api/confirm")[0] == 405


def test_noc_order_reaches_the_bridge_and_its_result_is_stored(stack: Stack,
                                                               broker: Mosquitto) -> None:
    """POST /api/tests sends run-test on the bridge's cmd topic (seen by a real MQTT
    subscriber); the agent's answer on the test topic is stored with who asked."""
    stack.request("POST", "/api/sessions", schedule(tomorrow()),
                  content_type="application/yaml")
    commands: list[wire.Command] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bridge",
                      protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: commands.append(wire.decode(m.payload, wire.Kind.CMD))
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("bridgewatch/v1/dong-thap/dt-sa-dec/cmd", qos=1)
    sub.loop_start()
    time.sleep(0.5)
    try:
        status, answer = stack.request("POST", "/api/tests",
                                       json.dumps({"site": "dt-sa-dec",
                                                   "session": "tcd-api"}).encode())
        assert status == 202, answer
        test_id = answer["test_id"]
        assert test_id.startswith("tcd-api/noc/")
        wait_until(lambda: commands, 10, "the run-test command")
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert commands[0].command == "run-test" and commands[0].args["test_id"] == test_id
    assert commands[0].args["session_seconds"] == 3 * 3600
    result = wire.TestResult("dong-thap", "dt-sa-dec", 1, 1, 1, time.time(), test_id, "noc",
                             True, (wire.Criterion("link-rtt", True, 0.02, 0.15, "s"),))
    assert stack.state.apply("bridgewatch/v1/dong-thap/dt-sa-dec/test", wire.encode(result))
    stored = stack.store.test(test_id)
    assert stored is not None and stored.requested_by == "noc-an"
    status, tests = stack.request("GET", "/api/tests?site=dt-sa-dec", token=None)
    assert [t["test_id"] for t in tests] == [test_id]


def test_results_naming_a_wrong_session_are_refused_and_counted(stack: Stack) -> None:
    """A result for a session that does not exist, for one the bridge is not in, and
    with an unknown trigger: refused, counted by reason, nothing stored."""
    stack.request("POST", "/api/sessions", schedule(tomorrow()),
                  content_type="application/yaml")
    cases = [("dt-sa-dec", "khong-co/test-1/0123abcd", "schedule", "unknown_session"),
             ("dt-lap-vo", "tcd-api/test-1/0123abcd", "schedule", "not_in_session"),
             ("dt-sa-dec", "local/0123abcd", "hacker", "unknown_trigger")]
    for seq, (site, test_id, trigger, _) in enumerate(cases, start=1):
        result = wire.TestResult("dong-thap", site, 1, seq, seq, time.time(), test_id,
                                 trigger, True, ())
        stack.state.apply(f"bridgewatch/v1/dong-thap/{site}/test", wire.encode(result))
    registry = stack.state.metrics.registry
    for *_, reason in cases:
        assert registry.get_sample_value("bridge_collector_messages_rejected_total",
                                         {"reason": reason}) == 1, reason
    assert stack.store.tests() == []


def test_confirm_and_report(stack: Stack) -> None:
    """Confirming a bridge of the session records who; one not in it is refused; the
    report is served as HTML with its CSP header and as CSV with a BOM."""
    in_five_days = tomorrow() + timedelta(days=4)  # the T-3 d confirmation is still open
    stack.request("POST", "/api/sessions", schedule(in_five_days),
                  content_type="application/yaml")
    status, answer = stack.request("POST", "/api/sessions/tcd-api/confirm",
                                   json.dumps({"site": "dt-sa-dec"}).encode())
    assert (status, answer["by"]) == (201, "noc-an")
    status, _ = stack.request("POST", "/api/sessions/tcd-api/confirm",
                              json.dumps({"site": "dt-lap-vo"}).encode())
    assert status == 422
    status, session = stack.request("GET", "/api/sessions/tcd-api", token=None)
    states = {(v["site"], v["checkpoint"]): v["state"] for v in session["verdicts"]}
    assert states[("dt-sa-dec", "confirm")] == "passed"
    assert states[("dt-hong-ngu", "test-2")] == "pending"
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    conn.request("GET", "/report/tcd-api.html")
    page = conn.getresponse()
    assert page.status == 200 and "default-src 'none'" in page.getheader("Content-Security-Policy")
    assert "BIÊN BẢN KIỂM THỬ KỸ THUẬT" in page.read().decode()
    conn.request("GET", "/report/tcd-api.csv")
    csv = conn.getresponse()
    assert csv.status == 200 and csv.read().startswith("\ufeff".encode())
    conn.close()


def test_tokens_file_is_checked(tmp_path: Path) -> None:
    """Short tokens, a missing name and a name given twice are refused with the line."""
    path = tmp_path / "tokens"
    for text, message in (("noc short\n", ":1: token shorter than"), (f"{TOKEN}\n", ":1: expected"),
                          (f"a {TOKEN}\na {TOKEN}y\n", ":2: name 'a' given twice")):
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            ApiTokens.load(path)
    assert ApiTokens.load(None).who(f"Bearer {TOKEN}") is None  # no file: read-only


def test_tokens_are_matched_whole_and_only_as_bearer(tmp_path: Path) -> None:
    """The token's owner for the exact token, with the scheme in any case; nothing for a
    prefix, the token with more after it, one of the same length, another scheme or an
    empty header. Two tokens: each finds its own owner (every one is compared)."""
    path = tmp_path / "tokens"
    other = "z" * 40
    path.write_text(f"noc-an {TOKEN}\nnoc-binh {other}\n")
    tokens = ApiTokens.load(path)
    assert tokens.who(f"Bearer {TOKEN}") == "noc-an"
    assert tokens.who(f"bearer  {TOKEN} ") == "noc-an"
    assert tokens.who(f"Bearer {other}") == "noc-binh"
    for header in (f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", "Bearer " + "y" * len(TOKEN),
                   f"Basic {TOKEN}", TOKEN, "Bearer", "Bearer ", "", None,
                   "Bearer \udcff" + TOKEN):
        assert tokens.who(header) is None, header


def test_a_shard_judges_only_its_own_bridges(tmp_path: Path) -> None:
    """Two shards of one province: each shard's verdicts (and so its /metrics) cover only
    the bridges it owns, so no bridge is shown twice with two different states."""
    inventory = load_inventory(INVENTORY)
    owned: list[set[str]] = []
    for index in range(2):
        shard = inventory.shard(index, 2)
        store = Store(tmp_path / f"shard-{index}.sqlite")
        service = ReadinessService(store, ReadinessConfig(tmp_path / "r"), shard,
                                   FleetState(shard, render_delay=0), None)
        result = import_document(store, schedule(tomorrow()), "yaml", inventory)
        assert result.ok, result.as_dict()
        service.tick()
        sites = {v.site for v in service.snapshot().verdicts}
        assert sites and sites <= set(shard.sites)
        owned.append(sites)
        store.close()
    assert owned[0] | owned[1] == {"dt-trung-tam", "dt-sa-dec", "dt-hong-ngu"}
    assert not owned[0] & owned[1]
