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

from agent import wire
from agent.broker import BrokerSettings
from agent.link import bandwidth, udp
from agent.spool import DEFAULT_MAX_AGE_SECONDS, DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGES
from agent.yamlfile import read_yaml

DEFAULT_INTERVAL_SECONDS = 10.0
# The interval bounds the wire accepts for a probe report.
MIN_INTERVAL_SECONDS = 0.001
MAX_INTERVAL_SECONDS = 86400.0

_TOP_KEYS = {"site", "province", "prefix", "broker", "spool", "interval_seconds",
             "recording_volume", "backup_volume", "probes", "link"}
_SPOOL_KEYS = {"path", "max_messages", "max_age_seconds", "max_bytes"}
_PROBE_KEYS = {"enabled", "interval_seconds"}
_LINK_KEYS = {"reflector", "targets", "packet_interval_seconds", "connect_interval_seconds",
              "required_bandwidth_mbps"}
_REFLECTOR_KEYS = {"host", "udp_port", "tcp_port", "key_file"}
_TARGET_KEYS = {"name", "host", "method", "port"}
LINK_METHODS = ("udp-reflector", "icmp", "tcp-connect")
REFLECTOR_TARGET = "reflector"
DEFAULT_REFLECTOR_UDP_PORT = udp.DEFAULT_PORT
DEFAULT_REFLECTOR_TCP_PORT = bandwidth.DEFAULT_PORT
# Each target has 5 RTT quantile rows: the wire's 256 rows per metric bound the count.
MAX_LINK_TARGETS = 32


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
class ReflectorEndpoint:
    """The central reflector: UDP echo, TCP bandwidth endpoint, and the shared key."""

    host: str
    key_file: Path
    udp_port: int = DEFAULT_REFLECTOR_UDP_PORT
    tcp_port: int = DEFAULT_REFLECTOR_TCP_PORT


@dataclass(frozen=True)
class LinkTarget:
    name: str  # the ``target`` label
    host: str
    method: str  # one of LINK_METHODS
    port: int | None = None  # udp-reflector / tcp-connect port; for icmp, the fallback


@dataclass(frozen=True)
class LinkConfig:
    """The ``link`` section: what the continuous link probe measures, and how often."""

    reflector: ReflectorEndpoint | None = None
    targets: tuple[LinkTarget, ...] = ()
    packet_interval_seconds: float = 1.0
    # TCP connects are heavier on the far end than a datagram: a slower default.
    connect_interval_seconds: float = 10.0
    # The site's requirement for the bandwidth test (5 member sites, 30 central).
    required_bandwidth_mbps: float = 5.0

    def all_targets(self) -> tuple[LinkTarget, ...]:
        """The configured targets, led by the reflector (target ``reflector``) if any."""
        if self.reflector is None:
            return self.targets
        own = LinkTarget(REFLECTOR_TARGET, self.reflector.host, "udp-reflector",
                         self.reflector.udp_port)
        return (own, *self.targets)


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
    link: LinkConfig | None = None


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate an agent YAML file; relative spool paths are next to the file."""
    path = Path(path)
    return parse_config(read_yaml(path), base_dir=path.resolve().parent)


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
        link=None if raw.get("link") is None else _link(_mapping(raw["link"], "link"),
                                                        base_dir),
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


def _port(raw: dict[str, Any], key: str, where: str) -> int | None:
    """An optional port number (None when absent)."""
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"{where}{key} must be a port number (1-65535), got {value!r}")
    return value


def _host(raw: dict[str, Any], where: str) -> str:
    value = raw.get("host")
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"{where}host is required (a name or address), got {value!r}")
    return value


def _bounded(raw: dict[str, Any], key: str, default: float, lowest: float,
             highest: float) -> float:
    value = _number(raw.get(key, default), f"link.{key}")
    if not lowest <= value <= highest:
        raise ValueError(f"link.{key} must be between {lowest:g} and {highest:g}, got {value!r}")
    return value


def _link(raw: dict[str, Any], base_dir: Path) -> LinkConfig:
    _no_unknown(raw, _LINK_KEYS, "link.")
    reflector = None
    if raw.get("reflector") is not None:
        body = _mapping(raw["reflector"], "link.reflector")
        _no_unknown(body, _REFLECTOR_KEYS, "link.reflector.")
        key_file = body.get("key_file")
        if not isinstance(key_file, str) or not key_file:
            raise ValueError("link.reflector.key_file is required (the reflector's shared key)")
        reflector = ReflectorEndpoint(
            host=_host(body, "link.reflector."),
            key_file=base_dir / Path(key_file).expanduser(),
            udp_port=_port(body, "udp_port", "link.reflector.") or DEFAULT_REFLECTOR_UDP_PORT,
            tcp_port=_port(body, "tcp_port", "link.reflector.") or DEFAULT_REFLECTOR_TCP_PORT,
        )
    raw_targets = raw.get("targets", [])
    if not isinstance(raw_targets, list):
        raise ValueError("link.targets must be a list")
    targets = tuple(_target(body, i, reflector) for i, body in enumerate(raw_targets))
    names = [t.name for t in targets]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise ValueError(f"link.targets: name {duplicate!r} is used twice")
    config = LinkConfig(
        reflector=reflector,
        targets=targets,
        packet_interval_seconds=_bounded(raw, "packet_interval_seconds", 1.0, 0.01, 60.0),
        connect_interval_seconds=_bounded(raw, "connect_interval_seconds", 10.0, 0.01, 3600.0),
        required_bandwidth_mbps=_bounded(raw, "required_bandwidth_mbps", 5.0, 0.001, 100_000.0),
    )
    if not config.all_targets():
        raise ValueError("link: configure a reflector or at least one target")
    if len(config.all_targets()) > MAX_LINK_TARGETS:
        raise ValueError(f"link: at most {MAX_LINK_TARGETS} targets")
    return config


def _target(body: Any, index: int, reflector: ReflectorEndpoint | None) -> LinkTarget:
    where = f"link.targets[{index}]."
    body = _mapping(body, where.rstrip("."))
    _no_unknown(body, _TARGET_KEYS, where)
    name = body.get("name")
    if not wire.is_slug(name):
        raise ValueError(f"{where}name {name!r} is not a slug (lowercase letters, digits, '-')")
    if name == REFLECTOR_TARGET:
        raise ValueError(f"{where}name 'reflector' is reserved for link.reflector")
    method = body.get("method")
    if method not in LINK_METHODS:
        raise ValueError(f"{where}method must be one of {', '.join(LINK_METHODS)}, "
                         f"got {method!r}")
    host = _host(body, where)
    if method == "tcp-connect":
        port = _port(body, "port", where)
        if port is None:
            raise ValueError(f"{where}port is required for tcp-connect")
    elif method == "udp-reflector":
        if reflector is None:
            raise ValueError(f"{where}udp-reflector needs link.reflector (for its key)")
        port = _port(body, "port", where) or DEFAULT_REFLECTOR_UDP_PORT
    else:  # icmp: a port, if given, is where to fall back to tcp-connect
        port = _port(body, "port", where)
    return LinkTarget(name, host, method, port)
