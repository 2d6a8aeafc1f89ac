"""The BridgeWatch wire contract, version 1: topics, payloads and their validation.

Owned by the agent, imported by the collector, so both sides can never disagree.
Everything a site sends is JSON on ``<prefix>/v1/<province>/<site>/<kind>``.

Payloads carry raw values and counters (never percentages), each metric row as a
positional list ``[label values..., value]`` whose label names come from ``CATALOGUE``:
compact on a poor link and cheap to validate at 10,000 messages a second.

Data messages (telemetry, test) carry ``(epoch, seq)``: ``epoch`` identifies the agent's
spool (a new spool starts a new stream), ``seq`` counts its messages from 1, and
``floor`` is the oldest seq the agent's spool still kept when it built the message
(unacknowledged, or acknowledged and kept until safe on the broker),
so the collector can tell "not yet arrived" from "never coming" without unbounded memory.
State messages are ordered by the agent's connection counter ``conn``: the Last Will
(offline) of connection n replaces the online of connection n, and any state of n+1
replaces both, whatever order the broker delivers them in.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

WIRE_VERSION = 1
DEFAULT_PREFIX = "bridgewatch"
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_LABEL_VALUE_CHARS = 128
MAX_TEXT_CHARS = 200
MAX_PROBES = 64
MAX_ROWS_PER_METRIC = 256

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
_SLUG = re.compile(SLUG_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_INT = 2**63 - 1
_MAX_FLOAT = sys.float_info.max
# Samples older than this (or this far in the future) are refused: a wrong clock or a forged ts.
MAX_CLOCK_SKEW_SECONDS = 400 * 86400


class Kind(str, Enum):
    TELEMETRY = "telemetry"
    STATE = "state"
    TEST = "test"
    CMD = "cmd"


class Reason(str, Enum):
    """Why a message was rejected: a closed set, so it can be a metric label."""

    OVERSIZED = "oversized"
    MALFORMED_JSON = "malformed_json"
    NOT_OBJECT = "not_object"
    SCHEMA_VERSION = "schema_version"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    BAD_SLUG = "bad_slug"
    BAD_TOPIC = "bad_topic"
    UNKNOWN_SITE = "unknown_site"
    SPOOFED = "spoofed"
    UNKNOWN_METRIC = "unknown_metric"
    BAD_LABEL = "bad_label"
    OLD_EPOCH = "old_epoch"
    # Test results the readiness service refuses (the payload itself is valid).
    UNKNOWN_SESSION = "unknown_session"
    NOT_IN_SESSION = "not_in_session"
    UNKNOWN_TRIGGER = "unknown_trigger"


class WireError(ValueError):
    """A payload or topic that breaks the contract; ``reason`` is a ``Reason``."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class MetricSpec:
    """One metric family: exposed as ``bridge_<name>`` by the collector."""

    name: str
    type: str  # "gauge" or "counter"
    help: str
    labels: tuple[str, ...] = ()

    @property
    def exposed_name(self) -> str:
        return "bridge_" + self.name


def _spec(name: str, type_: str, help_: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, type_, help_, tuple(labels))


