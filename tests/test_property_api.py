"""Property-based tests of the collector's HTTP API (hypothesis), in-process and over TCP.

Requests are generated from what the API knows and what it does not: every method (and
made-up ones), its paths with real, unknown and malformed ids, query strings with known,
unknown, repeated and percent-encoded parameters, a valid token, none, a wrong one or
garbage in ``Authorization``, every Content-Type it takes and others (charsets too), and
bodies that are good orders, JSON of every shape, schedules (good, broken, not UTF-8) and
random bytes. Thousands go to the in-process ``Api`` (the collector's own, over a real
SQLite store, with a real paho sender on a real Mosquitto), a few hundred as raw bytes to
a real ``CollectorServer`` on loopback. Every answer: no 500, no traceback, JSON that
parses, a refusal with ``error`` and ``loi`` and its reason from ``HTTP_REJECT_REASONS``,
counted once in ``bridge_collector_http_rejected_total`` (over TCP); no write without the
token; a read never changes the store.

Derandomized and without an example database, so CI runs the same cases every time.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import wire
from agent.broker import BrokerSettings
from collector.api import HTTP_REJECT_REASONS
from collector.commands import CommandSender
from collector.http import CollectorServer
from deploy.localstack import Mosquitto
from tests.conftest import require_binary
from tests.fuzz.api_oracle import (
    BUG_REASONS,
    MEMBER,
    SESSION,
    TOKEN,
    ApiWorld,
    Request,
    answered,
    check_answer,
    headers_of,
    parse_request,
    rejected,
)
from tests.fuzz.schedule_oracle import FIXTURES
from tests.fuzz.seeds import api_seeds

pytestmark = pytest.mark.real


def many(examples: int) -> settings:
    """Reproducible (derandomized, no database) and without a per-example deadline."""
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Stack:
    """A real Mosquitto, the API over a real store, and a real server on loopback."""

    def __init__(self, tmp: Path) -> None:
        require_binary("mosquitto")
        self.broker = Mosquitto(tmp / "mosquitto")
        self.broker.start()
        self.sender = CommandSender(BrokerSettings(port=self.broker.port), "api-fuzz-cmd",
                                    wire.DEFAULT_PREFIX)
        self.sender.start()
        self.world = ApiWorld(tmp / "readiness.sqlite", self.sender)
        self.server = CollectorServer(("127.0.0.1", 0), self.world.state, self.world.api)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.sender.stop()
        self.world.close()
        self.broker.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("api"))
    yield s
    s.close()


SEEDS = api_seeds()


@pytest.mark.parametrize("raw", list(SEEDS), ids=[r.split(b"\r\n")[0].decode() for r in SEEDS])
def test_the_fuzz_seeds_reach_every_route(stack: Stack, raw: bytes) -> None:
    """The API fuzzer's seeds (tests/fuzz/seeds.py) get the answer each was written for:
    imports, a confirmation, a test order, reports and a delete succeed, so a fuzz run
    starts deep inside every route, not at its front door."""
    request = parse_request(raw)
    assert request is not None
    assert answered(stack.world.api, request).status == SEEDS[raw]
    stack.world.reset()


# --------------------------------------------------------------------------------------
# Requests

WRITE = {"POST", "DELETE", "PUT", "PATCH"}
methods = st.sampled_from(["GET", "HEAD", "POST", "DELETE", "PUT", "PATCH", "OPTIONS",
                           "TRACE"]) | st.from_regex(r"\A[A-Za-z]{1,12}\Z")
# Printable, no whitespace: what fits in a request line (latin-1, as http.server reads it).
target_chars = st.characters(min_codepoint=0x21, max_codepoint=0xFF,
                             exclude_characters="\x7f\x85\xa0")
ids = (st.sampled_from([SESSION, "tcd-2026-12-12", "tcd-2026-12-19", "khong-co", "x" * 41,
                        "Tcd-2026", "tcd_2026", "-a", ""])
       | st.text(target_chars.filter(lambda c: c not in "?/#"), max_size=12))
paths = st.one_of(
    st.sampled_from(["/api/sessions", "/api/tests", "/api/", "/api/sessions/", "/report/",
                     "/api/sessions//confirm", "/api/tests/", "/api"]),
    ids.map(lambda i: f"/api/sessions/{i}"), ids.map(lambda i: f"/api/sessions/{i}/confirm"),
    st.tuples(ids, st.sampled_from(["html", "csv", "pdf", ""])).map(
        lambda t: f"/report/{t[0]}.{t[1]}"),
    st.text(target_chars, max_size=30).map(lambda t: "/api/" + t))
query_values = st.sampled_from([MEMBER, SESSION, "en", "vi", "EN", "", "dt sa dec", "%00",
                                "%zz", "../etc"]) | st.text(target_chars, max_size=8)
queries = st.one_of(
    st.just(""),
    st.lists(st.tuples(st.sampled_from(["site", "session", "lang", "x", "site[]", ""]),
                       query_values), min_size=1, max_size=4).map(
        lambda pairs: "?" + "&".join(f"{quote(k)}={quote(v, safe='%')}" for k, v in pairs)),
    st.text(target_chars, max_size=20).map(lambda t: "?" + t))
authorizations = st.sampled_from([None, f"Bearer {TOKEN}", f"Bearer {TOKEN}x", "Bearer ",
                                  f"bearer {TOKEN}", f"Basic {TOKEN}", f"Bearer  {TOKEN} ",
                                  "Bearer " + "é" * 40]) | st.text(target_chars, max_size=40)
content_types = st.sampled_from([
    None, "application/json", "application/json; charset=utf-8", "application/yaml",
    "text/calendar", "text/plain", "text/calendar; charset=latin-1", "application/x-yaml",
    "multipart/form-data; boundary=x", "APPLICATION/JSON", "application/json;charset=\"UTF-8\"",
    "text/yaml; charset", ";"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from([MEMBER, SESSION, "dt-khong-co", "tw-tiep-cong-dan"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                               max_size=3), max_leaves=6)
orders = st.dictionaries(st.sampled_from(["site", "session", "extra", "Site"]), json_values,
                         max_size=3).map(lambda d: json.dumps(d).encode())
SCHEDULES = [p.read_bytes() for p in sorted(FIXTURES.iterdir())
             if p.suffix in (".yaml", ".ics") and p.name != "inventory.yaml"]
schedules = st.sampled_from(SCHEDULES).flatmap(lambda doc: st.one_of(
    st.just(doc), st.integers(0, len(doc)).map(lambda n: doc[:n]),
    st.integers(0, len(doc)).map(lambda n: doc[:n] + b"\xff" + doc[n:])))
bodies = st.one_of(st.just(b""), orders, schedules, st.binary(max_size=200),
                   st.sampled_from([b"null", b"[]", b"[" * 5000, b'{"site": "' + b"a" * 100,
                                    b'{"site": "dt-sa-dec", "site": "dt-hong-ngu"}']))


@st.composite
def requests(draw: st.DrawFn) -> Request:
    lines = []
    if (auth := draw(authorizations)) is not None:
        lines.append(f"Authorization: {auth}")
    if (media := draw(content_types)) is not None:
        lines.append(f"Content-Type: {media}")
    return Request(draw(methods), draw(paths) + draw(queries), headers_of(lines), draw(bodies))


# The one reason each of these statuses can have.
STATUS_REASON = {401: "unauthorized", 404: "not_found", 405: "forbidden_method",
                 413: "body_too_large", 414: "uri_too_long", 415: "bad_content_type"}


@many(3000)
@given(requests())
def test_the_api_answers_every_request_without_a_crash(stack: Stack, req: Request) -> None:
    """In-process: the oracle's contract for every answer; a refusal's reason fits its
    status (a 405 says what is allowed); nothing is written without the token; a read
    leaves the store as it was."""
    before = stack.world.store.sessions()
    response = answered(stack.world.api, req)
    if response.status in STATUS_REASON:
        assert response.reason == STATUS_REASON[response.status], response
    if response.status == 405:
        assert response.headers.get("Allow")
    after = stack.world.store.sessions()
    if after != before:
        stack.world.reset()  # the next example starts from the base schedule again
    if req.method in WRITE and response.status < 300:
        auth = req.headers.get("Authorization") or ""
        assert auth.startswith("Bearer ") and TOKEN in auth, f"{req.method} without the token"
    else:
        assert after == before, f"{req.method} {req.target} changed the store"


# --------------------------------------------------------------------------------------
# Over TCP: raw bytes to the real server


def exchange(port: int, raw: bytes, method: str) -> tuple[int, str, bytes]:
    """Send one raw request, read the whole answer (the server closes after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(raw)
        answer = http.client.HTTPResponse(sock, method=method)
        answer.begin()
        return answer.status, answer.getheader("Content-Type") or "", answer.read()


@st.composite
def raw_requests(draw: st.DrawFn) -> tuple[bytes, str]:
    request = draw(requests())
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "DELETE", "PUT", "OPTIONS"]))
    path = draw(paths | st.sampled_from(["/metrics", "/board", "/runbook", "/nowhere", "/"]))
    target = path + draw(queries)
    head = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    head += [f"{k}: {v}" for k, v in request.headers.items()]
    length = draw(st.sampled_from(["ok", "ok", "ok", "none", "bad", "twice"]))
    if length == "ok" or (length == "none" and method != "POST" and not request.body):
        head.append(f"Content-Length: {len(request.body)}")
    elif length == "bad":
        head.append("Content-Length: -1")
    elif length == "twice":
        head += [f"Content-Length: {len(request.body)}"] * 2
    body = request.body if length != "none" else b""
    return "\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body, method


@many(300)
@given(raw_requests())
def test_the_real_server_answers_and_counts_every_refusal_once(
        stack: Stack, case: tuple[bytes, str]) -> None:
    """Over loopback, the same requests (and pages, bad Content-Lengths): no 500, no
    traceback, and each refusal counted exactly once under one reason, nothing counted for
    an answer that is not a refusal."""
    raw, method = case
    before, before_sessions = rejected(stack.world.state), stack.world.store.sessions()
    status, content_type, body = exchange(stack.port, raw, method)
    if method != "HEAD":
        check_answer(status, content_type, body)
    else:
        assert status < 500
    after = rejected(stack.world.state)
    moved = {r: after[r] - before.get(r, 0.0) for r in after if after[r] != before.get(r)}
    if 400 <= status < 500:
        assert len(moved) == 1 and set(moved.values()) == {1.0}, (status, moved)
        reason = next(iter(moved))
        assert reason in HTTP_REJECT_REASONS and reason not in BUG_REASONS
        if status in STATUS_REASON:
            assert reason == STATUS_REASON[status], (status, reason)
    else:
        assert moved == {}, (status, moved)
    if stack.world.store.sessions() != before_sessions:
        stack.world.reset()
