"""The session report (biên bản kiểm thử kỹ thuật): a printable HTML page and a CSV.

For one session: every bridge, every checkpoint, every test with its criteria. The
Citizen Reception Office and the Inspectorate sign it and send it upward, so the page is
a Vietnamese administrative record first: A4 print CSS, a page per bridge, a signature
block, and every state written out as text (a grey-scale copy loses nothing). It is one
self-contained document (inline CSS, no script, no external font or request) guarded by
a Content-Security-Policy that forbids everything but its own stylesheet, and every value
is HTML-escaped: session titles, site names and who asked for a test come from outside.

Criterion labels, units and advice come from ``agent.readiness.catalogue.CRITERIA`` so a
criterion reads the same here as in the checklist and the alerts.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from agent.durations import spoken
from agent.readiness.catalogue import CRITERIA
from agent.readiness.criteria import COMPARATORS
from agent.wire import Criterion
from collector.htmlpage import csp_for
from collector.htmlpage import escape as _e
from collector.htmlpage import pick as _pick
from collector.inventory import Site
from collector.readiness.model import (
    VIETNAM,
    CheckpointSpec,
    Confirmation,
    Session,
    TestRecord,
    Verdict,
)

LANGS = ("vi", "en")
HTML_CONTENT_TYPE = "text/html; charset=utf-8"
CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
MINUS, DASH = "\u2212", "\u2013"  # typographic minus (T-24 giờ) and en dash (time ranges)


@dataclass(frozen=True)
class ReportData:
    """Everything one report shows; the caller (CLI, HTTP route) gathers it from the store."""

    session: Session
    checkpoints: Sequence[CheckpointSpec]
    verdicts: Sequence[Verdict]
    tests: Sequence[TestRecord]  # of the session's bridges, in its windows (see select_tests)
    confirmations: Sequence[Confirmation]
    sites: Mapping[str, Site]  # the inventory's sites: Vietnamese names and levels
    generated_at: datetime  # aware
    provinces: Mapping[str, str] = field(default_factory=dict)  # slug -> name, for the header
    issuer: str = "SỞ KHOA HỌC VÀ CÔNG NGHỆ"  # the body that signs the record


# --- words ---------------------------------------------------------------------------------

# Every fixed text as (Vietnamese, English).
_T: dict[str, tuple[str, str]] = {
    "title": ("BIÊN BẢN KIỂM THỬ KỸ THUẬT", "TECHNICAL TEST RECORD"),
    "subtitle": ("Các điểm cầu phiên tiếp công dân trực tuyến",
                 "Bridges of an online citizen reception session"),
    "nation": ("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "SOCIALIST REPUBLIC OF VIETNAM"),
    "motto": ("Độc lập - Tự do - Hạnh phúc", "Independence - Freedom - Happiness"),
    "committee": ("UBND TỈNH", "PEOPLE'S COMMITTEE OF"),
    "session": ("Phiên tiếp công dân", "Session"),
    "session_id": ("Mã phiên", "Session id"),
    "time": ("Thời gian", "Time"),
    "duration": ("thời lượng", "duration"),
    "host": ("Điểm cầu chủ trì", "Host bridge"),
    "bridges": ("Số điểm cầu", "Bridges"),
    "generated": ("Lập lúc", "Generated at"),
    "tz_note": ("Mọi thời điểm theo giờ Việt Nam (UTC+7).",
                "All times are Vietnam time (UTC+7)."),
    "part_summary": ("I. TỔNG HỢP KẾT QUẢ", "I. SUMMARY"),
    "part_detail": ("II. CHI TIẾT THEO ĐIỂM CẦU", "II. DETAILS BY BRIDGE"),
    "part_conclusion": ("III. KẾT LUẬN", "III. CONCLUSION"),
    "no": ("STT", "No."),
    "bridge": ("Điểm cầu", "Bridge"),
    "level": ("Cấp", "Level"),
    "deadline": ("hạn", "due"),
    "summary_total": ("Số điểm cầu đạt", "Bridges passed"),
    "site_id": ("Mã điểm cầu", "Site id"),
    "confirmed": ("Xác nhận tham dự", "Confirmed"),
    "confirmed_by": ("bởi", "by"),
    "not_confirmed": ("Chưa xác nhận tham dự", "Not confirmed"),
    "checkpoints": ("Kết quả theo mốc", "Result by checkpoint"),
    "failing": ("Tiêu chí không đạt", "Failing criteria"),
    "tests": ("Các lần kiểm thử", "Tests"),
    "no_tests": ("Không có lần kiểm thử nào trong các khung thời gian của phiên.",
                 "No test inside the session's windows."),
    "test": ("Lần kiểm thử", "Test"),
    "trigger": ("Hình thức", "Trigger"),
    "requested_by": ("Người yêu cầu", "Requested by"),
    "result": ("Kết quả", "Result"),
    "for_checkpoint": ("Mốc", "Checkpoint"),
    "outside": ("ngoài các mốc", "outside the checkpoints"),
    "criterion": ("Tiêu chí", "Criterion"),
    "value": ("Giá trị đo", "Measured"),
    "limit": ("Ngưỡng", "Limit"),
    "advice": ("Khuyến nghị", "Advice"),
    "no_criteria": ("Không có tiêu chí nào được gửi về.", "No criteria were reported."),
    "not_measured": ("không đo được", "not measured"),
    "not_evaluated": ("Chưa đánh giá", "Not evaluated"),
    "all_ready": ("Tất cả điểm cầu đều đạt ở các mốc đã đánh giá.",
                  "Every bridge passed every checkpoint evaluated."),
    "not_ready": ("Điểm cầu chưa đạt", "Bridges not passed"),
    "other": ("Ý kiến khác", "Other remarks"),
    "sign_issuer": ("ĐẠI DIỆN SỞ KH&CN", "FOR THE DEPT. OF SCIENCE & TECHNOLOGY"),
    "sign_tech": ("KỸ THUẬT VIÊN", "TECHNICIAN"),
    "sign_hint": ("(Ký, ghi rõ họ tên)", "(Signature and full name)"),
    "footer": ("Biên bản do hệ thống BridgeWatch lập tự động",
               "Generated by BridgeWatch"),
    "yes": ("Có", "Yes"),
    "no_bool": ("Không", "No"),
    "at": ("ngày", "on"),
}

STATE_LABELS: dict[str, tuple[str, str]] = {
    "passed": ("Đạt", "Passed"),
    "failed": ("Không đạt", "Failed"),
    "pending": ("Chờ kiểm thử", "Pending"),
    "missed": ("Quá hạn", "Missed"),
}
# A mark beside the word, so the state also reads at a glance on a black-and-white copy.
STATE_MARK = {"passed": "✓", "failed": "✗", "pending": "○", "missed": "⊘"}

TRIGGER_LABELS: dict[str, tuple[str, str]] = {
    "schedule": ("theo lịch", "scheduled"),
    "retry": ("thử lại", "retry"),
    "noc": ("NOC yêu cầu", "NOC request"),
    "technician": ("kỹ thuật viên tại chỗ", "on-site technician"),
}

LEVEL_LABELS: dict[str, tuple[str, str]] = {
    "central": ("Điểm cầu trung tâm", "Central bridge"),
    "member": ("Điểm cầu địa phương", "Member bridge"),
    "national": ("Điểm cầu Trung ương", "National bridge"),
}

_KIND_LABELS: dict[str, tuple[str, str]] = {
    "confirm": ("Xác nhận tham dự", "Confirmation"),
    "test": ("Kiểm thử", "Test"),
    "start": ("Bắt đầu phiên", "Session start"),
}

# How the agent compares each value with its limit (agent.readiness.criteria.COMPARATORS),
# as the sign printed before the limit; "=" (yes-or-no) prints the expected answer alone.
_LIMIT_SIGNS = {"<=": "≤ ", "<": "< ", ">=": "≥ ", "|<=|": "±", "=": ""}


def _w(key: str, lang: str) -> str:
    vi, en = _T[key]
    return en if lang == "en" else vi


def _bi(pair: tuple[str, str], lang: str) -> str:
    """Escaped label; in Vietnamese with the English beneath it in a smaller line."""
    if lang == "en":
        return _e(pair[1])
    return f'{_e(pair[0])}<span class="en" lang="en">{_e(pair[1])}</span>'


# --- formatting ----------------------------------------------------------------------------

def format_time(when: datetime, lang: str = "vi") -> str:
    """Vietnam time as a record writes it: ``08:00 ngày 05/12/2026``."""
    local = when.astimezone(VIETNAM)
    return f"{local:%H:%M} {_w('at', lang)} {local:%d/%m/%Y}"


def _number(x: float, digits: int, lang: str) -> str:
    text = f"{x:.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text.replace(".", ",") if lang == "vi" else text


def format_value(value: float | None, unit: str, lang: str = "vi", scale: float | None = None,
                 ) -> str:
    """A measured value or a limit in the unit people read: ms, %, Mbit/s, phút/giờ.

    ``scale`` (the criterion's limit) picks the unit for both value and limit of one
    criterion, so "200 ms" is compared with "150 ms", not with "0,15 s".
    """
    if value is None:
        return _w("not_measured", lang)
    ref = abs(scale if scale is not None else value)
    if unit == "s":
        if ref >= 60:
            return spoken(value, lang)
        if ref < 1:
            ms = value * 1000
            return f"{_number(ms, 1 if abs(ms) < 10 else 0, lang)} ms"
        return f"{_number(value, 2, lang)} s"
    if unit == "ratio":
        pct = value * 100
        return f"{_number(pct, 2 if abs(pct) < 1 else 1, lang)}%"
    if unit == "bit/s":
        if ref >= 1e6 or abs(value) >= 1e6:
            return f"{_number(value / 1e6, 1, lang)} Mbit/s"
        return f"{_number(value / 1e3, 0, lang)} kbit/s"
    if unit == "count":
        return _number(value, 0, lang)
    if unit == "mos":
        return _number(value, 2, lang)
    if unit == "bool":
        return _w("yes" if value else "no_bool", lang)
    return f"{_number(value, 3, lang)} {unit}".rstrip()


def format_limit(criterion: Criterion, lang: str = "vi") -> str:
    """The limit with the agent's comparison (``≥ 5 Mbit/s``, ``< 1%``, ``±500 ms``)."""
    if criterion.limit is None:
        return ""
    text = format_value(criterion.limit, criterion.unit, lang, scale=criterion.limit)
    if criterion.unit == "bool":
        return text
    return _LIMIT_SIGNS.get(COMPARATORS.get(criterion.name, ""), "") + text


def criterion_label(name: str, lang: str = "vi") -> str:
    info = CRITERIA.get(name)
    if info is None:
        return name
    return info.en if lang == "en" else info.vi


def criterion_advice(name: str, lang: str = "vi") -> str:
    info = CRITERIA.get(name)
    if info is None:
        return ""
    return info.advice_en if lang == "en" else info.advice_vi


def offset_label(offset: timedelta, lang: str) -> str:
    """``T-24 giờ``, ``T-3 ngày``, ``T`` (with a real minus sign): where the checkpoint is."""
    seconds = int(offset.total_seconds())
    if seconds == 0:
        return "T"
    sign = MINUS if seconds < 0 else "+"
    seconds = abs(seconds)
    day, hour = ("d", "h") if lang == "en" else ("ngày", "giờ")
    if seconds % 86400 == 0 and seconds >= 2 * 86400:
        return f"T{sign}{seconds // 86400} {day}"
    if seconds % 3600 == 0:
        return f"T{sign}{seconds // 3600} {hour}"
    return f"T{sign}{round(seconds / 60)} {'min' if lang == 'en' else 'phút'}"


def checkpoint_labels(checkpoints: Sequence[CheckpointSpec]) -> dict[str, tuple[str, str]]:
    """Name -> (vi, en) label: "Kiểm thử lần 2 (T-2 giờ)"; tests numbered in order."""
    labels: dict[str, tuple[str, str]] = {}
    n_tests = sum(1 for c in checkpoints if c.kind == "test")
    test_no = 0
    for spec in checkpoints:
        vi, en = _KIND_LABELS.get(spec.kind, (spec.name, spec.name))
        if spec.kind == "test" and n_tests > 1:
            test_no += 1
            vi, en = f"{vi} lần {test_no}", f"{en} {test_no}"
        labels[spec.name] = (f"{vi} ({offset_label(spec.offset, 'vi')})",
                             f"{en} ({offset_label(spec.offset, 'en')})")
    return labels


# --- grouping ------------------------------------------------------------------------------

def select_tests(session: Session, checkpoints: Sequence[CheckpointSpec],
                 tests: Iterable[TestRecord]) -> list[TestRecord]:
    """The tests a report shows: of the session's bridges, ordered for it or in a window."""
    bridges = set(session.bridges)
    windows = [(c.window_start(session), c.deadline(session)) for c in checkpoints
               if c.window > timedelta(0)]
    chosen = [t for t in tests if t.site in bridges and (
        t.session_id == session.id or any(lo <= t.finished <= hi for lo, hi in windows))]
    return sorted(chosen, key=lambda t: (t.finished, t.test_id))


def assign_checkpoints(report: ReportData) -> dict[str, str | None]:
    """test_id -> the checkpoint it counts for (None: outside every window).

    The verdict that rests on a test says it first; then a test ordered for a checkpoint
    (test id ``<session>/<checkpoint>/<nonce>``); then the first window holding it.
    """
    session = report.session
    names = {c.name for c in report.checkpoints}
    by_verdict = {(v.site, v.test_id): v.checkpoint for v in report.verdicts
                  if v.test_id and v.session_id == session.id}
    out: dict[str, str | None] = {}
    for test in report.tests:
        checkpoint = by_verdict.get((test.site, test.test_id))
        if checkpoint is None:
            parts = test.test_id.split("/")
            if len(parts) == 3 and parts[0] == session.id and parts[1] in names:
                checkpoint = parts[1]
        if checkpoint is None:
            for spec in report.checkpoints:
                if (spec.window > timedelta(0)
                        and spec.window_start(session) <= test.finished <= spec.deadline(session)):
                    checkpoint = spec.name
                    break
        out[test.test_id] = checkpoint
    return out


def _bridges(report: ReportData) -> list[str]:
    seen: dict[str, None] = {}
    for site in report.session.bridges:
        seen.setdefault(site, None)
    return list(seen)


def _site_name(report: ReportData, site_id: str) -> str:
    site = report.sites.get(site_id)
    return site.name if site else site_id


def _site_level(report: ReportData, site_id: str) -> str:
    site = report.sites.get(site_id)
    if site is not None:
        return site.level
    session = report.session
    if site_id == session.host:
        return "central"
    return "national" if site_id in session.national else "member"


# --- HTML ----------------------------------------------------------------------------------

_CSS = """
@page { size: A4; margin: 20mm 15mm 20mm 25mm; }
* { box-sizing: border-box; }
html { background: #fff; color: #000; }
body { font-family: "Times New Roman", "Liberation Serif", "DejaVu Serif", serif;
  font-size: 12pt; line-height: 1.35; margin: 0; }
.sheet { max-width: 210mm; margin: 0 auto; padding: 12mm 12mm 16mm 18mm; }
.en { display: block; font-size: 0.78em; font-style: italic; color: #333; }
.head { display: flex; justify-content: space-between; text-align: center; gap: 6mm;
  font-size: 11.5pt; }
.head .issuer { flex: 1; }
.head .nation { flex: 1.5; }
.head b, .head i { display: block; }
.head .nation b:first-child { white-space: nowrap; }
.head .motto { text-decoration: underline; }
h1 { text-align: center; font-size: 16pt; margin: 8mm 0 1mm; letter-spacing: 0.02em; }
.subtitle { text-align: center; margin: 0 0 5mm; font-style: italic; }
h2 { font-size: 13pt; margin: 6mm 0 2mm; }
h3 { font-size: 12.5pt; margin: 0 0 2mm; }
h4 { font-size: 12pt; margin: 4mm 0 1mm; }
table { width: 100%; border-collapse: collapse; margin: 1mm 0 3mm; }
th, td { border: 1px solid #000; padding: 1mm 1.5mm; vertical-align: top; text-align: left; }
th { background: #eee; font-weight: bold; }
thead { display: table-header-group; }
tr { break-inside: avoid; page-break-inside: avoid; }
table.info th { width: 30%; background: none; }
td.num, th.num { text-align: center; width: 9mm; }
.state { font-weight: bold; }
.state .failing { font-weight: normal; }
table.summary td.name { width: 34%; }
table.criteria { table-layout: fixed; }
table.criteria th:nth-child(1) { width: 7%; }
table.criteria th:nth-child(2) { width: 25%; }
table.criteria th:nth-child(3) { width: 13%; }
table.criteria th:nth-child(4) { width: 17%; }
table.criteria th:nth-child(5) { width: 15%; }
.state-passed { background: #e3f4e3; }
.state-failed, .state-missed { background: #fbe1e1; }
.state-pending { background: #fff6d6; }
.small { font-size: 0.85em; }
.muted { color: #333; }
section.bridge { break-before: page; page-break-before: always; }
.test { break-inside: avoid; page-break-inside: avoid; }
.conclusion { break-before: page; page-break-before: always; }
.lines { border-bottom: 1px dotted #000; height: 7mm; }
.signatures { display: flex; justify-content: space-around; text-align: center;
  margin-top: 8mm; break-inside: avoid; page-break-inside: avoid; }
.signatures div { width: 45%; min-height: 40mm; }
.signatures b { display: block; }
footer { margin-top: 8mm; font-size: 0.8em; color: #333; text-align: center; }
@media print {
  .sheet { max-width: none; padding: 0; }
  .state-passed, .state-failed, .state-missed, .state-pending, th { background: none; }
}
""".strip()

CSP = csp_for(_CSS)


def _state_cell(verdict: Verdict | None, lang: str, with_failing: bool = True) -> str:
    if verdict is None:
        return f'<td class="state">— {_bi(_T["not_evaluated"], lang)}</td>'
    state = verdict.state
    pair = STATE_LABELS.get(state, (state, state))
    mark = STATE_MARK.get(state, "")
    failing = ""
    if with_failing and verdict.failing:
        names = ", ".join(criterion_label(n, lang) for n in verdict.failing)
        failing = f'<div class="small failing">{_e(names)}</div>'
    return (f'<td class="state state-{_e(state)}" data-state="{_e(state)}">'
            f"{_e(mark)} {_bi(pair, lang)}{failing}</td>")


def _criteria_table(test: TestRecord, lang: str) -> str:
    if not test.criteria:
        return f'<p class="muted">{_e(_w("no_criteria", lang))}</p>'
    head = "".join(f"<th>{_e(_w(k, lang))}</th>"
                   for k in ("criterion", "value", "limit", "result", "advice"))
    rows = []
    for i, c in enumerate(test.criteria, 1):
        state = "passed" if c.ok else "failed"
        mark = "✓" if c.ok else "✗"
        advice = "" if c.ok else criterion_advice(c.name, lang)
        rows.append(
            f'<tr data-criterion="{_e(c.name)}" data-ok="{str(c.ok).lower()}">'
            f'<td class="num">{i}</td><td>{_e(criterion_label(c.name, lang))}</td>'
            f"<td>{_e(format_value(c.value, c.unit, lang, scale=c.limit))}</td>"
            f"<td>{_e(format_limit(c, lang))}</td>"
            f'<td class="state state-{state}">{mark} {_e(_pick(STATE_LABELS[state], lang))}</td>'
            f"<td>{_e(advice)}</td></tr>")
    return (f'<table class="criteria"><thead><tr><th class="num">{_e(_w("no", lang))}</th>'
            f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _test_block(report: ReportData, test: TestRecord, checkpoint: str | None,
                labels: Mapping[str, tuple[str, str]], lang: str) -> str:
    state = "passed" if test.passed else "failed"
    trigger = _pick(TRIGGER_LABELS.get(test.trigger, (test.trigger, test.trigger)), lang)
    where = (_pick(labels[checkpoint], lang) if checkpoint in labels
             else _w("outside", lang))
    return (
        f'<div class="test" data-test-id="{_e(test.test_id)}">'
        f"<h4>{_e(_w('test', lang))}: {_e(format_time(test.finished, lang))}"
        f" — {_e(STATE_MARK[state])} {_e(_pick(STATE_LABELS[state], lang))}</h4>"
        f'<p class="small">{_e(_w("for_checkpoint", lang))}: {_e(where)}; '
        f"{_e(_w('trigger', lang))}: {_e(trigger)}; "
        f"{_e(_w('requested_by', lang))}: {_e(test.requested_by)}; "
        f"<span class=\"muted\">{_e(test.test_id)}</span></p>"
        f"{_criteria_table(test, lang)}</div>")


def _bridge_section(report: ReportData, index: int, site_id: str,
                    verdicts: Mapping[tuple[str, str], Verdict],
                    tests: Sequence[TestRecord], assigned: Mapping[str, str | None],
                    labels: Mapping[str, tuple[str, str]], lang: str) -> str:
    level = _site_level(report, site_id)
    level_label = _pick(LEVEL_LABELS.get(level, (level, level)), lang)
    confirmations = [c for c in report.confirmations
                     if c.site == site_id and c.session_id == report.session.id]
    if confirmations:
        first = min(confirmations, key=lambda c: c.at)
        confirm = (f"{_e(_w('confirmed', lang))}: {_e(format_time(first.at, lang))}, "
                   f"{_e(_w('confirmed_by', lang))} {_e(first.by)}")
    else:
        confirm = _e(_w("not_confirmed", lang))
    rows = []
    for spec in report.checkpoints:
        verdict = verdicts.get((site_id, spec.name))
        deadline = verdict.deadline if verdict else spec.deadline(report.session)
        failing = ", ".join(criterion_label(n, lang) for n in verdict.failing) if verdict else ""
        rows.append(
            f'<tr data-checkpoint="{_e(spec.name)}"><td>{_bi(labels[spec.name], lang)}</td>'
            f"<td>{_e(format_time(deadline, lang))}</td>"
            f"{_state_cell(verdict, lang, with_failing=False)}<td>{_e(failing)}</td></tr>")
    mine = [t for t in tests if t.site == site_id]
    blocks = "".join(_test_block(report, t, assigned.get(t.test_id), labels, lang)
                     for t in mine) or f'<p class="muted">{_e(_w("no_tests", lang))}</p>'
    return (
        f'<section class="bridge" data-site="{_e(site_id)}">'
        f"<h3>{index}. {_e(_site_name(report, site_id))}</h3>"
        f'<p class="small">{_e(level_label)} — {_e(_w("site_id", lang))}: {_e(site_id)}'
        f"<br>{confirm}</p>"
        f"<h4>{_e(_w('checkpoints', lang))}</h4>"
        f'<table class="verdicts"><thead><tr><th>{_e(_w("for_checkpoint", lang))}</th>'
        f"<th>{_e(_w('deadline', lang).capitalize())}</th><th>{_e(_w('result', lang))}</th>"
        f"<th>{_e(_w('failing', lang))}</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"<h4>{_e(_w('tests', lang))} ({len(mine)})</h4>{blocks}</section>")


def render_html(report: ReportData, lang: str = "vi") -> str:
    """The printable record: header, session, summary table, a page per bridge, signatures."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}, not {lang!r}")
    session = report.session
    labels = checkpoint_labels(report.checkpoints)
    verdicts = {(v.site, v.checkpoint): v for v in report.verdicts if v.session_id == session.id}
    tests = sorted(report.tests, key=lambda t: (t.finished, t.test_id))
    assigned = assign_checkpoints(report)
    bridges = _bridges(report)

    host_site = report.sites.get(session.host)
    province = report.provinces.get(host_site.province, "") if host_site else ""
    committee = f"{_w('committee', lang)} {province.upper()}" if province else ""
    place = f"{province}, " if province and lang == "vi" else ""
    gen = report.generated_at.astimezone(VIETNAM)
    dated = (f"{place}ngày {gen:%d} tháng {gen:%m} năm {gen:%Y}" if lang == "vi"
             else f"{gen:%d/%m/%Y}")

    hours = session.duration.total_seconds()
    counts = {lv: sum(1 for b in bridges if _site_level(report, b) == lv) for lv in LEVEL_LABELS}
    count_text = "; ".join(f"{_pick(LEVEL_LABELS[lv], lang)}: {n}"
                           for lv, n in counts.items() if n)
    info_rows = [
        ("session", session.title),
        ("session_id", session.id),
        ("time", f"{format_time(session.start, lang)} {DASH} {format_time(session.end, lang)} "
                 f"({_w('duration', lang)} {spoken(hours, lang)})"),
        ("host", _site_name(report, session.host)),
        ("bridges", f"{len(bridges)} ({count_text})"),
        ("generated", format_time(report.generated_at, lang)),
    ]
    info = "".join(f"<tr><th>{_bi(_T[k], lang)}</th><td>{_e(v)}</td></tr>" for k, v in info_rows)

    head_cells = "".join(
        f'<th data-checkpoint="{_e(c.name)}">{_bi(labels[c.name], lang)}'
        f'<div class="small">{_e(_w("deadline", lang))} '
        f"{_e(format_time(c.deadline(session), lang))}</div></th>"
        for c in report.checkpoints)
    summary_rows = []
    for i, site_id in enumerate(bridges, 1):
        level = _site_level(report, site_id)
        cells = "".join(_state_cell(verdicts.get((site_id, c.name)), lang)
                        for c in report.checkpoints)
        summary_rows.append(
            f'<tr data-site="{_e(site_id)}"><td class="num">{i}</td>'
            f'<td class="name">{_e(_site_name(report, site_id))}<div class="small muted">'
            f"{_e(_pick(LEVEL_LABELS.get(level, (level, level)), lang))}</div></td>{cells}</tr>")
    totals = "".join(
        f"<td>{sum(1 for b in bridges if (v := verdicts.get((b, c.name))) and v.state == 'passed')}"
        f"/{len(bridges)}</td>" for c in report.checkpoints)
    summary = (
        f'<table class="summary"><thead><tr><th class="num">{_e(_w("no", lang))}</th>'
        f'<th class="name">{_bi(_T["bridge"], lang)}</th>{head_cells}'
        f"</tr></thead><tbody>{''.join(summary_rows)}</tbody>"
        f'<tfoot><tr><th colspan="2">{_bi(_T["summary_total"], lang)}</th>{totals}</tr></tfoot>'
        "</table>")

    sections = "".join(_bridge_section(report, i, s, verdicts, tests, assigned, labels, lang)
                       for i, s in enumerate(bridges, 1))

    not_ready = [s for s in bridges
                 if any(verdicts.get((s, c.name)) and verdicts[(s, c.name)].state
                        in ("failed", "missed") for c in report.checkpoints)]
    if not_ready:
        items = "".join(f"<li>{_e(_site_name(report, s))}: " + _e("; ".join(
            f"{_pick(labels[c.name], lang)} — "
            f"{_pick(STATE_LABELS[verdicts[(s, c.name)].state], lang)}"
            for c in report.checkpoints if verdicts.get((s, c.name))
            and verdicts[(s, c.name)].state in ("failed", "missed"))) + "</li>"
            for s in not_ready)
        conclusion = f"<p>{_e(_w('not_ready', lang))}:</p><ul>{items}</ul>"
    else:
        conclusion = f"<p>{_e(_w('all_ready', lang))}</p>"

    sign = "".join(f"<div><b>{_e(_w(k, lang))}</b><i>{_e(_w('sign_hint', lang))}</i></div>"
                   for k in ("sign_issuer", "sign_tech"))
    title = f"{_w('title', lang)} {DASH} {session.title}"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="{lang}"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        '<main class="sheet">'
        f'<header class="head"><div class="issuer">{_e(committee)}<b>{_e(report.issuer)}</b>'
        f'</div><div class="nation"><b>{_e(_w("nation", lang))}</b>'
        f'<b class="motto">{_e(_w("motto", lang))}</b><i class="small">{_e(dated)}</i></div>'
        "</header>"
        f"<h1>{_e(_w('title', lang))}</h1>"
        + (f'<p class="subtitle">{_e(_w("subtitle", lang))}'
           f'<span class="en" lang="en">{_e(_T["title"][1])} — {_e(_T["subtitle"][1])}</span></p>'
           if lang == "vi" else f'<p class="subtitle">{_e(_w("subtitle", lang))}</p>')
        + f'<table class="info">{info}</table><p class="small">{_e(_w("tz_note", lang))}</p>'
        f"<h2>{_e(_w('part_summary', lang))}</h2>{summary}"
        f"<h2>{_e(_w('part_detail', lang))}</h2>{sections}"
        f'<section class="conclusion"><h2>{_e(_w("part_conclusion", lang))}</h2>{conclusion}'
        f"<p>{_e(_w('other', lang))}:</p>" + '<div class="lines"></div>' * 3
        + f'<div class="signatures">{sign}</div></section>'
        f"<footer>{_e(_w('footer', lang))} — {_e(format_time(report.generated_at, lang))}"
        "</footer></main></body></html>\n")


# --- CSV -----------------------------------------------------------------------------------

CSV_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Mã điểm cầu", "site_id"),
    ("Tên điểm cầu", "site_name"),
    ("Cấp", "level"),
    ("Mã mốc", "checkpoint"),
    ("Mốc", "checkpoint_label"),
    ("Hạn chót", "deadline"),
    ("Mã trạng thái", "state"),
    ("Trạng thái", "state_label"),
    ("Mã lần kiểm thử", "test_id"),
    ("Thời điểm kiểm thử", "test_finished"),
    ("Hình thức", "trigger"),
    ("Người yêu cầu", "requested_by"),
    ("Kết quả lần kiểm thử", "test_result"),
    ("Mã tiêu chí", "criterion"),
    ("Tiêu chí", "criterion_label"),
    ("Giá trị đo", "value"),
    ("Ngưỡng", "limit"),
    ("Kết quả tiêu chí", "criterion_result"),
    ("Giá trị (đơn vị gốc)", "value_raw"),
    ("Ngưỡng (đơn vị gốc)", "limit_raw"),
    ("Đơn vị gốc", "unit"),
    ("Khuyến nghị", "advice"),
    ("Ghi chú", "note"),
)
_RAW_COLUMNS = frozenset({"value_raw", "limit_raw"})


def _cell_text(text: str) -> str:
    """Keep a spreadsheet from running a cell as a formula (``=HYPERLINK(...)`` in a name)."""
    if text and text[0] in "=+-@\t\r":
        return "'" + text
    return text


def _raw(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _iso(when: datetime) -> str:
    return when.astimezone(VIETNAM).isoformat(timespec="seconds")


def csv_rows(report: ReportData, lang: str = "vi") -> list[dict[str, str]]:
    """One row per (bridge, checkpoint, test, criterion); a checkpoint without a test, or a
    test without criteria, still gets one row, so every verdict is in the file."""
    session = report.session
    labels = checkpoint_labels(report.checkpoints)
    verdicts = {(v.site, v.checkpoint): v for v in report.verdicts if v.session_id == session.id}
    tests = sorted(report.tests, key=lambda t: (t.finished, t.test_id))
    assigned = assign_checkpoints(report)
    specs: list[tuple[str | None, str, str, str]] = [
        (c.name, c.name, _pick(labels[c.name], lang), _iso(c.deadline(session)))
        for c in report.checkpoints]
    if any(assigned.get(t.test_id) is None for t in tests):
        specs.append((None, "", _w("outside", lang), ""))
    rows: list[dict[str, str]] = []
    for site_id in _bridges(report):
        level = _site_level(report, site_id)
        confirmations = sorted((c for c in report.confirmations
                                if c.site == site_id and c.session_id == session.id),
                               key=lambda c: c.at)
        base = {"site_id": site_id, "site_name": _site_name(report, site_id),
                "level": _pick(LEVEL_LABELS.get(level, (level, level)), lang)}
        for key, name, label, deadline in specs:
            verdict = verdicts.get((site_id, name)) if key else None
            state = verdict.state if verdict else ""
            note = ""
            spec = next((c for c in report.checkpoints if c.name == key), None)
            if spec is not None and spec.kind == "confirm" and confirmations:
                first = confirmations[0]
                note = (f"{_w('confirmed', lang)}: {format_time(first.at, lang)}, "
                        f"{_w('confirmed_by', lang)} {first.by}")
            if verdict and verdict.failing:
                failing = ", ".join(criterion_label(n, lang) for n in verdict.failing)
                note = "; ".join(x for x in (note, f"{_w('failing', lang)}: {failing}") if x)
            head = {**base, "checkpoint": name, "checkpoint_label": label, "deadline": deadline,
                    "state": state,
                    "state_label": _pick(STATE_LABELS.get(state, (state, state)), lang)
                    if verdict else "", "note": note}
            mine = [t for t in tests if t.site == site_id and assigned.get(t.test_id) == key]
            if not mine:
                rows.append(head)
                continue
            for test in mine:
                trig = TRIGGER_LABELS.get(test.trigger, (test.trigger, test.trigger))
                test_cols = {**head, "test_id": test.test_id, "test_finished": _iso(test.finished),
                             "trigger": _pick(trig, lang), "requested_by": test.requested_by,
                             "test_result": _pick(STATE_LABELS["passed" if test.passed
                                                               else "failed"], lang)}
                if not test.criteria:
                    rows.append(test_cols)
                for c in test.criteria:
                    rows.append({
                        **test_cols, "criterion": c.name,
                        "criterion_label": criterion_label(c.name, lang),
                        "value": format_value(c.value, c.unit, lang, scale=c.limit),
                        "limit": format_limit(c, lang),
                        "criterion_result": _pick(STATE_LABELS["passed" if c.ok else "failed"],
                                                  lang),
                        "value_raw": _raw(c.value), "limit_raw": _raw(c.limit), "unit": c.unit,
                        "advice": "" if c.ok else criterion_advice(c.name, lang)})
    return rows


def render_csv(report: ReportData, lang: str = "vi") -> str:
    """RFC 4180 CSV (CRLF, quoted where needed) with a BOM, so Excel reads it as UTF-8."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}, not {lang!r}")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow([vi if lang == "vi" else key for vi, key in CSV_COLUMNS])
    for row in csv_rows(report, lang):
        writer.writerow([row.get(key, "") if key in _RAW_COLUMNS
                         else _cell_text(row.get(key, "")) for _, key in CSV_COLUMNS])
    return "\ufeff" + out.getvalue()


def file_name(report: ReportData, ext: str) -> str:
    """``bien-ban-<session id>.<ext>``: the session id is a slug, safe in a path and a header."""
    return f"bien-ban-{report.session.id}.{ext}"


def write_report(report: ReportData, directory: str | Path, lang: str = "vi",
                 ) -> tuple[Path, Path]:
    """Write the HTML and the CSV side by side (for the CLI); returns both paths."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    html_path, csv_path = folder / file_name(report, "html"), folder / file_name(report, "csv")
    html_path.write_text(render_html(report, lang), encoding="utf-8")
    # newline="" keeps the CSV's CRLF as written (RFC 4180) on every platform.
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        f.write(render_csv(report, lang))
    return html_path, csv_path
