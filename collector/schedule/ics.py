"""Importing sessions from an iCalendar file (.ics), as Google Calendar and Outlook export it.

Mapping, one ``VEVENT`` per session:

============  ==========================================================================
id            ``X-BRIDGEWATCH-ID`` if present (must be a slug), else a slug of ``UID``:
              lowercased, every run of other characters turned into ``-``; a UID whose
              slug is longer than 40 characters (Outlook's hex UIDs) keeps 31 characters
              and a hash of the whole UID, so re-importing the same event replaces it
title         ``SUMMARY``
start         ``DTSTART``: ``TZID=`` of a UTC+7 zone (``Asia/Ho_Chi_Minh``, ``Asia/Saigon``,
              ``Asia/Bangkok``, Outlook's ``SE Asia Standard Time`` with its VTIMEZONE) is
              Vietnam time; a UTC time (``...Z``, Google's export) is converted; a floating
              time (no zone) is Vietnam time; a ``TZID`` of a zone that is not UTC+7 at that
              moment (``Europe/London``) is an error, as in YAML (see ``validate``); a TZID
              with no VTIMEZONE and unknown to the system is an error; an all-day event is
              an error (no start time)
duration      ``DTEND - DTSTART`` or ``DURATION`` (both at once: error)
host          ``X-BRIDGEWATCH-HOST`` (one site id); without it, the one central bridge
              among the matched attendees and LOCATION (several: error)
members       ``X-BRIDGEWATCH-MEMBERS`` (comma separated site ids, may repeat); without
              it, the matched attendees / LOCATION entries of level member, in order
national      ``X-BRIDGEWATCH-NATIONAL``; without it, the matched ones of level national
============  ==========================================================================

Site ids in X-BRIDGEWATCH-* are exact (lowercase slugs, as in the inventory); X- values are
unescaped (``\\,`` is a comma). A property that may appear once (UID, SUMMARY, DTSTART,
DTEND, DURATION, STATUS, X-BRIDGEWATCH-ID) given twice is an error on the second line.

*Matched* (only when an inventory is given): an ``ATTENDEE`` whose ``CN`` or mailto local
part is a site id (``CN=dt-sa-dec``, ``mailto:dt-sa-dec@...``), or whose ``CN`` is a site's
name in the inventory (a Google room resource is exported with its name as CN and an
opaque address); a ``LOCATION`` (Outlook joins several rooms with ``;``) whose parts are
site ids or names. Attendees that match nothing are people and are ignored; PARTSTAT is
ignored (a room that declined is still a bridge that must be ready).

Recurring events (``RRULE``, ``RDATE``, and ``RECURRENCE-ID`` overrides) are rejected with
the line of that property: reception sessions are set one by one by decision, and an
expanded series would invent sessions nobody approved. ``STATUS:CANCELLED`` events are not
imported; a cancelled event whose session is stored and has not started removes it.

Line numbers: icalendar keeps none, so the raw bytes are scanned here. Folded content
lines (a line break followed by a space or tab) are unfolded *as bytes* before decoding,
since exporters fold at 75 octets, sometimes inside a UTF-8 character; every logical line
keeps the number of its first physical line. The same scan checks the structure
(BEGIN/END pairs, content line syntax, UTF-8), which icalendar is lenient about (a file
without ``END:VCALENDAR`` would read as empty), and then icalendar parses the unfolded
text for the values, time zones and escapes.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import icalendar

from collector.inventory import Inventory
from collector.readiness.model import VIETNAM

from .validate import MAX_ID_LENGTH, YEARS, Draft, ImportIssue, Parsed, issue

_CONTENT_LINE = re.compile(
    r'^(?P<name>[A-Za-z0-9-]+)'
    r'(?P<params>(?:;[A-Za-z0-9-]+=(?:"[^"]*"|[^";:,]*)(?:,(?:"[^"]*"|[^";:,]*))*)*)'
    r':(?P<value>.*)$', re.DOTALL)
_RECURRING = ("RRULE", "RDATE", "EXRULE", "RECURRENCE-ID")
_SINGLE = ("UID", "X-BRIDGEWATCH-ID", "SUMMARY", "DTSTART", "DTEND", "DURATION", "STATUS")
_FIELD_OF = {"UID": "id", "X-BRIDGEWATCH-ID": "id", "SUMMARY": "title", "DTSTART": "start",
             "DTEND": "duration", "DURATION": "duration", "X-BRIDGEWATCH-HOST": "host",
             "X-BRIDGEWATCH-MEMBERS": "members", "X-BRIDGEWATCH-NATIONAL": "national"}
NAMES = {"id": "UID", "title": "SUMMARY", "start": "DTSTART", "duration": "DTEND/DURATION",
         "host": "X-BRIDGEWATCH-HOST / ATTENDEE", "members": "X-BRIDGEWATCH-MEMBERS / ATTENDEE",
         "national": "X-BRIDGEWATCH-NATIONAL"}


def uid_slug(uid: str) -> str:
    """A stable session id from a calendar UID (see the module docstring)."""
    ascii_text = unicodedata.normalize("NFKD", uid).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if slug and len(slug) <= MAX_ID_LENGTH:
        return slug
    digest = hashlib.sha1(uid.encode("utf-8")).hexdigest()[:8]
    head = slug[:MAX_ID_LENGTH - 9].strip("-")
    return f"{head}-{digest}" if head else f"uid-{digest}"


@dataclass
class _Event:
    """Where one VEVENT and its own properties (not its VALARMs') are in the file."""

    line: int
    props: dict[str, list[int]] = field(default_factory=dict)

    def at(self, name: str, index: int = 0) -> int:
        lines = self.props.get(name, [])
        return lines[index] if index < len(lines) else self.line


@dataclass
class _Scan:
    lines: list[tuple[int, str]] = field(default_factory=list)  # (first line, unfolded text)
    events: list[_Event] = field(default_factory=list)
    issues: list[ImportIssue] = field(default_factory=list)


def _scan(data: bytes, source: str) -> _Scan:
    """Unfold, decode and check the structure, keeping line numbers (see module docstring)."""
    scan = _Scan()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    logical: list[tuple[int, bytearray, list[tuple[int, int]]]] = []  # line, bytes, pieces
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        if raw[:1] in (b" ", b"\t") and logical:
            _, text, pieces = logical[-1]
            pieces.append((len(text), number))
            text += raw[1:]
        elif raw.strip():
            logical.append((number, bytearray(raw), [(0, number)]))
        elif raw:
            scan.issues.append(issue("ics_syntax", source, number, detail="blank line"))
    for number, raw, pieces in logical:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            bad = max(n for offset, n in pieces if offset <= err.start)
            scan.issues.append(issue("ics_encoding", source, bad))
            continue
        scan.lines.append((number, text))

    stack: list[tuple[str, int]] = []
    for number, text in scan.lines:
        match = _CONTENT_LINE.match(text)
        if match is None:
            shown = text if len(text) <= 40 else text[:40] + "…"
            scan.issues.append(issue("ics_syntax", source, number, detail=repr(shown)))
            continue
        name, value = match["name"].upper(), match["value"].strip().upper()
        if name == "BEGIN":
            if not stack and value != "VCALENDAR":
                scan.issues.append(issue("ics_structure", source, number,
                                         detail=f"BEGIN:{value} ngoài/outside VCALENDAR"))
            stack.append((value, number))
            if value == "VEVENT" and len(stack) == 2:
                scan.events.append(_Event(number))
        elif name == "END":
            if not stack or stack[-1][0] != value:
                open_ = f"BEGIN:{stack[-1][0]} (line {stack[-1][1]})" if stack else "nothing"
                scan.issues.append(issue("ics_structure", source, number,
                                         detail=f"END:{value} closes {open_}"))
                if any(v == value for v, _ in stack):
                    while stack and stack[-1][0] != value:
                        stack.pop()
                    stack.pop()
            else:
                stack.pop()
        elif not stack:
            scan.issues.append(issue("ics_structure", source, number,
                                     detail=f"{name} ngoài/outside BEGIN:VCALENDAR"))
        elif stack[-1][0] == "VEVENT" and len(stack) == 2:
            scan.events[-1].props.setdefault(name, []).append(number)
    for value, number in stack:
        scan.issues.append(issue("ics_structure", source, number,
                                 detail=f"BEGIN:{value} không có/without END:{value}"))
    if not scan.issues and not any(t.upper().startswith("BEGIN:VCALENDAR")
                                   for _, t in scan.lines):
        scan.issues.append(issue("ics_empty", source, 1))
    return scan


def _fold_key(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip().casefold()


class _Matcher:
    """Finds bridges among attendees and locations (see the module docstring)."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.by_name = {_fold_key(site.name): sid for sid, site in inventory.sites.items()}

    def one(self, text: str) -> str | None:
        text = text.strip()
        if text.lower() in self.inventory.sites:
            return text.lower()
        return self.by_name.get(_fold_key(text))

    def attendee(self, value: Any) -> str | None:
        cn = value.params.get("CN") if hasattr(value, "params") else None
        if cn and (site := self.one(str(cn))):
            return site
        address = str(value)
        if address.lower().startswith("mailto:"):
            local = address[7:].split("@", 1)[0].strip().lower()
            if local in self.inventory.sites:
                return local
        return None

    def location(self, text: str) -> list[str]:
        found = [self.one(part) for part in re.split(r"[;\n]", text)]
        return [site for site in found if site]


def _x_text(value: Any) -> str:
    """The text of an X- property: icalendar keeps those raw, escapes (``\\,``) and all."""
    return re.sub(r"\\([\\;,nN])",
                  lambda m: "\n" if m[1] in "nN" else m[1], str(value))


def _all(event: icalendar.Component, name: str) -> list[Any]:
    value = event.get(name)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


class _Builder:
    def __init__(self, source: str, inventory: Inventory | None) -> None:
        self.source = source
        self.matcher = _Matcher(inventory) if inventory is not None else None
        self.issues: list[ImportIssue] = []

    def broken(self, draft: Draft, code: str, line: int, what: str, **values: object) -> None:
        """Report a problem with the field ``what``, which then is not reported as missing."""
        self.issues.append(issue(code, self.source, line, **values))
        draft.broken.add(what)

    def moment(self, draft: Draft, where: _Event, prop: str, name: str,
               value: Any) -> datetime | None:
        """An aware datetime (see the module docstring for the zone rules), or None."""
        moment = value.dt
        line = where.at(prop)
        if not isinstance(moment, datetime):
            if isinstance(moment, date):
                self.broken(draft, "ics_all_day", line, name)
            else:
                self.broken(draft, "ics_property", line, name, name=prop, detail=repr(moment))
            return None
        if moment.year not in YEARS:
            self.broken(draft, "ics_property", line, name, name=prop,
                        detail=f"năm/year {moment.year}")
            return None
        tzid = value.params.get("TZID")
        if moment.tzinfo is None:
            if tzid:
                self.broken(draft, "ics_unknown_tzid", line, name, tzid=tzid)
                return None
            return moment.replace(tzinfo=VIETNAM)  # floating: Vietnam time
        if not tzid:
            return moment.astimezone(VIETNAM)  # UTC ("Z"), as Google exports
        return moment

    def event(self, event: icalendar.Component, where: _Event) -> Draft:
        draft = Draft(self.source, where.line, names=dict(NAMES))
        broken_props = {name.upper() for name, _ in event.errors if name}
        for name, message in event.errors:
            line = where.at(name.upper()) if name else where.line
            self.broken(draft, "ics_property", line, _FIELD_OF.get((name or "").upper(), ""),
                        name=name, detail=message)
        for name in _SINGLE:
            if len(where.props.get(name, ())) > 1:
                self.broken(draft, "ics_repeated", where.at(name, 1),
                            _FIELD_OF.get(name, ""), name=name)
                broken_props.add(name)
        for name in _RECURRING:
            if name in event:
                self.broken(draft, "ics_recurring", where.at(name), "start", name=name)

        def usable(name: str) -> Any:
            """The property's one value, or None when absent or already reported."""
            return event[name] if name in event and name not in broken_props else None

        uid = str(usable("UID") or "").strip()
        if (explicit_id := usable("X-BRIDGEWATCH-ID")) is not None:
            draft.id = _x_text(explicit_id).strip() or None
            draft.lines["id"] = where.at("X-BRIDGEWATCH-ID")
            draft.names["id"] = "X-BRIDGEWATCH-ID"
        elif uid:
            draft.id, draft.lines["id"] = uid_slug(uid), where.at("UID")
        draft.origin = f"{self.source}:{where.line} UID {uid}" if uid else \
            f"{self.source}:{where.line}"
        if (summary := usable("SUMMARY")) is not None:
            draft.title, draft.lines["title"] = str(summary), where.at("SUMMARY")
        draft.cancelled = str(usable("STATUS") or "").strip().upper() == "CANCELLED"

        start = end = None
        if (written := usable("DTSTART")) is not None:
            draft.lines["start"] = where.at("DTSTART")
            start = self.moment(draft, where, "DTSTART", "start", written)
            if start is not None:
                tzid = written.params.get("TZID")
                draft.start_written = (f"{written.dt:%Y-%m-%d %H:%M} TZID={tzid}" if tzid
                                       else written.dt.isoformat())
                draft.start = start
        if (dtend := usable("DTEND")) is not None:
            draft.lines["duration"] = where.at("DTEND")
            end = self.moment(draft, where, "DTEND", "duration", dtend)
        if (duration := usable("DURATION")) is not None:
            draft.lines["duration"] = where.at("DURATION")
            if "DTEND" in event:
                self.broken(draft, "ics_end_and_duration", where.at("DURATION"), "duration")
            elif isinstance(duration.dt, timedelta):
                draft.duration = duration.dt
            else:
                self.broken(draft, "ics_property", where.at("DURATION"), "duration",
                            name="DURATION", detail=str(duration.dt))
        if start is not None and end is not None:
            draft.duration = end - start
        self.bridges(event, where, draft)
        return draft

    def bridges(self, event: icalendar.Component, where: _Event, draft: Draft) -> None:
        explicit: dict[str, list[tuple[str, int]]] = {}
        for key, prop in (("host", "X-BRIDGEWATCH-HOST"), ("members", "X-BRIDGEWATCH-MEMBERS"),
                          ("national", "X-BRIDGEWATCH-NATIONAL")):
            for index, value in enumerate(_all(event, prop)):
                line = where.at(prop, index)
                draft.lines.setdefault(key, line)
                explicit.setdefault(key, []).extend(
                    (site.strip(), line) for site in _x_text(value).split(",") if site.strip())
        found: list[tuple[str, int]] = []
        if self.matcher is not None:
            for index, value in enumerate(_all(event, "LOCATION")):
                line = where.at("LOCATION", index)
                found += [(site, line) for site in self.matcher.location(str(value))]
            for index, value in enumerate(_all(event, "ATTENDEE")):
                if (site := self.matcher.attendee(value)) is not None:
                    found.append((site, where.at("ATTENDEE", index)))
        by_level: dict[str, list[tuple[str, int]]] = {}
        for site, line in found:
            level = self.matcher.inventory.sites[site].level if self.matcher else ""
            if site not in (s for s, _ in by_level.get(level, [])):
                by_level.setdefault(level, []).append((site, line))

        if "X-BRIDGEWATCH-HOST" in event:
            hosts = explicit.get("host", [])
            if hosts:
                draft.host = hosts[0][0]
            if len(hosts) > 1:
                self.broken(draft, "ics_host_list", hosts[1][1], "host",
                            sites=", ".join(site for site, _ in hosts))
        elif centrals := by_level.get("central"):
            draft.host, draft.lines["host"] = centrals[0][0], centrals[0][1]
            if len(centrals) > 1:
                self.broken(draft, "ics_several_hosts", centrals[1][1], "host",
                            sites=", ".join(site for site, _ in centrals))
        if "X-BRIDGEWATCH-MEMBERS" in event:
            draft.members = explicit.get("members", [])
        elif "member" in by_level:
            draft.members = by_level["member"]
            draft.lines["members"] = draft.members[0][1]
        draft.national = explicit.get("national", by_level.get("national", []))


def parse_ics(data: str | bytes, source: str = "api",
              inventory: Inventory | None = None) -> Parsed:
    """Read an iCalendar document into drafts and issues (``inventory``: match attendees)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    scan = _scan(raw, source)
    if scan.issues:
        return Parsed(source, (), tuple(scan.issues))
    text = "".join(f"{line}\r\n" for _, line in scan.lines)
    try:
        calendars = icalendar.Calendar.from_ical(text, multiple=True)
    except Exception as err:  # icalendar raises ValueError and its own kinds
        return Parsed(source, (), (issue("ics_syntax", source, None, detail=err),))
    events = [event for calendar in calendars for event in calendar.walk("VEVENT")]
    if len(events) != len(scan.events):  # VEVENT nested somewhere odd: lines would lie
        return Parsed(source, (), (issue("ics_structure", source, None,
                                         detail="VEVENT lồng sai chỗ / misplaced VEVENT"),))
    builder = _Builder(source, inventory)
    pairs = zip(events, scan.events, strict=True)
    drafts = tuple(builder.event(event, where) for event, where in pairs)
    return Parsed(source, drafts, tuple(builder.issues))
