"""The collector's HTTP surface under bad, slow, big and unauthorised requests.

A real ``CollectorServer`` on a loopback port with a real SQLite store and readiness
service (no broker: ordering a test then answers 422, which is itself a refusal to count),
spoken to with raw sockets so that what a client can send, not only what ``http.client``
would send, is tried. Every refusal must be a JSON ``{"error", "loi"}`` (never a traceback,
never a 500), be counted in ``bridge_collector_http_rejected_total`` under its reason as
read back from ``/metrics``, and leave the server answering normal requests.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from collector.api import HTTP_REJECT_REASONS, MAX_BODY_BYTES, Api
from collector.apitokens import ApiTokens
from collector.http import CollectorServer
from collector.inventory import load_inventory
from collector.readiness.config import ReadinessConfig
from collector.readiness.model import VIETNAM
from collector.readiness.service import ReadinessService
from collector.readiness.store import Store
from collector.state import FleetState
from deploy.localstack import wait_until

INVENTORY = Path(__file__).resolve().parent.parent / "deploy" / "demo-inventory.yaml"
TOKEN = "t0ken-for-the-http-surface-tests-0123"
SESSION = "tcd-http"
WAIT = 10.0  # socket waits: reached only when a test is about to fail
_COUNTER = re.compile(rb'^bridge_collector_http_rejected_total\{reason="([a-z_]+)"\} (\S+)$',
                      re.MULTILINE)


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict[str, object]:
        data = json.loads(self.body)
        assert isinstance(data, dict), data
        return data


def schedule(session_id: str = SESSION) -> bytes:
    start = (datetime.now(VIETNAM) + timedelta(days=5)).replace(microsecond=0)
    return yaml.safe_dump({"sessions": [{
        "id": session_id, "title": "Tiếp công dân", "start": start.isoformat(),
        "duration": "3h", "host": "dt-trung-tam", "members": ["dt-sa-dec"]}]},
        allow_unicode=True).encode()


class Server:
    """Store, readiness service and collector server on a free loopback port."""

    def __init__(self, tmp: Path, tokens: ApiTokens) -> None:
        inventory = load_inventory(INVENTORY)
        self.fleet = FleetState(inventory, render_delay=0)
        self.store = Store(tmp / "readiness.sqlite")
        service = ReadinessService(self.store, ReadinessConfig(tmp / "readiness.sqlite"),
                                   inventory, self.fleet, None)
        self.http = CollectorServer(("127.0.0.1", 0), self.fleet, Api(service, tokens))
        self.http.request_timeout = 1.0  # short, so the slow-client tests are quick
        self.http.idle_timeout = 1.0
        threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True).start()
        self.port = self.http.server_address[1]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.store.close()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)

    def raw(self, data: bytes) -> Answer:
        """Send bytes as they are on a new connection; the first answer to them."""
        with self.connect() as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)  # all sent: a short body is short, not slow
            except OSError:  # refused and closed before all was sent (EPIPE, ENOTCONN...):
                pass  # the answer is still there to read
            return read_answer(sock)

    def request(self, method: str, path: str, body: bytes = b"", token: str | None = TOKEN,
                content_type: str = "application/json", **headers: str) -> Answer:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
                 f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        return self.raw(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body)

    def rejected(self) -> dict[str, float]:
        """``bridge_collector_http_rejected_total`` by reason, from a real scrape."""
        answer = self.request("GET", "/metrics", token=None)
        assert answer.status == 200
        return {m.group(1).decode(): float(m.group(2)) for m in _COUNTER.finditer(answer.body)}

    def still_serves(self) -> None:
        """A normal read and a normal write still work."""
        assert self.request("GET", "/api/sessions", token=None).status == 200
        answer = self.request("POST", f"/api/sessions/{SESSION}/confirm",
                              b'{"site": "dt-sa-dec"}')
        assert answer.status == 201, answer.body


def read_answer(sock: socket.socket) -> Answer:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return Answer(response.status, response.headers, response.read())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"noc-an {TOKEN}\n")
    s = Server(tmp_path, ApiTokens.load(tokens))
    assert s.request("POST", "/api/sessions", schedule(),
                     content_type="application/yaml").status == 200
    yield s
    s.close()


def assert_refused(server: Server, answer: Answer, status: int, reason: str,
                   before: dict[str, float]) -> None:
    """The refusal's shape, and that it was counted once, under its reason only."""
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.headers["Content-Type"] == "application/json"
    data = answer.json()
    assert data["error"] and data["loi"], data  # English and Vietnamese
    assert b"Traceback" not in answer.body
    after = server.rejected()
    changed = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert changed == {reason: 1}, changed