# The catalogue: every metric a probe may send. New probes add their families here.
CATALOGUE: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        _spec("cpu_seconds_total", "counter", "CPU time spent per mode.", "mode"),
        _spec("cpu_logical_cores", "gauge", "Logical CPU cores."),
        _spec("memory_total_bytes", "gauge", "Physical memory."),
        _spec("memory_available_bytes", "gauge", "Memory available without swapping."),
        _spec("swap_total_bytes", "gauge", "Swap space."),
        _spec("swap_used_bytes", "gauge", "Swap space in use."),
        _spec("load1", "gauge", "1-minute load average."),
        _spec("load5", "gauge", "5-minute load average."),
        _spec("load15", "gauge", "15-minute load average."),
        _spec("boot_time_seconds", "gauge", "Unix time the bridge PC booted."),
        _spec("filesystem_size_bytes", "gauge", "Filesystem size.", "mountpoint", "role"),
        _spec(
            "filesystem_avail_bytes",
            "gauge",
            "Filesystem space available to the agent's user.",
            "mountpoint",
            "role",
        ),
        _spec("network_up", "gauge", "1 when the interface link is up.", "interface"),
        _spec(
            "network_speed_bits_per_second",
            "gauge",
            "Negotiated link speed (0 when unknown).",
            "interface",
        ),
        _spec("network_receive_bytes_total", "counter", "Bytes received.", "interface"),
        _spec("network_transmit_bytes_total", "counter", "Bytes sent.", "interface"),
        _spec("network_receive_errors_total", "counter", "Receive errors.", "interface"),
        _spec("network_transmit_errors_total", "counter", "Transmit errors.", "interface"),
        _spec("network_receive_drop_total", "counter", "Received packets dropped.", "interface"),
        _spec("network_transmit_drop_total", "counter", "Sent packets dropped.", "interface"),
        # Link quality, per target (the central reflector, gateway, DNS, conference platform).
        # method: udp-reflector | icmp | tcp-connect. Counters are cumulative since start.
        _spec("link_packets_sent_total", "counter", "Probe packets sent.", "target", "method"),
        _spec("link_packets_received_total", "counter", "Probe replies received (first copy).",
              "target", "method"),
        _spec("link_packets_duplicate_total", "counter", "Probe replies received again.",
              "target", "method"),
        _spec("link_packets_reordered_total", "counter",
              "Probe replies that arrived after a later one.", "target", "method"),
        _spec("link_rtt_seconds", "gauge",
              "Round-trip time over the last window, by quantile (0 = min, 1 = max).",
              "target", "method", "quantile"),
        _spec("link_jitter_seconds", "gauge",
              "Delay variation over the last window: definition rfc3550 (interarrival jitter, "
              "RFC 3550 6.4.1, on RTTs) or mean_abs_diff (mean |RTT(i) - RTT(i-1)|).",
              "target", "method", "definition"),
        _spec("link_r_factor", "gauge", "ITU-T G.107 E-model transmission rating R.", "target"),
        _spec("link_mos", "gauge", "Estimated MOS-CQE from R (ITU-T G.107 Annex B).", "target"),
        _spec("link_connect_seconds", "gauge", "TCP connect time to the target.", "target"),
        _spec("link_target_resolved", "gauge", "1 when the target's name resolved this round.",
              "target"),
        _spec("link_bandwidth_bits_per_second", "gauge",
              "Throughput of the last bandwidth test against the reflector.",
              "target", "direction"),
        _spec("link_bandwidth_test_timestamp_seconds", "gauge",
              "Unix time of the last bandwidth test.", "target"),
        # AV devices of the room. kind: camera | microphone | speaker | display.
        _spec("device_present", "gauge",
              "1 per device found; 0 for an expected (named) device that is missing.",
              "kind", "name"),
        _spec("device_count", "gauge", "Devices of this kind found.", "kind"),
        _spec("device_expected", "gauge", "Devices of this kind the site must have.", "kind"),
        # Recording storage: role is recording | backup.
        _spec("volume_mounted", "gauge", "1 when the configured volume is mounted.", "role"),
        _spec("volume_device_present", "gauge",
              "1 when the configured disk device (e.g. the USB backup disk) is plugged in.",
              "role"),
        _spec("recording_seconds_left", "gauge",
              "Recording time the recording volume still holds at the configured bitrate."),
        _spec("recording_bitrate_bits_per_second", "gauge",
              "Configured bitrate of a session recording."),
        _spec("planned_session_seconds", "gauge",
              "Session length the site plans for (configuration; the schedule may differ)."),
        # Clock against the configured NTP server (SNTP): offset = server - local.
        _spec("clock_offset_seconds", "gauge", "Offset of the server's clock from the PC's.",
              "server"),
        _spec("clock_round_trip_seconds", "gauge", "SNTP query round-trip time.", "server"),
        _spec("clock_server_stratum", "gauge", "Stratum the NTP server announced.", "server"),
        _spec("clock_offset_limit_seconds", "gauge", "Largest offset allowed (configuration)."),
        # Conference software: name is the configured label.
        _spec("software_running", "gauge", "1 when a process of the software runs.", "name"),
        _spec("software_processes", "gauge", "Processes of the software running.", "name"),
        _spec("software_version_info", "gauge", "Version of the software, when known.",
              "name", "version"),
        # UPS, read over NUT or SNMP (source: nut | snmp-ups-mib | snmp-apc).
        _spec("ups_info", "gauge", "1 per UPS, with where it is read from and its model.",
              "ups", "source", "model"),
        _spec("ups_status_flag", "gauge",
              "NUT-style ups.status flags (OL, OB, LB, ...): 1 when set.", "ups", "flag"),
        _spec("ups_power_state", "gauge",
              "Normalized power state, one-hot: mains | battery | low_battery | unknown.",
              "ups", "state"),
        _spec("ups_battery_charge_ratio", "gauge", "Battery charge (0-1).", "ups"),
        _spec("ups_runtime_seconds", "gauge", "Estimated runtime on battery.", "ups"),
        _spec("ups_load_ratio", "gauge", "Output load (0-1 of nominal).", "ups"),
        _spec("ups_input_voltage_volts", "gauge", "Input (mains) voltage.", "ups"),
        _spec("ups_input_frequency_hertz", "gauge", "Input (mains) frequency.", "ups"),
        _spec("ups_output_voltage_volts", "gauge", "Output voltage.", "ups"),
        _spec("ups_self_test_passed", "gauge",
              "Result of the last self-test: 1 passed, 0 failed (absent when none known).",
              "ups"),
        _spec("ups_alarms", "gauge", "Alarms the UPS reports as active.", "ups"),
        _spec("ups_runtime_required_seconds", "gauge",
              "Runtime a session needs: planned session length plus margin (configuration)."),
        # Network equipment of the site (router / switch uplink) over SNMP IF-MIB.
        _spec("netgear_uptime_seconds", "gauge", "Time since the device's agent started.",
              "device"),
        _spec("netgear_interface_up", "gauge", "1 when ifOperStatus is up.",
              "device", "interface"),
        _spec("netgear_interface_admin_up", "gauge", "1 when ifAdminStatus is up.",
              "device", "interface"),
        _spec("netgear_interface_speed_bits_per_second", "gauge", "Interface speed.",
              "device", "interface"),
        _spec("netgear_interface_receive_bytes_total", "counter", "Octets received.",
              "device", "interface"),
        _spec("netgear_interface_transmit_bytes_total", "counter", "Octets sent.",
              "device", "interface"),
        _spec("netgear_interface_receive_errors_total", "counter", "Inbound errors.",
              "device", "interface"),
        _spec("netgear_interface_transmit_errors_total", "counter", "Outbound errors.",
              "device", "interface"),
        _spec("netgear_interface_receive_discards_total", "counter", "Inbound discards.",
              "device", "interface"),
        _spec("netgear_interface_transmit_discards_total", "counter", "Outbound discards.",
              "device", "interface"),
        _spec("agent_resident_memory_bytes", "gauge", "Agent resident memory."),
        _spec("agent_cpu_seconds_total", "counter", "Agent CPU time (user + system)."),
        _spec("agent_spool_messages", "gauge", "Messages waiting in the agent's spool."),
        _spec("agent_spool_bytes", "gauge", "Payload bytes waiting in the agent's spool."),
        _spec(
            "agent_spool_dropped_total",
            "counter",
            "Messages the spool dropped past its size or age bound.",
        ),
    )
}

