"""The SNMP client façade (agent.snmp) against a real agent, Debian's snmpsimd.

Every test talks real SNMP over loopback UDP to ``deploy.snmpsim.SnmpSim`` serving the
recorded devices in tests/fixtures/snmp: what is decoded is what a device card sends, and
every failure is checked for a message that names the host:port or the OID at fault.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent import snmp
from agent.ups import snmp as ups_snmp  # noqa: F401 - registers the UPS OID names
from deploy.snmpsim import FIXTURES, V3_USER, V3_USERS, SnmpSim, fixture_names
from tests.conftest import require_binary

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"
UPS_BATTERY_STATUS = "1.3.6.1.2.1.33.1.2.1.0"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnmpSim]:
    require_binary("snmpsimd")
    with SnmpSim(tmp_path_factory.mktemp("snmpsim"), v3=["router"]) as running:
        yield running
    snmp.close_sessions()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A UDP port that is bound (so nothing else takes it) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def test_fixtures_are_well_formed_and_sorted_by_oid() -> None:
    """snmpsimd binary-searches its files: an unsorted or duplicate OID silently vanishes."""
    names = fixture_names()
    assert {"ups-mib-online", "ups-mib-on-battery", "ups-mib-low-battery", "ups-mib-broken",
            "ups-mib-missing", "ups-mib-minimal", "apc-online", "apc-on-battery",
            "router"} <= set(names)
    for name in names:
        oids = []
        for line in (FIXTURES / f"{name}.snmprec").read_text().splitlines():
            oid, kind, _value = line.split("|", 2)
            assert kind in {"2", "4", "4x", "6", "64", "65", "66", "67", "70"}, line
            oids.append(tuple(int(p) for p in oid.split(".")))
        assert oids == sorted(set(oids)), name


def test_get_decodes_text_and_numbers_over_v2c(sim: SnmpSim) -> None:
    """sysDescr is an OCTET STRING, sysUpTime TimeTicks: both through the typed helpers."""
    values = snmp.get(sim.target("router"), [SYS_DESCR, SYS_UPTIME])
    assert snmp.as_text(SYS_DESCR, values[SYS_DESCR]).startswith("GS110TP")
    assert snmp.as_int(SYS_UPTIME, values[SYS_UPTIME]) == 98765400
    assert snmp.as_float(SYS_UPTIME, values[SYS_UPTIME]) == 98765400.0


def test_a_missing_required_oid_is_named(sim: SnmpSim) -> None:
    """Asking a switch for a UPS OID: the error names the object and its OID."""
    with pytest.raises(snmp.SnmpError) as err:
        snmp.get(sim.target("router"), [SYS_DESCR, UPS_BATTERY_STATUS])
    text = str(err.value)
    assert f"127.0.0.1:{sim.port}" in text
    assert f"upsBatteryStatus.0 ({UPS_BATTERY_STATUS})" in text
    assert "noSuch" in text


def test_a_missing_optional_oid_is_none(sim: SnmpSim) -> None:
    """Optional OIDs the agent lacks come back as None, the others as values."""
    values = snmp.get(sim.target("router"), [SYS_DESCR, UPS_BATTERY_STATUS],
                      optional=[UPS_BATTERY_STATUS])
    assert values[UPS_BATTERY_STATUS] is None
    assert values[SYS_DESCR] is not None


def test_wrong_types_are_named(sim: SnmpSim) -> None:
    """The broken UPS has upsBatteryStatus as a string; text helpers refuse numbers too."""
    value = snmp.get(sim.target("ups-mib-broken"), [UPS_BATTERY_STATUS])[UPS_BATTERY_STATUS]
    with pytest.raises(snmp.SnmpError, match=r"upsBatteryStatus\.0 \(1\.3\.6\.1\.2\.1\.33\.1"
                                             r"\.2\.1\.0\): expected a number, got OctetString"):
        snmp.as_int(UPS_BATTERY_STATUS, value)
    uptime = snmp.get(sim.target("router"), [SYS_UPTIME])[SYS_UPTIME]
    with pytest.raises(snmp.SnmpError, match="expected a string, got TimeTicks"):
        snmp.as_text(SYS_UPTIME, uptime)


def test_walk_reads_a_column_in_order_and_stops_at_its_end(sim: SnmpSim) -> None:
    """ifName has three rows; the walk must not run on into the next column."""
    rows = snmp.walk(sim.target("router"), IF_NAME)
    assert [(oid, snmp.as_text(oid, v)) for oid, v in rows] == [
        (f"{IF_NAME}.1", "g1"), (f"{IF_NAME}.2", "g2"), (f"{IF_NAME}.3", "g3")]
    assert snmp.walk(sim.target("router"), "1.3.6.1.4.1.318") == []  # nothing there


def test_walk_of_a_whole_table_spans_several_getbulk_requests(sim: SnmpSim) -> None:
    """ifTable has 66 rows, more than one GETBULK answer (25): the walk keeps going."""
    rows = snmp.walk(sim.target("router"), "1.3.6.1.2.1.2.2")
    assert len(rows) == 66
    oids = [tuple(int(p) for p in oid.split(".")) for oid, _ in rows]
    assert oids == sorted(oids)


def test_walk_is_bounded(sim: SnmpSim) -> None:
    """A walk past its row limit stops with an error instead of reading on."""
    with pytest.raises(snmp.SnmpError, match="more than 5 rows under"):
        snmp.walk(sim.target("router"), "1.3.6.1.2.1.2.2", max_rows=5)


@pytest.mark.parametrize("user", sorted(V3_USERS))
def test_v3_every_security_level_and_protocol(sim: SnmpSim, user: str) -> None:
    """authPriv SHA/AES, SHA-512/AES-256, MD5/DES, authNoPriv SHA-256 and noAuthNoPriv."""
    values = snmp.get(sim.v3_target("router", user=user), [SYS_UPTIME])
    assert snmp.as_int(SYS_UPTIME, values[SYS_UPTIME]) == 98765400


def test_v3_walk(sim: SnmpSim) -> None:
    """GETBULK over authPriv reads the same rows as over v2c."""
    rows = snmp.walk(sim.v3_target("router"), IF_NAME)
    assert [snmp.as_text(oid, v) for oid, v in rows] == ["g1", "g2", "g3"]


def test_wrong_community_is_a_clear_error(sim: SnmpSim) -> None:
    """Agents drop a wrong community silently: the timeout says that may be the cause."""
    target = replace(sim.target("router", timeout_seconds=0.3, retries=0),
                     community="not-the-community")
    with pytest.raises(snmp.SnmpError) as err:
        snmp.get(target, [SYS_DESCR])
    text = str(err.value)
    assert f"no response from 127.0.0.1:{sim.port}" in text
    assert "community not accepted" in text


def test_wrong_v3_auth_key_is_named(sim: SnmpSim) -> None:
    """The agent's answer fails our digest check: the error says the auth key is wrong."""
    target = sim.v3_target("router", auth_key="not-the-auth-key", timeout_seconds=0.3,
                           retries=0)
    with pytest.raises(snmp.SnmpError,
                       match=f"user '{V3_USER}' rejected: authentication failed: "
                             "wrong auth key or auth protocol"):
        snmp.get(target, [SYS_DESCR])


