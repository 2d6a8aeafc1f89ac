"""The collector's HTTP surface: ``/metrics`` for Prometheus and ``/healthz``.

``/healthz`` is a few bytes of JSON (connected to the broker, messages taken in, sites up)
for a liveness check that must not cost a 20 MB scrape.
"""

from __future__ import annotations

import json
import logging
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import generate_latest

from .exposition import CONTENT_TYPE
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
        if path == "/metrics":
            self._send(200, CONTENT_TYPE, metrics_parts(self.server.state))
        elif path == "/healthz":
            health = self.server.state.health()
            status = 200 if health["connected"] else 503
            self._send(status, "application/json", [json.dumps(health).encode()])
        else:
            self._send(404, "text/plain; charset=utf-8", [b"not found: try /metrics\n"])

    def _send(self, status: int, content_type: str, parts: list[bytes]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(map(len, parts))))
        self.end_headers()
        for i in range(0, len(parts), SEND_PIECE_PARTS):
            self.wfile.write(b"".join(parts[i:i + SEND_PIECE_PARTS]))

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class CollectorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: FleetState) -> None:
        super().__init__(address, Handler)
        self.state = state