# The roles a filesystem may play in a bridge room (filesystem ``role`` label).
FILESYSTEM_ROLES = ("recording", "backup", "system", "other")

# AV device kinds (``kind`` label of the device families).
DEVICE_KINDS = ("camera", "microphone", "speaker", "display")
# Normalized power states (``state`` label of ups_power_state), and the status flags
# (``flag`` label of ups_status_flag, NUT's vocabulary, which the SNMP readers map onto).
POWER_STATES = ("mains", "battery", "low_battery", "unknown")
UPS_FLAGS = ("OL", "OB", "LB", "HB", "RB", "CHRG", "DISCHRG", "BYPASS", "CAL", "OFF",
             "OVER", "TRIM", "BOOST", "FSD", "ALARM")

STATE_VALUES = ("online", "offline")


# ---------------------------------------------------------------------------
# Topics


def is_slug(value: object) -> bool:
    # fullmatch: with match, '$' also matches before a final newline ("site\n" passed).
    return isinstance(value, str) and _SLUG.fullmatch(value) is not None


def topic(prefix: str, province: str, site: str, kind: Kind) -> str:
    for what, value in (("province", province), ("site", site)):
        if not is_slug(value):
            raise WireError(Reason.BAD_SLUG, f"{what} {value!r} is not a slug")
    return f"{prefix}/v{WIRE_VERSION}/{province}/{site}/{kind.value}"


