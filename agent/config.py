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
from agent.spool import (
    DEFAULT_KEEP_ACKED_SECONDS,
    DEFAULT_MAX_AGE_SECONDS,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MESSAGES,
)
from agent.yamlfile import read_yaml

DEFAULT_INTERVAL_SECONDS = 10.0
# The interval bounds the wire accepts for a probe report.
MIN_INTERVAL_SECONDS = 0.001
MAX_INTERVAL_SECONDS = 86400.0

_TOP_KEYS = {"site", "province", "prefix", "broker", "spool", "interval_seconds",
             "recording_volume", "backup_volume", "probes", "link", "devices", "storage",
             "clock", "software", "ups", "network_gear", "session", "readiness"}
_SPOOL_KEYS = {"path", "max_messages", "max_age_seconds", "max_bytes", "keep_acked_seconds"}
_PROBE_KEYS = {"enabled", "interval_seconds"}
_LINK_KEYS = {"reflector", "targets", "packet_interval_seconds", "connect_interval_seconds",
              "required_bandwidth_mbps"}
_REFLECTOR_KEYS = {"host", "udp_port", "tcp_port", "key_file"}
_TARGET_KEYS = {"name", "host", "method", "port"}
LINK_METHODS = ("udp-reflector", "icmp", "tcp-connect")
SNMP_VERSIONS = ("2c", "3")
SNMP_AUTH_PROTOCOLS = ("md5", "sha", "sha224", "sha256", "sha384", "sha512")
SNMP_PRIV_PROTOCOLS = ("des", "aes", "aes192", "aes256")
UPS_MIBS = ("ups-mib", "apc")
_STORAGE_KEYS = {"recording_bitrate_mbps", "backup_device"}
_CLOCK_KEYS = {"server", "port", "max_offset_seconds", "timeout_seconds"}
_SOFTWARE_KEYS = {"name", "processes", "version_file"}
_SNMP_KEYS = {"host", "port", "version", "community", "user", "auth_protocol", "auth_key",
              "priv_protocol", "priv_key", "timeout_seconds", "retries"}
_NUT_KEYS = {"host", "port", "ups", "username", "password", "timeout_seconds"}
_UPS_KEYS = {"name", "nut", "snmp", "mib"}
_GEAR_KEYS = {"name", "snmp", "interfaces"}
_SESSION_KEYS = {"length_seconds", "ups_margin_seconds"}
_READINESS_KEYS = {"max_rtt_ms", "max_jitter_ms", "max_loss_percent", "min_mos", "link_seconds",
                   "link_packets_per_second", "bandwidth_seconds"}
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
    # How long a message the broker acknowledged stays in the spool, to be sent again if
    # the connection drops meanwhile: more than the broker's autosave_interval plus 1.5 x
    # broker.keepalive (Mosquitto's PUBACK precedes its disk snapshot). 0: forget on PUBACK.
    keep_acked_seconds: float = DEFAULT_KEEP_ACKED_SECONDS


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
class DeviceExpectation:
    """Devices of one kind the room must have: a count, optionally each named.

    ``names`` are case-insensitive substrings; each must match a different device, so
    ``["HDMI", "HDMI"]`` asks for two connected HDMI outputs.
    """

    kind: str  # one of wire.DEVICE_KINDS
    count: int
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class StorageConfig:
    """How recording space is judged: the session recording's bitrate, the backup disk."""

    recording_bitrate_mbps: float = 4.0  # 1080p H.264 of the whole session
    backup_device: str | None = None  # e.g. /dev/disk/by-label/BW-BACKUP: plugged in?


@dataclass(frozen=True)
class ClockConfig:
    server: str
    port: int = 123
    max_offset_seconds: float = 0.5
    timeout_seconds: float = 2.0


@dataclass(frozen=True)
class SoftwareConfig:
    """One conference client: its label and the process names it runs as."""

    name: str  # slug, the ``name`` label
    processes: tuple[str, ...]  # matched case-insensitively, ".exe" optional
    version_file: str | None = None  # a file whose first line is the version, if any


@dataclass(frozen=True)
class SnmpTarget:
    host: str
    port: int = 161
    version: str = "2c"  # "2c" or "3"
    community: str | None = None  # v2c
    user: str | None = None  # v3 (USM)
    auth_protocol: str | None = None  # one of SNMP_AUTH_PROTOCOLS
    auth_key: str | None = None
    priv_protocol: str | None = None  # one of SNMP_PRIV_PROTOCOLS
    priv_key: str | None = None
    timeout_seconds: float = 2.0
    retries: int = 1