# --- tokens --------------------------------------------------------------------------------

WRITES = [("POST", "/api/sessions", "application/yaml", schedule("tcd-other")),
          ("DELETE", f"/api/sessions/{SESSION}", "application/json", b""),
          ("POST", f"/api/sessions/{SESSION}/confirm", "application/json",
           b'{"site": "dt-sa-dec"}'),
          ("POST", "/api/tests", "application/json", b'{"site": "dt-sa-dec"}')]
BAD_TOKENS = {
    "none": None,
    "wrong, right length": "x" * len(TOKEN),
    "a prefix": TOKEN[:-1],
    "token and more": TOKEN + "0",
    "empty": "",
    "only a space": " ",
}


@pytest.mark.parametrize(("method", "path", "content_type", "body"), WRITES)
def test_every_write_needs_a_valid_token(server: Server, method: str, path: str,
                                         content_type: str, body: bytes) -> None:
    """Tried on each write route: no token, a wrong one of the right length, a prefix of the
    right one, the right one with a character more, an empty one, another scheme (Basic
    with the right token) — 401 with a Bearer challenge, counted, nothing changed."""
    for name, token in BAD_TOKENS.items():
        before = server.rejected()
        answer = server.request(method, path, body, token=token, content_type=content_type)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer"), name
        assert_refused(server, answer, 401, "unauthorized", before)
    before = server.rejected()
    answer = server.request(method, path, body, token=None, content_type=content_type,
                            Authorization=f"Basic {TOKEN}")
    assert_refused(server, answer, 401, "unauthorized", before)
    assert [s.id for s in server.store.sessions()] == [SESSION]
    assert server.store.confirmations(SESSION) == []


def test_the_scheme_is_case_insensitive_and_the_right_token_works(server: Server) -> None:
    """``bearer`` in lower case is the same scheme (RFC 9110); the confirmation is stored."""
    answer = server.request("POST", f"/api/sessions/{SESSION}/confirm", b'{"site": "dt-sa-dec"}',
                            token=None, Authorization=f"bearer {TOKEN}")
    assert answer.status == 201, answer.body
    assert answer.json()["by"] == "noc-an"


def test_no_tokens_file_means_read_only(tmp_path: Path) -> None:
    """A collector with no tokens file configured: every write is 401, even with a token
    that would be valid elsewhere; every read still answers."""
    s = Server(tmp_path, ApiTokens.load(None))
    try:
        before = s.rejected()
        answer = s.request("POST", "/api/sessions", schedule(), content_type="application/yaml")
        assert_refused(s, answer, 401, "unauthorized", before)
        assert s.store.sessions() == []
        for path in ("/api/sessions", "/api/tests", "/metrics", "/healthz", "/board"):
            assert s.request("GET", path, token=None).status in (200, 503), path  # 503: healthz
    finally:
        s.close()


def test_public_pages_and_reads_need_no_token(server: Server) -> None:
    """The board, the runbook, /metrics, the API's reads and the biên bản answer without a
    token and count no refusal."""
    before = server.rejected()
    for path in ("/metrics", "/board", "/runbook", "/api/sessions", f"/api/sessions/{SESSION}",
                 "/api/tests?site=dt-sa-dec", f"/report/{SESSION}.html",
                 f"/report/{SESSION}.csv?lang=en"):
        answer = server.request("GET", path, token=None)
        assert answer.status == 200, (path, answer.body[:200])
    assert server.rejected() == before


# --- what the API does not understand -----------------------------------------------------