def subscription(prefix: str, kind: Kind, province: str = "+") -> str:
    """The topic filter for one kind of message from every site (of one province)."""
    return f"{prefix}/v{WIRE_VERSION}/{province}/+/{kind.value}"


def parse_topic(prefix: str, name: str) -> tuple[str, str, Kind]:
    """Split a topic into (province, site, kind), refusing anything off-contract."""
    parts = name.split("/")
    if len(parts) != 5 or parts[0] != prefix or parts[1] != f"v{WIRE_VERSION}":
        raise WireError(Reason.BAD_TOPIC, "topic is not <prefix>/v1/<province>/<site>/<kind>")
    province, site, kind = parts[2], parts[3], parts[4]
    if not is_slug(province) or not is_slug(site):
        raise WireError(Reason.BAD_SLUG, "province or site in topic is not a slug")
    try:
        return province, site, Kind(kind)
    except ValueError:
        raise WireError(Reason.BAD_TOPIC, "unknown message kind in topic") from None


# ---------------------------------------------------------------------------
# Payload types

Row = tuple[tuple[str, ...], float]


# Decoded messages are values: nothing mutates them after decode. Not frozen, because a
# frozen dataclass costs ~0.7 µs more per object and intake builds eight per message.
@dataclass(slots=True)
class ProbeReport:
    ok: bool
    duration_seconds: float
    interval_seconds: float
    error: str | None = None
    metrics: dict[str, list[Row]] = field(default_factory=dict)


@dataclass(slots=True)
class Telemetry:
    province: str
    site: str
    epoch: int
    seq: int
    floor: int
    ts: float
    probes: dict[str, ProbeReport]


@dataclass(frozen=True)
class Criterion:
    name: str
    ok: bool
    value: float | None
    limit: float | None
    unit: str


@dataclass(frozen=True)
class TestResult:
    province: str
    site: str
    epoch: int
    seq: int
    floor: int
    ts: float
    test_id: str
    trigger: str
    passed: bool
    criteria: tuple[Criterion, ...]


@dataclass(frozen=True)
class State:
    province: str
    site: str
    seq: int
    conn: int
    ts: float
    state: str
    agent_version: str = ""
    hostname: str = ""
    os: str = ""


@dataclass(frozen=True)
class Command:
    province: str
    site: str
    seq: int
    ts: float
    command: str
    args: dict[str, Any] = field(default_factory=dict)


Message = Telemetry | TestResult | State | Command


# ---------------------------------------------------------------------------
# Encoding (agent side)


def _header(kind: Kind, province: str, site: str, seq: int, ts: float) -> dict[str, Any]:
    return {"v": WIRE_VERSION, "kind": kind.value, "province": province, "site": site,
            "seq": seq, "ts": round(ts, 3)}


