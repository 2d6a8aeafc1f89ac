"""The collector's HTTP surface: ``/metrics`` for Prometheus, ``/healthz``, and the API.

``/healthz`` is a few bytes of JSON (connected to the broker, messages taken in, sites up)
for a liveness check that must not cost a 20 MB scrape. ``/api/`` and ``/report/`` go to
``collector.api`` when the readiness service runs.

Public, read-only: ``/metrics``, ``/healthz``, ``/board``, ``/runbook``, ``/runbook.md``,
the API's GETs and the reports. Writes (schedule, confirmations, test orders) need a bearer
token (``collector.apitokens``). The server refuses, with a JSON ``{"error", "loi"}`` and a
count in ``bridge_collector_http_rejected_total{reason}``, whatever it does not take:

- a request target over ``MAX_TARGET_CHARS`` (414), a header line over 64 KiB, more than
  100 headers (http.server's own bounds) or all headers over ``MAX_HEAD_BYTES`` (431);
- a body without Content-Length, chunked, with a bad or repeated length (411/400), or over
  ``MAX_BODY_BYTES`` (413): the connection is closed, an unread body never becomes a request;
- a method a path does not serve (405 with ``Allow``), an unknown path (404);
- a request not whole ``request_timeout`` seconds after its first byte (a slowloris: the
  limit is for the whole request, not each read), answered 408 and closed; a kept-alive
  connection silent for ``idle_timeout`` is closed without a word;
- a connection over ``max_connections`` open at once (503, from the accepting thread).

A bug of ours is a 500 ``internal_error`` with the traceback in the log, never in the answer.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import generate_latest

from .api import (
    MAX_BODY_BYTES,
    MAX_TARGET_CHARS,
    Api,
    Response,
    allowed_methods,
    body_too_large,
    error,
    method_not_allowed,
    not_found,
)
from .board import board_response
from .exposition import CONTENT_TYPE
from .runbook import Runbook
from .state import FleetState

log = logging.getLogger("bridgewatch.collector.http")


SEND_PIECE_PARTS = 1000  # ~100 KB a write: the GIL is free while each one is sent
IDLE_TIMEOUT = 30.0  # seconds a kept-alive connection may wait for its next request
REQUEST_TIMEOUT = 30.0  # seconds from a request's first byte to the end of its body
WRITE_TIMEOUT = 60.0  # seconds a client may take to accept each piece of an answer
MAX_CONNECTIONS = 256  # open at once, each with its thread
LOGGED_REASONS = frozenset({"unauthorized", "internal_error"})  # refusals the NOC must trace
MAX_HEAD_BYTES = 32 * 1024  # all header lines together
PAGES = ("/metrics", "/healthz", "/runbook", "/runbook.md", "/board")
PAGE_METHODS = ("GET", "HEAD")
_LENGTH = re.compile(r"^[0-9]{1,15}$")

# http.server's own refusals (parse_request) as (reason, Vietnamese, English).
_STDLIB_ERRORS = {
    HTTPStatus.REQUEST_URI_TOO_LONG: ("uri_too_long", "dòng yêu cầu quá dài",
                                      "request line too long"),
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: (
        "header_too_large", "phần đầu yêu cầu quá lớn hoặc quá nhiều dòng",
        "a header line too long, or too many headers"),
}
_BAD_REQUEST = ("bad_request", "yêu cầu HTTP không hợp lệ", "malformed HTTP request")
# A 4xx from a page that does not name its reason (the board's and runbook's own pages).
_STATUS_REASONS = {400: "bad_request", 404: "not_found", 405: "forbidden_method",
                   413: "body_too_large", 414: "uri_too_long", 415: "bad_content_type",
                   431: "header_too_large"}


def metrics_parts(state: FleetState) -> list[bytes]:
    """Fleet exposition (cached chunks) followed by the collector's own metrics."""
    started = time.perf_counter()
    parts = state.exposition()
    state.metrics.render_seconds.set(time.perf_counter() - started)
    parts.append(generate_latest(state.metrics.registry))
    return parts


