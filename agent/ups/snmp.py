"""Read a UPS's network card over SNMP: the standard UPS-MIB or APC's PowerNet-MIB.

Both are turned into NUT's vocabulary (``UpsReading``), so downstream an
``upsOutputSource = battery(5)`` and an APC ``upsBasicOutputStatus = onBattery(3)`` read the
same as NUT's ``OB``. OIDs and enumerations are those of RFC 1628 (UPS-MIB,
1.3.6.1.2.1.33) and APC PowerNet-MIB (1.3.6.1.4.1.318.1.1.1); the flag mappings follow
NUT's own snmp-ups subdrivers (ietf-mib.c, apc-mib.c), where a choice had to be made.

Each reading is a single GET (one round trip). The status OIDs are required: a card that
does not have them is not speaking that MIB, and the ``SnmpError`` names the missing OID
so the configured ``mib`` can be fixed. Everything else is optional (``None`` when
absent). A value of the wrong type (a string where a number belongs) is an error naming
the OID: guessing would report a wrong power state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent import snmp
from agent.config import UpsConfig
from agent.ups.model import UpsReading

# --- RFC 1628 UPS-MIB -----------------------------------------------------------------------
_U = "1.3.6.1.2.1.33.1"
UPS_MIB = {
    "upsIdentManufacturer": f"{_U}.1.1.0",
    "upsIdentModel": f"{_U}.1.2.0",
    "upsBatteryStatus": f"{_U}.2.1.0",
    "upsEstimatedMinutesRemaining": f"{_U}.2.3.0",
    "upsEstimatedChargeRemaining": f"{_U}.2.4.0",
    "upsInputFrequency": f"{_U}.3.3.1.2.1",  # upsInputTable, first line; 0.1 Hz
    "upsInputVoltage": f"{_U}.3.3.1.3.1",  # RMS volts
    "upsOutputSource": f"{_U}.4.1.0",
    "upsOutputVoltage": f"{_U}.4.4.1.2.1",  # upsOutputTable, first line
    "upsOutputPercentLoad": f"{_U}.4.4.1.5.1",
    "upsAlarmsPresent": f"{_U}.6.1.0",
    "upsTestResultsSummary": f"{_U}.7.3.0",
}
_UPS_MIB_REQUIRED = ("upsBatteryStatus", "upsOutputSource")

# upsOutputSource: other(1) none(2) normal(3) bypass(4) battery(5) booster(6) reducer(7)
_OUTPUT_SOURCE_FLAGS = {
    1: (),
    2: ("OFF",),
    3: ("OL",),
    4: ("BYPASS",),
    5: ("OB",),
    6: ("OL", "BOOST"),
    7: ("OL", "TRIM"),
}
# upsBatteryStatus: unknown(1) batteryNormal(2) batteryLow(3) batteryDepleted(4)
_BATTERY_STATUS_FLAGS = {1: (), 2: (), 3: ("LB",), 4: ("LB",)}
# upsTestResultsSummary: donePass(1) doneWarning(2) doneError(3) aborted(4) inProgress(5)
# noTestsInitiated(6). A warning is not a pass: it asks for a look (NUT's reader agrees).
_TEST_SUMMARY = {1: True, 2: False, 3: False, 4: None, 5: None, 6: None}

# --- APC PowerNet-MIB -----------------------------------------------------------------------
_A = "1.3.6.1.4.1.318.1.1.1"
APC_MIB = {
    "upsBasicIdentModel": f"{_A}.1.1.1.0",
    "upsBasicBatteryStatus": f"{_A}.2.1.1.0",
    "upsAdvBatteryCapacity": f"{_A}.2.2.1.0",  # percent
    "upsAdvBatteryRunTimeRemaining": f"{_A}.2.2.3.0",  # TimeTicks (1/100 s)
    "upsAdvBatteryReplaceIndicator": f"{_A}.2.2.4.0",
    "upsAdvInputLineVoltage": f"{_A}.3.2.1.0",  # volts
    "upsAdvInputFrequency": f"{_A}.3.2.4.0",  # Hz
    "upsBasicOutputStatus": f"{_A}.4.1.1.0",
    "upsAdvOutputVoltage": f"{_A}.4.2.1.0",
    "upsAdvOutputLoad": f"{_A}.4.2.3.0",  # percent
    "upsAdvTestDiagnosticsResults": f"{_A}.7.2.3.0",
    "upsAdvTestCalibrationResults": f"{_A}.7.2.6.0",
}
_APC_REQUIRED = ("upsBasicOutputStatus", "upsBasicBatteryStatus")

# upsBasicOutputStatus. Values not listed (rebooting, spot modes, ...) give no power flag:
# the reading's power_state is then "unknown", which is what they are for readiness.
_APC_OUTPUT_FLAGS = {
    1: (),  # unknown
    2: ("OL",),  # onLine
    3: ("OB",),  # onBattery
    4: ("OL", "BOOST"),  # onSmartBoost
    5: ("OFF",),  # timedSleeping
    6: ("BYPASS",),  # softwareBypass
    7: ("OFF",),  # off
    9: ("BYPASS",),  # switchedBypass
    10: ("BYPASS", "ALARM"),  # hardwareFailureBypass
    11: ("OFF",),  # sleepingUntilPowerReturn
    12: ("OL", "TRIM"),  # onSmartTrim
    13: ("OL",),  # ecoMode
    15: ("OB",),  # onBatteryTest
    16: ("BYPASS",),  # emergencyStaticBypass
    20: ("OL",),  # eConversion
}
# upsBasicBatteryStatus: unknown(1) batteryNormal(2) batteryLow(3)
# batteryInFaultCondition(4) noBatteryPresent(5)
_APC_BATTERY_FLAGS = {1: (), 2: (), 3: ("LB",), 4: ("ALARM",), 5: ("ALARM",)}
# upsAdvTestDiagnosticsResults: ok(1) failed(2) invalidTest(3) testInProgress(4)
_APC_TEST = {1: True, 2: False, 3: None, 4: None}

# Every OID above is a scalar (.0) or a table column's first row (.1): name the object.
snmp.register_names({oid.rsplit(".", 1)[0]: name
                     for table in (UPS_MIB, APC_MIB) for name, oid in table.items()})


def read(config: UpsConfig) -> UpsReading:
    """Read one SNMP UPS with the MIB its configuration names; raises ``SnmpError``."""
    if config.snmp is None:
        raise ValueError(f"UPS {config.name} has no snmp section")
    if config.mib == "ups-mib":
        return _read_ups_mib(config)
    if config.mib == "apc":
        return _read_apc(config)
    raise ValueError(f"UPS {config.name}: unknown mib {config.mib!r}")


class _Values:
    """The answer of one GET, read by symbolic name with typed, optional accessors."""

    def __init__(self, table: dict[str, str], values: dict[str, Any]) -> None:
        self.table = table
        self.values = values

    def _get(self, name: str, convert: Callable[[str, Any], Any]) -> Any:
        oid = self.table[name]
        value = self.values.get(oid)
        return None if value is None else convert(oid, value)

    def int(self, name: str) -> int | None:
        return self._get(name, snmp.as_int)

    def text(self, name: str) -> str | None:
        return self._get(name, snmp.as_text)

    def scaled(self, name: str, factor: float) -> float | None:
        value = self.int(name)
        return None if value is None else value * factor


def _fetch(config: UpsConfig, table: dict[str, str], required: tuple[str, ...]) -> _Values:
    assert config.snmp is not None
    optional = [oid for name, oid in table.items() if name not in required]
    return _Values(table, snmp.get(config.snmp, list(table.values()), optional=optional))


def _flags(mapping: dict[int, tuple[str, ...]], value: int | None) -> set[str]:
    return set(mapping.get(value, ())) if value is not None else set()


def _model(maker: str | None, model: str | None) -> str | None:
    """Maker and model as one text, without repeating a maker the model already names."""
    if not model:
        return maker or None
    if not maker or model.lower().startswith(maker.lower()):
        return model
    return f"{maker} {model}"


def _read_ups_mib(config: UpsConfig) -> UpsReading:
    v = _fetch(config, UPS_MIB, _UPS_MIB_REQUIRED)
    alarms = v.int("upsAlarmsPresent")
    flags = (_flags(_OUTPUT_SOURCE_FLAGS, v.int("upsOutputSource"))
             | _flags(_BATTERY_STATUS_FLAGS, v.int("upsBatteryStatus")))
    if alarms:
        flags.add("ALARM")
    minutes = v.int("upsEstimatedMinutesRemaining")
    test = v.int("upsTestResultsSummary")
    return UpsReading(
        name=config.name,
        source="snmp-ups-mib",
        model=_model(v.text("upsIdentManufacturer"), v.text("upsIdentModel")),
        flags=frozenset(flags),
        charge_ratio=v.scaled("upsEstimatedChargeRemaining", 0.01),
        runtime_seconds=None if minutes is None else minutes * 60.0,
        load_ratio=v.scaled("upsOutputPercentLoad", 0.01),
        input_voltage=v.scaled("upsInputVoltage", 1.0),
        input_frequency=v.scaled("upsInputFrequency", 0.1),
        output_voltage=v.scaled("upsOutputVoltage", 1.0),
        self_test_passed=None if test is None else _TEST_SUMMARY.get(test),
        alarms=alarms,
    )


def _read_apc(config: UpsConfig) -> UpsReading:
    v = _fetch(config, APC_MIB, _APC_REQUIRED)
    flags = (_flags(_APC_OUTPUT_FLAGS, v.int("upsBasicOutputStatus"))
             | _flags(_APC_BATTERY_FLAGS, v.int("upsBasicBatteryStatus")))
    if v.int("upsAdvBatteryReplaceIndicator") == 2:  # batteryNeedsReplacing
        flags.add("RB")
    if v.int("upsAdvTestCalibrationResults") == 3:  # calibrationInProgress
        flags.add("CAL")
    test = v.int("upsAdvTestDiagnosticsResults")
    model = v.text("upsBasicIdentModel")
    return UpsReading(
        name=config.name,
        source="snmp-apc",
        model=_model("APC", model) if model else None,
        flags=frozenset(flags),
        charge_ratio=v.scaled("upsAdvBatteryCapacity", 0.01),
        runtime_seconds=v.scaled("upsAdvBatteryRunTimeRemaining", 0.01),
        load_ratio=v.scaled("upsAdvOutputLoad", 0.01),
        input_voltage=v.scaled("upsAdvInputLineVoltage", 1.0),
        input_frequency=v.scaled("upsAdvInputFrequency", 1.0),
        output_voltage=v.scaled("upsAdvOutputVoltage", 1.0),
        self_test_passed=None if test is None else _APC_TEST.get(test),
        alarms=None,
    )