def encode(message: Message) -> bytes:
    """Serialise a message; the inverse of ``decode`` for every valid message."""
    if isinstance(message, Telemetry):
        body = _header(Kind.TELEMETRY, message.province, message.site, message.seq, message.ts)
        body.update(epoch=message.epoch, floor=message.floor, probes={
            name: {
                "ok": r.ok,
                "duration_seconds": round(r.duration_seconds, 6),
                "interval_seconds": r.interval_seconds,
                "error": r.error,
                "metrics": {m: [[*labels, value] for labels, value in rows]
                            for m, rows in r.metrics.items()},
            }
            for name, r in message.probes.items()
        })
    elif isinstance(message, TestResult):
        body = _header(Kind.TEST, message.province, message.site, message.seq, message.ts)
        body.update(epoch=message.epoch, floor=message.floor, test_id=message.test_id,
                    trigger=message.trigger, passed=message.passed,
                    criteria=[c.__dict__ for c in message.criteria])
    elif isinstance(message, State):
        body = _header(Kind.STATE, message.province, message.site, message.seq, message.ts)
        body.update(conn=message.conn, state=message.state, agent_version=message.agent_version,
                    hostname=message.hostname, os=message.os)
    else:
        body = _header(Kind.CMD, message.province, message.site, message.seq, message.ts)
        body.update(command=message.command, args=message.args)
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return data.encode()


# ---------------------------------------------------------------------------
# Decoding and validation (collector side, and the agent for commands)


def _reject_constant(name: str) -> float:
    raise WireError(Reason.OUT_OF_RANGE, f"{name} is not a finite number")


def _get(obj: dict[str, Any], key: str, types: type | tuple[type, ...], where: str = "") -> Any:
    try:
        value = obj[key]
    except KeyError:
        raise WireError(Reason.MISSING_FIELD, f"{where}{key} is missing") from None
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
        raise WireError(Reason.WRONG_TYPE, f"{where}{key} has the wrong type")
    return value


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _count(obj: dict[str, Any], key: str, lowest: int = 1) -> int:
    value = _get(obj, key, int)
    if not lowest <= value <= _MAX_INT:
        raise WireError(Reason.OUT_OF_RANGE, f"{key} out of range")
    return value


def _number(value: Any, where: str, lowest: float = -_MAX_FLOAT,
            highest: float = _MAX_FLOAT) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WireError(Reason.WRONG_TYPE, f"{where} is not a number")
    # Finite bounds: refuse 1e400 (read as inf) and ints float() cannot hold (10**400).
    if not lowest <= value <= highest:
        raise WireError(Reason.OUT_OF_RANGE, f"{where} out of range")
    return float(value)


def _text(obj: dict[str, Any], key: str, limit: int = MAX_TEXT_CHARS) -> str:
    value = _get(obj, key, str)
    if len(value) > limit or _CONTROL.search(value):
        raise WireError(Reason.OUT_OF_RANGE, f"{key} is too long or has control characters")
    return value


def _timestamp(obj: dict[str, Any], now: float | None) -> float:
    ts = _number(_get(obj, "ts", (int, float)), "ts", 0.0)
    if now is not None and abs(ts - now) > MAX_CLOCK_SKEW_SECONDS:
        raise WireError(Reason.OUT_OF_RANGE, "ts is too far from the collector's clock")
    return ts


# Label sets already validated, per metric: rows repeat the same labels every message,
# so each distinct set is checked once (bounded, so a hostile sender cannot grow it).
_KNOWN_LABELS: dict[str, set[tuple[str, ...]]] = {name: set() for name in CATALOGUE}
_MAX_KNOWN_LABELS = 4096


def _check_labels(spec: MetricSpec, labels: tuple[str, ...]) -> None:
    for value in labels:
        if (type(value) is not str or not value or len(value) > MAX_LABEL_VALUE_CHARS
                or _CONTROL.search(value)):
            raise WireError(Reason.BAD_LABEL, f"{spec.name} has a bad label value")
    known = _KNOWN_LABELS[spec.name]
    if len(known) < _MAX_KNOWN_LABELS:
        known.add(labels)


