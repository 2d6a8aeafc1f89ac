"""What must hold for any request to the collector's HTTP API, whoever made it up.

``ApiWorld`` is the API as the collector builds it (readiness service, SQLite store, token
file, a real paho command sender), its clock fixed so the schedule fixtures are in the
future, the store holding ``schedule.yaml``. ``answered`` asks the in-process ``Api`` and
checks the answer: never a 500 or a traceback, JSON that parses, every refusal an
``{"error", "loi"}`` (English, Vietnamese) with its reason from ``HTTP_REJECT_REASONS``.
``parse_request`` reads raw HTTP bytes (the fuzzer's input) as ``http.server`` would.
"""

from __future__ import annotations

import http.client
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.api import HTTP_REJECT_REASONS, Api, Response
from collector.apitokens import ApiTokens
from collector.commands import CommandSender
from collector.readiness.config import ReadinessConfig
from collector.readiness.service import ReadinessService
from collector.readiness.store import Store
from collector.schedule import import_document
from collector.state import FleetState

from .schedule_oracle import FIXTURES, INVENTORY, NOW

TOKEN = "fuzz-token-" + "0123456789abcdef" * 2
BASE_SCHEDULE = (FIXTURES / "schedule.yaml").read_bytes()
SESSION = "tcd-2026-12-05"  # the first session of schedule.yaml
MEMBER = "dt-sa-dec"  # one of its member bridges
# A refusal that is a bug of ours, never an answer to bad input.
BUG_REASONS = {"internal_error"}


class ApiWorld:
    """The API over a real store and service; ``reset`` puts the base schedule back."""

    def __init__(self, database: Path | str, sender: CommandSender | None) -> None:
        self.state = FleetState(INVENTORY, render_delay=0)
        self.store = Store(database)
        self.service = ReadinessService(self.store, ReadinessConfig(Path(database)),
                                        INVENTORY, self.state, sender,
                                        clock=NOW.timestamp)
        self.api = Api(self.service, ApiTokens({"noc-fuzz": TOKEN}))
        self.reset()

    def reset(self) -> None:
        self.store.replace_sessions([])
        result = import_document(self.store, BASE_SCHEDULE, "yaml", INVENTORY, now=NOW)
        assert result.ok, result.issues

    def close(self) -> None:
        self.store.close()


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: http.client.HTTPMessage
    body: bytes


def headers_of(lines: list[str] | bytes) -> http.client.HTTPMessage:
    """Header lines parsed by the parser http.server uses."""
    raw = lines if isinstance(lines, bytes) else "\r\n".join(lines).encode("latin-1")
    return http.client.parse_headers(io.BytesIO(raw + b"\r\n\r\n"))


def parse_request(data: bytes) -> Request | None:
    """Raw bytes as ``METHOD TARGET ...\\r\\nheaders\\r\\n\\r\\nbody``; None if http.server
    would refuse them before the API sees them (its own limits, tested over a socket)."""
    head, _, body = data.partition(b"\r\n\r\n")
    first, _, header_block = head.partition(b"\r\n")
    words = first.decode("latin-1").split()
    if len(words) < 2:
        return None
    try:
        headers = headers_of(header_block)
    except (http.client.HTTPException, ValueError):
        return None
    return Request(words[0], words[1], headers, body)


def answered(api: Api, request: Request) -> Response:
    """Ask the API; fail unless the answer keeps the contract in the module docstring."""
    response = api.handle(request.method, request.target, request.headers, request.body)
    check_answer(response.status, response.content_type, response.body)
    reason = response.reason
    if 400 <= response.status < 500:
        assert reason in HTTP_REJECT_REASONS and reason not in BUG_REASONS, response
    else:
        assert reason is None, response
    return response


def check_answer(status: int, content_type: str, body: bytes) -> Any:
    """The parts every answer must have right, over a socket or not; the JSON, if any."""
    assert 200 <= status < 500, (status, body[:500])
    assert b"Traceback" not in body, body[:2000]
    if not content_type.startswith("application/json"):
        return None
    data = json.loads(body)
    if status >= 400:
        assert isinstance(data.get("error"), str) and isinstance(data.get("loi"), str), data
    return data


def rejected(state: FleetState) -> dict[str, float]:
    """``bridge_collector_http_rejected_total`` by reason."""
    family = state.metrics.http_rejected.collect()[0]
    return {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}