JSON_TYPE = "application/json"
DEEP = b"[" * 100_000 + b"]" * 100_000  # deeper than the JSON parser's recursion
CASES = {
    # name: (method, path, body, content type, status, reason)
    "unknown path": ("GET", "/admin", b"", JSON_TYPE, 404, "not_found"),
    "unknown API path": ("GET", "/api/users", b"", JSON_TYPE, 404, "not_found"),
    "unknown session": ("GET", "/api/sessions/khong-co", b"", JSON_TYPE, 404, "not_found"),
    "report of no session": ("GET", "/report/khong-co.html", b"", JSON_TYPE, 404, "not_found"),
    "report traversal": ("GET", "/report/../../etc/passwd.html", b"", JSON_TYPE, 404,
                         "not_found"),
    "report traversal, encoded": ("GET", "/report/%2e%2e%2f%2e%2e%2fetc%2fpasswd.csv", b"",
                                  JSON_TYPE, 404, "not_found"),
    "report with a path after": ("GET", f"/report/{SESSION}.html/../../../etc/passwd", b"",
                                 JSON_TYPE, 404, "not_found"),
    "runbook traversal": ("GET", "/runbook/../../../etc/passwd", b"", JSON_TYPE, 404,
                          "not_found"),
    "runbook traversal, encoded": ("GET", "/runbook.md%2f..%2f..%2fetc%2fpasswd", b"",
                                   JSON_TYPE, 404, "not_found"),
    "DELETE a page": ("DELETE", "/metrics", b"", JSON_TYPE, 405, "forbidden_method"),
    "POST the board": ("POST", "/board", b"", JSON_TYPE, 405, "forbidden_method"),
    "GET a confirm": ("GET", f"/api/sessions/{SESSION}/confirm", b"", JSON_TYPE, 405,
                      "forbidden_method"),
    "JSON as text": ("POST", "/api/tests", b'{"site": "dt-sa-dec"}', "text/plain", 415,
                     "bad_content_type"),
    "JSON as a form": ("POST", f"/api/sessions/{SESSION}/confirm", b"site=dt-sa-dec",
                       "application/x-www-form-urlencoded", 415, "bad_content_type"),
    "JSON in latin-1": ("POST", "/api/tests", b'{"site": "dt-sa-dec"}',
                        "application/json; charset=iso-8859-1", 415, "bad_content_type"),
    "schedule as a form": ("POST", "/api/sessions", schedule("tcd-x"),
                           "application/x-www-form-urlencoded", 415, "bad_content_type"),
    "not JSON": ("POST", "/api/tests", b"{", JSON_TYPE, 400, "bad_json"),
    "not an object": ("POST", "/api/tests", b'["dt-sa-dec"]', JSON_TYPE, 400, "bad_json"),
    "nested too deep": ("POST", "/api/tests", DEEP, JSON_TYPE, 400, "bad_json"),
    "unknown field": ("POST", "/api/tests", b'{"site": "dt-sa-dec", "priority": 1}', JSON_TYPE,
                      400, "unknown_field"),
    "missing field": ("POST", f"/api/sessions/{SESSION}/confirm", b"{}", JSON_TYPE, 400,
                      "missing_field"),
    "not an id": ("POST", "/api/tests", b'{"site": "../../etc"}', JSON_TYPE, 400, "bad_value"),
    "a number for an id": ("POST", "/api/tests", b'{"site": 7}', JSON_TYPE, 400, "bad_value"),
    "JSON not UTF-8": ("POST", "/api/tests", b'{"site": "\xff\xfe"}', JSON_TYPE, 400,
                       "bad_encoding"),
    "schedule not UTF-8": ("POST", "/api/sessions", "sessions: []\n# Tiếp công dân\n".encode(
        "utf-16"), "application/yaml", 400, "bad_encoding"),
    "unknown parameter": ("GET", "/api/sessions?debug=1", b"", JSON_TYPE, 400, "bad_query"),
    "parameter twice": ("GET", "/api/tests?site=dt-sa-dec&site=dt-lap-vo", b"", JSON_TYPE,
                        400, "bad_query"),
    "parameter not an id": ("GET", "/api/tests?site=%00%ff", b"", JSON_TYPE, 400, "bad_query"),
    "report language": ("GET", f"/report/{SESSION}.html?lang=fr", b"", JSON_TYPE, 400,
                        "bad_query"),
    "query string too long": ("GET", "/api/tests?site=" + "a" * 5000, b"", JSON_TYPE, 414,
                              "uri_too_long"),
    "bridge not in the session": ("POST", f"/api/sessions/{SESSION}/confirm",
                                  b'{"site": "dt-lap-vo"}', JSON_TYPE, 422, "unprocessable"),
    "no command sender": ("POST", "/api/tests", b'{"site": "dt-sa-dec"}', JSON_TYPE, 422,
                          "unprocessable"),
}


