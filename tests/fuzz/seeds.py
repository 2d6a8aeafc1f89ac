"""Seed corpora for the fuzz harnesses, made from the project's own fixtures.

Each harness reads its first byte as a selector (the wire kind, the schedule format) and
the rest as the document; the API harness reads a raw HTTP request. ``write`` puts a
target's seeds in a fresh directory: libFuzzer adds what it finds to its first corpus
directory, which must never be ``tests/fixtures``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from agent.wire import Kind

from .api_oracle import MEMBER, SESSION, TOKEN
from .schedule_oracle import FIXTURES

WIRE_FIXTURES = FIXTURES.parent / "wire"
KINDS = list(Kind)  # fuzz_wire: kind = KINDS[data[0] % len(KINDS)]
FORMATS = ("yaml", "ics")  # fuzz_schedule: kind = FORMATS[data[0] % 2]


def wire_seeds() -> list[bytes]:
    """Every golden payload behind the byte of its kind."""
    seeds = []
    for path in sorted(WIRE_FIXTURES.glob("*.json")):
        kind = Kind(path.stem.split("-")[0])
        seeds.append(bytes([KINDS.index(kind)]) + path.read_bytes())
    return seeds


def schedule_seeds() -> list[bytes]:
    """Every schedule fixture (good and bad, YAML and iCalendar) behind its format byte."""
    return [bytes([FORMATS.index("ics" if p.suffix == ".ics" else "yaml")]) + p.read_bytes()
            for p in sorted(FIXTURES.iterdir()) if p.suffix in (".yaml", ".ics")]


def _request(method: str, target: str, body: bytes = b"", token: bool = False,
             media: str | None = None) -> bytes:
    head = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    if token:
        head.append(f"Authorization: Bearer {TOKEN}")
    if media:
        head.append(f"Content-Type: {media}")
    head.append(f"Content-Length: {len(body)}")
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


def api_seeds() -> dict[bytes, int]:
    """A request for every route, and the status the API answers it with."""
    schedule = (FIXTURES / "schedule.yaml").read_bytes()
    calendar = (FIXTURES / "bridgewatch.ics").read_bytes()
    order = f'{{"site": "{MEMBER}", "session": "{SESSION}"}}'.encode()
    return {
        _request("GET", "/api/sessions"): 200,
        _request("HEAD", "/api/sessions"): 200,
        _request("GET", f"/api/sessions/{SESSION}"): 200,
        _request("POST", "/api/sessions", schedule, True, "application/yaml"): 200,
        _request("POST", "/api/sessions", calendar, True, "text/calendar"): 200,
        _request("POST", "/api/sessions", schedule[:200], True, "text/plain"): 422,
        _request("POST", f"/api/sessions/{SESSION}/confirm", f'{{"site": "{MEMBER}"}}'.encode(),
                 True, "application/json"): 201,
        _request("POST", "/api/tests", order, True, "application/json"): 202,
        _request("GET", f"/api/tests?site={MEMBER}&session={SESSION}"): 200,
        _request("GET", f"/report/{SESSION}.html?lang=en"): 200,
        _request("GET", f"/report/{SESSION}.csv"): 200,
        _request("DELETE", "/api/sessions/tcd-2026-12-19", token=True): 200,
        _request("DELETE", "/api/sessions/tcd-2026-12-19"): 401,
        _request("PUT", "/api/tests", order, True, "application/json"): 405,
    }


SEEDS = {"wire": wire_seeds, "schedule": schedule_seeds, "api": lambda: list(api_seeds())}


def write(target: str, directory: Path) -> int:
    """Write ``target``'s seeds into ``directory`` (created); how many."""
    directory.mkdir(parents=True, exist_ok=True)
    seeds = SEEDS[target]()
    for seed in seeds:
        (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    return len(seeds)
