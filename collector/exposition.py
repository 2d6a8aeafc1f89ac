"""Prometheus text exposition kept ready between scrapes.

Each family holds one pre-rendered UTF-8 chunk per site. Intake replaces the chunks of
what a message changed; a scrape only joins bytes, re-joins only the families that changed
since the previous scrape, and returns the previous body untouched when nothing changed.
So a scrape never re-renders a sample, and holds the intake lock only while it copies the
chunk lists of dirty families. Bytes, not str: one non-ASCII site name would otherwise make
Python widen every character of a 20 MB join.
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
    """Chunks per (family, site); joined bytes per family, rebuilt only when dirty."""

    def __init__(self, families: list[Family]) -> None:
        self._families = {f.name: f for f in families}
        self._chunks: dict[str, dict[str, bytes]] = {f.name: {} for f in families}
        self._joined: dict[str, bytes] = {}
        self._dirty: set[str] = set(self._families)
        self._body = b""
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()  # concurrent scrapes share self._joined

    def update(self, site: str, changes: dict[str, bytes | None]) -> None:
        """Replace (or with None, remove) this site's chunk of each named family."""
        with self._lock:
            for family, chunk in changes.items():
                chunks = self._chunks[family]
                if chunk is None:
                    if chunks.pop(site, None) is not None:
                        self._dirty.add(family)
                elif chunks.get(site) != chunk:
                    chunks[site] = chunk
                    self._dirty.add(family)

    def render(self) -> bytes:
        with self._render_lock:
            with self._lock:
                if not self._dirty:
                    return self._body
                dirty, self._dirty = self._dirty, set()
                pending = {name: list(self._chunks[name].values()) for name in dirty}
            for name, chunks in pending.items():
                header = self._families[name].header
                self._joined[name] = header + b"".join(chunks) if chunks else b""
            self._body = b"".join(self._joined[name] for name in self._families)
            return self._body