@pytest.mark.parametrize("name", CASES)
def test_what_is_not_understood_is_refused_and_counted(server: Server, name: str) -> None:
    """Each case: its status, a JSON error in English and Vietnamese, one count under its
    reason and no other; then the server still serves a read and a write."""
    method, path, body, content_type, status, reason = CASES[name]
    before = server.rejected()
    answer = server.request(method, path, body, content_type=content_type)
    assert_refused(server, answer, status, reason, before)
    assert b"root:" not in answer.body
    server.still_serves()


def test_a_bad_schedule_is_refused_with_its_lines(server: Server) -> None:
    """A schedule naming a bridge that does not exist: 422 ``bad_schedule``, the issue with
    its line number, the English and Vietnamese summary, and nothing stored."""
    text = schedule("tcd-bad").replace(b"dt-sa-dec", b"dt-khong-co")
    before = server.rejected()
    answer = server.request("POST", "/api/sessions", text, content_type="application/yaml")
    assert_refused(server, answer, 422, "bad_schedule", before)
    issues = answer.json()["issues"]
    assert isinstance(issues, list)
    assert any(i["line"] and "dt-khong-co" in i["message_en"] for i in issues), issues
    assert [s.id for s in server.store.sessions()] == [SESSION]


@pytest.mark.parametrize("method", ["PUT", "PATCH", "OPTIONS", "TRACE", "BREW"])
def test_unknown_methods_are_405_with_allow(server: Server, method: str) -> None:
    """Methods no route serves, on an API path and on a page: 405 naming what is allowed
    (not http.server's HTML 501), counted; on no path at all, 404."""
    for path, allow in (("/api/sessions", "GET, HEAD, POST"),
                        (f"/api/sessions/{SESSION}", "GET, HEAD, DELETE"),
                        ("/metrics", "GET, HEAD")):
        before = server.rejected()
        answer = server.request(method, path)
        assert answer.headers["Allow"] == allow
        assert_refused(server, answer, 405, "forbidden_method", before)
    before = server.rejected()
    assert_refused(server, server.request(method, "/nowhere"), 404, "not_found", before)
    server.still_serves()


