"""The YAML schedule: read with line numbers so every problem says ``file:line``.

Format::

    sessions:
      - id: tcd-2026-12-05                 # slug: a-z, 0-9, '-'; at most 40 characters
        title: "Tiếp công dân định kỳ tháng 12/2026"
        start: 2026-12-05T08:00:00+07:00   # or "2026-12-05 08:00" (no offset: Vietnam time)
        duration: 3h                       # 3h, 2h30m, 90m, PT3H, 03:00, or minutes: 180
        host: dt-trung-tam                 # the central bridge (site id of the inventory)
        members: [dt-sa-dec, dt-hong-ngu]  # member bridges, at least one
        national: [tw-tiep-cong-dan]       # optional: national bridges that join

``start`` also reads ``05/12/2026 08:00`` (day first, as written in Vietnam). An offset
other than +07:00 written explicitly (``Z``, ``+00:00``) is an error: see ``validate``.
Unknown keys and keys given twice are errors (PyYAML would silently keep the last one).

The file is *composed* (``yaml.compose``), not loaded: the node tree keeps the line of
every key and list item, and scalars are read from their text, so YAML 1.1's surprises
(``3:00`` as the integer 180, dates turned into ``datetime`` without their offset) never
reach the schedule.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import yaml

from collector.readiness.model import VIETNAM

from .durations import parse_duration
from .validate import YEARS, Draft, ImportIssue, Parsed, issue

FIELDS = ("id", "title", "start", "duration", "host", "members", "national")
_NULL = "tag:yaml.org,2002:null"
_ISO = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?$", re.IGNORECASE)
_DAY_FIRST = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})(?:\s+(\d{1,2})[:h](\d{2}))?$")


class StartError(ValueError):
    """A start that cannot be read; ``code`` is the message code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def parse_start(text: str) -> datetime:
    """An aware datetime from ISO 8601 or ``dd/mm/yyyy HH:MM``; no offset means Vietnam time.

    An explicit offset is kept as written (so the checks can refuse one that is not +07).
    """
    text = text.strip()
    if iso := _ISO.match(text):
        year, month, day, hour, minute, second, fraction, offset = iso.groups()
    elif dmy := _DAY_FIRST.match(text):
        day, month, year, hour, minute = dmy.groups()
        second = fraction = offset = None
    else:
        raise StartError("bad_start")
    if hour is None:
        raise StartError("date_only")
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute),
                          int(second or 0), int((fraction or "0").ljust(6, "0")))
    except ValueError:
        raise StartError("bad_start") from None
    if moment.year not in YEARS:
        raise StartError("bad_start")
    if offset is None:
        return moment.replace(tzinfo=VIETNAM)
    if offset.upper() == "Z":
        return moment.replace(tzinfo=timezone.utc)
    sign = -1 if offset[0] == "-" else 1
    digits = offset[1:].replace(":", "")
    delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
    if delta >= timedelta(hours=24):
        raise StartError("bad_start")
    return moment.replace(tzinfo=timezone(sign * delta))


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _text(node: yaml.Node) -> str | None:
    """A scalar's text, None for null; non-scalars raise TypeError."""
    if not isinstance(node, yaml.ScalarNode):
        raise TypeError
    if node.tag == _NULL:
        return None
    return str(node.value)


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.issues: list[ImportIssue] = []

    def add(self, code: str, line: int | None, **values: object) -> None:
        self.issues.append(issue(code, self.source, line, **values))

    def bad_type(self, draft: Draft, name: str, node: yaml.Node, vi: str, en: str) -> None:
        self.add("bad_type", _line(node), field=name, expected_vi=vi, expected_en=en)
        draft.broken.add(name)

    def sites(self, draft: Draft, name: str, node: yaml.Node) -> list[tuple[str, int]] | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.bad_type(draft, name, node, "danh sách mã điểm cầu", "a list of site ids")
            return None
        out: list[tuple[str, int]] = []
        for item in node.value:
            try:
                value = _text(item)
            except TypeError:
                value = None
            if value is None:
                self.bad_type(draft, name, item, "danh sách mã điểm cầu", "a list of site ids")
                return None
            out.append((value, _line(item)))
        return out

    def session(self, node: yaml.Node) -> Draft | None:
        if not isinstance(node, yaml.MappingNode):
            self.add("not_mapping", _line(node))
            return None
        draft = Draft(self.source, _line(node))
        draft.origin = f"{self.source}:{draft.line}"
        seen: dict[str, int] = {}
        for key_node, value in node.value:
            try:
                key = _text(key_node)
            except TypeError:
                key = None
            if key not in FIELDS:
                self.add("unknown_key", _line(key_node), key=key, allowed=", ".join(FIELDS))
                continue
            assert key is not None
            if key in seen:
                self.add("duplicate_key", _line(key_node), key=key, first=seen[key])
                draft.broken.add(key)
                continue
            seen[key] = draft.lines[key] = _line(key_node)
            self.field(draft, key, value)
        return draft

    def field(self, draft: Draft, key: str, node: yaml.Node) -> None:
        if key in ("members", "national"):
            sites = self.sites(draft, key, node)
            if key == "members":
                draft.members = sites
            elif sites is not None:
                draft.national = sites
            return
        try:
            text = _text(node)
        except TypeError:
            self.bad_type(draft, key, node, "một giá trị đơn", "a single value")
            return
        if text is None:
            return  # reported as missing
        if key == "start":
            draft.start_written = text
            try:
                draft.start = parse_start(text)
            except StartError as err:
                self.add(err.code, _line(node), value=text)
                draft.broken.add(key)
        elif key == "duration":
            try:
                draft.duration = parse_duration(text)
            except ValueError as err:
                self.add("bad_duration", _line(node), value=text, detail=err)
                draft.broken.add(key)
        else:
            setattr(draft, key, text)


def parse_yaml(data: str | bytes, source: str = "api") -> Parsed:
    """Read a YAML schedule (text of a file or a request body) into drafts and issues."""
    reader = _Reader(source)
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = data.count(b"\n", 0, err.start) + 1
            return Parsed(source, (), (issue("read_error", source, line,
                                             detail="không phải UTF-8 / not UTF-8"),))
    try:
        root = yaml.compose(data, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        context = err.context or ""
        if context and err.context_mark and mark and err.context_mark.line != mark.line:
            context += f" (dòng/line {err.context_mark.line + 1})"
        detail = ": ".join(str(p) for p in (context, err.problem) if p)
        return Parsed(source, (), (issue("yaml_syntax", source,
                                         mark.line + 1 if mark else None, detail=detail),))
    except yaml.YAMLError as err:
        return Parsed(source, (), (issue("yaml_syntax", source, None, detail=err),))
    if not isinstance(root, yaml.MappingNode):
        return Parsed(source, (), (issue("yaml_shape", source, _line(root) if root else 1),))
    drafts: list[Draft] = []
    sessions: yaml.Node | None = None
    for key_node, value in root.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key != "sessions":
            reader.add("unknown_key", _line(key_node), key=key, allowed="sessions")
        elif sessions is not None:
            reader.add("duplicate_key", _line(key_node), key=key, first=_line(sessions))
        else:
            sessions = value
    if sessions is None:
        reader.add("yaml_shape", _line(root))
    elif isinstance(sessions, yaml.SequenceNode):
        for item in sessions.value:
            if (draft := reader.session(item)) is not None:
                drafts.append(draft)
    elif not (isinstance(sessions, yaml.ScalarNode) and sessions.tag == _NULL):
        reader.add("yaml_shape", _line(sessions))
    return Parsed(source, tuple(drafts), tuple(reader.issues))