@dataclass(frozen=True)
class NutTarget:
    host: str
    ups: str  # the UPS's name on that upsd
    port: int = 3493
    username: str | None = None
    password: str | None = None
    timeout_seconds: float = 3.0


@dataclass(frozen=True)
class UpsConfig:
    """One UPS, read either over NUT or over SNMP (UPS-MIB or APC PowerNet)."""

    name: str  # slug, the ``ups`` label
    nut: NutTarget | None = None
    snmp: SnmpTarget | None = None
    mib: str = "ups-mib"  # for snmp: one of UPS_MIBS


@dataclass(frozen=True)
class NetworkGearConfig:
    """A router or switch whose uplink interfaces are watched over SNMP IF-MIB."""

    name: str  # slug, the ``device`` label
    snmp: SnmpTarget
    interfaces: tuple[str, ...] = ()  # ifName or ifDescr; empty: every interface


@dataclass(frozen=True)
class SessionPlan:
    """The session the site plans for until the schedule says otherwise."""

    length_seconds: float = 3 * 3600.0  # a morning's reception session
    ups_margin_seconds: float = 900.0


@dataclass(frozen=True)
class ReadinessConfig:
    """Limits of the full readiness test (``bridgewatch-agent check``, ``run_test``).

    The usual video-conference limits: RTT, jitter (RFC 3550) and loss as ITU-T G.114 and
    the platforms' own guidance give them; MOS 3.6 is R = 70 of the G.107 E-model, the
    lower edge of G.109's "medium" quality, below which many users are dissatisfied.
    The bandwidth requirement is ``link.required_bandwidth_mbps`` (the site's level).
    """

    max_rtt_ms: float = 150.0  # median round-trip time to the reflector
    max_jitter_ms: float = 30.0  # RFC 3550 interarrival jitter on RTTs
    max_loss_percent: float = 1.0  # loss must stay *below* this
    min_mos: float = 3.6
    link_seconds: float = 10.0  # length of the probe burst to the reflector
    # The reflector answers at most 50 packets/s per source (its rate limit), and the
    # agent's own link probe shares that budget.
    link_packets_per_second: float = 20.0
    bandwidth_seconds: float = bandwidth.DEFAULT_SECONDS  # per direction


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
    devices: tuple[DeviceExpectation, ...] = ()
    storage: StorageConfig = field(default_factory=StorageConfig)
    clock: ClockConfig | None = None
    software: tuple[SoftwareConfig, ...] = ()
    ups: tuple[UpsConfig, ...] = ()
    network_gear: tuple[NetworkGearConfig, ...] = ()
    session: SessionPlan = field(default_factory=SessionPlan)
    readiness: ReadinessConfig = field(default_factory=ReadinessConfig)


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
        devices=_devices(_mapping(raw.get("devices"), "devices", optional=True)),
        storage=_storage(_mapping(raw.get("storage"), "storage", optional=True)),
        clock=None if raw.get("clock") is None else _clock(_mapping(raw["clock"], "clock")),
        software=_named_list(raw, "software", _software),
        ups=_named_list(raw, "ups", _ups),
        network_gear=_named_list(raw, "network_gear", _network_gear),
        session=_session(_mapping(raw.get("session"), "session", optional=True)),
        readiness=_readiness(_mapping(raw.get("readiness"), "readiness", optional=True)),
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
    keep = _number(raw.get("keep_acked_seconds", DEFAULT_KEEP_ACKED_SECONDS),
                   "spool.keep_acked_seconds")
    if not 0 <= keep <= max_age:
        raise ValueError("spool.keep_acked_seconds must be between 0 and "
                         f"spool.max_age_seconds ({max_age:g}), got {keep!r}")
    return SpoolConfig(
        path=base_dir / Path(path).expanduser(),
        max_messages=_positive_int(raw, "max_messages", DEFAULT_MAX_MESSAGES, 1),
        max_age_seconds=max_age,
        # One message must always fit, or the spool would drop what it just stored.
        max_bytes=_positive_int(raw, "max_bytes", DEFAULT_MAX_BYTES,
                                wire.MAX_PAYLOAD_BYTES),
        keep_acked_seconds=keep,
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
             highest: float, where: str = "link.") -> float:
    value = _number(raw.get(key, default), f"{where}{key}")
    if not lowest <= value <= highest:
        raise ValueError(f"{where}{key} must be between {lowest:g} and {highest:g}, "
                         f"got {value!r}")
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


