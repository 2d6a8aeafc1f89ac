"""The collector's HTTP surface: ``/metrics`` for Prometheus and ``/healthz``."""

from __future__ import annotations

import logging
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import generate_latest

from .exposition import CONTENT_TYPE
from .state import FleetState

log = logging.getLogger("bridgewatch.collector.http")


def render_metrics(state: FleetState) -> bytes:
    """Fleet exposition (cached) followed by the collector's own metrics."""
    started = time.perf_counter()
    fleet = state.render()
    state.metrics.render_seconds.set(time.perf_counter() - started)
    return fleet + generate_latest(state.metrics.registry)


class Handler(BaseHTTPRequestHandler):
    server: CollectorServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE, render_metrics(self.server.state))
        elif path == "/healthz":
            self._send(200, "text/plain; charset=utf-8", b"ok\n")
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class CollectorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: FleetState) -> None:
        super().__init__(address, Handler)
        self.state = state