def test_wrong_v3_priv_key_is_a_clear_error(sim: SnmpSim) -> None:
    """snmpsimd cannot decrypt and stays silent after discovery: the error says so."""
    target = sim.v3_target("router", priv_key="not-the-priv-key", timeout_seconds=0.3,
                           retries=0)
    with pytest.raises(snmp.SnmpError,
                       match=f"answered SNMPv3 discovery but not the request: check user "
                             f"'{V3_USER}'"):
        snmp.get(target, [SYS_DESCR])


def test_unknown_v3_user_is_a_clear_error(sim: SnmpSim) -> None:
    """A user the agent does not know: answered discovery, then nothing."""
    target = replace(sim.v3_target("router", timeout_seconds=0.3, retries=0),
                     user="nobody-here")
    with pytest.raises(snmp.SnmpError, match="'nobody-here'"):
        snmp.get(target, [SYS_DESCR])


@pytest.mark.parametrize("version", ["2c", "3"])
def test_timeout_names_host_and_port(sim: SnmpSim, silent_port: int, version: str) -> None:
    """Nothing answers on the port: the error names host:port, the timeout and the tries."""
    if version == "2c":
        target = sim.target("router", port=silent_port, timeout_seconds=0.2, retries=1)
    else:
        target = sim.v3_target("router", port=silent_port, timeout_seconds=0.2, retries=1)
    with pytest.raises(snmp.SnmpError) as err:
        snmp.get(target, [SYS_DESCR])
    text = str(err.value)
    assert f"no response from 127.0.0.1:{silent_port} (timeout 0.2s, 2 tries)" in text
    if version == "3":
        assert text.endswith("host down or wrong port")


def test_unresolvable_host_is_named(sim: SnmpSim) -> None:
    """A typo in the host name fails at once, naming the host."""
    target = sim.target("router", host="no-such-host.invalid", timeout_seconds=0.2, retries=0)
    with pytest.raises(snmp.SnmpError, match=r"cannot resolve 'no-such-host\.invalid'"):
        snmp.get(target, [SYS_DESCR])


def test_a_failed_call_does_not_poison_the_next(sim: SnmpSim, silent_port: int) -> None:
    """After a timeout the cached engine is replaced: the same credentials work again."""
    with pytest.raises(snmp.SnmpError):
        snmp.get(sim.v3_target("router", port=silent_port, timeout_seconds=0.2, retries=0),
                 [SYS_DESCR])
    assert snmp.get(sim.v3_target("router"), [SYS_UPTIME])[SYS_UPTIME] is not None


def test_snmpsim_swaps_a_state_under_the_same_community(tmp_path: Path) -> None:
    """set_state rewrites the file twice within a second; snmpsimd serves each new state."""
    require_binary("snmpsimd")
    with SnmpSim(tmp_path, {"ups": "ups-mib-online"}, v3=["ups"]) as sim:
        for state, expected in (("ups-mib-on-battery", 5), ("ups-mib-online", 3),
                                ("ups-mib-on-battery", 5)):
            sim.set_state("ups", state)
            source = "1.3.6.1.2.1.33.1.4.1.0"
            for target in (sim.target("ups"), sim.v3_target("ups")):
                assert snmp.as_int(source, snmp.get(target, [source])[source]) == expected
    sim.stop()  # idempotent
    assert not sim.running
