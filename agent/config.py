"""The agent's YAML configuration, validated up front so a typo fails at start, by name.

A bridge PC is configured once and then left alone for months: every key is checked here
(unknown keys included) so a misspelt setting is an error naming the key, never a default
silently taking its place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent import wire
from agent.broker import BrokerSettings
from agent.spool import DEFAULT_MAX_AGE_SECONDS, DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGES

DEFAULT_INTERVAL_SECONDS = 10.0
# The interval bounds the wire accepts for a probe report.
MIN_INTERVAL_SECONDS = 0.001
MAX_INTERVAL_SECONDS = 86400.0

_TOP_KEYS = {"site", "province", "prefix", "broker", "spool", "interval_seconds",
             "recording_volume", "backup_volume", "probes"}
_SPOOL_KEYS = {"path", "max_messages", "max_age_seconds", "max_bytes"}
_PROBE_KEYS = {"enabled", "interval_seconds"}


@dataclass(frozen=True)
class SpoolConfig:
    path: Path
    max_messages: int = DEFAULT_MAX_MESSAGES
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS
    max_bytes: int = DEFAULT_MAX_BYTES


@dataclass(frozen=True)
class ProbeSetting:
    """An override of one probe's registry defaults; None keeps the default."""

    enabled: bool | None = None
    interval_seconds: float | None = None


@dataclass(frozen=True)
class AgentConfig:
    site: str
    province: str
    spool: SpoolConfig
    prefix: str = wire.DEFAULT_PREFIX
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    recording_volume: str | None = None
    backup_volume: str | None = None
    probes: dict[str, ProbeSetting] = field(default_factory=dict)


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate an agent YAML file; relative spool paths are next to the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    return parse_config(raw, base_dir=path.resolve().parent)


def parse_config(raw: Any, base_dir: Path) -> AgentConfig:
    """Validate an already-parsed configuration mapping."""
    raw = _mapping(raw, "configuration")
    _no_unknown(raw, _TOP_KEYS, "")
    site = _slug(raw, "site")
    province = _slug(raw, "province")
    prefix = raw.get("prefix", wire.DEFAULT_PREFIX)
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "/+# \t\r\n"):
        raise ValueError("prefix must be a non-empty topic level (no '/', '+', '#' or spaces)")
    try:
        broker = BrokerSettings.from_dict(_mapping(raw.get("broker"), "broker", optional=True))
    except (TypeError, ValueError) as err:
        raise ValueError(f"broker: {err}") from None
    config = AgentConfig(
        site=site,
        province=province,
        prefix=prefix,
        broker=broker,
        spool=_spool(_mapping(raw.get("spool"), "spool"), base_dir),
        interval_seconds=_interval(raw.get("interval_seconds", DEFAULT_INTERVAL_SECONDS),
                                   "interval_seconds"),
        recording_volume=_optional_path(raw, "recording_volume"),
        backup_volume=_optional_path(raw, "backup_volume"),
        probes=_probes(_mapping(raw.get("probes"), "probes", optional=True)),
    )
    # Imported here: the probe registry imports this module for its types.
    from agent.probes import enabled_probes

    if not enabled_probes(config):
        raise ValueError("probes: every probe is disabled; the agent would send nothing")
    return config


def _mapping(value: Any, where: str, optional: bool = False) -> dict[str, Any]:
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping")
    return value


def _no_unknown(raw: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in set(raw) - known)
    if unknown:
        raise ValueError(f"unknown key {where}{unknown[0]} (known: {', '.join(sorted(known))})")


def _slug(raw: dict[str, Any], key: str) -> str:
    if key not in raw:
        raise ValueError(f"{key} is required")
    value = raw[key]
    if not wire.is_slug(value):
        raise ValueError(f"{key} {value!r} is not a slug (lowercase letters, digits, '-')")
    return value


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} must be a number, got {value!r}")
    return float(value)


def _interval(value: Any, key: str) -> float:
    seconds = _number(value, key)
    if not MIN_INTERVAL_SECONDS <= seconds <= MAX_INTERVAL_SECONDS:
        raise ValueError(f"{key} must be between {MIN_INTERVAL_SECONDS} and "
                         f"{MAX_INTERVAL_SECONDS:g} seconds, got {value!r}")
    return seconds


def _positive_int(raw: dict[str, Any], key: str, default: int, lowest: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise ValueError(f"spool.{key} must be an integer >= {lowest}, got {value!r}")
    return value


def _spool(raw: dict[str, Any], base_dir: Path) -> SpoolConfig:
    _no_unknown(raw, _SPOOL_KEYS, "spool.")
    path = raw.get("path")
    if not isinstance(path, str) or not path:
        raise ValueError("spool.path is required (a file path for the SQLite spool)")
    max_age = _number(raw.get("max_age_seconds", DEFAULT_MAX_AGE_SECONDS),
                      "spool.max_age_seconds")
    if max_age <= 0:
        raise ValueError(f"spool.max_age_seconds must be > 0, got {max_age!r}")
    return SpoolConfig(
        path=base_dir / Path(path).expanduser(),
        max_messages=_positive_int(raw, "max_messages", DEFAULT_MAX_MESSAGES, 1),
        max_age_seconds=max_age,
        # One message must always fit, or the spool would drop what it just stored.
        max_bytes=_positive_int(raw, "max_bytes", DEFAULT_MAX_BYTES,
                                wire.MAX_PAYLOAD_BYTES),
    )


def _optional_path(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a path, got {value!r}")
    return value


def _probes(raw: dict[str, Any]) -> dict[str, ProbeSetting]:
    from agent.probes import REGISTRY, load_all

    load_all()
    settings: dict[str, ProbeSetting] = {}
    for name, body in raw.items():
        if name not in REGISTRY:
            raise ValueError(f"unknown probe probes.{name} (known: {', '.join(sorted(REGISTRY))})")
        body = _mapping(body, f"probes.{name}", optional=True)
        _no_unknown(body, _PROBE_KEYS, f"probes.{name}.")
        enabled = body.get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise ValueError(f"probes.{name}.enabled must be true or false, got {enabled!r}")
        interval = body.get("interval_seconds")
        if interval is not None:
            interval = _interval(interval, f"probes.{name}.interval_seconds")
        settings[name] = ProbeSetting(enabled, interval)
    return settings