def test_head_is_a_get_without_body(server: Server) -> None:
    """HEAD /metrics: 200 with the length a GET would have, and no body on the wire (the
    next response on the same connection parses cleanly)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT)
    conn.request("HEAD", "/api/sessions")
    head = conn.getresponse()
    assert head.status == 200 and int(head.getheader("Content-Length")) > 0
    assert head.read() == b""
    conn.request("GET", "/api/sessions")
    assert conn.getresponse().status == 200
    conn.close()


# --- sizes ---------------------------------------------------------------------------------

RAW_CASES = {
    # name: (raw request, status, reason)
    "body over the limit": (
        f"POST /api/tests HTTP/1.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode(),
        413, "body_too_large"),
    "no length": (f"POST /api/tests HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode(),
                  411, "length_required"),
    "chunked": (b"POST /api/tests HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\n\r\n", 411, "length_required"),
    "length not a number": (b"POST /api/tests HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", 400,
                            "bad_length"),
    "length given twice": (b"POST /api/tests HTTP/1.1\r\nContent-Length: 2\r\n"
                           b"Content-Length: 20\r\n\r\n{}", 400, "bad_length"),
    "body shorter than its length": (
        b"POST /api/tests HTTP/1.1\r\nContent-Length: 50\r\n\r\n{}", 400, "bad_length"),
    "request line over 64 KiB": (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414,
                                 "uri_too_long"),
    "a header line over 64 KiB": (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 70_000
                                  + b"\r\n\r\n", 431, "header_too_large"),
    "a thousand headers": (b"GET /metrics HTTP/1.1\r\n"
                           + b"".join(b"X-%d: 1\r\n" % i for i in range(1000)) + b"\r\n",
                           431, "header_too_large"),
    "headers over 32 KiB in all": (b"GET /metrics HTTP/1.1\r\n"
                                   + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 2000)
                                              for i in range(20)) + b"\r\n",
                                   431, "header_too_large"),
    "not HTTP": (b"HELLO\r\n\r\n", 400, "bad_request"),
    "HTTP/2 as text": (b"GET /metrics HTTP/2.0\r\n\r\n", 505, "bad_request"),
    "a bad version": (b"GET /metrics HTTP/x.y\r\n\r\n", 400, "bad_request"),
    "HTTP/0.9": (b"GET /metrics\r\n", 400, "bad_request"),
}


@pytest.mark.parametrize("name", RAW_CASES)
def test_sizes_and_framing_are_bounded(server: Server, name: str) -> None:
    """Requests http.client would not send: each refused with its status as JSON, counted
    under its reason, and the server still serves."""
    data, status, reason = RAW_CASES[name]
    before = server.rejected()
    answer = server.raw(data)
    assert_refused(server, answer, status, reason, before)
    server.still_serves()


def test_an_unread_body_never_becomes_a_request(server: Server) -> None:
    """Tried: a body over the limit whose bytes are a request of their own, and a GET whose
    body is one. The first is refused and the connection closed; the second's body is read
    and dropped. Either way exactly one answer comes back, and the smuggled request (a path
    that would count ``not_found``) is never served."""
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    for head in (b"POST /api/tests HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (2 * MAX_BODY_BYTES),
                 b"GET /healthz HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(smuggled)):
        before = server.rejected()
        with server.connect() as sock:
            sock.sendall(head + smuggled)
            first = read_answer(sock)
            sock.shutdown(socket.SHUT_WR)
            rest = b""
            try:
                while chunk := sock.recv(65536):
                    rest += chunk
            except ConnectionResetError:
                pass  # closed with the smuggled bytes unread: a reset, and still no answer
        assert first.status in (413, 503), first.status  # 503: healthz without a broker
        assert rest == b"", rest[:200]
        assert server.rejected().get("not_found") == before.get("not_found")


def test_a_refusal_that_keeps_the_connection_lets_it_go_on(server: Server) -> None:
    """On one kept-alive connection: a 404, a 401, a 400 for bad JSON, then a good read.
    Refusals whose body was read whole do not cost the client its connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT)
    conn.request("GET", "/nowhere")
    answer = conn.getresponse()
    assert answer.status == 404 and answer.read()
    conn.request("POST", "/api/tests", b"{}", {"Content-Type": JSON_TYPE})
    answer = conn.getresponse()
    assert answer.status == 401 and answer.read()
    conn.request("POST", "/api/tests", b"{", {"Content-Type": JSON_TYPE,
                                               "Authorization": f"Bearer {TOKEN}"})
    answer = conn.getresponse()
    assert answer.status == 400 and json.loads(answer.read())["error"] == "body is not JSON"
    conn.request("GET", "/api/sessions")
    assert conn.getresponse().status == 200
    conn.close()


# --- slow clients and many connections ----------------------------------------------------


def trickle(sock: socket.socket, data: bytes, pause: float) -> bool:
    """Send one byte at a time; True when the server closed or answered before the end."""
    sock.settimeout(pause)
    for i in range(len(data)):
        try:
            sock.send(data[i:i + 1])
            if sock.recv(1, socket.MSG_PEEK):
                return True
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


@pytest.mark.parametrize(("what", "data"), [
    ("headers", b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200),
    ("body", b"POST /api/tests HTTP/1.1\r\nContent-Type: application/json\r\n"
             b"Content-Length: 200\r\n\r\n" + b" " * 200),
])
def test_a_slowloris_is_cut_off_and_counted(server: Server, what: str, data: bytes) -> None:
    """A client sending its request a byte every 0.1 s, never stopping long enough for a
    per-read timeout: the server (1 s for a whole request here) answers 408 and closes
    long before the 200 bytes are sent, and counts ``timeout``. Its thread is freed: with
    one connection allowed, the next client is served."""
    before = server.rejected()
    server.http.max_connections = 1
    wait_until(lambda: server.http.open_connections == 0, WAIT, "the scrape's thread to end")
    with server.connect() as sock:
        assert trickle(sock, data, 0.1), f"the server waited for all the slow {what}"
        sock.settimeout(WAIT)
        answer = read_answer(sock)
    assert answer.status == 408 and answer.json()["loi"]
    wait_until(lambda: server.rejected()["timeout"] == before["timeout"] + 1, WAIT,
               "the timeout to be counted")
    wait_until(lambda: server.request("GET", "/api/sessions").status == 200, WAIT,
               "the one connection slot to be free again")