def raw_refusal(status: int, vi: str, en: str, **headers: str) -> bytes:
    """A whole ``Connection: close`` answer, for where no handler is at hand."""
    body = json.dumps({"error": en, "loi": vi}, ensure_ascii=False).encode()
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Connection: close",
            *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class DeadlineReader(io.RawIOBase):
    """The socket as a request is read from it: whole within a deadline, not per read.

    ``arm`` starts a request: its first byte may take ``idle`` seconds; from that byte the
    request line, headers and body have ``limit`` seconds in all, however slowly they
    trickle in. ``timed_out`` says a started request ran out of time (a silent kept-alive
    connection is not a refusal). Reads leave the socket at ``write_timeout`` for answers.
    """

    def __init__(self, sock: socket.socket, write_timeout: float) -> None:
        super().__init__()
        self.sock = sock
        self.write_timeout = write_timeout
        self.deadline = time.monotonic()
        self.limit = 0.0
        self.started = False
        self.timed_out = False

    def arm(self, idle: float, limit: float) -> None:
        self.deadline = time.monotonic() + idle
        self.limit = limit
        self.started = False
        self.timed_out = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.timed_out = self.started
            raise TimeoutError("request not complete in time")
        self.sock.settimeout(remaining)
        try:
            n = self.sock.recv_into(buffer)
        except TimeoutError:
            self.timed_out = self.started
            raise
        finally:
            self.sock.settimeout(self.write_timeout)
        if n and not self.started:
            self.started = True
            self.deadline = time.monotonic() + self.limit
        return n


