"""One UPS reading whatever protocol it came over, the normalized power view, the rule.

Every reader (``agent.ups.nut``, ``agent.ups.snmp``) returns a ``UpsReading``: NUT's
``ups.status`` flag vocabulary (``OL``, ``OB``, ``LB``, ...) is the common language, so
an SNMP UPS-MIB ``upsOutputSource = battery(5)`` and a NUT ``OB DISCHRG`` read the same
downstream. Values a UPS does not report stay ``None`` and are not sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent import wire
from agent.durations import spoken
from agent.probes import label

Rows = dict[str, list[wire.Row]]

_FLAGS = frozenset(wire.UPS_FLAGS)


@dataclass(frozen=True)
class UpsReading:
    name: str  # the configured label
    source: str  # nut | snmp-ups-mib | snmp-apc
    model: str | None = None
    flags: frozenset[str] = frozenset()  # subset of wire.UPS_FLAGS
    charge_ratio: float | None = None  # 0-1
    runtime_seconds: float | None = None
    load_ratio: float | None = None  # 0-1 of nominal
    input_voltage: float | None = None
    input_frequency: float | None = None
    output_voltage: float | None = None
    self_test_passed: bool | None = None  # None: no result known
    alarms: int | None = None

    def __post_init__(self) -> None:
        unknown = self.flags - _FLAGS
        if unknown:
            raise ValueError(f"unknown UPS status flags {sorted(unknown)}")

    @property
    def power_state(self) -> str:
        """mains | battery | low_battery | unknown, from the status flags."""
        if "OB" in self.flags:
            return "low_battery" if "LB" in self.flags or "FSD" in self.flags else "battery"
        if "OL" in self.flags or "BYPASS" in self.flags:
            return "mains"
        return "unknown"


def runtime_sufficient(reading: UpsReading, required_seconds: float) -> bool:
    """The readiness rule: the UPS must carry the session plus margin, on a battery it has.

    A UPS that does not report its runtime cannot prove it, so it does not pass; neither
    does one already in low battery, whatever runtime it still estimates.
    """
    if reading.runtime_seconds is None or reading.power_state == "low_battery":
        return False
    return reading.runtime_seconds >= required_seconds


def assess(reading: UpsReading, required_seconds: float) -> str | None:
    """What a technician must hear about this UPS, or None when it is ready."""
    problems = []
    state = reading.power_state
    if state != "mains":
        problems.append({"battery": "on battery", "low_battery": "on battery, LOW BATTERY",
                         "unknown": "power state unknown"}[state])
    if reading.runtime_seconds is None:
        problems.append("runtime not reported")
    elif not runtime_sufficient(reading, required_seconds):
        problems.append(f"runtime {spoken(reading.runtime_seconds)} < "
                        f"{spoken(required_seconds)} needed")
    if reading.self_test_passed is False:
        problems.append("self-test failed")
    if reading.alarms:
        problems.append(f"{reading.alarms} alarm(s)")
    return f"{reading.name}: {', '.join(problems)}" if problems else None


def rows(readings: list[UpsReading]) -> Rows:
    """The wire rows of several UPSes (each family only when some UPS has a value)."""
    out: Rows = {"ups_info": [], "ups_status_flag": [], "ups_power_state": []}
    optional = (
        ("ups_battery_charge_ratio", "charge_ratio"),
        ("ups_runtime_seconds", "runtime_seconds"),
        ("ups_load_ratio", "load_ratio"),
        ("ups_input_voltage_volts", "input_voltage"),
        ("ups_input_frequency_hertz", "input_frequency"),
        ("ups_output_voltage_volts", "output_voltage"),
        ("ups_alarms", "alarms"),
        ("ups_self_test_passed", "self_test_passed"),
    )
    for r in readings:
        out["ups_info"].append(((r.name, r.source, label(r.model or "unknown")), 1.0))
        out["ups_status_flag"].extend(((r.name, flag), float(flag in r.flags))
                                      for flag in wire.UPS_FLAGS)
        state = r.power_state
        out["ups_power_state"].extend(((r.name, s), float(s == state))
                                      for s in wire.POWER_STATES)
        for metric, attr in optional:
            value = getattr(r, attr)
            if value is not None:
                out.setdefault(metric, []).append(((r.name,), float(value)))
    return out
