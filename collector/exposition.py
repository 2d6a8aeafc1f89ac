"""Prometheus text exposition kept ready between scrapes.

Each family holds one pre-rendered UTF-8 chunk per site. Intake replaces the chunks of
what a message changed; a scrape takes a snapshot of references to the chunks (the lock is
held only for that) and sends them in pieces, so it never re-renders a sample and never
builds the whole body (20 MB at 3,400 sites) while holding the GIL. Bytes, not str: one
non-ASCII site name would otherwise make Python widen every character it is joined with.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def format_value(value: float) -> str:
    """Go-style float text, as Prometheus writes it."""
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def escape_label(value: str) -> str:
    """Escape a label value per the text format (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    help: str

    @property
    def header(self) -> bytes:
        return f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.type}\n".encode()


class ExpositionCache:
    """Chunks per (family, site), in family order, ready to be sent as they are."""

    def __init__(self, families: list[Family]) -> None:
        self._headers = {f.name: f.header for f in families}
        self._chunks: dict[str, dict[str, bytes]] = {f.name: {} for f in families}
        self._lock = threading.Lock()

    def update(self, site: str, changes: dict[str, bytes | None]) -> None:
        """Replace (or with None, remove) this site's chunk of each named family."""
        with self._lock:
            for family, chunk in changes.items():
                if chunk is None:
                    self._chunks[family].pop(site, None)
                else:
                    self._chunks[family][site] = chunk

    def snapshot(self) -> list[bytes]:
        """The exposition as a list of byte strings whose concatenation is the body."""
        parts: list[bytes] = []
        with self._lock:
            for name, chunks in self._chunks.items():
                if chunks:
                    parts.append(self._headers[name])
                    parts.extend(chunks.values())
        return parts
