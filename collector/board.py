"""The built-in readiness board (bảng sẵn sàng điểm cầu): ``GET /board``, one page.

For a province without Grafana, for the NOC's wall screen, a technician's phone and the
demo: every session not yet over (by start), its bridges x checkpoints with each verdict
as a word, a mark and a colour (never colour alone: a wall seen from across the room, a
grey-scale phone, a colour-blind technician), the failing criteria named under a failed
or missed cell, the time left to the next deadline, whether each bridge is up right now,
and links to the biên bản and the runbook. Vietnamese by default, ``?lang=en`` English.

It is the biên bản's kind of page (``collector.report``): one self-contained document,
its own stylesheet allowed by hash and nothing else (no script, no request, no form),
every value from outside HTML-escaped, and the report's state words, marks, checkpoint
labels and criterion labels, so a state reads the same on the wall and on paper. With
no script allowed, it refreshes itself: ``<meta http-equiv="refresh" content="30">``.

The verdicts are the readiness service's snapshot, drawn at each tick, the one
``/metrics`` reads: the board and the alerts agree, and the time in the header is when
the verdicts were drawn. A snapshot older than a few ticks is flagged on the page (the
readiness thread may have stopped) rather than shown as current. A wall screen and a
room of phones poll the page, so it is rendered again only when what it shows changed
(another snapshot, a bridge going up or down, the snapshot going stale), and then at
most once every ``MIN_INTERVAL`` seconds; every other request gets the same bytes.

A collector without ``readiness:`` answers **404** with a page saying so in Vietnamese
and English: there is no board on it, and a probe or a person can tell that from a
board with no session (200). That page refreshes too, so a wall screen left on it shows
the board once the collector is configured and restarted. A ``lang`` other than ``vi``
or ``en`` is a 400 page.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qs
from weakref import WeakKeyDictionary

from agent.durations import spoken

from .api import Api, Response
from .htmlpage import csp_for
from .htmlpage import escape as _e
from .htmlpage import pick as _pick
from .inventory import Site
from .readiness import engine
from .readiness.metrics import ReadinessSnapshot
from .readiness.model import VIETNAM, CheckpointSpec, Session, Verdict
from .readiness.service import HORIZON, ReadinessService
from .report import (
    HTML_CONTENT_TYPE,
    LANGS,
    STATE_LABELS,
    STATE_MARK,
    checkpoint_labels,
    criterion_label,
    format_time,
    offset_label,
)

REFRESH_SECONDS = 30  # the page reloads itself this often (meta refresh: no script)
MIN_INTERVAL = 2.0  # seconds: at most one rendering per language this often
STALE_TICKS = 3  # a snapshot older than this many ticks (and the refresh) is flagged

# Every fixed text as (Vietnamese, English); ``{...}`` are filled in with str.format.
_T: dict[str, tuple[str, str]] = {
    "title": ("Bảng sẵn sàng điểm cầu", "Bridge readiness board"),
    "drawn": ("Cập nhật lúc {when} (giờ Việt Nam)", "Updated at {when} (Vietnam time)"),
    "refresh": ("tự làm mới sau mỗi {n} giây", "refreshes every {n} s"),
    "runbook": ("Sổ tay xử lý cảnh báo", "Alert runbook"),
    "other_lang": ("English", "Tiếng Việt"),
    "stale": ("Dữ liệu chưa được cập nhật từ {when}: tiến trình đánh giá sẵn sàng của máy chủ "
              "thu thập có thể đã dừng. Hãy báo quản trị hệ thống.",
              "Not updated since {when}: the collector's readiness process may have "
              "stopped. Tell the system administrator."),
    "none": ("Không có phiên tiếp công dân nào sắp diễn ra trong {days} ngày tới.",
             "No citizen reception session in the next {days} days."),
    "starts": ("Bắt đầu {when} (thời lượng {duration})", "Starts {when} (duration {duration})"),
    "live": ("Đang diễn ra, kết thúc lúc {end}", "In progress, ends at {end}"),
    "host": ("Điểm cầu chủ trì", "Host bridge"),
    "session_id": ("Mã phiên", "Session id"),
    "bridge": ("Điểm cầu", "Bridge"),
    "up": ("Trực tuyến", "Online"),
    "down": ("Mất kết nối", "Offline"),
    "unwatched": ("Không theo dõi tại đây", "Not monitored here"),
    "online": ("{up}/{total} điểm cầu đang trực tuyến", "{up}/{total} bridges online"),
    "passed": ("{n}/{total} điểm cầu đã đạt mốc {what}",
               "{n}/{total} bridges passed the {what} checkpoint"),
    "next": ("Mốc tiếp theo: {label}, hạn {when}, {left}",
             "Next checkpoint: {label}, due {when}, {left}"),
    "left": ("còn {time}", "{time} left"),
    "due": ("hạn {when}", "due {when}"),
    "report": ("Biên bản kiểm thử", "Test record"),
    "no_test": ("không có kết quả kiểm thử", "no test result"),
    "not_confirmed": ("chưa xác nhận tham dự", "not confirmed"),
    "not_evaluated": ("Chưa đánh giá", "Not evaluated"),
    "legend": ("Chú giải", "Key"),
}
# The bridge's link to this collector right now: a mark beside the word, like the states.
_CONN_MARK = {"up": "●", "down": "✕", "unwatched": "—"}

_CSS = """
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%;
  font-size: clamp(15px, 0.55vw + 10px, 24px); }