def test_a_silent_connection_is_closed_without_a_word(server: Server) -> None:
    """A connection that never sends a byte (or a kept-alive one left idle) is closed after
    the idle timeout (1 s here) and is not counted as a refusal: nothing was asked."""
    before = server.rejected()
    with server.connect() as sock:
        assert sock.recv(100) == b""  # the server closed it; WAIT is far longer than 1 s
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT)
    conn.request("GET", "/api/sessions")
    conn.getresponse().read()
    assert conn.sock is not None and conn.sock.recv(100) == b""  # idle, then closed
    conn.close()
    assert server.rejected() == before


def test_connections_over_the_cap_get_503(server: Server) -> None:
    """Two connections allowed: two clients holding one each (silent), a third is answered
    503 with Retry-After straight away and counted ``busy``; once the two are gone the
    server serves again."""
    server.http.max_connections = 2
    server.http.idle_timeout = WAIT  # the holders must still be held when the third comes
    before = server.rejected()
    wait_until(lambda: server.http.open_connections == 0, WAIT, "the scrape's thread to end")
    holders = [server.connect() for _ in range(2)]
    try:
        wait_until(lambda: server.http.open_connections == 2, WAIT, "both holders accepted")
        answer = server.raw(b"GET /api/sessions HTTP/1.1\r\n\r\n")
        assert answer.status == 503 and answer.headers["Retry-After"] == "5"
        assert answer.json()["loi"]
    finally:
        for sock in holders:
            sock.close()
    wait_until(lambda: server.http.open_connections == 0, WAIT, "the holders' threads to end")
    after = server.rejected()
    assert after["busy"] == before["busy"] + 1
    server.still_serves()


def test_every_reason_is_on_metrics_from_the_start(server: Server) -> None:
    """Every reason is exposed at zero before it first happens (a rate() needs the zero),
    and only the reasons listed in ``HTTP_REJECT_REASONS`` exist."""
    counts = server.rejected()
    assert set(counts) == set(HTTP_REJECT_REASONS)
    assert counts["internal_error"] == 0


def test_a_bug_is_a_500_without_its_traceback(server: Server,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler that raises (a bug stood in for by a store that fails): the client gets a
    JSON 500 with no traceback, ``internal_error`` is counted, the next request is served."""
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail /etc/bridgewatch")

    monkeypatch.setattr(server.store, "sessions", broken)
    before = server.rejected()
    answer = server.request("GET", "/api/sessions", token=None)
    assert b"secret" not in answer.body
    assert_refused(server, answer, 500, "internal_error", before)
    monkeypatch.undo()
    server.still_serves()


def test_the_api_answers_in_process_without_a_socket(server: Server) -> None:
    """``Api.handle`` with a plain dict of headers (what the fuzz tests drive): every
    refusal carries a reason from ``HTTP_REJECT_REASONS``; a success carries none."""
    api = server.http.api
    assert api is not None
    ok = api.handle("GET", "/api/sessions", {}, b"")
    assert ok.status == 200 and ok.reason is None
    for method, target, headers, body in (
            ("POST", "/api/tests", {}, b"{}"),
            ("POST", "/api/tests", {"Authorization": f"Bearer {TOKEN}"}, b"{}"),
            ("GET", "/x" * 3000, {}, b""),
            ("POST", "/api/sessions", {"Authorization": f"Bearer {TOKEN}",
                                       "Content-Type": "application/yaml"},
             b"x" * (MAX_BODY_BYTES + 1))):
        refused = api.handle(method, target, headers, body)
        assert refused.status >= 400 and refused.reason in HTTP_REJECT_REASONS, refused