def _text(raw: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
    """An optional (or required) non-empty one-line string."""
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or any(c in value for c in "\r\n\0"):
        raise ValueError(f"{where}{key} must be a non-empty string, got {value!r}")
    return value


def _named_list(raw: dict[str, Any], key: str, parse: Any) -> tuple[Any, ...]:
    """A list of mappings each with a unique slug ``name``, parsed by ``parse(body, where)``."""
    items = raw.get(key, [])
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ValueError(f"{key} must be a list")
    parsed = tuple(parse(_mapping(body, f"{key}[{i}]"), f"{key}[{i}].")
                   for i, body in enumerate(items))
    names = [item.name for item in parsed]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise ValueError(f"{key}: name {duplicate!r} is used twice")
    return parsed


def _name(body: dict[str, Any], where: str) -> str:
    name = body.get("name")
    if not wire.is_slug(name):
        raise ValueError(f"{where}name {name!r} is not a slug (lowercase letters, digits, '-')")
    return name


def _devices(raw: dict[str, Any]) -> tuple[DeviceExpectation, ...]:
    _no_unknown(raw, set(wire.DEVICE_KINDS), "devices.")
    out = []
    for kind in wire.DEVICE_KINDS:
        value = raw.get(kind)
        if value is None:
            continue
        if isinstance(value, list):
            if not value or not all(isinstance(n, str) and n.strip() for n in value):
                raise ValueError(f"devices.{kind} must be a count or a list of device names")
            out.append(DeviceExpectation(kind, len(value), tuple(n.strip() for n in value)))
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 64:
            out.append(DeviceExpectation(kind, value))
        else:
            raise ValueError(f"devices.{kind} must be a count (0-64) or a list of device "
                             f"names, got {value!r}")
    return tuple(out)


def _storage(raw: dict[str, Any]) -> StorageConfig:
    _no_unknown(raw, _STORAGE_KEYS, "storage.")
    return StorageConfig(
        recording_bitrate_mbps=_bounded(raw, "recording_bitrate_mbps", 4.0, 0.01, 1000.0,
                                        "storage."),
        backup_device=_text(raw, "backup_device", "storage."),
    )


def _clock(raw: dict[str, Any]) -> ClockConfig:
    _no_unknown(raw, _CLOCK_KEYS, "clock.")
    return ClockConfig(
        server=_host({"host": raw.get("server")}, "clock.server: "),
        port=_port(raw, "port", "clock.") or 123,
        max_offset_seconds=_bounded(raw, "max_offset_seconds", 0.5, 0.001, 3600.0, "clock."),
        timeout_seconds=_bounded(raw, "timeout_seconds", 2.0, 0.05, 30.0, "clock."),
    )


def _software(body: dict[str, Any], where: str) -> SoftwareConfig:
    _no_unknown(body, _SOFTWARE_KEYS, where)
    processes = body.get("processes")
    if isinstance(processes, str):
        processes = [processes]
    if (not isinstance(processes, list) or not processes
            or not all(isinstance(p, str) and p.strip() for p in processes)):
        raise ValueError(f"{where}processes must be a process name or a list of them")
    return SoftwareConfig(_name(body, where), tuple(p.strip() for p in processes),
                          _text(body, "version_file", where))


def _snmp(raw: Any, where: str) -> SnmpTarget:
    body = _mapping(raw, where.rstrip("."))
    _no_unknown(body, _SNMP_KEYS, where)
    version = str(body.get("version", "2c"))
    if version not in SNMP_VERSIONS:
        raise ValueError(f"{where}version must be 2c or 3, got {body.get('version')!r}")
    target = SnmpTarget(
        host=_host(body, where),
        port=_port(body, "port", where) or 161,
        version=version,
        community=_text(body, "community", where),
        user=_text(body, "user", where),
        auth_protocol=_text(body, "auth_protocol", where),
        auth_key=_text(body, "auth_key", where),
        priv_protocol=_text(body, "priv_protocol", where),
        priv_key=_text(body, "priv_key", where),
        timeout_seconds=_bounded(body, "timeout_seconds", 2.0, 0.05, 60.0, where),
        retries=int(_bounded(body, "retries", 1, 0, 5, where)),
    )
    if version == "2c" and target.community is None:
        raise ValueError(f"{where}community is required for SNMP v2c")
    if version == "3":
        if target.user is None:
            raise ValueError(f"{where}user is required for SNMP v3")
        for kind, choices in (("auth", SNMP_AUTH_PROTOCOLS), ("priv", SNMP_PRIV_PROTOCOLS)):
            protocol = getattr(target, f"{kind}_protocol")
            key = getattr(target, f"{kind}_key")
            if protocol is not None and protocol not in choices:
                raise ValueError(f"{where}{kind}_protocol must be one of {', '.join(choices)}, "
                                 f"got {protocol!r}")
            if (protocol is None) != (key is None):
                raise ValueError(f"{where}{kind}_protocol and {kind}_key go together")
            if key is not None and len(key) < 8:
                raise ValueError(f"{where}{kind}_key must be at least 8 characters (RFC 3414)")
        if target.priv_protocol is not None and target.auth_protocol is None:
            raise ValueError(f"{where}privacy needs authentication (auth_protocol)")
    return target


def _nut(raw: Any, where: str) -> NutTarget:
    body = _mapping(raw, where.rstrip("."))
    _no_unknown(body, _NUT_KEYS, where)
    ups = _text(body, "ups", where, required=True)
    assert ups is not None
    if any(c.isspace() or c == '"' for c in ups):
        raise ValueError(f"{where}ups must be a UPS name as upsd knows it, got {ups!r}")
    username = _text(body, "username", where)
    password = _text(body, "password", where)
    if (username is None) != (password is None):
        raise ValueError(f"{where}username and password go together")
    return NutTarget(host=_host(body, where), ups=ups, port=_port(body, "port", where) or 3493,
                     username=username, password=password,
                     timeout_seconds=_bounded(body, "timeout_seconds", 3.0, 0.05, 60.0, where))


def _ups(body: dict[str, Any], where: str) -> UpsConfig:
    _no_unknown(body, _UPS_KEYS, where)
    name = _name(body, where)
    if (body.get("nut") is None) == (body.get("snmp") is None):
        raise ValueError(f"{where[:-1]}: give exactly one of nut or snmp")
    mib = body.get("mib", "ups-mib")
    if mib not in UPS_MIBS:
        raise ValueError(f"{where}mib must be one of {', '.join(UPS_MIBS)}, got {mib!r}")
    if body.get("nut") is not None:
        if "mib" in body:
            raise ValueError(f"{where}mib is for snmp only")
        return UpsConfig(name, nut=_nut(body["nut"], f"{where}nut."))
    return UpsConfig(name, snmp=_snmp(body["snmp"], f"{where}snmp."), mib=mib)


def _network_gear(body: dict[str, Any], where: str) -> NetworkGearConfig:
    _no_unknown(body, _GEAR_KEYS, where)
    interfaces = body.get("interfaces", [])
    if (not isinstance(interfaces, list)
            or not all(isinstance(i, str) and i for i in interfaces)):
        raise ValueError(f"{where}interfaces must be a list of interface names")
    return NetworkGearConfig(_name(body, where), _snmp(body.get("snmp"), f"{where}snmp."),
                             tuple(interfaces))


def _session(raw: dict[str, Any]) -> SessionPlan:
    _no_unknown(raw, _SESSION_KEYS, "session.")
    return SessionPlan(
        length_seconds=_bounded(raw, "length_seconds", SessionPlan.length_seconds, 60.0,
                                86400.0, "session."),
        ups_margin_seconds=_bounded(raw, "ups_margin_seconds", SessionPlan.ups_margin_seconds,
                                    0.0, 86400.0, "session."),
    )


def _readiness(raw: dict[str, Any]) -> ReadinessConfig:
    _no_unknown(raw, _READINESS_KEYS, "readiness.")
    d = ReadinessConfig

    def bounded(key: str, lowest: float, highest: float) -> float:
        return _bounded(raw, key, getattr(d, key), lowest, highest, "readiness.")

    return ReadinessConfig(
        max_rtt_ms=bounded("max_rtt_ms", 1.0, 10_000.0),
        max_jitter_ms=bounded("max_jitter_ms", 0.1, 10_000.0),
        max_loss_percent=bounded("max_loss_percent", 0.01, 100.0),
        min_mos=bounded("min_mos", 1.0, 4.5),
        link_seconds=bounded("link_seconds", 1.0, 120.0),
        link_packets_per_second=bounded("link_packets_per_second", 1.0, 40.0),
        bandwidth_seconds=bounded("bandwidth_seconds", 0.5, 60.0),
    )
