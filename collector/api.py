"""The collector's HTTP API for the schedule, tests and reports.

Public (read): ``GET /api/sessions``, ``GET /api/sessions/<id>`` (with verdicts),
``GET /api/tests?site=&session=``, ``GET /report/<id>.html`` and ``.csv`` (the biên bản).
With a token (``Authorization: Bearer``, see ``apitokens``): ``POST /api/sessions``
(a YAML schedule, or iCalendar with ``Content-Type: text/calendar``; all or nothing),
``DELETE /api/sessions/<id>``, ``POST /api/sessions/<id>/confirm`` ``{"site": ...}``,
``POST /api/tests`` ``{"site": ..., "session": ...}`` (order a test now).
Bodies are bounded; JSON bodies with unknown fields are refused, not half understood.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from agent import wire

from . import report as report_page
from .apitokens import ApiTokens
from .readiness.model import Session, TestRecord, Verdict
from .readiness.service import GRACE, ReadinessService
from .schedule import detect_kind, import_document

MAX_BODY_BYTES = 1 << 20
_SESSION_PATH = re.compile(r"^/api/sessions/([a-z0-9-]{1,40})(/confirm)?$")
_REPORT_PATH = re.compile(r"^/report/([a-z0-9-]{1,40})\.(html|csv)$")


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, data: Any) -> Response:
    return Response(status, json.dumps(data, ensure_ascii=False, indent=1).encode())


def _error(status: int, vi: str, en: str, **headers: str) -> Response:
    response = _json(status, {"error": en, "loi": vi})
    response.headers.update(headers)
    return response


def _when(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def session_json(session: Session) -> dict[str, Any]:
    return {"id": session.id, "title": session.title, "start": _when(session.start),
            "duration_seconds": session.duration.total_seconds(), "host": session.host,
            "members": list(session.members), "national": list(session.national)}


def verdict_json(v: Verdict) -> dict[str, Any]:
    return {"site": v.site, "checkpoint": v.checkpoint, "state": v.state,
            "deadline": _when(v.deadline), "window_start": _when(v.window_start),
            "test_id": v.test_id, "failing": list(v.failing)}


def test_json(t: TestRecord) -> dict[str, Any]:
    return {"test_id": t.test_id, "site": t.site, "finished": _when(t.finished),
            "passed": t.passed, "trigger": t.trigger, "requested_by": t.requested_by,
            "session": t.session_id,
            "criteria": [{"name": c.name, "ok": c.ok, "value": c.value, "limit": c.limit,
                          "unit": c.unit} for c in t.criteria]}


class Api:
    def __init__(self, service: ReadinessService, tokens: ApiTokens) -> None:
        self.service = service
        self.tokens = tokens

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> Response:
        """Answer one request; never raises for anything a client can send."""
        path, _, query = target.partition("?")
        try:
            return self._route(method, path, parse_qs(query), headers, body)
        except BadRequest as err:
            return _error(400, err.vi, err.en)

    def _route(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
               body: bytes) -> Response:
        store = self.service.store
        if path == "/api/sessions":
            if method == "GET":
                now = self.service.now()
                return _json(200, [session_json(s) for s in store.sessions(since=now - GRACE)])
            if method == "POST":
                return self._authorized(headers) or self._import(headers, body)
            return _error(405, "phương thức không hỗ trợ", "method not allowed")
        match = _SESSION_PATH.match(path)
        if match:
            session_id, confirm = match.groups()
            session = store.session(session_id)
            if session is None:
                return _error(404, f"không có phiên {session_id}", f"no session {session_id}")
            if confirm:
                if method != "POST":
                    return _error(405, "phương thức không hỗ trợ", "method not allowed")
                who = self.tokens.who(headers.get("Authorization"))
                if who is None:
                    return self._unauthorized()
                site = _fields(body, {"site"}, {"site"})["site"]
                try:
                    self.service.confirm(session_id, site, who)
                except ValueError as err:
                    return _error(422, "không xác nhận được", str(err))
                self.service.tick()
                return _json(201, {"session": session_id, "site": site, "by": who})
            if method == "GET":
                verdicts = self.service.verdicts(session)
                return _json(200, {**session_json(session),
                                   "verdicts": [verdict_json(v) for v in verdicts]})
            if method == "DELETE":
                refusal = self._authorized(headers)
                if refusal:
                    return refusal
                store.delete_session(session_id)
                self.service.tick()
                return _json(200, {"deleted": session_id})
            return _error(405, "phương thức không hỗ trợ", "method not allowed")
        if path == "/api/tests":
            if method == "GET":
                site = _one(query, "site")
                session = _one(query, "session")
                return _json(200, [test_json(t) for t in store.tests(site=site,
                                                                      session_id=session)])
            if method == "POST":
                who = self.tokens.who(headers.get("Authorization"))
                if who is None:
                    return self._unauthorized()
                fields = _fields(body, {"site", "session"}, {"site"})
                try:
                    test_id = self.service.order_test(fields["site"], fields.get("session"),
                                                      who)
                except ValueError as err:
                    return _error(422, "không đặt được kiểm thử", str(err))
                return _json(202, {"test_id": test_id, "site": fields["site"]})
            return _error(405, "phương thức không hỗ trợ", "method not allowed")
        match = _REPORT_PATH.match(path)
        if match and method == "GET":
            data = self.service.report(match.group(1))
            if data is None:
                return _error(404, "không có phiên này", "no such session")
            lang = _one(query, "lang") or "vi"
            if lang not in report_page.LANGS:
                raise BadRequest("lang phải là vi hoặc en", "lang must be vi or en")
            if match.group(2) == "html":
                return Response(200, report_page.render_html(data, lang).encode(),
                                report_page.HTML_CONTENT_TYPE,
                                {"Content-Security-Policy": report_page.CSP})
            name = report_page.file_name(data, "csv")
            return Response(200, report_page.render_csv(data, lang).encode(),
                            report_page.CSV_CONTENT_TYPE,
                            {"Content-Disposition": f'attachment; filename="{name}"'})
        return _error(404, "không tìm thấy", "not found")

    def _import(self, headers: Any, body: bytes) -> Response:
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        kind = "ics" if content_type == "text/calendar" else detect_kind("api", body)
        result = import_document(self.service.store, body, kind, self.service.known,
                                 source="api", now=self.service.now())
        if result.ok:
            self.service.tick()
        return _json(200 if result.ok else 422, result.as_dict())

    def _authorized(self, headers: Any) -> Response | None:
        """None when the request carries a valid token, else the 401 to send."""
        if self.tokens.who(headers.get("Authorization")) is None:
            return self._unauthorized()
        return None

    @staticmethod
    def _unauthorized() -> Response:
        return _error(401, "cần mã truy cập hợp lệ", "a valid bearer token is required",
                      **{"WWW-Authenticate": 'Bearer realm="bridgewatch"'})


class BadRequest(Exception):
    def __init__(self, vi: str, en: str) -> None:
        super().__init__(en)
        self.vi = vi
        self.en = en


def _one(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    if values is None:
        return None
    if len(values) != 1 or not wire.is_slug(values[0]):
        raise BadRequest(f"tham số {key} không hợp lệ", f"bad {key} parameter")
    return values[0]


def _fields(body: bytes, known: set[str], required: set[str]) -> dict[str, str]:
    """A small JSON object of slug strings, exactly as the route expects it."""
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("thân yêu cầu không phải JSON", "body is not JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("cần một đối tượng JSON", "expected a JSON object")
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadRequest(f"trường không hỗ trợ: {unknown[0]}", f"unknown field {unknown[0]!r}")
    missing = sorted(required - set(data))
    if missing:
        raise BadRequest(f"thiếu trường {missing[0]}", f"missing field {missing[0]!r}")
    for key, value in data.items():
        if value is not None and not wire.is_slug(value):
            raise BadRequest(f"{key} không hợp lệ", f"{key} must be an id (a slug)")
    return {k: v for k, v in data.items() if v is not None}
