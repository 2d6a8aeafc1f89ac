"""A duration as a technician says it: ``3 giờ 15 phút`` / ``3 h 15 min``, one way for all.

The probes' error texts, the checklist, the readiness notes and the biên bản all show
UPS runtimes, recording time and session lengths; they share this so "3 h 15 min" reads
the same on the PC, on the NOC's screen and on paper.
"""

from __future__ import annotations

UNITS = {"vi": ("giờ", "phút", "giây"), "en": ("h", "min", "s")}


def spoken(seconds: float, lang: str = "en") -> str:
    """Hours and minutes (rounded to the minute); under a minute, whole seconds."""
    hour, minute, second = UNITS[lang]
    if abs(seconds) < 60:
        return f"{round(seconds)} {second}"
    minutes = round(seconds / 60)
    hours, rest = divmod(abs(minutes), 60)
    sign = "-" if minutes < 0 else ""
    if hours == 0:
        return f"{sign}{rest} {minute}"
    return f"{sign}{hours} {hour}" + (f" {rest} {minute}" if rest else "")
