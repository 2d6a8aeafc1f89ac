"""The technician's checklist of a full test: text in Vietnamese (or English), or JSON.

One line per criterion, e.g.::

    ✓ Độ trễ khứ hồi: 23 ms (giới hạn ≤ 150 ms)
    ✗ Thời gian lưu điện: 12 phút (cần ≥ 3 giờ 15 phút) → Sạc đầy hoặc thay ắc quy UPS; giảm tải

then "○" lines for what the site does not configure (not checked), then the verdict,
``SẴN SÀNG`` / ``READY`` or ``CHƯA SẴN SÀNG`` / ``NOT READY``. Labels and advice come
from the catalogue; a criterion that could not be measured says so with the reason (the
probe's own words, in English: they name files, hosts and errors). Numbers use a decimal
point in both languages, like ``bridgewatch-agent bandwidth``.
"""

from __future__ import annotations

from typing import Any

from agent.durations import spoken
from agent.link.check import mbit
from agent.readiness.catalogue import CRITERIA
from agent.readiness.criteria import COMPARATORS, Judged
from agent.readiness.fulltest import FullTest

LANGS = ("vi", "en")

_WORDS = {
    "vi": {"limit": "giới hạn", "need": "cần", "not_measured": "không đo được",
           "not_checked": "không kiểm tra (chưa cấu hình)", "ready": "SẴN SÀNG",
           "not_ready": "CHƯA SẴN SÀNG", "failed": "tiêu chí không đạt",
           "failed_one": "tiêu chí không đạt",
           "header": "Kiểm tra điểm cầu {where}, phiên {length}, mã {test_id}",
           },
    "en": {"limit": "limit", "need": "needs", "not_measured": "not measured",
           "not_checked": "not checked (not configured)", "ready": "READY",
           "not_ready": "NOT READY", "failed": "criteria failed", "failed_one": "criterion failed",
           "header": "Check of bridge {where}, session {length}, test {test_id}",
           },
}
# Yes-or-no criteria: what 1 and 0 mean.
_FLAGS = {
    "vi": {"ups-power": ("có điện lưới", "đang chạy pin"),
           "backup-disk": ("đã cắm và gắn", "không có"),
           "software": ("đang chạy", "không chạy")},
    "en": {"ups-power": ("on mains", "on battery"),
           "backup-disk": ("present", "missing"),
           "software": ("running", "not running")},
}
_LONG = ("ups-runtime", "recording-space")  # shown in hours and minutes


def _number(x: float, digits: int = 1) -> str:
    return f"{round(x, digits):g}"


def short(seconds: float, signed: bool = False) -> str:
    """A short time: ms below a second, else seconds (``+3.2 s``)."""
    sign = "+" if signed and seconds > 0 else ""
    if abs(seconds) < 1:
        ms = seconds * 1000
        return f"{sign}{ms:.1f} ms" if abs(ms) < 10 else f"{sign}{ms:.0f} ms"
    return f"{sign}{_number(seconds)} s"


def value_text(name: str, value: float, lang: str) -> str:
    """A criterion's measured value as a person reads it."""
    unit = CRITERIA[name].unit
    if name in _FLAGS[lang]:
        yes, no = _FLAGS[lang][name]
        return yes if value else no
    if name in _LONG:
        return spoken(value, lang)
    if name == "clock":
        return short(value, signed=True)
    if unit == "s":
        return short(value)
    if unit == "ratio":
        return f"{value * 100:.1f} %"
    if unit == "bit/s":
        return mbit(value)
    if unit == "mos":
        return f"{value:.2f}"
    return f"{value:.0f}"


def limit_text(name: str, limit: float, lang: str) -> str:
    """``giới hạn ≤ 150 ms`` / ``cần ≥ 5 Mbit/s``; empty for yes-or-no criteria."""
    op = COMPARATORS[name]
    w = _WORDS[lang]
    unit = CRITERIA[name].unit
    if op == "=":
        return ""
    if name in _LONG:
        shown = spoken(limit, lang)
    elif unit == "s":
        shown = short(limit)
    elif unit == "ratio":
        shown = f"{_number(limit * 100, 2)} %"
    elif unit == "bit/s":
        shown = f"{_number(limit / 1e6, 3)} Mbit/s"
    elif unit == "mos":
        shown = _number(limit, 2)
    else:
        shown = f"{limit:.0f}"
    if op == "|<=|":
        return f"{w['limit']} ±{shown}"
    word = w["need"] if op == ">=" else w["limit"]
    return f"{word} {op.replace('<=', '≤').replace('>=', '≥')} {shown}"


def advice(name: str, lang: str) -> str:
    info = CRITERIA[name]
    return info.advice_vi if lang == "vi" else info.advice_en


def label(name: str, lang: str) -> str:
    info = CRITERIA[name]
    return info.vi if lang == "vi" else info.en


def line(judged: Judged, lang: str = "vi") -> str:
    """One checklist line: mark, label, value, limit, note, and advice when it failed."""
    c = judged.criterion
    value = (_WORDS[lang]["not_measured"] if c.value is None
             else value_text(c.name, c.value, lang))
    text = f"{'✓' if c.ok else '✗'} {label(c.name, lang)}: {value}"
    limit = "" if c.limit is None else limit_text(c.name, c.limit, lang)
    if limit:
        text += f" ({limit})"
    if judged.note:
        text += f" — {judged.note}"
    if not c.ok:
        text += f" → {advice(c.name, lang)}"
    return text


def verdict(test: FullTest, lang: str = "vi") -> str:
    w = _WORDS[lang]
    if test.passed:
        return w["ready"]
    failing = test.failing
    if not failing:
        return w["not_ready"]
    return f"{w['not_ready']}: {len(failing)} {w['failed_one' if len(failing) == 1 else 'failed']}"


def render(test: FullTest, test_id: str, where: str, lang: str = "vi") -> list[str]:
    """The whole checklist: header, criteria, what was not checked, the verdict."""
    w = _WORDS[lang]
    lines = [w["header"].format(where=where, test_id=test_id,
                                length=spoken(test.limits.session_seconds, lang))]
    lines += [line(j, lang) for j in test.judged]
    lines += [f"○ {label(name, lang)}: {w['not_checked']}" for name in test.not_checked]
    lines.append(verdict(test, lang))
    return lines


def to_json(test: FullTest, *, test_id: str, trigger: str, province: str, site: str,
            lang: str = "vi", recorded: bool | None = None) -> dict[str, Any]:
    """The machine form (``check --json``): criteria with their texts, verdict, ids."""
    return {
        "province": province,
        "site": site,
        "test_id": test_id,
        "trigger": trigger,
        "ts": round(test.ts, 3),
        "started": round(test.started, 3),
        "session_seconds": test.limits.session_seconds,
        "passed": test.passed,
        "criteria": [{
            "name": j.criterion.name,
            "ok": j.criterion.ok,
            "value": j.criterion.value,
            "limit": j.criterion.limit,
            "unit": j.criterion.unit,
            "op": COMPARATORS[j.criterion.name],
            "label": label(j.criterion.name, lang),
            "advice": advice(j.criterion.name, lang),
            "note": j.note,
        } for j in test.judged],
        "not_checked": list(test.not_checked),
        "lang": lang,
        "recorded": recorded,
    }
