"""The schedule of reception sessions: read it, check it, store it all-or-nothing.

Sources: a YAML file (format in ``yamlfile``), an iCalendar export (mapping in ``ics``),
or the body of an HTTP request (the same two formats; the API calls
:func:`check_document` / :func:`import_document`).

Every problem is an :class:`ImportIssue` with the source line (``file:line: message``, in
Vietnamese and English). Errors block the whole document: :func:`import_document` stores
nothing unless there is none, and it checks and writes inside one store transaction.
Warnings (a session close enough that a checkpoint has passed, a cancelled event) do not.

Policies, argued in ``validate``: a time zone other than UTC+7 written explicitly is an
error (calendar UTC times are converted); a start in the past is an error unless the
session is already stored unchanged (``past="skip"``: a warning, and the session is left
out); 15 min <= duration <= 12 h; a bridge may not be in two
sessions whose times overlap, stored ones included.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from collector.inventory import Inventory
from collector.readiness.model import Session
from collector.readiness.store import Store

from .durations import format_duration, parse_duration
from .ics import parse_ics, uid_slug
from .validate import Draft, ImportIssue, ImportResult, Parsed, issue, validate
from .yamlfile import parse_yaml

__all__ = [
    "KINDS", "Draft", "ImportIssue", "ImportResult", "Parsed", "check_document", "check_file",
    "detect_kind", "format_duration", "import_document", "import_file", "parse_document",
    "parse_duration", "parse_ics", "parse_yaml", "uid_slug", "validate",
]

KINDS = ("yaml", "ics")
_ICS_SUFFIXES = (".ics", ".ical", ".icalendar", ".ifb")


def detect_kind(name: str, data: bytes | str = b"") -> str:
    """``ics`` or ``yaml``, from the file name, else from the content."""
    suffix = Path(name).suffix.lower()
    if suffix in _ICS_SUFFIXES:
        return "ics"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    head = data[:64].decode("utf-8", "replace") if isinstance(data, bytes) else data[:64]
    return "ics" if head.lstrip("\ufeff \r\n\t").upper().startswith("BEGIN:VCALENDAR") \
        else "yaml"


def parse_document(data: bytes | str, kind: str, *, source: str = "api",
                   inventory: Inventory | None = None) -> Parsed:
    """Parse without checking (``inventory`` lets a calendar's attendees name bridges)."""
    if kind == "ics":
        return parse_ics(data, source, inventory)
    if kind == "yaml":
        return parse_yaml(data, source)
    raise ValueError(f"kind {kind!r} not in {KINDS}")


def check_document(data: bytes | str, kind: str, inventory: Inventory, *,
                   source: str = "api", existing: Iterable[Session] = (),
                   now: datetime | None = None, past: str = "error") -> ImportResult:
    """Parse and check a document against the inventory and the ``existing`` sessions."""
    parsed = parse_document(data, kind, source=source, inventory=inventory)
    return validate(parsed, inventory, existing=existing, now=now, past=past)


def import_document(store: Store, data: bytes | str, kind: str, inventory: Inventory, *,
                    source: str = "api", now: datetime | None = None,
                    past: str = "error") -> ImportResult:
    """Check against the stored sessions and store, all-or-nothing, in one transaction.

    Stores the new and changed sessions and removes the stored future sessions the document
    cancels; with any error, stores nothing. The result says which it was (``ok``).
    """
    parsed = parse_document(data, kind, source=source, inventory=inventory)
    with store.transaction():
        result = validate(parsed, inventory, existing=store.sessions(), now=now, past=past)
        if result.ok:
            store.upsert_sessions(result.changed)
            for session_id in result.cancelled:
                store.delete_session(session_id)
    return result


def _read(path: str | Path) -> tuple[bytes | None, ImportResult | None]:
    try:
        return Path(path).read_bytes(), None
    except OSError as err:
        failed = issue("read_error", str(path), None, detail=err.strerror or err)
        return None, ImportResult(issues=(failed,))


def check_file(path: str | Path, inventory: Inventory, *, existing: Iterable[Session] = (),
               now: datetime | None = None, past: str = "error") -> ImportResult:
    """:func:`check_document` of a file (YAML or .ics by its name or content)."""
    data, failed = _read(path)
    if data is None:
        assert failed is not None
        return failed
    return check_document(data, detect_kind(str(path), data), inventory, source=str(path),
                          existing=existing, now=now, past=past)


def import_file(store: Store, path: str | Path, inventory: Inventory, *,
                now: datetime | None = None, past: str = "error") -> ImportResult:
    """:func:`import_document` of a file."""
    data, failed = _read(path)
    if data is None:
        assert failed is not None
        return failed
    return import_document(store, data, detect_kind(str(path), data), inventory,
                           source=str(path), now=now, past=past)
