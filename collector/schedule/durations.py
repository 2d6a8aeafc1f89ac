"""Session lengths as people write them: ``3h``, ``2h30m``, ``90m``, ``180`` (minutes), ``PT3H``.

One parser for the YAML file, the CLI and the HTTP API, so "3h" means the same everywhere.
A bare number is minutes (the unit invitations use for short sessions); anything else must
carry its unit, so ``3`` cannot silently become three hours or three seconds.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"h": 3600, "giờ": 3600, "gio": 3600, "m": 60, "min": 60, "phút": 60, "phut": 60}
_PART = re.compile(r"(\d+(?:[.,]\d+)?)\s*(h|giờ|gio|min|m|phút|phut)(?![a-zà-ỹ])", re.IGNORECASE)
_ISO = re.compile(r"^PT(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?$",
                  re.IGNORECASE)
_CLOCK = re.compile(r"^(\d{1,2}):([0-5]\d)$")


def parse_duration(value: object) -> timedelta:
    """A timedelta from minutes (int) or text; ValueError with a short reason otherwise."""
    try:
        return _parse(value)
    except OverflowError:
        raise ValueError("far too long") from None


def _parse(value: object) -> timedelta:
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, int):
        return timedelta(minutes=value)
    if isinstance(value, float):
        raise ValueError("write whole minutes (180) or with a unit (1.5h)")
    if not isinstance(value, str):
        raise ValueError("not a duration")
    text = value.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return timedelta(minutes=int(text))
    if (iso := _ISO.match(text)) and any(iso.groups()):
        hours, minutes, seconds = (float(g) if g else 0.0 for g in iso.groups())
        return timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if clock := _CLOCK.match(text):
        return timedelta(hours=int(clock[1]), minutes=int(clock[2]))
    seconds = 0.0
    position = 0
    for part in _PART.finditer(text):
        if text[position:part.start()].strip():
            break
        seconds += float(part[1].replace(",", ".")) * _UNITS[part[2].lower()]
        position = part.end()
    else:
        if position and not text[position:].strip():
            return timedelta(seconds=round(seconds))
    raise ValueError("expected e.g. 3h, 2h30m, 90m, 180 (minutes) or PT3H")


def format_duration(value: timedelta) -> str:
    """The short form parse_duration reads back: ``3h``, ``2h30m``, ``45m``."""
    sign = "-" if value < timedelta(0) else ""
    hours, minutes = divmod(int(abs(value).total_seconds() // 60), 60)
    if hours and minutes:
        return f"{sign}{hours}h{minutes:02d}m"
    return f"{sign}{hours}h" if hours else f"{sign}{minutes}m"
