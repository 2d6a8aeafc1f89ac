"""The netgear probe (IF-MIB over SNMP) against a real agent, Debian's snmpsimd.

The recorded switch (tests/fixtures/snmp/router.snmprec) has an up gigabit uplink g1 with
64-bit counters past 2^32, a port g2 that is enabled but has no link, an admin-down g3,
and a CPU interface without an ifXTable row (no ifName, 32-bit counters, ifSpeed only).
Each test runs the probe the way the agent does: configuration parsed from its YAML shape,
the probe through ``run_probe``, the rows as the wire decodes them.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import snmp, wire
from agent.config import parse_config
from agent.probes import ProbeContext, enabled_probes, load_all, run_probe
from deploy.snmpsim import SnmpSim
from tests.conftest import require_binary

CPU = "CPU Interface for Unit: 1 Slot: 5 Port: 1"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnmpSim]:
    require_binary("snmpsimd")
    with SnmpSim(tmp_path_factory.mktemp("snmpsim"), {"router": "router"},
                 v3=["router"]) as running:
        yield running
    snmp.close_sessions()


def v2c(sim: SnmpSim, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": sim.port, "community": "router",
            "timeout_seconds": 1, "retries": 0, **extra}


def probe(tmp_path: Path, *gear: dict[str, Any]) -> wire.ProbeReport:
    raw = {"site": "hn-01", "province": "ha-noi", "spool": {"path": "spool.db"},
           "network_gear": list(gear)}
    config = parse_config(raw, base_dir=tmp_path)
    assert "netgear" in enabled_probes(config)  # on because network_gear is configured
    return run_probe(load_all()["netgear"], ProbeContext(config), 10.0)


def table(report: wire.ProbeReport) -> dict[str, dict[tuple[str, ...], float]]:
    return {name: dict(rows) for name, rows in report.metrics.items()}


def test_up_uplink_and_down_port(sim: SnmpSim, tmp_path: Path) -> None:
    """Watching g1 and g2: g1 up at 1 Gb/s with 64-bit byte counters, g2 enabled, no link."""
    report = probe(tmp_path, {"name": "core", "snmp": v2c(sim), "interfaces": ["g1", "g2"]})
    assert report.ok, report.error
    m = table(report)
    g1, g2 = ("core", "g1"), ("core", "g2")
    assert m["netgear_uptime_seconds"] == {("core",): 987654.0}
    assert m["netgear_interface_up"] == {g1: 1.0, g2: 0.0}
    assert m["netgear_interface_admin_up"] == {g1: 1.0, g2: 1.0}
    assert m["netgear_interface_speed_bits_per_second"] == {g1: 1e9, g2: 0.0}
    assert m["netgear_interface_receive_bytes_total"] == {g1: 9876543210123.0, g2: 5555000.0}
    assert m["netgear_interface_transmit_bytes_total"] == {g1: 1234567890123.0, g2: 4444000.0}
    assert m["netgear_interface_receive_errors_total"] == {g1: 2.0, g2: 0.0}
    assert m["netgear_interface_transmit_errors_total"] == {g1: 0.0, g2: 0.0}
    assert m["netgear_interface_receive_discards_total"] == {g1: 12.0, g2: 0.0}
    assert m["netgear_interface_transmit_discards_total"] == {g1: 0.0, g2: 0.0}


def test_every_interface_when_none_are_configured(sim: SnmpSim, tmp_path: Path) -> None:
    """No interface list: all four, the CPU port labelled by ifDescr with 32-bit counters
    and its speed from ifSpeed (it has no ifXTable row)."""
    report = probe(tmp_path, {"name": "core", "snmp": v2c(sim)})
    assert report.ok, report.error
    m = table(report)
    assert set(m["netgear_interface_up"]) == {("core", n) for n in ("g1", "g2", "g3", CPU)}
    assert m["netgear_interface_admin_up"][("core", "g3")] == 0.0
    assert m["netgear_interface_speed_bits_per_second"][("core", CPU)] == 1e8
    assert m["netgear_interface_receive_bytes_total"][("core", CPU)] == 3000000.0
    assert m["netgear_interface_transmit_bytes_total"][("core", CPU)] == 2000000.0


def test_interfaces_match_by_ifdescr_or_ignoring_case(sim: SnmpSim, tmp_path: Path) -> None:
    """A port configured by its long ifDescr or as "G2" is found; rows use ifName."""
    gear = {"name": "core", "snmp": v2c(sim),
            "interfaces": ["Unit: 1 Slot: 0 Port: 1 Gigabit - Level", "G2"]}
    report = probe(tmp_path, gear)
    assert report.ok, report.error
    assert set(table(report)["netgear_interface_up"]) == {("core", "g1"), ("core", "g2")}


def test_a_configured_interface_that_does_not_exist(sim: SnmpSim, tmp_path: Path) -> None:
    """g9 is not on the switch: ok=False naming it and what the switch has; g1 still sent."""
    report = probe(tmp_path, {"name": "core", "snmp": v2c(sim), "interfaces": ["g1", "g9"]})
    assert not report.ok
    assert report.error is not None
    assert "core: interface 'g9' not found (has: g1, g2, g3, CPU Interface" in report.error
    assert table(report)["netgear_interface_up"] == {("core", "g1"): 1.0}


def test_one_device_timing_out_does_not_hide_the_other(sim: SnmpSim, tmp_path: Path) -> None:
    """Two devices, one silent: ok=False naming it and its host:port; the other's rows."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        dead_port = silent.getsockname()[1]
        report = probe(tmp_path,
                       {"name": "dead", "snmp": v2c(sim, port=dead_port, timeout_seconds=0.2),
                        "interfaces": ["g1"]},
                       {"name": "core", "snmp": v2c(sim), "interfaces": ["g1"]})
    assert not report.ok
    assert report.error is not None
    assert report.error.startswith(f"dead: SnmpError: no response from 127.0.0.1:{dead_port}")
    assert "core" not in report.error
    m = table(report)
    assert m["netgear_interface_up"] == {("core", "g1"): 1.0}
    assert m["netgear_uptime_seconds"] == {("core",): 987654.0}


def test_snmpv3_device(sim: SnmpSim, tmp_path: Path) -> None:
    """The same switch over SNMPv3 authPriv reads the same rows."""
    target = sim.v3_target("router")
    v3 = {"host": target.host, "port": target.port, "version": "3", "user": target.user,
          "auth_protocol": target.auth_protocol, "auth_key": target.auth_key,
          "priv_protocol": target.priv_protocol, "priv_key": target.priv_key,
          "timeout_seconds": 1, "retries": 0}
    report = probe(tmp_path, {"name": "core", "snmp": v3, "interfaces": ["g1"]})
    assert report.ok, report.error
    m = table(report)
    assert m["netgear_interface_receive_bytes_total"] == {("core", "g1"): 9876543210123.0}


def test_wrong_community_fails_the_device_by_name(sim: SnmpSim, tmp_path: Path) -> None:
    """A typo in the community: ok=False, the device named, the likely cause said."""
    report = probe(tmp_path, {"name": "core",
                              "snmp": v2c(sim, community="pubic", timeout_seconds=0.2)})
    assert not report.ok
    assert report.error is not None
    assert report.error.startswith("core: SnmpError: no response from")
    assert "community not accepted" in report.error
    assert "netgear_interface_up" not in table(report)