class Handler(BaseHTTPRequestHandler):
    server: CollectorServer
    protocol_version = "HTTP/1.1"
    timeout = WRITE_TIMEOUT
    # Headers and body are two writes: with Nagle's algorithm a kept-alive client waited
    # for its delayed ACK, 40 ms a request (22 requests/s on one connection).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        stdlib_reader = self.rfile
        self.reader = DeadlineReader(self.connection, WRITE_TIMEOUT)
        self.rfile = io.BufferedReader(self.reader)
        stdlib_reader.close()  # else the socket stays open until it is garbage-collected

    def handle_one_request(self) -> None:
        self.reader.arm(self.server.idle_timeout, self.server.request_timeout)
        super().handle_one_request()  # a TimeoutError there closes the connection
        if self.reader.timed_out:
            self._count("timeout")
            with contextlib.suppress(OSError):
                self.wfile.write(raw_refusal(
                    408, f"yêu cầu không đến đủ trong {self.server.request_timeout:g} giây",
                    f"request not complete within {self.server.request_timeout:g} s"))

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":  # "GET /path": no headers, no status line
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not served")
            return False
        return True

    def do_GET(self) -> None:
        try:
            response = self._answer()
        except OSError:
            raise  # the client timed out or went away: http.server closes the connection
        except Exception:
            log.exception("%s %s failed", self.command, self.path[:200])
            self.close_connection = True
            response = error(500, "internal_error", "lỗi máy chủ (đã ghi vào nhật ký)",
                             "server error (written to the log)")
        if response is not None:
            self._reply(response)

    do_HEAD = do_POST = do_DELETE = do_GET

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """http.server's refusals, as the API's JSON; an unknown method gets a 405."""
        self.log_error("code %d, message %s", code, message)
        if self.request_version == "HTTP/0.9":  # a line too bad to have told its version:
            self.request_version = "HTTP/1.0"  # answered with a status line all the same
        if code == HTTPStatus.NOT_IMPLEMENTED and self.command:
            response = self._method_refusal(self.path.partition("?")[0])
        else:
            reason, vi, en = _STDLIB_ERRORS.get(code, _BAD_REQUEST)
            response = error(code, reason, vi, en)
        response.headers["Connection"] = "close"
        self._reply(response)

    def _method_refusal(self, path: str) -> Response:
        if path in PAGES:
            return method_not_allowed(self.command, PAGE_METHODS)
        allowed = allowed_methods(path) if self.server.api is not None else None
        return not_found() if allowed is None else method_not_allowed(self.command, allowed)

    def _answer(self) -> Response | None:
        """The answer to this request, or None when already sent (``/metrics``)."""
        if len(self.path) > MAX_TARGET_CHARS:
            self.close_connection = True  # its body is not read
            return error(414, "uri_too_long", "địa chỉ yêu cầu quá dài",
                         f"request target longer than {MAX_TARGET_CHARS} characters")
        if sum(len(k) + len(v) + 4 for k, v in self.headers.items()) > MAX_HEAD_BYTES:
            self.close_connection = True
            return error(431, "header_too_large", "phần đầu yêu cầu quá lớn",
                         f"headers larger than {MAX_HEAD_BYTES} bytes in all")
        body = self._read_body()
        if isinstance(body, Response):
            self.close_connection = True  # what is left of the body must not become a request
            return body
        path, _, query = self.path.partition("?")
        api = self.server.api
        if api is not None and path.startswith(("/api/", "/report/")):
            return api.handle(self.command, self.path, self.headers, body)
        if path not in PAGES:
            return not_found()
        if self.command not in PAGE_METHODS:
            return method_not_allowed(self.command, PAGE_METHODS)
        if path == "/metrics":
            self._send(200, CONTENT_TYPE, metrics_parts(self.server.state))
            return None
        if path == "/healthz":
            health = self.server.state.health()
            return Response(200 if health["connected"] else 503, json.dumps(health).encode())
        if path == "/runbook":
            return self.server.runbook.html_response()
        if path == "/runbook.md":
            return self.server.runbook.markdown_response()
        return board_response(api, query)

    def _read_body(self) -> bytes | Response:
        """The whole body, bounded, or the refusal to send (then the connection closes)."""
        if self.headers.get("Transfer-Encoding") is not None:
            return error(411, "length_required", "cần Content-Length (không nhận chunked)",
                         "Content-Length required (chunked is not accepted)")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            if self.command == "POST":
                return error(411, "length_required", "cần Content-Length",
                             "Content-Length required")
            return b""
        if len(lengths) > 1 or not _LENGTH.match(lengths[0].strip()):
            return error(400, "bad_length", "Content-Length không hợp lệ",
                         "bad Content-Length (one decimal number expected)")
        length = int(lengths[0])
        if length > MAX_BODY_BYTES:
            return body_too_large()
        body = self.rfile.read(length)
        if len(body) < length:
            return error(400, "bad_length", "thân yêu cầu ngắn hơn Content-Length",
                         "body shorter than its Content-Length")
        return body

    def _count(self, reason: str) -> None:
        self.server.state.metrics.http_rejected.labels(reason).inc()
        if reason in LOGGED_REASONS and self.server.first_in_minute(reason, self.client_address[0]):
            # Names who, so the NOC can act on BridgeWatchCollectorApiUnauthorized; at most
            # once a minute per source, so a guesser cannot flood the log.
            log.warning("HTTP %s from %s: %s %s (further ones for a minute not logged)",
                        reason, self.client_address[0], self.command, self.path[:200])

    def _reply(self, response: Response) -> None:
        reason = response.reason
        if reason is None and 400 <= response.status < 500:
            reason = _STATUS_REASONS.get(response.status, "bad_request")
        if reason is not None:
            self._count(reason)
        self._send(response.status, response.content_type, [response.body], response.headers)

    def _send(self, status: int, content_type: str, parts: list[bytes],
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(sum(map(len, parts))))
        self.end_headers()
        if self.command == "HEAD":
            return
        for i in range(0, len(parts), SEND_PIECE_PARTS):
            self.wfile.write(b"".join(parts[i:i + SEND_PIECE_PARTS]))

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class CollectorServer(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` of them; timeouts above."""

    daemon_threads = True
    log_every_seconds = 60.0
    idle_timeout = IDLE_TIMEOUT
    request_timeout = REQUEST_TIMEOUT
    max_connections = MAX_CONNECTIONS

    def __init__(self, address: tuple[str, int], state: FleetState,
                 api: Api | None = None, runbook: Runbook | None = None) -> None:
        super().__init__(address, Handler)
        self.state = state
        self.api = api
        self.runbook = runbook or Runbook()  # alerts/runbook.md beside the package
        self._open = 0
        self._open_lock = threading.Lock()
        self._last_logged: dict[tuple[str, str], float] = {}

    def first_in_minute(self, reason: str, source: str) -> bool:
        """True when this reason from this source was not logged in the last minute."""
        now = time.monotonic()
        with self._open_lock:
            if len(self._last_logged) > 4096:  # many sources: forget, never grow unbounded
                self._last_logged.clear()
            last = self._last_logged.get((reason, source))
            if last is not None and now - last < self.log_every_seconds:
                return False
            self._last_logged[(reason, source)] = now
            return True

    @property
    def open_connections(self) -> int:
        return self._open

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            busy = self._open >= self.max_connections
            if not busy:
                self._open += 1
        if busy:  # answered from the accepting thread: a fresh socket's buffer takes it
            self.state.metrics.http_rejected.labels("busy").inc()
            with contextlib.suppress(OSError):
                request.settimeout(1.0)
                request.sendall(raw_refusal(503, "máy chủ đang bận, thử lại sau",
                                            "server busy, try again later", **{"Retry-After": "5"}))
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._closed_one()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._closed_one()

    def _closed_one(self) -> None:
        with self._open_lock:
            self._open -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone or timed out is not worth a traceback; anything else is."""
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("connection from %s: %s", client_address, sys.exc_info()[1])
        else:
            log.exception("request from %s failed", client_address)
