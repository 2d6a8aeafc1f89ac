"""Property-based tests of the schedule importers, YAML and iCalendar (hypothesis).

Valid schedules are generated (1-4 sessions on distinct days, titles in any script, every
documented spelling of a start and a length, flow and block lists; calendars with a TZID,
UTC or floating times, DTEND or DURATION, SUMMARY escapes and 75-octet folds that may cut
a UTF-8 character) and must import exactly as generated, and re-import as unchanged. Then
one thing is broken, either in a known way (an unknown bridge, a past start, another
offset, a length out of range, a duplicate id, an overlap, a missing field, an RRULE),
which must be refused with that error on that line, or at random (lines dropped, repeated
or swapped, bytes changed, inserted or cut): always an ``ImportResult``, never an
exception, every error on a line inside the document, and a refused import leaves the
store, which already holds a schedule, exactly as it was.

Derandomized and without an example database, so CI runs the same cases every time.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.readiness.model import Session
from collector.readiness.store import Store
from tests.fuzz.schedule_oracle import INVENTORY, KEPT, NOW, imported, stored


def many(examples: int) -> settings:
    """Reproducible (derandomized, no database) and without a per-example deadline."""
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One real SQLite store (a file, WAL, as the collector runs it) for every example."""
    with Store(tmp_path_factory.mktemp("schedule") / "readiness.sqlite") as db:
        yield db


LEVEL = {sid: site.level for sid, site in INVENTORY.sites.items()}
CENTRAL = sorted(s for s, level in LEVEL.items() if level == "central")
MEMBER = sorted(s for s, level in LEVEL.items() if level == "member")
NATIONAL = sorted(s for s, level in LEVEL.items() if level == "national")


# --------------------------------------------------------------------------------------
# Valid schedules


@dataclass(frozen=True)
class Plan:
    """One generated session, and how its document spells it."""

    id: str
    title: str
    start: datetime
    duration: timedelta
    host: str
    members: tuple[str, ...]
    national: tuple[str, ...]
    spelling: int  # picks a spelling of start and duration

    def session(self, source: str) -> Session:
        title = unicodedata.normalize("NFC", self.title).strip()
        return Session(self.id, title, self.start, self.duration, self.host, self.members,
                       self.national, source)


ids = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?\Z")
# Text a person may write in a title: any script, no control or line-separator characters,
# no unassigned code points (YAML refuses U+FFFE and friends).
title_chars = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp", "Cn"))
titles = st.text(title_chars, min_size=1, max_size=60).filter(
    lambda t: unicodedata.normalize("NFC", t).strip() != "")


@st.composite
def plans(draw: st.DrawFn) -> list[Plan]:
    """1-4 sessions, each on a day of its own (4 to 400 days ahead): no overlap."""
    count = draw(st.integers(1, 4))
    days = draw(st.lists(st.integers(4, 400), min_size=count, max_size=count, unique=True))
    names = draw(st.lists(ids, min_size=count, max_size=count, unique=True))
    out = []
    for day, name in zip(days, names, strict=True):
        start = (NOW + timedelta(days=day)).replace(hour=draw(st.integers(0, 11)),
                                                    minute=draw(st.integers(0, 59)))
        out.append(Plan(
            name, draw(titles), start, timedelta(minutes=draw(st.integers(15, 720))),
            draw(st.sampled_from(CENTRAL)),
            tuple(draw(st.lists(st.sampled_from(MEMBER), min_size=1, max_size=4,
                                unique=True))),
            tuple(draw(st.lists(st.sampled_from(NATIONAL), max_size=1))),
            draw(st.integers(0, 5))))
    return out


def yaml_start(plan: Plan) -> str:
    start = plan.start
    return [start.isoformat(), f"{start:%Y-%m-%d %H:%M}", f'"{start:%d/%m/%Y %H:%M}"',
            f"{start:%Y-%m-%dT%H:%M}+07:00", f"{start:%Y-%m-%d %H:%M:%S}",
            f"'{start:%d/%m/%Y %Hh%M}'"][plan.spelling]


