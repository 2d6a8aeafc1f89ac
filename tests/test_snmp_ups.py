"""The SNMP UPS reader (UPS-MIB and APC PowerNet) against a real agent, Debian's snmpsimd.

Each recorded UPS state is read over v2c and over SNMPv3 authPriv, and must come out in
NUT's vocabulary exactly as a NUT-attached UPS in the same state would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import snmp
from agent.config import UpsConfig, parse_config
from agent.probes import ProbeContext, load_all, run_probe
from agent.ups import snmp as ups_snmp
from agent.ups.model import UpsReading
from deploy.snmpsim import SnmpSim
from tests.conftest import require_binary

STATES = ("ups-mib-online", "ups-mib-on-battery", "ups-mib-low-battery", "apc-online",
          "apc-on-battery")

EATON = "EATON 5PX 1500"
APC = "APC Smart-UPS 1500"
# state -> (mib, what the reading must say)
EXPECTED: dict[str, tuple[str, dict[str, Any]]] = {
    "ups-mib-online": ("ups-mib", dict(
        source="snmp-ups-mib", model=EATON, flags={"OL"}, power_state="mains",
        runtime_seconds=95 * 60.0, charge_ratio=1.0, load_ratio=0.18, input_voltage=229.0,
        input_frequency=50.0, output_voltage=230.0, self_test_passed=True, alarms=0)),
    "ups-mib-on-battery": ("ups-mib", dict(
        source="snmp-ups-mib", model=EATON, flags={"OB", "ALARM"}, power_state="battery",
        runtime_seconds=38 * 60.0, charge_ratio=0.81, load_ratio=0.18, input_voltage=0.0,
        input_frequency=0.0, output_voltage=230.0, self_test_passed=True, alarms=1)),
    "ups-mib-low-battery": ("ups-mib", dict(
        source="snmp-ups-mib", model=EATON, flags={"OB", "LB", "ALARM"},
        power_state="low_battery", runtime_seconds=3 * 60.0, charge_ratio=0.12,
        load_ratio=0.18, input_voltage=0.0, input_frequency=0.0, output_voltage=230.0,
        self_test_passed=False, alarms=2)),
    "apc-online": ("apc", dict(
        source="snmp-apc", model=APC, flags={"OL"}, power_state="mains",
        runtime_seconds=4620.0, charge_ratio=1.0, load_ratio=0.23, input_voltage=231.0,
        input_frequency=50.0, output_voltage=230.0, self_test_passed=True, alarms=None)),
    "apc-on-battery": ("apc", dict(
        source="snmp-apc", model=APC, flags={"OB"}, power_state="battery",
        runtime_seconds=2520.0, charge_ratio=0.87, load_ratio=0.23, input_voltage=0.0,
        input_frequency=0.0, output_voltage=230.0, self_test_passed=True, alarms=None)),
}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnmpSim]:
    require_binary("snmpsimd")
    with SnmpSim(tmp_path_factory.mktemp("snmpsim"), v3=STATES) as running:
        yield running
    snmp.close_sessions()


def check(reading: UpsReading, expected: dict[str, Any]) -> None:
    assert reading.name == "bridge-ups"
    seen = {key: getattr(reading, key) for key in expected}
    seen["flags"] = set(reading.flags)
    for key in ("charge_ratio", "load_ratio", "input_frequency"):
        if seen[key] is not None:
            seen[key] = pytest.approx(seen[key])
    assert seen == expected


@pytest.mark.parametrize("state", STATES)
def test_v2c_reading(sim: SnmpSim, state: str) -> None:
    """Each recorded state over v2c: flags, power state, runtime, charge, load, volts, Hz,
    self-test and alarms as the card reports them (minutes, %, 0.1 Hz, TimeTicks scaled)."""
    mib, expected = EXPECTED[state]
    check(ups_snmp.read(UpsConfig("bridge-ups", snmp=sim.target(state), mib=mib)), expected)


@pytest.mark.parametrize("state", STATES)
def test_v3_authpriv_reading(sim: SnmpSim, state: str) -> None:
    """The same states over SNMPv3 authPriv (SHA / AES-128) read the same."""
    mib, expected = EXPECTED[state]
    config = UpsConfig("bridge-ups", snmp=sim.v3_target(state), mib=mib)
    check(ups_snmp.read(config), expected)


def test_a_string_where_an_integer_belongs_is_named(sim: SnmpSim) -> None:
    """The broken card sends upsBatteryStatus as "normal": the error names OID and type."""
    config = UpsConfig("bridge-ups", snmp=sim.target("ups-mib-broken"), mib="ups-mib")
    with pytest.raises(snmp.SnmpError,
                       match=r"upsBatteryStatus\.0 \(1\.3\.6\.1\.2\.1\.33\.1\.2\.1\.0\): "
                             r"expected a number, got OctetString 'normal'"):
        ups_snmp.read(config)


def test_missing_required_oids_are_named(sim: SnmpSim) -> None:
    """A card without the status OIDs: both are named, so the config's mib can be fixed."""
    config = UpsConfig("bridge-ups", snmp=sim.target("ups-mib-missing"), mib="ups-mib")
    with pytest.raises(snmp.SnmpError) as err:
        ups_snmp.read(config)
    text = str(err.value)
    assert "upsBatteryStatus.0 (1.3.6.1.2.1.33.1.2.1.0)" in text
    assert "upsOutputSource.0 (1.3.6.1.2.1.33.1.4.1.0)" in text