def _bad_rows(spec: MetricSpec, rows: Any) -> WireError:
    """Say precisely what is wrong with rows the fast path refused."""
    arity = len(spec.labels)
    lowest = 0.0 if spec.type == "counter" else -_MAX_FLOAT
    if type(rows) is not list or len(rows) > MAX_ROWS_PER_METRIC:
        return WireError(Reason.WRONG_TYPE, f"{spec.name} is not a list of rows")
    for row in rows:
        if type(row) is not list or len(row) != arity + 1:
            return WireError(Reason.WRONG_TYPE, f"{spec.name} row must be [labels..., value]")
        value = row[arity]
        if type(value) is not float and type(value) is not int:
            return WireError(Reason.WRONG_TYPE, f"{spec.name} value is not a number")
        if not lowest <= value <= _MAX_FLOAT:
            return WireError(Reason.OUT_OF_RANGE, f"{spec.name} value out of range")
        for label in row[:arity]:
            if (type(label) is not str or not label or len(label) > MAX_LABEL_VALUE_CHARS
                    or _CONTROL.search(label)):
                return WireError(Reason.BAD_LABEL, f"{spec.name} has a bad label value")
    return WireError(Reason.BAD_LABEL, f"{spec.name} repeats a label set")


# Per metric, what validating a row needs: (spec, label arity, lowest value, known labels).
_RULES = {name: (spec, len(spec.labels), 0.0 if spec.type == "counter" else -_MAX_FLOAT,
                 _KNOWN_LABELS[name]) for name, spec in CATALOGUE.items()}


def _rows(metric: str, rows: Any) -> list[Row]:
    """Validate one metric's rows: the hot loop of intake, so one pass and no calls."""
    rule = _RULES.get(metric)
    if rule is None:
        raise WireError(Reason.UNKNOWN_METRIC, f"metric {str(metric)[:64]!r} is not in wire v1")
    spec, arity, lowest, known = rule
    if type(rows) is not list or len(rows) > MAX_ROWS_PER_METRIC:
        raise _bad_rows(spec, rows)
    out: list[Row] = []
    try:
        for row in rows:
            if type(row) is not list or len(row) != arity + 1:
                raise _bad_rows(spec, rows)
            value = row[-1]
            if ((type(value) is not float and type(value) is not int)
                    or not lowest <= value <= _MAX_FLOAT):  # also refuses NaN and 1e400
                raise _bad_rows(spec, rows)
            labels = tuple(row[:-1]) if arity else ()
            if labels not in known:  # TypeError for a list or object as a label value
                _check_labels(spec, labels)
            out.append((labels, value))
    except TypeError:
        raise _bad_rows(spec, rows) from None
    if arity and len(out) > 1 and len({labels for labels, _ in out}) != len(out):
        raise _bad_rows(spec, rows)
    return out


_NUMBER_TYPES = (int, float)


def _probe(name: str, raw: Any) -> ProbeReport:
    if type(raw) is not dict:
        raise WireError(Reason.WRONG_TYPE, f"probe {name} is not an object")
    try:
        ok, duration, interval = raw["ok"], raw["duration_seconds"], raw["interval_seconds"]
        metrics_raw = raw["metrics"]
    except KeyError as err:
        raise WireError(Reason.MISSING_FIELD, f"probes.{name}.{err.args[0]} is missing") from None
    if (type(ok) is not bool or type(duration) not in _NUMBER_TYPES
            or type(interval) not in _NUMBER_TYPES or type(metrics_raw) is not dict):
        raise WireError(Reason.WRONG_TYPE, f"probes.{name} has a field of the wrong type")
    if not (0.0 <= duration <= 3600.0 and 0.001 <= interval <= 86400.0):
        raise WireError(Reason.OUT_OF_RANGE, f"probes.{name} duration or interval out of range")
    error = raw.get("error")
    if error is not None:
        error = _text(raw, "error")
    metrics = {metric: _rows(metric, rows) for metric, rows in metrics_raw.items()}
    return ProbeReport(ok, duration, interval, error, metrics)


def _criterion(raw: Any) -> Criterion:
    if not isinstance(raw, dict):
        raise WireError(Reason.WRONG_TYPE, "criterion is not an object")
    value, limit = raw.get("value"), raw.get("limit")
    return Criterion(
        name=_slug_field(raw, "name"),
        ok=_get(raw, "ok", bool),
        value=None if value is None else _number(value, "criterion value"),
        limit=None if limit is None else _number(limit, "criterion limit"),
        unit=_text(raw, "unit", 32),
    )