def yaml_duration(plan: Plan) -> str:
    minutes = int(plan.duration.total_seconds() // 60)
    hours, rest = divmod(minutes, 60)
    return [str(minutes), f"{hours}h{rest}m", f"PT{hours}H{rest}M", f'"{hours:02d}:{rest:02d}"',
            f"{minutes}m", f"{hours} giờ {rest} phút"][plan.spelling]


def to_yaml(plans: list[Plan]) -> tuple[bytes, list[int]]:
    """A YAML schedule, and the line of each session's '- id:'."""
    lines = ["# Lịch tiếp công dân trực tuyến", "sessions:"]
    starts = []
    for plan in plans:
        starts.append(len(lines) + 1)
        lines += [f'  - id: "{plan.id}"',
                  f"    title: {json.dumps(plan.title, ensure_ascii=False)}",
                  f"    start: {yaml_start(plan)}",
                  f"    duration: {yaml_duration(plan)}",
                  f"    host: {plan.host}"]
        if plan.spelling % 2:
            lines += ["    members:", *[f"      - {m}" for m in plan.members]]
        else:
            lines.append(f"    members: [{', '.join(plan.members)}]")
        if plan.national:
            lines.append(f"    national: [{', '.join(plan.national)}]")
        lines.append("")
    return "\n".join(lines).encode(), starts


def ics_text(value: str) -> str:
    """RFC 5545 TEXT escaping."""
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")


def fold(line: str) -> list[bytes]:
    """Fold at 75 octets, as exporters do, even inside a UTF-8 character."""
    data = line.encode()
    pieces = [data[:75]]
    pieces += [b" " + data[i:i + 74] for i in range(75, len(data), 74)]
    return pieces


def ics_start(plan: Plan) -> list[str]:
    start, end = plan.start, plan.start + plan.duration
    utc = start.astimezone(timezone.utc)
    when = [f"DTSTART;TZID=Asia/Ho_Chi_Minh:{start:%Y%m%dT%H%M%S}",
            f"DTSTART:{utc:%Y%m%dT%H%M%SZ}", f"DTSTART:{start:%Y%m%dT%H%M%S}",
            f"DTSTART;TZID=Asia/Bangkok:{start:%Y%m%dT%H%M%S}"][plan.spelling % 4]
    minutes = int(plan.duration.total_seconds() // 60)
    length = (f"DURATION:PT{minutes // 60}H{minutes % 60}M" if plan.spelling % 2 else
              f"DTEND:{end.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}" if "Z" in when else
              f"DTEND{when[7:].split(':')[0]}:{end:%Y%m%dT%H%M%S}")
    return [when, length]


def to_ics(plans: list[Plan]) -> tuple[bytes, list[int]]:
    """An iCalendar export (CRLF), and the line of each session's BEGIN:VEVENT."""
    lines = [b"BEGIN:VCALENDAR", b"VERSION:2.0", b"PRODID:-//BridgeWatch//property test//VI"]
    starts = []
    for number, plan in enumerate(plans):
        starts.append(len(lines) + 1)
        props = [f"UID:{number}-{plan.id}@bridgewatch.test", f"X-BRIDGEWATCH-ID:{plan.id}",
                 f"SUMMARY:{ics_text(plan.title)}", *ics_start(plan),
                 f"X-BRIDGEWATCH-HOST:{plan.host}",
                 f"X-BRIDGEWATCH-MEMBERS:{','.join(plan.members)}"]
        if plan.national:
            props.append(f"X-BRIDGEWATCH-NATIONAL:{','.join(plan.national)}")
        lines += [b"BEGIN:VEVENT", *[p for prop in props for p in fold(prop)], b"END:VEVENT"]
    lines.append(b"END:VCALENDAR")
    return b"\r\n".join(lines) + b"\r\n", starts


RENDER = {"yaml": to_yaml, "ics": to_ics}


def reset(store: Store) -> None:
    """Back to the one kept session; no write when a refused import left it so."""
    if stored(store) != {KEPT.id: KEPT}:
        store.replace_sessions([KEPT])


def same(got: Session, plan: Plan) -> bool:
    return replace(got, source="") == plan.session("")


@many(500)
@given(plans(), st.sampled_from(sorted(RENDER)))
def test_generated_schedules_import_exactly_and_reimport_unchanged(
        store: Store, plans: list[Plan], kind: str) -> None:
    """Every generated session is stored as generated (id, NFC title, start in UTC+7,
    length, bridges); the same document again changes nothing."""
    reset(store)
    data, _ = RENDER[kind](plans)
    result = imported(store, data, kind)
    assert result.ok and not result.errors, [i.format("en") for i in result.issues]
    assert len(result.sessions) == len(plans)
    for got, plan in zip(result.sessions, plans, strict=True):
        assert same(got, plan), (got, plan)
        assert got.start.utcoffset() == timedelta(hours=7)
    assert set(stored(store)) == {KEPT.id, *(p.id for p in plans)}
    again = imported(store, data, kind)
    assert again.ok and again.unchanged == {p.id for p in plans} and again.changed == ()


# --------------------------------------------------------------------------------------
# One known fault: that error, on that line, nothing stored


@dataclass(frozen=True)
class Fault:
    """One way to break the first session, and where the error must be reported."""

    change: Callable[[list[Plan]], list[Plan]]  # on the generated sessions
    edit: Callable[[bytes, str], bytes]  # then on the rendered document (kind: yaml/ics)
    code: dict[str, str]  # the error code, by kind
    needle: dict[str, str]  # text on the reported line, by kind
    in_last: bool = False  # reported in the session appended last, not the first


def _first(plans: list[Plan], **changes: object) -> list[Plan]:
    return [replace(plans[0], **changes), *plans[1:]]  # type: ignore[arg-type]


def _same(data: bytes, kind: str) -> bytes:
    return data


def _edit(yaml: tuple[bytes, bytes], ics: tuple[bytes, bytes]) -> Callable[[bytes, str], bytes]:
    """Replace the first occurrence of ``old`` by ``new``, per kind."""
    return lambda data, kind: data.replace(*(yaml if kind == "yaml" else ics), 1)


def _host_not_central(plans: list[Plan]) -> list[Plan]:
    members = tuple(m for m in plans[0].members if m != MEMBER[0]) or (MEMBER[1],)
    return _first(plans, host=MEMBER[0], members=members)


def _both(code: str) -> dict[str, str]:
    return {"yaml": code, "ics": code}


FAULTS = {
    "unknown bridge": Fault(
        lambda p: _first(p, members=(*p[0].members, "dt-khong-co")), _same,
        _both("unknown_bridge"), {"yaml": "dt-khong-co", "ics": "X-BRIDGEWATCH-MEMBERS"}),
    "past start": Fault(lambda p: _first(p, start=NOW - timedelta(days=3)), _same,
                        _both("past_start"), {"yaml": "start:", "ics": "DTSTART"}),
    "13 hours": Fault(lambda p: _first(p, duration=timedelta(hours=13)), _same,
                      _both("duration_range"), {"yaml": "duration:", "ics": "D"}),
    "member as host": Fault(_host_not_central, _same, _both("host_not_central"),
                            {"yaml": "host:", "ics": "X-BRIDGEWATCH-HOST"}),
    "another offset": Fault(  # spelling 0: ISO with +07:00, or TZID=Asia/Ho_Chi_Minh
        lambda p: _first(p, spelling=0),
        _edit((b"+07:00", b"+00:00"), (b"TZID=Asia/Ho_Chi_Minh", b"TZID=Europe/London")),
        _both("wrong_tz"), {"yaml": "start:", "ics": "DTSTART"}),
    "no host": Fault(lambda p: p, _edit((b"    host:", b"    #ost:"),
                                        (b"X-BRIDGEWATCH-HOST:", b"X-BRIDGEWATCH-HOTS:")),
                     _both("missing_field"), {"yaml": "- id:", "ics": "BEGIN:VEVENT"}),
    "unknown key, RRULE": Fault(
        lambda p: p, _edit((b"    title:", b"    colour: \xc4\x91\xe1\xbb\x8f\n    title:"),
                           (b"BEGIN:VEVENT\r\n", b"BEGIN:VEVENT\r\nRRULE:FREQ=WEEKLY\r\n")),
        {"yaml": "unknown_key", "ics": "ics_recurring"}, {"yaml": "colour", "ics": "RRULE"}),
    "duplicate id": Fault(  # the first session again, 500 days later
        lambda p: [*p, replace(p[0], start=p[0].start + timedelta(days=500))], _same,
        _both("duplicate_id"), {"yaml": "- id:", "ics": "X-BRIDGEWATCH-ID"}, in_last=True),
    "twin": Fault(  # the first session again under another id: same time, same host
        lambda p: [*p, replace(p[0], id=p[0].id[:30] + "-ban-sao")], _same,
        _both("host_overlap"), {"yaml": "start:", "ics": "DTSTART"}, in_last=True),
}


@many(400)
@given(plans(), st.sampled_from(sorted(FAULTS)), st.sampled_from(sorted(RENDER)))
def test_a_known_fault_is_refused_on_its_line_and_stores_nothing(
        store: Store, plans: list[Plan], fault: str, kind: str) -> None:
    """One session given an unknown bridge, a past start, 13 h, a member bridge as host,
    another UTC offset (+00:00, TZID=Europe/London), no host, an unknown key (YAML) or an
    RRULE (iCalendar), or a second session with its id or at its time with its host: that
    error, on the line of the faulty field in the faulty session, and the store keeps only
    what it had."""
    reset(store)
    how = FAULTS[fault]
    changed = how.change(plans)
    data, starts = RENDER[kind](changed)
    data = how.edit(data, kind)
    result = imported(store, data, kind)
    assert not result.ok
    errors = [(i.code, i.line) for i in result.errors]
    lines = [line for code, line in errors if code == how.code[kind]]
    assert lines, errors
    session = starts[-1] if how.in_last else starts[0]
    following = [s for s in starts if s > session]
    end = following[0] if following else 10**9
    text = data.split(b"\n")  # bytes: a fold may cut a UTF-8 character in two
    assert any(session <= line < end and how.needle[kind].encode() in text[line - 1]
               for line in lines if line is not None), (errors, session)
    assert stored(store) == {KEPT.id: KEPT}


# --------------------------------------------------------------------------------------
# Random damage: an ImportResult, lines inside the file, all or nothing


@st.composite
def damaged(draw: st.DrawFn) -> tuple[bytes, str]:
    """A generated document with 1-4 random edits of its lines or bytes."""
    kind = draw(st.sampled_from(sorted(RENDER)))
    data, _ = RENDER[kind](draw(plans()))
    end = b"\r\n" if kind == "ics" else b"\n"
    for _ in range(draw(st.integers(1, 4))):
        lines = data.split(end)
        at = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.integers(0, 7))
        if edit == 0:
            del lines[at]
        elif edit == 1:
            lines.insert(at, lines[draw(st.integers(0, len(lines) - 1))])
        elif edit == 2:
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif edit == 3:
            lines.insert(at, draw(st.binary(max_size=30)))
        elif edit == 4:
            lines.insert(at, draw(st.sampled_from(NASTY[kind])))
        data = end.join(lines)
        if edit == 5:
            data = data[:draw(st.integers(0, len(data)))]
        elif edit == 6:
            where = draw(st.integers(0, max(0, len(data) - 1)))
            data = data[:where] + draw(st.binary(min_size=1, max_size=3)) + data[where + 1:]
        elif edit == 7:
            data = data.replace(b"\n", b"\r\n") if kind == "yaml" else data.replace(b"\r\n",
                                                                                    b"\n")
    return data, kind


NASTY = {
    "yaml": [b"    members: *x", b"  - ", b"? [a]", b"    id: !!binary aGVsbG8=", b"\t",
             b"    start: 9999-12-31T23:59+07:00", b"    duration: 99999999999h", b"---",
             b"    national: {a: b}", b"sessions:", b"    host: ~", b"%YAML 1.1", b"\xff"],
    "ics": [b"RRULE:FREQ=WEEKLY", b"DTSTART;VALUE=DATE:20261205", b"BEGIN:VEVENT",
            b"END:VEVENT", b"BEGIN:VALARM", b"DURATION:P99999999W", b"DTSTART;TZID=:x",
            b"X-BRIDGEWATCH-HOST:a,b", b"STATUS:CANCELLED", b"DTSTART:00010101T000000Z",
            b"ATTENDEE;CN=\"a;b:c\":mailto:x@y", b" folded", b"\xff\xfe"],
}


@many(800)
@given(damaged())
def test_damaged_documents_are_reported_on_their_lines_never_a_crash(
        store: Store, case: tuple[bytes, str]) -> None:
    """Whatever the damage: an ImportResult (no exception), catalogue codes, lines inside
    the document, and either a complete import or none at all."""
    reset(store)
    imported(store, *case)


@many(300)
@given(st.binary(max_size=300), st.sampled_from(sorted(RENDER)))
def test_arbitrary_bytes_are_refused_without_a_crash(store: Store, data: bytes,
                                                     kind: str) -> None:
    """Random bytes read as YAML and as a calendar: refused (or an empty schedule)."""
    reset(store)
    result = imported(store, data, kind)
    assert not result.sessions

