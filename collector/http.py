"""The collector's HTTP surface: ``/metrics`` for Prometheus, ``/healthz``, and the API.

``/healthz`` is a few bytes of JSON (connected to the broker, messages taken in, sites up)
for a liveness check that must not cost a 20 MB scrape. ``/api/`` and ``/report/`` go to
``collector.api`` when the readiness service runs.
"""

from __future__ import annotations

import json
import logging
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import generate_latest

from .api import MAX_BODY_BYTES, Api, Response
from .board import board_response
from .exposition import CONTENT_TYPE
from .runbook import Runbook
from .state import FleetState

log = logging.getLogger("bridgewatch.collector.http")


SEND_PIECE_PARTS = 1000  # ~100 KB a write: the GIL is free while each one is sent


def metrics_parts(state: FleetState) -> list[bytes]:
    """Fleet exposition (cached chunks) followed by the collector's own metrics."""
    started = time.perf_counter()
    parts = state.exposition()
    state.metrics.render_seconds.set(time.perf_counter() - started)
    parts.append(generate_latest(state.metrics.registry))
    return parts


class Handler(BaseHTTPRequestHandler):
    server: CollectorServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if self._api("GET", path):
            return
        if path == "/metrics":
            self._send(200, CONTENT_TYPE, metrics_parts(self.server.state))
        elif path == "/healthz":
            health = self.server.state.health()
            status = 200 if health["connected"] else 503
            self._send(status, "application/json", [json.dumps(health).encode()])
        elif path == "/runbook":
            self._reply(self.server.runbook.html_response())
        elif path == "/runbook.md":
            self._reply(self.server.runbook.markdown_response())
        elif path == "/board":
            self._reply(board_response(self.server.api, self.path.partition("?")[2]))
        else:
            self._send(404, "text/plain; charset=utf-8", [b"not found: try /metrics\n"])

    def do_POST(self) -> None:
        if not self._api("POST", self.path.split("?", 1)[0]):
            self._send(404, "text/plain; charset=utf-8", [b"not found\n"])

    def do_DELETE(self) -> None:
        if not self._api("DELETE", self.path.split("?", 1)[0]):
            self._send(404, "text/plain; charset=utf-8", [b"not found\n"])

    def _api(self, method: str, path: str) -> bool:
        """Serve an API or report request; False when the path is not theirs."""
        api = self.server.api
        if api is None or not path.startswith(("/api/", "/report/")):
            return False
        length = self.headers.get("Content-Length")
        body = b""
        if length is not None:
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                self.close_connection = True  # the unread body must not be taken as a request
                self._reply(Response(413, b'{"error": "body too large or bad length"}\n'))
                return True
            body = self.rfile.read(int(length))
        elif method == "POST":
            self._reply(Response(411, b'{"error": "Content-Length required"}\n'))
            return True
        self._reply(api.handle(method, self.path, self.headers, body))
        return True

    def _reply(self, response: Response) -> None:
        self._send(response.status, response.content_type, [response.body], response.headers)

    def _send(self, status: int, content_type: str, parts: list[bytes],
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(sum(map(len, parts))))
        self.end_headers()
        for i in range(0, len(parts), SEND_PIECE_PARTS):
            self.wfile.write(b"".join(parts[i:i + SEND_PIECE_PARTS]))

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class CollectorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: FleetState,
                 api: Api | None = None, runbook: Runbook | None = None) -> None:
        super().__init__(address, Handler)
        self.state = state
        self.api = api
        self.runbook = runbook or Runbook()  # alerts/runbook.md beside the package