body { margin: 0; background: #eef1f4; color: #111; line-height: 1.4;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans",
  Arial, sans-serif; }
header.top { background: #1f4e79; color: #fff; padding: 0.6rem 1rem; }
header.top h1 { font-size: 1.5rem; line-height: 1.25; margin: 0; overflow-wrap: anywhere; }
header.top p { margin: 0.25rem 0 0; font-size: 0.9rem; }
header.top a { color: #fff; }
.stale { margin: 0; padding: 0.6rem 1rem; background: #8b0000; color: #fff; font-weight: 700; }
main { max-width: 140rem; margin: 0 auto; padding: 0.75rem 1rem 2rem; }
.legend { margin: 0 0 0.75rem; font-size: 0.9rem; }
.legend span { display: inline-block; margin: 0.15rem 0.6rem 0.15rem 0; padding: 0 0.4rem;
  border-radius: 3px; }
.empty { font-size: 1.2rem; padding: 1rem; background: #fff; border-radius: 6px; }
section.session { background: #fff; border: 1px solid #c5ced8; border-radius: 6px;
  padding: 0.6rem 0.8rem 0.4rem; margin: 0 0 1rem; }
h2 { font-size: 1.3rem; line-height: 1.25; margin: 0 0 0.3rem; overflow-wrap: anywhere; }
.meta, .summary, .links { margin: 0.2rem 0; overflow-wrap: anywhere; }
.meta .sid, .sid { color: #444; font-size: 0.85em; }
.live { font-weight: 700; color: #8b0000; }
.summary { font-weight: 700; font-size: 1.1rem; }
.summary .counts { font-weight: normal; font-size: 0.9rem; }
.nextcp { display: block; font-weight: normal; font-size: 0.95rem; }
table { width: 100%; border-collapse: collapse; margin: 0.5rem 0; }
th, td { border: 1px solid #b8c2cc; padding: 0.35rem 0.5rem; text-align: left;
  vertical-align: top; }
thead th { background: #e3eaf1; font-size: 0.9rem; }
thead th.next { background: #ffe89a; }
.due, .left { display: block; font-weight: normal; font-size: 0.85em; }
.left { font-weight: 700; }
th.site { font-weight: normal; background: #fafbfc; min-width: 12rem; }
.name { display: block; font-weight: 700; overflow-wrap: anywhere; }
.conn { display: inline-block; margin-top: 0.15rem; padding: 0 0.45rem; border-radius: 1rem;
  font-size: 0.85em; font-weight: 700; white-space: nowrap; }
.conn-up { background: #d7f0dc; color: #0b4d1a; }
.conn-down { background: #8b0000; color: #fff; }
.conn-unwatched { background: #e2e2e2; color: #333; }
td.state { font-weight: 700; }
.state-passed { background: #d7f0dc; color: #0b4d1a; }
.state-failed { background: #f8d3d2; color: #7a0c10; }
.state-missed { background: #8b0000; color: #fff; }
.state-pending { background: #fff1c2; color: #4d3a00; }
.state-none { background: #f2f2f2; color: #444; font-weight: normal; }
.mark { font-size: 1.15em; }
.failing { display: block; font-weight: normal; font-size: 0.85em; overflow-wrap: anywhere; }
.links a { margin-right: 1rem; }
@media (max-width: 40rem) {
  header.top h1 { font-size: 1.3rem; }
  main { padding: 0.5rem 0.5rem 2rem; }
  section.session { padding: 0.5rem; }
  table, tbody, tr, th, td { display: block; width: 100%; }
  thead { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
    white-space: nowrap; }
  table { border: 0; }
  tr { margin: 0 0 0.6rem; border: 1px solid #b8c2cc; border-radius: 4px; }
  th, td { border: 0; border-top: 1px solid #d5dce3; }
  th.site { min-width: 0; border-top: 0; }
  td::before { content: attr(data-label); display: block; font-weight: normal;
    font-size: 0.8em; }
}
""".strip()

CSP = csp_for(_CSS)
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Cache-Control": "no-cache"}


def _w(key: str, lang: str, **values: object) -> str:
    """A fixed text in ``lang``, its ``{...}`` filled (values are escaped by the caller)."""
    text = _pick(_T[key], lang)
    return text.format(**values) if values else text


def _clock(when: datetime, lang: str) -> str:
    """``04:40:05 ngày 05/12/2026``: the report's way, to the second (when it was drawn)."""
    local = when.astimezone(VIETNAM)
    return f"{local:%H:%M:%S} {'on' if lang == 'en' else 'ngày'} {local:%d/%m/%Y}"


def _short(when: datetime) -> str:
    """``06:00 05/12``: a deadline in a column head, where space is short."""
    local = when.astimezone(VIETNAM)
    return f"{local:%H:%M %d/%m}"


def checkpoint_phrase(spec: CheckpointSpec, labels: Mapping[str, tuple[str, str]],
                      lang: str = "vi") -> str:
    """A checkpoint inside a sentence, as the regulations name it: ``kiểm thử trước 02 giờ``
    (``trước 01 ngày`` for T-24 h); other kinds by their label, lower-cased."""
    before = -int(spec.offset.total_seconds())
    if spec.kind == "test" and before > 0:
        if lang == "en":
            return f"{offset_label(spec.offset, 'en')} test"
        if before % 86400 == 0:
            return f"kiểm thử trước {before // 86400:02d} ngày"
        if before % 3600 == 0:
            return f"kiểm thử trước {before // 3600:02d} giờ"
        return f"kiểm thử trước {spoken(before, 'vi')}"
    label = _pick(labels[spec.name], lang)
    return label[:1].lower() + label[1:]


# --- the page ------------------------------------------------------------------------------

@dataclass(frozen=True)
class BoardView:
    """What one rendering shows, gathered at one moment by :class:`Board`."""

    snapshot: ReadinessSnapshot
    sites: Mapping[str, Site]  # every bridge the province knows (names, provinces)
    provinces: Mapping[str, str]  # slug -> Vietnamese name
    online: Mapping[str, bool]  # the bridges this collector watches: up or not
    stale: bool = False  # the snapshot is older than it should be
    horizon: timedelta = HORIZON  # how far ahead the snapshot holds sessions


def _document(lang: str, title: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="color-scheme" content="light">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n").encode()


def _province_names(view: BoardView) -> list[str]:
    """The provinces whose bridges this collector serves: not the national bridges' one."""
    local = {s.province for s in view.sites.values() if s.level != "national"}
    names = [name for slug, name in view.provinces.items() if slug in local]
    return names or list(view.provinces.values())


def _site_name(view: BoardView, site_id: str) -> str:
    site = view.sites.get(site_id)
    return site.name if site else site_id


def _conn_badge(view: BoardView, site_id: str, lang: str) -> str:
    """Up, down, or not watched by this collector (another shard's bridge)."""
    up = view.online.get(site_id)
    key = "unwatched" if up is None else "up" if up else "down"
    return (f'<span class="conn conn-{key}" data-conn="{key}">'
            f"{_CONN_MARK[key]} {_e(_w(key, lang))}</span>")


def _cell(verdict: Verdict | None, spec: CheckpointSpec, label: str, lang: str) -> str:
    """One verdict: mark and word (and colour), the failing criteria under it."""
    attrs = f'data-checkpoint="{_e(spec.name)}" data-label="{_e(label)}"'
    if verdict is None:  # a bridge another shard judges, or a snapshot without it
        return (f'<td class="state state-none" data-state="none" {attrs}>'
                f"— {_e(_w('not_evaluated', lang))}</td>")
    state = verdict.state
    note = ""
    if state in ("failed", "missed"):
        if verdict.failing:
            note = ", ".join(criterion_label(n, lang) for n in dict.fromkeys(verdict.failing))
        else:
            note = _w("not_confirmed" if spec.kind == "confirm" else "no_test", lang)
    word = _pick(STATE_LABELS.get(state, (state, state)), lang)
    return (f'<td class="state state-{_e(state)}" data-state="{_e(state)}" {attrs}>'
            f'<span class="mark">{_e(STATE_MARK.get(state, ""))}</span> {_e(word)}'
            + (f'<span class="failing">{_e(note)}</span>' if note else "") + "</td>")


def _session(view: BoardView, session: Session,
             verdicts: Mapping[tuple[str, str, str], Verdict], lang: str) -> str:
    snap = view.snapshot
    now = snap.now
    checkpoints = list(snap.checkpoints)
    labels = checkpoint_labels(checkpoints)
    bridges = engine.unique_bridges(session)
    upcoming = engine.next_deadline(session, checkpoints, now)
    next_name = upcoming[0].name if upcoming else None

    # The summary is about the next checkpoint, or, once all are due, the last one.
    focus = upcoming[0] if upcoming else max(
        checkpoints, key=lambda c: c.deadline(session), default=None)
    summary = ""
    if focus is not None:
        states = [v.state if (v := verdicts.get((session.id, b, focus.name))) else "none"
                  for b in bridges]
        passed = states.count("passed")
        counts = " · ".join(
            f"{STATE_MARK[s]} {n} {_pick(STATE_LABELS[s], lang)}"
            for s in ("failed", "missed", "pending") if (n := states.count(s)))
        summary = (
            f'<p class="summary" data-checkpoint="{_e(focus.name)}">'
            + _e(_w("passed", lang, n=passed, total=len(bridges),
                    what=checkpoint_phrase(focus, labels, lang)))
            + (f' <span class="counts">({_e(counts)})</span>' if counts else ""))
        if upcoming is not None:
            spec, deadline = upcoming
            left = _w("left", lang, time=spoken((deadline - now).total_seconds(), lang))
            summary += ('<span class="nextcp">' + _e(_w(
                "next", lang, label=_pick(labels[spec.name], lang),
                when=format_time(deadline, lang), left=left)) + "</span>")
        summary += "</p>"

    up = sum(1 for b in bridges if view.online.get(b))
    meta = [_w("starts", lang, when=format_time(session.start, lang),
               duration=spoken(session.duration.total_seconds(), lang)),
            f"{_w('host', lang)}: {_site_name(view, session.host)}",
            _w("online", lang, up=up, total=len(bridges))]
    live = ""
    if session.start <= now:
        live = (f' <span class="live">'
                f"{_e(_w('live', lang, end=format_time(session.end, lang)))}</span>")

    heads = []
    for spec in checkpoints:
        is_next = spec.name == next_name
        left = ""
        if is_next and upcoming is not None:
            left = ('<span class="left">' + _e(_w(
                "left", lang, time=spoken((upcoming[1] - now).total_seconds(), lang)))
                + "</span>")
        heads.append(
            f'<th scope="col" data-checkpoint="{_e(spec.name)}"'
            + (' class="next"' if is_next else "") + f">{_e(_pick(labels[spec.name], lang))}"
            f'<span class="due">{_e(_w("due", lang, when=_short(spec.deadline(session))))}'
            f"</span>{left}</th>")
    rows = []
    for site_id in bridges:
        cells = "".join(_cell(verdicts.get((session.id, site_id, spec.name)), spec,
                              _pick(labels[spec.name], lang), lang) for spec in checkpoints)
        rows.append(
            f'<tr data-site="{_e(site_id)}"><th scope="row" class="site">'
            f'<span class="name">{_e(_site_name(view, site_id))}</span>'
            f'<span class="sid">{_e(site_id)}</span> {_conn_badge(view, site_id, lang)}'
            f"</th>{cells}</tr>")

    report = f"/report/{session.id}.html" + ("?lang=en" if lang == "en" else "")
    return (
        f'<section class="session" data-session="{_e(session.id)}">'
        f"<h2>{_e(session.title)}</h2>"
        f'<p class="meta">{" · ".join(_e(m) for m in meta)}{live}'
        f' · <span class="sid">{_e(_w("session_id", lang))}: {_e(session.id)}</span></p>'
        f"{summary}"
        f'<table><thead><tr><th scope="col">{_e(_w("bridge", lang))}</th>{"".join(heads)}'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f'<p class="links"><a href="{_e(report)}">{_e(_w("report", lang))}</a></p>'
        "</section>")


def render_board(view: BoardView, lang: str = "vi") -> bytes:
    """The whole page for one snapshot (pure: the same view gives the same bytes)."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}, not {lang!r}")
    snap = view.snapshot
    now = snap.now
    verdicts = {(v.session_id, v.site, v.checkpoint): v for v in snap.verdicts}
    sessions = sorted({s.id: s for s in snap.sessions if s.end > now}.values(),
                      key=lambda s: (s.start, s.id))
    title = f"{_w('title', lang)} — {', '.join(_province_names(view))}"
    other = "en" if lang == "vi" else "vi"
    header = (
        f'<header class="top"><h1>{_e(title)}</h1>'
        f'<p>{_e(_w("drawn", lang, when=_clock(now, lang)))} · '
        f"{_e(_w('refresh', lang, n=REFRESH_SECONDS))} · "
        f'<a href="/runbook">{_e(_w("runbook", lang))}</a> · '
        f'<a href="/board?lang={other}" lang="{other}">{_e(_w("other_lang", lang))}</a></p>'
        "</header>")
    stale = (f'<p class="stale" role="alert">{_e(_w("stale", lang, when=_clock(now, lang)))}'
             "</p>" if view.stale else "")
    legend = (f'<p class="legend">{_e(_w("legend", lang))}: ' + "".join(
        f'<span class="state-{s}">{STATE_MARK[s]} {_e(_pick(STATE_LABELS[s], lang))}</span>'
        for s in ("passed", "failed", "pending", "missed")) + "</p>")
    body = "".join(_session(view, s, verdicts, lang) for s in sessions) or (
        f'<p class="empty">{_e(_w("none", lang, days=view.horizon.days))}</p>')
    return _document(lang, title, f"{header}{stale}<main>{legend}{body}</main>")


NO_READINESS_HTML = _document(
    "vi", "Chưa cấu hình bảng sẵn sàng · Readiness board not configured",
    '<header class="top"><h1>Chưa có bảng sẵn sàng điểm cầu</h1></header><main>'
    '<p class="empty">Máy chủ thu thập (collector) này chưa được cấu hình phần đánh giá sẵn '
    "sàng (mục <code>readiness:</code> trong <code>collector.yaml</code>: lịch phiên tiếp "
    "công dân và cơ sở dữ liệu kiểm thử), nên không có phiên, mốc kiểm thử hay kết quả nào "
    "để hiển thị. Trang này tự làm mới; hãy báo NOC của Sở KH&amp;CN.</p>"
    '<p class="empty" lang="en">This collector has no readiness configured (no '
    "<code>readiness:</code> section in <code>collector.yaml</code>: the session schedule "
    "and the test database), so there are no sessions, checkpoints or verdicts to show. "
    "This page refreshes itself; please tell the province NOC (Department of Science "
    "&amp; Technology).</p></main>")
BAD_LANG_HTML = _document(
    "vi", "Ngôn ngữ không hợp lệ · Bad language",
    '<main><p class="empty">Tham số <code>lang</code> phải là <code>vi</code> hoặc '
    '<code>en</code>: <a href="/board">/board</a>, <a href="/board?lang=en">/board?lang=en</a>.'
    '</p><p class="empty" lang="en">The <code>lang</code> parameter must be <code>vi</code> '
    "or <code>en</code>.</p></main>")


# --- the cache -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Page:
    snapshot: ReadinessSnapshot
    up: frozenset[str]
    stale: bool
    at: float  # monotonic time of the rendering
    body: bytes


class Board:
    """The last rendering of one service's board per language; shared by request threads.

    It holds no reference to the service (it is the value of a weak map keyed by it).
    """

    def __init__(self, min_interval: float = MIN_INTERVAL,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.min_interval = min_interval
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._pages: dict[str, _Page] = {}
        self.renders = 0  # how many times a page was rendered (the cache at work)

    def page(self, service: ReadinessService, lang: str = "vi") -> bytes:
        """The page now: the cached bytes unless what they show changed and are old enough."""
        snap = service.snapshot()
        fleet = service.fleet.sites
        up = frozenset(sid for sid, site in fleet.items() if site.up)
        limit = max(STALE_TICKS * service.config.tick_seconds, REFRESH_SECONDS)
        stale = (service.now() - snap.now).total_seconds() > limit
        with self._lock:
            at = self.monotonic()
            cached = self._pages.get(lang)
            if cached is not None and (
                    (cached.snapshot is snap and cached.up == up and cached.stale == stale)
                    or at - cached.at < self.min_interval):
                return cached.body
            view = BoardView(snap, service.known.sites, service.known.provinces,
                             {sid: sid in up for sid in fleet}, stale)
            body = render_board(view, lang)
            self._pages[lang] = _Page(snap, up, stale, at, body)
            self.renders += 1
            return body


_BOARDS: WeakKeyDictionary[ReadinessService, Board] = WeakKeyDictionary()
_BOARDS_LOCK = threading.Lock()


def board_for(service: ReadinessService) -> Board:
    """The board (and its cache) of ``service``; one per service, made at first use."""
    with _BOARDS_LOCK:
        board = _BOARDS.get(service)
        if board is None:
            board = _BOARDS[service] = Board()
        return board


def _lang(query: str) -> str | None:
    values = parse_qs(query).get("lang", ["vi"])
    return values[0] if len(values) == 1 and values[0] in LANGS else None


def board_response(api: Api | None, query: str = "") -> Response:
    """``GET /board[?lang=en]``: the board; 404 without readiness; 400 for another lang."""
    lang = _lang(query)
    if lang is None:
        return Response(400, BAD_LANG_HTML, HTML_CONTENT_TYPE, dict(HEADERS))
    if api is None:
        return Response(404, NO_READINESS_HTML, HTML_CONTENT_TYPE, dict(HEADERS))
    body = board_for(api.service).page(api.service, lang)
    return Response(200, body, HTML_CONTENT_TYPE, dict(HEADERS))

