"""What a full test measured, judged against the limits: one ``Criterion`` per check.

Pure: no sockets, no clocks, so every edge of every limit can be checked in a table.
``fulltest`` gathers the ``Facts``; this module only compares. Names, units, labels and
advice come from ``agent.readiness.catalogue``. Values travel in the catalogue's units
(seconds, a 0-1 ratio, bit/s, a count, MOS, 1/0 for a yes-or-no).

Rules worth knowing:

- A measurement that could not be made (``Failed``, e.g. upsd unreachable, no reply from
  the reflector) is a failing criterion with ``value=None``: never skipped, because "could
  not check" is not "ready". Its reason is kept as the criterion's note for the checklist.
- Only what the site configures is judged (devices per configured kind, UPS, recording
  and backup volumes, clock, software); the rest is reported as *not checked*. The link
  is the exception: every bridge needs one, so a missing reflector fails the link
  criteria ("no reflector configured").
- Comparisons (``COMPARATORS``): RTT and jitter ``<=``, loss strictly ``<``, MOS,
  bandwidth, devices, UPS runtime and recording time ``>=``, clock ``|offset| <=``.
- MOS >= 3.6: the G.107 E-model gives MOS 3.6 at R = 70, the lower edge of G.109's
  "medium" speech quality; below it many users are dissatisfied. It folds RTT, jitter
  and loss into one figure, so a link just inside each separate limit can still fail it.
- Several UPSes are judged as one bridge, by the worst: ``ups-power`` passes only when
  every UPS is on mains, ``ups-runtime`` carries the lowest runtime and passes only when
  every UPS has enough (``agent.ups.model.runtime_sufficient``); the note names each UPS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.durations import spoken
from agent.readiness.catalogue import CRITERIA
from agent.ups.model import UpsReading, runtime_sufficient
from agent.wire import Criterion

if TYPE_CHECKING:
    from agent.config import AgentConfig

# How each criterion's value is compared with its limit ("=" : a yes-or-no, limit 1).
COMPARATORS: dict[str, str] = {
    "link-rtt": "<=", "link-jitter": "<=", "link-loss": "<", "link-mos": ">=",
    "bandwidth-up": ">=", "bandwidth-down": ">=",
    "camera": ">=", "microphone": ">=", "speaker": ">=", "display": ">=",
    "ups-power": "=", "ups-runtime": ">=", "recording-space": ">=", "backup-disk": "=",
    "clock": "|<=|", "software": "=",
}
DEVICE_KINDS = ("camera", "microphone", "speaker", "display")
NO_REFLECTOR = "no reflector configured (link.reflector)"


@dataclass(frozen=True)
class Failed:
    """A measurement that could not be made, and why (shown to the technician)."""

    reason: str


Reading = float | Failed


@dataclass(frozen=True)
class DeviceFacts:
    """One configured kind of device: working ones found against the expectation."""

    found: int | Failed
    expected: int
    missing: tuple[str, ...] = ()  # configured names no working device matched


@dataclass(frozen=True)
class Facts:
    """Everything one full test measured. ``None`` where the site configures nothing."""

    rtt_median: Reading  # seconds
    jitter: Reading  # seconds, RFC 3550
    loss_ratio: Reading  # 0-1
    mos: Reading
    bandwidth_up: Reading  # bit/s
    bandwidth_down: Reading
    devices: Mapping[str, DeviceFacts] = field(default_factory=dict)  # configured kinds
    ups: Mapping[str, UpsReading | Failed] = field(default_factory=dict)  # by UPS name
    recording_seconds_left: Reading | None = None
    backup_present: bool | Failed | None = None
    clock_offset: Reading | None = None  # seconds, server - local
    software: Mapping[str, bool | Failed] = field(default_factory=dict)  # running, by name
    # Extra words per criterion name (e.g. why the backup disk counts as absent).
    details: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def link_failed(cls, reason: str, **room: Any) -> Facts:
        """Facts of a test whose link could not be measured at all."""
        failed = Failed(reason)
        return cls(failed, failed, failed, failed, failed, failed, **room)


@dataclass(frozen=True)
class Limits:
    """The limits one test is judged by (``from_config`` takes them from the site)."""

    max_rtt_seconds: float = 0.150
    max_jitter_seconds: float = 0.030
    max_loss_ratio: float = 0.01
    min_mos: float = 3.6
    min_bandwidth_bps: float = 5e6
    session_seconds: float = 3 * 3600.0
    ups_margin_seconds: float = 900.0
    max_clock_offset_seconds: float = 0.5

    @property
    def ups_required_seconds(self) -> float:
        return self.session_seconds + self.ups_margin_seconds

    @classmethod
    def from_config(cls, config: AgentConfig, session_seconds: float | None = None) -> Limits:
        """The site's limits; ``session_seconds`` (from the collector's order) wins over
        the planned ``session.length_seconds``."""
        r = config.readiness
        required = 5.0 if config.link is None else config.link.required_bandwidth_mbps
        return cls(
            max_rtt_seconds=r.max_rtt_ms / 1000.0,
            max_jitter_seconds=r.max_jitter_ms / 1000.0,
            max_loss_ratio=r.max_loss_percent / 100.0,
            min_mos=r.min_mos,
            min_bandwidth_bps=required * 1e6,
            session_seconds=(config.session.length_seconds if session_seconds is None
                             else float(session_seconds)),
            ups_margin_seconds=config.session.ups_margin_seconds,
            max_clock_offset_seconds=(cls.max_clock_offset_seconds if config.clock is None
                                      else config.clock.max_offset_seconds),
        )


@dataclass(frozen=True)
class Judged:
    """A criterion and the words that go with it (a reason, per-UPS detail), if any."""

    criterion: Criterion
    note: str | None = None


def _crit(name: str, ok: bool, value: float | None, limit: float | None,
          note: str | None = None) -> Judged:
    return Judged(Criterion(name, ok, value, limit, CRITERIA[name].unit), note)


def _compare(name: str, reading: Reading, limit: float, note: str | None = None) -> Judged:
    """A numeric criterion: ``Failed`` fails with its reason, else the comparator decides."""
    if isinstance(reading, Failed):
        return _crit(name, False, None, limit, reading.reason)
    op = COMPARATORS[name]
    ok = {"<=": reading <= limit, "<": reading < limit, ">=": reading >= limit,
          "|<=|": abs(reading) <= limit}[op]
    return _crit(name, ok, float(reading), limit, note)


def _flag(name: str, reading: bool | Failed, note: str | None = None) -> Judged:
    if isinstance(reading, Failed):
        return _crit(name, False, None, 1.0, reading.reason)
    return _crit(name, reading, 1.0 if reading else 0.0, 1.0, note)


def _device(kind: str, facts: DeviceFacts) -> Judged:
    if isinstance(facts.found, Failed):
        return _crit(kind, False, None, float(facts.expected), facts.found.reason)
    note = "missing " + ", ".join(repr(n) for n in facts.missing) if facts.missing else None
    ok = facts.found >= facts.expected and not facts.missing
    return _crit(kind, ok, float(facts.found), float(facts.expected), note)


def _ups(readings: Mapping[str, UpsReading | Failed], required: float) -> list[Judged]:
    """``ups-power`` and ``ups-runtime`` for every UPS together, judged by the worst."""
    failed = {n: r.reason for n, r in readings.items() if isinstance(r, Failed)}
    ok_readings = {n: r for n, r in readings.items() if isinstance(r, UpsReading)}
    unread = "; ".join(f"{n}: {why}" for n, why in failed.items())
    several = len(readings) > 1

    states = {n: r.power_state for n, r in ok_readings.items()}
    off_mains = [f"{n}: {s.replace('_', ' ')}" for n, s in states.items() if s != "mains"]
    power_note = "; ".join(p for p in (unread, "; ".join(off_mains)) if p) or None
    if failed:
        power = _crit("ups-power", False, None, 1.0, power_note)
    else:
        power = _crit("ups-power", not off_mains, 0.0 if off_mains else 1.0, 1.0, power_note)

    runtimes = {n: r.runtime_seconds for n, r in ok_readings.items()}
    parts = [f"{n}: {'runtime not reported' if t is None else spoken(t)}"
             + (" (low battery)" if states[n] == "low_battery" else "")
             for n, t in runtimes.items() if several or t is None
             or states[n] == "low_battery"]
    runtime_note = "; ".join(p for p in (unread, "; ".join(parts)) if p) or None
    if failed or any(t is None for t in runtimes.values()):
        runtime = _crit("ups-runtime", False, None, required, runtime_note)
    else:
        worst = min(t for t in runtimes.values() if t is not None)
        ok = all(runtime_sufficient(r, required) for r in ok_readings.values())
        runtime = _crit("ups-runtime", ok, worst, required, runtime_note)
    return [power, runtime]


def _software(running: Mapping[str, bool | Failed]) -> Judged:
    failed = {n: r.reason for n, r in running.items() if isinstance(r, Failed)}
    if failed:
        return _crit("software", False, None, 1.0,
                     "; ".join(f"{n}: {why}" for n, why in failed.items()))
    stopped = [n for n, r in running.items() if not r]
    return _flag("software", not stopped, "not running: " + ", ".join(stopped) if stopped else None)


def judge(facts: Facts, limits: Limits) -> tuple[Judged, ...]:
    """Every applicable criterion, in catalogue order, with its note."""
    out = [
        _compare("link-rtt", facts.rtt_median, limits.max_rtt_seconds),
        _compare("link-jitter", facts.jitter, limits.max_jitter_seconds),
        _compare("link-loss", facts.loss_ratio, limits.max_loss_ratio),
        _compare("link-mos", facts.mos, limits.min_mos),
        _compare("bandwidth-up", facts.bandwidth_up, limits.min_bandwidth_bps),
        _compare("bandwidth-down", facts.bandwidth_down, limits.min_bandwidth_bps),
    ]
    out += [_device(kind, facts.devices[kind]) for kind in DEVICE_KINDS if kind in facts.devices]
    if facts.ups:
        out += _ups(facts.ups, limits.ups_required_seconds)
    if facts.recording_seconds_left is not None:
        out.append(_compare("recording-space", facts.recording_seconds_left,
                            limits.session_seconds, facts.details.get("recording-space")))
    if facts.backup_present is not None:
        out.append(_flag("backup-disk", facts.backup_present, facts.details.get("backup-disk")))
    if facts.clock_offset is not None:
        out.append(_compare("clock", facts.clock_offset, limits.max_clock_offset_seconds))
    if facts.software:
        out.append(_software(facts.software))
    order = list(CRITERIA)
    return tuple(sorted(out, key=lambda j: order.index(j.criterion.name)))


def evaluate(facts: Facts, limits: Limits) -> tuple[Criterion, ...]:
    """The criteria alone, as a ``TestResult`` carries them."""
    return tuple(j.criterion for j in judge(facts, limits))


def not_checked(judged: tuple[Judged, ...]) -> tuple[str, ...]:
    """Catalogue criteria this site's test did not cover (nothing configured for them)."""
    done = {j.criterion.name for j in judged}
    return tuple(name for name in CRITERIA if name not in done)
