"""The collector's HTTP API for the schedule, tests and reports.

Public (read): ``GET /api/sessions``, ``GET /api/sessions/<id>`` (with verdicts),
``GET /api/tests?site=&session=``, ``GET /report/<id>.html`` and ``.csv`` (the biên bản).
With a token (``Authorization: Bearer``, see ``apitokens``): ``POST /api/sessions``
(a YAML schedule, or iCalendar with ``Content-Type: text/calendar``; all or nothing),
``DELETE /api/sessions/<id>``, ``POST /api/sessions/<id>/confirm`` ``{"site": ...}``,
``POST /api/tests`` ``{"site": ..., "session": ...}`` (order a test now).
Bodies are bounded; JSON bodies with unknown fields are refused, not half understood.

Strict by design, since a half-understood order is worse than a refused one: a route takes
only its Content-Type (``application/json``; a schedule ``application/yaml``,
``text/calendar`` or ``text/plain``) in UTF-8, only its query parameters, only its
methods (405 says which in ``Allow``). Every refusal is a JSON ``{"error": ..., "loi": ...}``
(English, Vietnamese) and carries its ``reason`` from ``HTTP_REJECT_REASONS``, the label
the server counts in ``bridge_collector_http_rejected_total``. ``Api.handle`` needs no
socket (fuzz tests drive it in-process); it raises only on a bug of ours.
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
from .selfmetrics import HTTP_REJECT_REASONS

MAX_BODY_BYTES = 1 << 20
MAX_TARGET_CHARS = 4096  # path and query string: every id here is short
JSON_TYPE = "application/json"
SCHEDULE_TYPES = {"application/yaml": "yaml", "application/x-yaml": "yaml",
                  "text/yaml": "yaml", "text/x-yaml": "yaml", "text/calendar": "ics",
                  "text/plain": None}  # None: told apart by content
_CHARSETS = ("utf-8", "utf8", "us-ascii")
_SESSION_PATH = re.compile(r"^/api/sessions/([a-z0-9-]{1,40})(/confirm)?$")
_REPORT_PATH = re.compile(r"^/report/([a-z0-9-]{1,40})\.(html|csv)$")


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    reason: str | None = None  # for a refusal: its label in HTTP_REJECT_REASONS


def _json(status: int, data: Any) -> Response:
    return Response(status, json.dumps(data, ensure_ascii=False, indent=1).encode())


def error(status: int, reason: str, vi: str, en: str, **headers: str) -> Response:
    """A refusal: ``{"error": en, "loi": vi}``, counted under ``reason``."""
    assert reason in HTTP_REJECT_REASONS, reason
    response = _json(status, {"error": en, "loi": vi})
    response.headers.update(headers)
    response.reason = reason
    return response


def not_found() -> Response:
    return error(404, "not_found", "không tìm thấy", "not found")


def method_not_allowed(method: str, allowed: tuple[str, ...]) -> Response:
    methods = ", ".join(allowed)
    return error(405, "forbidden_method",
                 f"không dùng được phương thức {method[:20]} ở đây; dùng: {methods}",
                 f"method {method[:20]} not allowed here; allowed: {methods}", Allow=methods)


def allowed_methods(path: str) -> tuple[str, ...] | None:
    """The methods an API path serves (405's ``Allow``); None when it is not an API path."""
    if path in ("/api/sessions", "/api/tests"):
        return ("GET", "HEAD", "POST")
    match = _SESSION_PATH.match(path)
    if match:
        return ("POST",) if match.group(2) else ("GET", "HEAD", "DELETE")
    if _REPORT_PATH.match(path):
        return ("GET", "HEAD")
    return None


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
        """Answer one request; never raises for anything a client can send.

        ``headers`` needs only ``.get(name)`` (a dict will do); HEAD is answered as GET
        (the server leaves the body out).
        """
        if len(target) > MAX_TARGET_CHARS:
            return error(414, "uri_too_long", "địa chỉ yêu cầu quá dài",
                         f"request target longer than {MAX_TARGET_CHARS} characters")
        if len(body) > MAX_BODY_BYTES:
            return body_too_large()
        path, _, query = target.partition("?")
        allowed = allowed_methods(path)
        if allowed is None:
            return not_found()
        if method not in allowed:
            return method_not_allowed(method, allowed)
        route_method = "GET" if method == "HEAD" else method
        try:
            return self._route(route_method, path, parse_qs(query, keep_blank_values=True),
                               headers, body)
        except BadRequest as err:
            return error(err.status, err.reason, err.vi, err.en)

    def _route(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
               body: bytes) -> Response:
        store = self.service.store
        if path == "/api/sessions":
            _known_params(query, set())
            if method == "GET":
                now = self.service.now()
                return _json(200, [session_json(s) for s in store.sessions(since=now - GRACE)])
            return self._authorized(headers) or self._import(headers, body)
        match = _SESSION_PATH.match(path)
        if match:
            _known_params(query, set())
            session_id, confirm = match.groups()
            session = store.session(session_id)
            if session is None:
                return error(404, "not_found", f"không có phiên {session_id}",
                             f"no session {session_id}")
            if confirm:
                who = self.tokens.who(headers.get("Authorization"))
                if who is None:
                    return self._unauthorized()
                site = _fields(headers, body, {"site"}, {"site"})["site"]
                try:
                    self.service.confirm(session_id, site, who)
                except ValueError as err:
                    return error(422, "unprocessable", "không xác nhận được", str(err))
                self.service.tick()
                return _json(201, {"session": session_id, "site": site, "by": who})
            if method == "GET":
                verdicts = self.service.verdicts(session)
                return _json(200, {**session_json(session),
                                   "verdicts": [verdict_json(v) for v in verdicts]})
            refusal = self._authorized(headers)
            if refusal:
                return refusal
            store.delete_session(session_id)
            self.service.tick()
            return _json(200, {"deleted": session_id})
        if path == "/api/tests":
            if method == "GET":
                _known_params(query, {"site", "session"})
                site = _one(query, "site")
                session = _one(query, "session")
                return _json(200, [test_json(t) for t in store.tests(site=site,
                                                                      session_id=session)])
            _known_params(query, set())
            who = self.tokens.who(headers.get("Authorization"))
            if who is None:
                return self._unauthorized()
            fields = _fields(headers, body, {"site", "session"}, {"site"})
            try:
                test_id = self.service.order_test(fields["site"], fields.get("session"), who)
            except ValueError as err:
                return error(422, "unprocessable", "không đặt được kiểm thử", str(err))
            return _json(202, {"test_id": test_id, "site": fields["site"]})
        match = _REPORT_PATH.match(path)
        assert match is not None  # allowed_methods knows no other path
        _known_params(query, {"lang"})
        lang = _one(query, "lang") or "vi"
        if lang not in report_page.LANGS:
            raise BadRequest("lang phải là vi hoặc en", "lang must be vi or en", "bad_query")
        data = self.service.report(match.group(1))
        if data is None:
            return error(404, "not_found", "không có phiên này", "no such session")
        if match.group(2) == "html":
            return Response(200, report_page.render_html(data, lang).encode(),
                            report_page.HTML_CONTENT_TYPE,
                            {"Content-Security-Policy": report_page.CSP})
        name = report_page.file_name(data, "csv")
        return Response(200, report_page.render_csv(data, lang).encode(),
                        report_page.CSV_CONTENT_TYPE,
                        {"Content-Disposition": f'attachment; filename="{name}"'})

    def _import(self, headers: Any, body: bytes) -> Response:
        media = _media_type(headers, tuple(SCHEDULE_TYPES),
                            ("gửi lịch với Content-Type: application/yaml hoặc text/calendar",
                             "send a schedule as application/yaml or text/calendar"))
        _utf8(body)
        kind = SCHEDULE_TYPES[media] or detect_kind("api", body)
        result = import_document(self.service.store, body, kind, self.service.known,
                                 source="api", now=self.service.now())
        if result.ok:
            self.service.tick()
            return _json(200, result.as_dict())
        errors = sum(i.severity == "error" for i in result.issues)
        response = _json(422, {"error": f"schedule refused, nothing stored: {errors} error(s), "
                                        "see issues",
                               "loi": f"lịch bị từ chối, không lưu gì: {errors} lỗi, xem issues",
                               **result.as_dict()})
        response.reason = "bad_schedule"
        return response

    def _authorized(self, headers: Any) -> Response | None:
        """None when the request carries a valid token, else the 401 to send."""
        if self.tokens.who(headers.get("Authorization")) is None:
            return self._unauthorized()
        return None

    @staticmethod
    def _unauthorized() -> Response:
        return error(401, "unauthorized", "cần mã truy cập hợp lệ",
                     "a valid bearer token is required",
                     **{"WWW-Authenticate": 'Bearer realm="bridgewatch"'})


class BadRequest(Exception):
    def __init__(self, vi: str, en: str, reason: str, status: int = 400) -> None:
        super().__init__(en)
        self.vi = vi
        self.en = en
        self.reason = reason
        self.status = status


def body_too_large() -> Response:
    return error(413, "body_too_large", f"thân yêu cầu quá lớn (tối đa {MAX_BODY_BYTES} byte)",
                 f"body too large (at most {MAX_BODY_BYTES} bytes)")


def _short(text: str) -> str:
    """A client's text quoted back in an error, cut short: errors stay small."""
    return repr(text[:40])


def _known_params(query: dict[str, list[str]], known: set[str]) -> None:
    unknown = sorted(set(query) - known)
    if unknown:
        raise BadRequest(f"tham số không hỗ trợ: {_short(unknown[0])}",
                         f"unknown query parameter {_short(unknown[0])}", "bad_query")


def _one(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    if values is None:
        return None
    if len(values) != 1 or not wire.is_slug(values[0]):
        raise BadRequest(f"tham số {key} không hợp lệ", f"bad {key} parameter", "bad_query")
    return values[0]


def _media_type(headers: Any, accepted: tuple[str, ...], hint: tuple[str, str]) -> str:
    """The request's media type if the route takes it (and its charset is UTF-8), else 415."""
    media, *params = (headers.get("Content-Type") or "").split(";")
    media = media.strip().lower()
    if media not in accepted:
        raise BadRequest(f"Content-Type {_short(media)} không nhận: {hint[0]}",
                         f"Content-Type {_short(media)} not accepted: {hint[1]}",
                         "bad_content_type", 415)
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip(' "').lower() not in _CHARSETS:
            raise BadRequest("chỉ nhận bảng mã UTF-8", "only the UTF-8 charset is accepted",
                             "bad_content_type", 415)
    return media


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadRequest(f"thân yêu cầu không phải UTF-8 (byte {err.start})",
                         f"body is not UTF-8 (byte {err.start})", "bad_encoding") from None


def _fields(headers: Any, body: bytes, known: set[str], required: set[str]) -> dict[str, str]:
    """A small JSON object of slug strings, exactly as the route expects it."""
    _media_type(headers, (JSON_TYPE,), ("dùng application/json", "use application/json"))
    text = _utf8(body)
    try:
        data = json.loads(text or "null")
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
        raise BadRequest("thân yêu cầu không phải JSON", "body is not JSON", "bad_json") from None
    if not isinstance(data, dict):
        raise BadRequest("cần một đối tượng JSON", "expected a JSON object", "bad_json")
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadRequest(f"trường không hỗ trợ: {_short(unknown[0])}",
                         f"unknown field {_short(unknown[0])}", "unknown_field")
    missing = sorted(required - set(data))
    if missing:
        raise BadRequest(f"thiếu trường {missing[0]}", f"missing field {missing[0]!r}",
                         "missing_field")
    for key, value in data.items():
        if value is not None and not wire.is_slug(value):
            raise BadRequest(f"{key} không hợp lệ", f"{key} must be an id (a slug)", "bad_value")
    return {k: v for k, v in data.items() if v is not None}