def test_the_wrong_mib_is_named(sim: SnmpSim) -> None:
    """An APC reader pointed at a UPS-MIB card: the PowerNet status OIDs are missing."""
    config = UpsConfig("bridge-ups", snmp=sim.target("ups-mib-online"), mib="apc")
    with pytest.raises(snmp.SnmpError, match=r"upsBasicOutputStatus\.0 "
                                             r"\(1\.3\.6\.1\.4\.1\.318\.1\.1\.1\.4\.1\.1\.0\)"):
        ups_snmp.read(config)


def test_missing_optional_values_stay_none(sim: SnmpSim) -> None:
    """A card with only the two status objects: OL, and every other field None, not 0."""
    config = UpsConfig("bridge-ups", snmp=sim.target("ups-mib-minimal"), mib="ups-mib")
    reading = ups_snmp.read(config)
    assert reading.flags == {"OL"}
    assert reading.power_state == "mains"
    assert (reading.model, reading.runtime_seconds, reading.charge_ratio, reading.load_ratio,
            reading.input_voltage, reading.input_frequency, reading.output_voltage,
            reading.self_test_passed, reading.alarms) == (None,) * 9


def test_an_outage_is_seen_on_the_next_read(tmp_path: Path) -> None:
    """The same card goes on battery, runs low, comes back: each read follows it."""
    require_binary("snmpsimd")
    with SnmpSim(tmp_path, {"ups": "ups-mib-online"}) as own:
        config = UpsConfig("bridge-ups", snmp=own.target("ups"), mib="ups-mib")
        seen = []
        for state in ("ups-mib-online", "ups-mib-on-battery", "ups-mib-low-battery",
                      "ups-mib-online"):
            own.set_state("ups", state)
            seen.append(ups_snmp.read(config).power_state)
    assert seen == ["mains", "battery", "low_battery", "mains"]


def test_the_ups_probe_reads_an_snmp_ups_from_the_configuration(sim: SnmpSim,
                                                                tmp_path: Path) -> None:
    """YAML-shaped config -> UPS probe -> wire rows: an online APC passes, one on battery
    fails with its rows still sent."""
    raw = {"site": "hn-01", "province": "ha-noi", "spool": {"path": "spool.db"},
           "session": {"length_seconds": 3600, "ups_margin_seconds": 600},
           "ups": [{"name": "rack", "mib": "apc",
                    "snmp": {"host": "127.0.0.1", "port": sim.port, "community": "apc-online",
                             "timeout_seconds": 1, "retries": 0}},
                   {"name": "desk", "mib": "ups-mib",
                    "snmp": {"host": "127.0.0.1", "port": sim.v3_port("ups-mib-on-battery"),
                             "version": "3", "user": sim.v3_target("apc-online").user,
                             "auth_protocol": "sha",
                             "auth_key": sim.v3_target("apc-online").auth_key,
                             "priv_protocol": "aes",
                             "priv_key": sim.v3_target("apc-online").priv_key,
                             "timeout_seconds": 1, "retries": 0}}]}
    config = parse_config(raw, base_dir=tmp_path)
    report = run_probe(load_all()["ups"], ProbeContext(config), 10.0)
    assert not report.ok
    assert report.error is not None and "desk" in report.error and "rack" not in report.error
    metrics = {name: dict(rows) for name, rows in report.metrics.items()}
    assert metrics["ups_power_state"][("rack", "mains")] == 1.0
    assert metrics["ups_power_state"][("desk", "battery")] == 1.0
    assert metrics["ups_runtime_seconds"] == {("rack",): 4620.0, ("desk",): 2280.0}
    assert metrics["ups_info"][("rack", "snmp-apc", APC)] == 1.0
