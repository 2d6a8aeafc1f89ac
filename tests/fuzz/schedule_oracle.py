"""What must hold for any schedule document, whoever made it up (hypothesis or the fuzzer).

The importer answers every document with an ``ImportResult``, never an exception; every
error it reports is from the message catalogue and names its line (only a few whole-file
problems may have none); and the import is all or nothing: a refused document leaves the
store exactly as it was, an accepted one changes exactly the sessions it says it changed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from collector.inventory import load_inventory
from collector.readiness.model import VIETNAM, Session
from collector.readiness.store import Store
from collector.schedule import ImportResult, import_document
from collector.schedule.validate import MESSAGES, SEVERITIES

FIXTURES = Path(__file__).parents[1] / "fixtures" / "schedule"
INVENTORY = load_inventory(FIXTURES / "inventory.yaml")
NOW = datetime(2026, 11, 1, 8, 0, tzinfo=VIETNAM)  # the schedule tests' fixed "now"
# Problems of the whole document, which may have no line: a YAML error without a mark,
# a calendar icalendar itself cannot read, a VEVENT nested where lines would lie.
WHOLE_FILE = {"yaml_syntax", "ics_syntax", "ics_structure"}
# Stored before each document is imported: a refused import must keep it as it is.
KEPT = Session("tcd-da-luu", "Phiên đã lưu", datetime(2026, 11, 4, 14, 0, tzinfo=VIETNAM),
               timedelta(hours=2), "dt-trung-tam", ("dt-cai-be",), (), "old.yaml:3")


def line_count(data: bytes) -> int:
    """Lines of a document, counting every line break an editor or YAML may count.

    LF, but also a lone CR (YAML, like most editors, reads ``\r\r\n`` as two breaks)
    and NEL, LS, PS (YAML 1.1 line breaks), so this is an upper bound.
    """
    text = data.decode("utf-8", "replace")
    return max(data.count(b"\n"), len(text.splitlines())) + 1


def stored(store: Store) -> dict[str, Session]:
    return {s.id: s for s in store.sessions()}


def imported(store: Store, data: bytes, kind: str) -> ImportResult:
    """Import ``data``; fail unless the result and the store keep the contract above."""
    before = stored(store)
    result = import_document(store, data, kind, INVENTORY, source="lich", now=NOW)
    after = stored(store)
    lines = line_count(data)
    for issue in result.issues:
        assert issue.code in MESSAGES and issue.severity in SEVERITIES, issue
        if issue.line is None:
            assert issue.code in WHOLE_FILE, f"no line for {issue}"
        else:
            assert 1 <= issue.line <= lines, f"line {issue.line} of {lines}: {issue}"
        assert issue.vi and issue.en
    if result.ok:
        expected = {**before, **{s.id: s for s in result.changed}}
        for session_id in result.cancelled:
            del expected[session_id]
        assert after == expected, "the store is not what the accepted import said"
    else:
        assert after == before, "a refused import changed the store"
    return result