def _slug_field(obj: dict[str, Any], key: str) -> str:
    value = _get(obj, key, str)
    if not is_slug(value):
        raise WireError(Reason.BAD_SLUG, f"{key} is not a slug")
    return value


# One decoder for all: json.loads(..., parse_constant=...) would build a new decoder and
# scanner per call, which measured as a quarter of the collector's intake time.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# A \ud800 escape with no pair is JSON syntax but not text: it has no UTF-8 form, so a
# label or host name holding one would break the exposition later. Only an escape can
# make one, so the check runs only for payloads that contain such an escape.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return True
    return False


def loads(payload: bytes) -> dict[str, Any]:
    """Parse a payload into a JSON object, refusing oversize, NaN and non-objects."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(Reason.OVERSIZED, f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        obj = _DECODER.decode(payload.decode("utf-8"))
    except WireError:
        raise
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise WireError(Reason.MALFORMED_JSON, "payload is not valid UTF-8 JSON") from None
    if b"\\u" in payload and _SURROGATE_ESCAPE.search(payload) and _has_lone_surrogate(obj):
        raise WireError(Reason.MALFORMED_JSON, "payload has a lone UTF-16 surrogate")
    if not isinstance(obj, dict):
        raise WireError(Reason.NOT_OBJECT, "payload is not a JSON object")
    return obj


def decode(payload: bytes, kind: Kind, now: float | None = None) -> Message:
    """Validate one payload of the given kind; raise ``WireError`` with a reason."""
    obj = loads(payload)
    version = obj.get("v")
    if version != WIRE_VERSION or isinstance(version, bool):
        raise WireError(Reason.SCHEMA_VERSION, f"wire version {str(version)[:16]!r} unsupported")
    if obj.get("kind") != kind.value:
        raise WireError(Reason.WRONG_TYPE, "kind does not match the topic")
    province, site = _slug_field(obj, "province"), _slug_field(obj, "site")
    seq = _count(obj, "seq", 0)
    ts = _timestamp(obj, now)
    if kind is Kind.TELEMETRY or kind is Kind.TEST:
        epoch = _count(obj, "epoch")
        floor = _count(obj, "floor")
        if seq < 1 or floor > seq:
            raise WireError(Reason.OUT_OF_RANGE, "need 1 <= floor <= seq")
        if kind is Kind.TELEMETRY:
            probes_raw = _get(obj, "probes", dict)
            if len(probes_raw) > MAX_PROBES:
                raise WireError(Reason.OUT_OF_RANGE, "too many probes")
            probes = {}
            for name, raw in probes_raw.items():
                if not is_slug(name):
                    raise WireError(Reason.BAD_SLUG, "probe name is not a slug")
                probes[name] = _probe(name, raw)
            return Telemetry(province, site, epoch, seq, floor, ts, probes)
        criteria = _get(obj, "criteria", list)
        if len(criteria) > MAX_PROBES:
            raise WireError(Reason.OUT_OF_RANGE, "too many criteria")
        return TestResult(province, site, epoch, seq, floor, ts,
                          test_id=_text(obj, "test_id", 64), trigger=_text(obj, "trigger", 64),
                          passed=_get(obj, "passed", bool),
                          criteria=tuple(_criterion(c) for c in criteria))
    if kind is Kind.STATE:
        state = _get(obj, "state", str)
        if state not in STATE_VALUES:
            raise WireError(Reason.OUT_OF_RANGE, "state is not online/offline")
        return State(province, site, seq, _count(obj, "conn"), ts, state,
                     agent_version=_text(obj, "agent_version", 64),
                     hostname=_text(obj, "hostname", 128), os=_text(obj, "os", 128))
    args = _get(obj, "args", dict)
    if len(json.dumps(args)) > 4096:
        raise WireError(Reason.OVERSIZED, "command args too large")
    return Command(province, site, seq, ts, command=_slug_field(obj, "command"), args=args)
