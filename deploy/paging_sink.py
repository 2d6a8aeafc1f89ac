"""A loopback HTTP server standing in for the paging endpoints Alertmanager talks to.

Alertmanager's webhook and Telegram notifiers are real HTTP clients; pointing them here
(see deploy.alertmanager.local_config) lets the tests and the demo see exactly what a
technician's phone or the NOC's webhook would receive, and when.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class SinkRequest:
    """One POST as received: where, what (JSON parsed when it is JSON) and when."""

    path: str
    body: Any
    monotonic: float
    wall: float
    headers: dict[str, str] = field(default_factory=dict)


def _parse_body(raw: bytes, content_type: str) -> Any:
    """JSON when it parses (webhooks, telebot), else a form, else the text itself."""
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        pass
    if "application/x-www-form-urlencoded" in content_type:
        return dict(urllib.parse.parse_qsl(text, keep_blank_values=True))
    return text


class _Handler(BaseHTTPRequestHandler):
    server: _SinkServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = _parse_body(raw, self.headers.get("Content-Type", ""))
        request = SinkRequest(path=self.path, body=body, monotonic=time.monotonic(),
                              wall=time.time(), headers=dict(self.headers.items()))
        number = self.server.sink._record(request)
        if "/telegram/" in self.path and self.path.endswith("/sendMessage"):
            reply = _telegram_message(number, request)
        else:
            reply = {"status": "received"}
        payload = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the recorded requests are the log."""


def _telegram_message(number: int, request: SinkRequest) -> dict[str, Any]:
    """Bot API's answer to sendMessage, enough for the telebot client Alertmanager uses."""
    body = request.body if isinstance(request.body, dict) else {}
    chat_id: Any = body.get("chat_id", 0)
    with contextlib.suppress(TypeError, ValueError):  # Telegram answers with a number
        chat_id = int(chat_id)
    return {"ok": True, "result": {
        "message_id": number, "date": int(request.wall),
        "chat": {"id": chat_id, "type": "group", "title": "BridgeWatch"},
        "text": body.get("text", ""),
    }}


class _SinkServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sink: PagingSink):
        self.sink = sink
        super().__init__(("127.0.0.1", 0), _Handler)


class PagingSink:
    """Records every POST; ``wait_for`` blocks until one matches (no sleeping-and-hoping)."""

    def __init__(self, on_request: Callable[[SinkRequest], None] | None = None) -> None:
        self._on_request = on_request  # e.g. the demo writing each page to a log
        self._requests: list[SinkRequest] = []
        self._changed = threading.Condition()
        self._server = _SinkServer(self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="paging-sink", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _record(self, request: SinkRequest) -> int:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()
            count = len(self._requests)
        if self._on_request is not None:
            self._on_request(request)
        return count

    def requests(self, path_prefix: str | None = None) -> list[SinkRequest]:
        """Requests received so far, oldest first, optionally only under ``path_prefix``."""
        with self._changed:
            return [r for r in self._requests
                    if path_prefix is None or r.path.startswith(path_prefix)]

    def wait_for(self, predicate: Callable[[SinkRequest], bool],
                 timeout: float) -> SinkRequest:
        """The first request (already received or arriving within timeout) matching it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = 0
            while True:
                for request in self._requests[seen:]:
                    if predicate(request):
                        return request
                seen = len(self._requests)
                left = deadline - time.monotonic()
                if left <= 0:
                    paths = [r.path for r in self._requests]
                    raise TimeoutError(
                        f"no matching request within {timeout}s; received: {paths}")
                self._changed.wait(left)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> PagingSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
