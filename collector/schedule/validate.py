"""Checking a schedule before anything is stored: every problem, each with its source line.

The parsers (``yamlfile``, ``ics``) turn text into :class:`Draft` sessions and report what
they cannot read; :func:`validate` then checks what does not depend on the format, against
the inventory and the sessions already stored, and builds the :class:`Session` objects.
Nothing here writes: the caller stores ``result.sessions`` only when ``result.ok`` (the
import is all-or-nothing, see ``collector.schedule.import_document``).

Policies (also in the package docstring):

* **Time zone.** Vietnam is UTC+7 and every session is stored as an aware datetime in
  ``VIETNAM``. A time written without an offset is Vietnam time. A time written *explicitly*
  in another offset (``+00:00`` in YAML, ``TZID=Europe/London`` in a calendar) is an
  **error**, not a warning: session times are legal appointments announced in Vietnam time,
  an offset other than +07 in a hand-made schedule is far more often a slip than intent, and
  a session silently moved by seven hours misses both of its tests. The message gives the
  Vietnam time it would have been, so the fix is one edit. Calendar UTC times (``...Z``,
  how Google Calendar exports) are a machine's encoding of an instant, not a person's
  choice: the calendar parser converts them and they pass.
* **Start in the past** is an error, except for a session that is already stored and comes
  again *unchanged* (re-importing this year's calendar after some sessions were held must
  not fail): it is reported as unchanged and left alone. Changing a session that has
  already started is an error: what was held is a record. ``past="skip"`` makes both
  warnings and leaves those sessions out (a file imported at every collector start).
* **Duration** must be at least 15 minutes and at most 12 hours: a bare ``3`` is three
  minutes (bare numbers are minutes), which no reception session is.
* **Overlap.** A bridge cannot be in two rooms at once: two sessions whose times overlap
  (``a.start < b.end and b.start < a.end``; back to back is fine) may not share any bridge,
  host, member or national. Stored sessions count, except those the import replaces.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from agent.wire import is_slug
from collector.inventory import Inventory
from collector.readiness.model import DEFAULT_CHECKPOINTS, VIETNAM, Session

from .durations import format_duration

MAX_ID_LENGTH = 40
MAX_TITLE_LENGTH = 300
MIN_DURATION = timedelta(minutes=15)
MAX_DURATION = timedelta(hours=12)
VIETNAM_OFFSET = timedelta(hours=7)
YEARS = range(2000, 2100)  # a start outside is a typo (and keeps date arithmetic in range)
SEVERITIES = ("error", "warning")
LANGS = ("both", "vi", "en")
PAST_POLICIES = ("error", "skip")

# code -> (Vietnamese, English). Placeholders ending in _vi / _en are per language.
MESSAGES: dict[str, tuple[str, str]] = {
    "read_error": ("không đọc được tệp: {detail}", "cannot read the file: {detail}"),
    "yaml_syntax": ("YAML không hợp lệ: {detail}", "not valid YAML: {detail}"),
    "yaml_shape": ("tệp lịch phải là một bảng có khóa 'sessions' chứa danh sách phiên",
                   "a schedule is a mapping whose key 'sessions' holds a list of sessions"),
    "not_mapping": ("mỗi phiên phải là một bảng (id, title, start, ...)",
                    "each session must be a mapping (id, title, start, ...)"),
    "unknown_key": ("khóa không hợp lệ '{key}' (dùng: {allowed})",
                    "unknown key '{key}' (allowed: {allowed})"),
    "duplicate_key": ("khóa '{key}' lặp lại (lần đầu ở dòng {first})",
                      "key '{key}' given twice (first on line {first})"),
    "missing_field": ("thiếu {field}", "missing {field}"),
    "bad_type": ("{field} phải là {expected_vi}", "{field} must be {expected_en}"),
    "bad_start": ("thời điểm bắt đầu không hợp lệ '{value}' (ví dụ 2026-12-05T08:00:00+07:00)",
                  "start '{value}' is not a date and time (e.g. 2026-12-05T08:00:00+07:00)"),
    "date_only": ("thời điểm bắt đầu '{value}' thiếu giờ",
                  "start '{value}' has a date but no time of day"),
    "bad_duration": ("thời lượng không hợp lệ '{value}': {detail}",
                     "duration '{value}' is not valid: {detail}"),
    "bad_id": ("mã phiên '{value}' không hợp lệ (chữ thường a-z, số, '-', tối đa {max} ký tự)",
               "session id '{value}' is not a slug (a-z, 0-9, '-', at most {max} characters)"),
    "duplicate_id": ("mã phiên '{value}' trùng với phiên ở dòng {first}",
                     "session id '{value}' is already used on line {first}"),
    "bad_title": ("tiêu đề phải là một dòng chữ, không rỗng, tối đa {max} ký tự",
                  "title must be one line of text, not empty, at most {max} characters"),
    "unknown_bridge": ("điểm cầu không có trong danh mục '{site}'",
                       "unknown bridge '{site}' (not in the inventory)"),
    "host_not_central": ("điểm cầu chủ trì '{site}' không phải điểm cầu trung tâm (cấp: {level})",
                         "host '{site}' is not a central bridge (level: {level})"),
    "member_is_national": ("'{site}' là điểm cầu Trung ương: ghi vào 'national'",
                           "'{site}' is a national bridge: list it under 'national'"),
    "member_is_central": ("'{site}' là điểm cầu trung tâm nhưng được ghi là điểm cầu thành viên",
                          "'{site}' is a central bridge listed as a member"),
    "national_not_national": ("'{site}' không phải điểm cầu Trung ương (cấp: {level})",
                              "'{site}' is not a national bridge (level: {level})"),
    "listed_twice": ("điểm cầu '{site}' được ghi hai lần trong phiên",
                     "bridge '{site}' is listed twice in the session"),
    "no_members": ("phiên cần ít nhất một điểm cầu thành viên",
                   "a session needs at least one member bridge"),
    "wrong_tz": ("giờ bắt đầu {written} không theo giờ Việt Nam (UTC+7), tức {vietnam} giờ "
                 "Việt Nam: hãy ghi giờ Việt Nam (+07:00)",
                 "start {written} is not in Vietnam time (UTC+7); it is {vietnam} in Vietnam: "
                 "write Vietnam time (+07:00)"),
    "duration_range": ("thời lượng {value} ngoài khoảng cho phép ({low} đến {high})",
                       "duration {value} is outside {low} to {high}"),
    "past_start": ("phiên bắt đầu trong quá khứ ({start}, bây giờ là {now})",
                   "the session starts in the past ({start}; now is {now})"),
    "started_changed": ("phiên '{value}' đã diễn ra ({start}): không sửa được",
                        "session '{value}' has already started ({start}): it cannot be changed"),
    "past_skipped": ("phiên đã qua ({start}): bỏ qua", "the session is past ({start}): skipped"),
    "started_kept": ("phiên '{value}' đã diễn ra ({start}): giữ bản đã lưu, bỏ qua thay đổi",
                     "session '{value}' has already started ({start}): the stored one is "
                     "kept, the change skipped"),
    "late_checkpoint": ("phiên sắp diễn ra: đã quá mốc {checkpoints}",
                        "the session is close: checkpoint(s) {checkpoints} already passed"),
    "overlap": ("điểm cầu {sites} đã ở phiên '{other}'{where_vi} ({when}) cùng thời gian",
                "bridge(s) {sites} already in session '{other}'{where_en} ({when}) at the "
                "same time"),
    "host_overlap": ("điểm cầu chủ trì '{site}' đã chủ trì phiên '{other}'{where_vi} ({when}) "
                     "cùng thời gian",
                     "host '{site}' already hosts session '{other}'{where_en} ({when}) at the "
                     "same time"),
    "cancelled_removed": ("sự kiện đã hủy: phiên '{value}' sẽ bị xóa khỏi lịch",
                          "cancelled event: session '{value}' will be removed"),
    "cancelled_skipped": ("sự kiện đã hủy: bỏ qua '{value}'",
                          "cancelled event: '{value}' skipped"),
    "cancelled_past": ("sự kiện đã hủy nhưng phiên '{value}' đã diễn ra: giữ nguyên",
                       "cancelled event, but session '{value}' has already started: kept"),
    "ics_encoding": ("tệp không phải UTF-8", "the file is not UTF-8 text"),
    "ics_syntax": ("dòng iCalendar không hợp lệ: {detail}",
                   "not a valid iCalendar content line: {detail}"),
    "ics_structure": ("cấu trúc iCalendar sai: {detail}", "broken iCalendar structure: {detail}"),
    "ics_empty": ("không có lịch (BEGIN:VCALENDAR) nào trong tệp",
                  "no calendar (BEGIN:VCALENDAR) in the file"),
    "ics_property": ("giá trị {name} không hợp lệ: {detail}", "{name} is not valid: {detail}"),
    "ics_repeated": ("{name} có nhiều hơn một lần", "{name} is given more than once"),
    "ics_host_list": ("X-BRIDGEWATCH-HOST chỉ được ghi một điểm cầu ({sites})",
                      "X-BRIDGEWATCH-HOST must name one bridge ({sites})"),
    "ics_recurring": ("sự kiện lặp lại ({name}) không được hỗ trợ: hãy xuất từng buổi riêng",
                      "recurring events ({name}) are not supported: export each session on "
                      "its own"),
    "ics_all_day": ("sự kiện cả ngày không có giờ bắt đầu", "an all-day event has no start time"),
    "ics_unknown_tzid": ("múi giờ TZID={tzid} không xác định (không có VTIMEZONE)",
                         "unknown time zone TZID={tzid} (no VTIMEZONE for it)"),
    "ics_end_and_duration": ("có cả DTEND và DURATION", "both DTEND and DURATION are given"),
    "ics_several_hosts": ("nhiều điểm cầu trung tâm được mời ({sites}): ghi X-BRIDGEWATCH-HOST",
                          "several central bridges invited ({sites}): name the host in "
                          "X-BRIDGEWATCH-HOST"),
}


@dataclass(frozen=True)
class ImportIssue:
    """One problem of one schedule, where it is, in both languages.

    ``code`` is stable (for the API and tests); ``vi``/``en`` are for people.
    """

    source: str  # file name, or "api"
    line: int | None  # 1-based; None when the problem has no single line
    code: str
    vi: str
    en: str
    severity: str = "error"  # one of SEVERITIES: errors block the import, warnings do not
    session_id: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def message(self, lang: str = "both") -> str:
        if lang == "vi":
            return self.vi
        if lang == "en":
            return self.en
        return f"{self.vi} / {self.en}"

    def format(self, lang: str = "both") -> str:
        """``file:line: message`` (as compilers print, so editors can jump to it)."""
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        label = {"error": ("lỗi", "error"), "warning": ("cảnh báo", "warning")}[self.severity]
        tag = label[0] if lang == "vi" else label[1] if lang == "en" else "/".join(label)
        return f"{where}: {tag}: {self.message(lang)}"

    def as_dict(self) -> dict[str, object]:
        """For a JSON answer of the HTTP API."""
        return {"source": self.source, "line": self.line, "code": self.code,
                "severity": self.severity, "session_id": self.session_id,
                "message_vi": self.vi, "message_en": self.en}


def issue(code: str, source: str, line: int | None, *, severity: str = "error",
          session_id: str | None = None, **values: object) -> ImportIssue:
    """Build an issue from the ``MESSAGES`` catalogue."""
    vi, en = MESSAGES[code]
    common = {k: v for k, v in values.items() if not k.endswith(("_vi", "_en"))}
    vi_values = {**common, **{k: v for k, v in values.items() if k.endswith("_vi")}}
    en_values = {**common, **{k: v for k, v in values.items() if k.endswith("_en")}}
    return ImportIssue(source, line, code, vi.format(**vi_values), en.format(**en_values),
                       severity, session_id)


@dataclass
class Draft:
    """One session as a parser read it, before the checks; every field may be missing.

    ``lines`` maps a field to the line it was written on; members / national keep one line
    per bridge. ``broken`` lists fields the parser already reported, so they are not
    reported again as missing. ``names`` is how the format calls a field (``DTSTART``).
    """

    source: str
    line: int  # where the session begins: its "- id:" item, or BEGIN:VEVENT
    id: str | None = None
    title: str | None = None
    start: datetime | None = None  # aware; in the offset it was written in
    start_written: str = ""  # as written, for messages
    duration: timedelta | None = None
    host: str | None = None
    members: list[tuple[str, int]] | None = None  # (site, line)
    national: list[tuple[str, int]] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)
    names: dict[str, str] = field(default_factory=dict)
    origin: str = ""  # Session.source; default "<source>:<line>"
    cancelled: bool = False  # a calendar event with STATUS:CANCELLED

    def at(self, name: str) -> int:
        return self.lines.get(name, self.line)


@dataclass(frozen=True)
class Parsed:
    """What a parser read: the drafts, and the problems it found on the way."""

    source: str
    drafts: tuple[Draft, ...] = ()
    issues: tuple[ImportIssue, ...] = ()


@dataclass(frozen=True)
class ImportResult:
    """The checked schedule: store ``sessions`` only when ``ok`` (no error at all)."""

    sessions: tuple[Session, ...] = ()  # every valid session of the document, file order
    issues: tuple[ImportIssue, ...] = ()  # sorted by line
    unchanged: frozenset[str] = frozenset()  # ids identical to what is stored
    cancelled: tuple[str, ...] = ()  # stored future sessions the document cancels

    @property
    def errors(self) -> list[ImportIssue]:
        return [i for i in self.issues if i.is_error]

    @property
    def warnings(self) -> list[ImportIssue]:
        return [i for i in self.issues if not i.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def changed(self) -> tuple[Session, ...]:
        """Sessions that are new or differ from the stored ones."""
        return tuple(s for s in self.sessions if s.id not in self.unchanged)

    def as_dict(self) -> dict[str, object]:
        """For a JSON answer of the HTTP API (times ISO 8601 with +07:00)."""
        return {
            "ok": self.ok,
            "sessions": [{"id": s.id, "title": s.title, "start": s.start.isoformat(),
                          "duration_minutes": s.duration.total_seconds() / 60,
                          "host": s.host, "members": list(s.members),
                          "national": list(s.national), "unchanged": s.id in self.unchanged}
                         for s in self.sessions],
            "cancelled": list(self.cancelled),
            "issues": [i.as_dict() for i in self.issues],
        }


def vn(moment: datetime) -> str:
    """A moment as people in Vietnam read it: ``05/12/2026 08:00``."""
    return f"{moment.astimezone(VIETNAM):%d/%m/%Y %H:%M}"


def same_session(a: Session, b: Session) -> bool:
    """Equal in everything but where it was read from."""
    return replace(a, source="") == replace(b, source="")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Checker:
    def __init__(self, inventory: Inventory, now: datetime) -> None:
        self.inventory = inventory
        self.now = now
        self.issues: list[ImportIssue] = []
        self.errors = 0  # errors added so far: a draft with new errors builds no session

    def add(self, draft: Draft, code: str, line: int | None, *, severity: str = "error",
            **values: object) -> None:
        sid = draft.id if is_slug(draft.id) else None
        self.issues.append(issue(code, draft.source, line, severity=severity,
                                 session_id=sid, **values))
        self.errors += severity == "error"

    def present(self, draft: Draft, name: str, value: object) -> bool:
        """False (and 'missing' reported unless the parser already complained) when absent."""
        if value is not None:
            return True
        if name not in draft.broken:
            self.add(draft, "missing_field", draft.line, field=draft.names.get(name, name))
        else:
            self.errors += 1  # the parser's own issue is the error; count it for this draft
        return False

    def site_level(self, draft: Draft, site: str, line: int) -> str | None:
        known = self.inventory.sites.get(site)
        if known is None:
            self.add(draft, "unknown_bridge", line, site=site)
            return None
        return known.level

    def session(self, draft: Draft) -> Session | None:
        """The session of a draft, or None after reporting why it cannot be one."""
        before = self.errors
        if draft.broken:
            self.errors += 1  # the parser reported it; a broken draft builds no session
        if self.present(draft, "id", draft.id) and not _good_id(draft.id):
            self.add(draft, "bad_id", draft.at("id"), value=draft.id, max=MAX_ID_LENGTH)
        if self.present(draft, "title", draft.title):
            title = unicodedata.normalize("NFC", draft.title or "").strip()
            if not title or len(title) > MAX_TITLE_LENGTH or _CONTROL.search(title):
                self.add(draft, "bad_title", draft.at("title"), max=MAX_TITLE_LENGTH)
        self.start(draft)
        self.duration(draft)
        self.bridges(draft)
        if self.errors != before:
            return None
        assert draft.id and draft.title and draft.start and draft.duration and draft.host
        return Session(
            id=draft.id,
            title=unicodedata.normalize("NFC", draft.title).strip(),
            start=draft.start.astimezone(VIETNAM),
            duration=draft.duration,
            host=draft.host,
            members=tuple(site for site, _ in draft.members or ()),
            national=tuple(site for site, _ in draft.national),
            source=draft.origin or f"{draft.source}:{draft.line}",
        )

    def start(self, draft: Draft) -> None:
        if self.present(draft, "start", draft.start):
            assert draft.start is not None
            if draft.start.utcoffset() != VIETNAM_OFFSET:
                self.add(draft, "wrong_tz", draft.at("start"),
                         written=draft.start_written or draft.start.isoformat(),
                         vietnam=vn(draft.start))

    def duration(self, draft: Draft) -> None:
        if self.present(draft, "duration", draft.duration):
            assert draft.duration is not None
            if not MIN_DURATION <= draft.duration <= MAX_DURATION:
                self.add(draft, "duration_range", draft.at("duration"),
                         value=format_duration(draft.duration),
                         low=format_duration(MIN_DURATION), high=format_duration(MAX_DURATION))

    def bridges(self, draft: Draft) -> None:
        seen: set[str] = set()
        if self.present(draft, "host", draft.host):
            assert draft.host is not None
            level = self.site_level(draft, draft.host, draft.at("host"))
            if level is not None and level != "central":
                self.add(draft, "host_not_central", draft.at("host"), site=draft.host,
                         level=level)
            seen.add(draft.host)
        if self.present(draft, "members", draft.members):
            if not draft.members:
                self.add(draft, "no_members", draft.at("members"))
            for site, line in draft.members or ():
                self.listed(draft, site, line, seen)
                level = self.site_level(draft, site, line)
                if level == "national":
                    self.add(draft, "member_is_national", line, site=site)
                elif level == "central" and site != draft.host:
                    self.add(draft, "member_is_central", line, severity="warning", site=site)
        for site, line in draft.national:
            self.listed(draft, site, line, seen)
            level = self.site_level(draft, site, line)
            if level is not None and level != "national":
                self.add(draft, "national_not_national", line, site=site, level=level)

    def listed(self, draft: Draft, site: str, line: int, seen: set[str]) -> None:
        if site in seen:
            self.add(draft, "listed_twice", line, site=site)
        seen.add(site)


def _good_id(value: object) -> bool:
    return is_slug(value) and len(str(value)) <= MAX_ID_LENGTH


def validate(parsed: Parsed | Sequence[Draft], inventory: Inventory, *,
             existing: Iterable[Session] = (), now: datetime | None = None,
             past: str = "error") -> ImportResult:
    """Check drafts against each other, the inventory and the stored ``existing`` sessions.

    Every problem is collected (not just the first); ``now`` is injectable for tests and
    must be aware. ``past="skip"`` (for a schedule file imported at every start of the
    collector, whose old sessions a fresh database never saw) turns a past start, or a
    change to a session that has started, into a warning and leaves that session out.
    """
    if past not in PAST_POLICIES:
        raise ValueError(f"past {past!r} not in {PAST_POLICIES}")
    if now is None:
        now = datetime.now(VIETNAM)
    if now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    drafts = parsed.drafts if isinstance(parsed, Parsed) else tuple(parsed)
    checker = _Checker(inventory, now)
    if isinstance(parsed, Parsed):
        checker.issues.extend(parsed.issues)
    stored = {s.id: s for s in existing}

    # Ids first: duplicates are an error whatever else is wrong.
    first_line: dict[str, int] = {}
    for draft in drafts:
        if _good_id(draft.id):
            assert draft.id is not None
            if draft.id in first_line:
                checker.add(draft, "duplicate_id", draft.at("id"), value=draft.id,
                            first=first_line[draft.id])
            else:
                first_line[draft.id] = draft.at("id")

    cancelled: list[str] = []
    built: list[Session] = []
    slots: list[_Slot] = []
    unchanged: set[str] = set()
    skipped: set[int] = set()  # drafts left out (past == "skip"), by identity
    for draft in drafts:
        if draft.cancelled:
            _cancel(checker, draft, stored, cancelled)
            continue
        session = checker.session(draft)
        if session is not None:
            built.append(session)
        if draft.start is None:
            continue
        # Time checks run on every draft with a start, even one with other errors.
        old = stored.get(draft.id) if draft.id else None
        if session is not None and old is not None and same_session(old, session):
            unchanged.add(session.id)
        elif old is not None and old.start <= now:
            if past == "skip":
                checker.add(draft, "started_kept", draft.at("id"), severity="warning",
                            value=draft.id, start=vn(old.start))
                skipped.add(id(draft))
            else:
                checker.add(draft, "started_changed", draft.at("id"), value=draft.id,
                            start=vn(old.start))
        elif draft.start < now:
            if past == "skip":
                checker.add(draft, "past_skipped", draft.at("start"), severity="warning",
                            start=vn(draft.start))
                skipped.add(id(draft))
            else:
                checker.add(draft, "past_start", draft.at("start"), start=vn(draft.start),
                            now=vn(now))
        elif session is not None:
            late = [cp.name for cp in DEFAULT_CHECKPOINTS
                    if cp.kind != "start" and cp.deadline(session) < now]
            if late:
                checker.add(draft, "late_checkpoint", draft.at("start"), severity="warning",
                            checkpoints=", ".join(late))
        if id(draft) in skipped:
            if session is not None:
                built.remove(session)
        elif draft.duration is not None and timedelta(0) < draft.duration <= MAX_DURATION:
            slots.append(_Slot.of(draft, draft.id in unchanged))

    replaced = {d.id for d in drafts if d.id and id(d) not in skipped} | set(cancelled)
    stored_slots = [_Slot.stored(s) for s in stored.values() if s.id not in replaced]
    _overlaps(checker, slots, stored_slots)
    # Problems in the order of the file; those without a line (whole file) first.
    issues = sorted(checker.issues, key=lambda i: -1 if i.line is None else i.line)
    return ImportResult(tuple(built), tuple(issues), frozenset(unchanged), tuple(cancelled))


@dataclass(frozen=True)
class _Slot:
    """When and where a session is: enough to check overlaps, even for a draft with errors."""

    id: str
    start: datetime
    end: datetime
    host: str | None
    bridges: tuple[str, ...]
    draft: Draft | None = None  # None: a stored session
    unchanged: bool = False
    session: Session | None = None

    @classmethod
    def of(cls, draft: Draft, unchanged: bool) -> _Slot:
        assert draft.start is not None and draft.duration is not None
        sites = [draft.host] if draft.host else []
        sites += [site for site, _ in [*(draft.members or ()), *draft.national]]
        return cls(draft.id or f"#{draft.line}", draft.start, draft.start + draft.duration,
                   draft.host, tuple(dict.fromkeys(sites)), draft, unchanged)

    @classmethod
    def stored(cls, session: Session) -> _Slot:
        return cls(session.id, session.start, session.end, session.host, session.bridges,
                   session=session)

    def span(self) -> str:
        start, end = self.start.astimezone(VIETNAM), self.end.astimezone(VIETNAM)
        return f"{vn(start)}-{end:%H:%M}" if start.date() == end.date() else \
            f"{vn(start)}-{vn(end)}"


def _cancel(checker: _Checker, draft: Draft, stored: dict[str, Session],
            cancelled: list[str]) -> None:
    if not checker.present(draft, "id", draft.id):
        return
    if not _good_id(draft.id):
        checker.add(draft, "bad_id", draft.at("id"), value=draft.id, max=MAX_ID_LENGTH)
        return
    assert draft.id is not None
    old = stored.get(draft.id)
    if old is None:
        checker.add(draft, "cancelled_skipped", draft.line, severity="warning", value=draft.id)
    elif old.start <= checker.now:
        checker.add(draft, "cancelled_past", draft.line, severity="warning", value=draft.id)
    else:
        cancelled.append(draft.id)
        checker.add(draft, "cancelled_removed", draft.line, severity="warning", value=draft.id)


def _overlaps(checker: _Checker, slots: list[_Slot], stored: list[_Slot]) -> None:
    """Report each pair of overlapping sessions that share a bridge, at the later one."""
    earlier: list[_Slot] = []
    for slot in slots:
        draft = slot.draft
        assert draft is not None
        for other in [*stored, *earlier]:
            if other.id == slot.id:
                continue  # a duplicate id, reported already
            if slot.unchanged and (other.draft is None or other.unchanged):
                continue  # both were accepted together before
            if not (slot.start < other.end and other.start < slot.end):
                continue
            shared = [b for b in slot.bridges if b in other.bridges]
            if not shared:
                continue
            where = ({"where_vi": f" ở dòng {other.draft.at('start')}",
                      "where_en": f" on line {other.draft.at('start')}"}
                     if other.draft is not None else
                     {"where_vi": " đã lưu", "where_en": " in the store"})
            if slot.host is not None and slot.host == other.host:
                checker.add(draft, "host_overlap", draft.at("start"), site=slot.host,
                            other=other.id, when=other.span(), **where)
            else:
                checker.add(draft, "overlap", draft.at("start"),
                            sites=", ".join(f"'{b}'" for b in shared),
                            other=other.id, when=other.span(), **where)
        earlier.append(slot)
