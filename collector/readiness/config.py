"""The collector's ``readiness:`` section: where the schedule lives, how tests are ordered.

```yaml
readiness:
  database: readiness.sqlite     # sessions, tests, orders; relative to the config file
  schedule: schedule.yaml        # optional: imported at start, all or nothing
  api_tokens_file: api-tokens    # "<name> <token>" per line; without it the API is read-only
  retry_after_seconds: 900       # an order without an answer, or a failed test, is retried
  max_attempts: 4                # per bridge and checkpoint
  tick_seconds: 10               # how often verdicts are redrawn and orders planned
  checkpoints:                   # optional; the regulations' four by default
    - {name: test-1, kind: test, offset_seconds: -86400, window_seconds: 43200}
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from agent import wire

from .model import CHECKPOINT_KINDS, DEFAULT_CHECKPOINTS, CheckpointSpec

_KEYS = {"database", "schedule", "api_tokens_file", "retry_after_seconds", "max_attempts",
         "tick_seconds", "checkpoints"}
_CHECKPOINT_KEYS = {"name", "kind", "offset_seconds", "window_seconds"}


@dataclass(frozen=True)
class ReadinessConfig:
    database: Path
    schedule: Path | None = None
    api_tokens_file: Path | None = None
    retry_after: timedelta = timedelta(minutes=15)
    max_attempts: int = 4
    tick_seconds: float = 10.0
    checkpoints: tuple[CheckpointSpec, ...] = DEFAULT_CHECKPOINTS


def _seconds(raw: dict[str, Any], key: str, default: float, lowest: float, highest: float,
             where: str) -> float:
    value = raw.get(key, default)
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or not lowest <= value <= highest):
        raise ValueError(f"{where}{key} must be a number between {lowest:g} and {highest:g}, "
                         f"got {value!r}")
    return float(value)


def _path(raw: dict[str, Any], key: str, base: Path) -> Path | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"readiness.{key} must be a path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _checkpoint(raw: Any, i: int) -> CheckpointSpec:
    where = f"readiness.checkpoints[{i}]."
    if not isinstance(raw, dict):
        raise ValueError(f"{where[:-1]} must be a mapping")
    unknown = sorted(set(raw) - _CHECKPOINT_KEYS)
    if unknown:
        raise ValueError(f"unknown key {where}{unknown[0]}")
    name, kind = raw.get("name"), raw.get("kind")
    if not wire.is_slug(name):
        raise ValueError(f"{where}name {name!r} is not a slug")
    if kind not in CHECKPOINT_KINDS:
        raise ValueError(f"{where}kind must be one of {', '.join(CHECKPOINT_KINDS)}")
    year = 366 * 86400.0
    offset = _seconds(raw, "offset_seconds", math.nan, -year, 0.0, where)
    window = _seconds(raw, "window_seconds", 0.0, 0.0, year, where)
    if kind != "confirm" and window <= 0:
        raise ValueError(f"{where}window_seconds must be > 0 for a {kind} checkpoint")
    return CheckpointSpec(name, kind, timedelta(seconds=offset), timedelta(seconds=window))


def parse_readiness(raw: Any, base: Path) -> ReadinessConfig:
    """Validate the section; paths are relative to the config file's directory."""
    if not isinstance(raw, dict):
        raise ValueError("readiness must be a mapping")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ValueError(f"unknown key readiness.{unknown[0]} (known: {', '.join(sorted(_KEYS))})")
    database = _path(raw, "database", base) or base / "readiness.sqlite"
    checkpoints = DEFAULT_CHECKPOINTS
    if raw.get("checkpoints") is not None:
        if not isinstance(raw["checkpoints"], list) or not raw["checkpoints"]:
            raise ValueError("readiness.checkpoints must be a non-empty list")
        checkpoints = tuple(_checkpoint(c, i) for i, c in enumerate(raw["checkpoints"]))
        names = [c.name for c in checkpoints]
        if len(set(names)) != len(names):
            raise ValueError("readiness.checkpoints: a name is used twice")
    max_attempts = raw.get("max_attempts", 4)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"readiness.max_attempts must be an integer >= 1, got {max_attempts!r}")
    return ReadinessConfig(
        database=database,
        schedule=_path(raw, "schedule", base),
        api_tokens_file=_path(raw, "api_tokens_file", base),
        retry_after=timedelta(seconds=_seconds(raw, "retry_after_seconds", 900, 1, 86400,
                                               "readiness.")),
        max_attempts=max_attempts,
        tick_seconds=_seconds(raw, "tick_seconds", 10, 0.05, 3600, "readiness."),
        checkpoints=checkpoints,
    )
