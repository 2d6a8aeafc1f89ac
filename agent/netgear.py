"""Read a router's or switch's interfaces over SNMP IF-MIB: is the uplink up, how fast, how busy.

The room's uplink runs through a small managed switch or router (often a NETGEAR smart
switch); when a session fails, "was the uplink port down or erroring?" is the first
question. Every such device speaks IF-MIB (RFC 2863), so that is all this reads:

- the interface label is ``ifName`` (short, "g1"), else ``ifDescr`` (long, always there);
- ``ifHighSpeed`` (Mb/s) gives the speed, else ``ifSpeed`` (b/s, saturates at 4.29 Gb/s);
- byte counters are the 64-bit ``ifHCInOctets``/``ifHCOutOctets`` when the interface has an
  ifXTable row, else the 32-bit ``ifInOctets``/``ifOutOctets`` (old firmware, CPU ports),
  which wrap within seconds at gigabit speed: the counter rate copes with a reset;
- errors and discards exist only as 32-bit ``ifIn/OutErrors`` and ``ifIn/OutDiscards``.

Configured ``interfaces`` are matched against ``ifName`` or ``ifDescr`` (exactly, else
ignoring case); one that matches nothing is reported in ``GearReading.missing`` while
the others are still read. Two walks (ifDescr, ifName) find the interfaces, then one GET
(chunked) reads the chosen ones, so watching 2 uplinks of a 48-port switch stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent import snmp, wire
from agent.config import NetworkGearConfig
from agent.probes import label

SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
_IF = "1.3.6.1.2.1.2.2.1"  # ifTable.ifEntry
_IFX = "1.3.6.1.2.1.31.1.1.1"  # ifXTable.ifXEntry
COLUMNS = {
    "ifDescr": f"{_IF}.2",
    "ifSpeed": f"{_IF}.5",
    "ifAdminStatus": f"{_IF}.7",
    "ifOperStatus": f"{_IF}.8",
    "ifInOctets": f"{_IF}.10",
    "ifInDiscards": f"{_IF}.13",
    "ifInErrors": f"{_IF}.14",
    "ifOutOctets": f"{_IF}.16",
    "ifOutDiscards": f"{_IF}.19",
    "ifOutErrors": f"{_IF}.20",
    "ifName": f"{_IFX}.1",
    "ifHCInOctets": f"{_IFX}.6",
    "ifHCOutOctets": f"{_IFX}.10",
    "ifHighSpeed": f"{_IFX}.15",
}
# Read for each chosen interface (ifDescr and ifName are already known from the walks).
_READ = [c for c in COLUMNS if c not in ("ifDescr", "ifName")]
_UP = 1  # ifOperStatus / ifAdminStatus up(1)
# Names listed in the "not found" error, at most (a 52-port switch has ~60 interfaces).
_LIST_AT_MOST = 12

snmp.register_names({"1.3.6.1.2.1.1.3": "sysUpTime",
                     **{oid: name for name, oid in COLUMNS.items()}})


@dataclass(frozen=True)
class InterfaceReading:
    index: int  # ifIndex
    label: str  # the ``interface`` label: ifName, else ifDescr
    oper_up: bool | None = None
    admin_up: bool | None = None
    speed_bits_per_second: float | None = None
    receive_bytes: float | None = None
    transmit_bytes: float | None = None
    receive_errors: float | None = None
    transmit_errors: float | None = None
    receive_discards: float | None = None
    transmit_discards: float | None = None


@dataclass(frozen=True)
class GearReading:
    name: str  # the configured ``device`` label
    uptime_seconds: float | None
    interfaces: tuple[InterfaceReading, ...]
    missing: tuple[str, ...] = ()  # configured interfaces the device does not have
    known: tuple[str, ...] = ()  # every interface it has (ifName, else ifDescr)

    def missing_text(self) -> str | None:
        """"interface 'g9' not found (has: g1, g2, ...)", or None when nothing is missing."""
        if not self.missing:
            return None
        more = f", ... ({len(self.known)} in all)" if len(self.known) > _LIST_AT_MOST else ""
        has = ", ".join(self.known[:_LIST_AT_MOST]) + more
        which = ", ".join(repr(m) for m in self.missing)
        noun = "interface" if len(self.missing) == 1 else "interfaces"
        return f"{noun} {which} not found (has: {has or 'no interfaces'})"


def read(config: NetworkGearConfig) -> GearReading:
    """Read one device's interfaces (the configured ones, or all); raises ``SnmpError``."""
    target = config.snmp
    descr = _texts(snmp.walk(target, COLUMNS["ifDescr"]), COLUMNS["ifDescr"])
    names = _texts(snmp.walk(target, COLUMNS["ifName"]), COLUMNS["ifName"])
    indexes = sorted(set(descr) | set(names))
    if config.interfaces:
        chosen, missing = _choose(config.interfaces, indexes, descr, names)
    else:
        chosen, missing = indexes, []
    oids = [SYS_UPTIME] + [f"{COLUMNS[c]}.{i}" for i in chosen for c in _READ]
    values = snmp.get(target, oids, optional=oids)
    uptime = values[SYS_UPTIME]
    labels = _labels(chosen, descr, names)
    interfaces = tuple(_interface(i, labels[i], values) for i in chosen)
    return GearReading(
        name=config.name,
        uptime_seconds=None if uptime is None else snmp.as_int(SYS_UPTIME, uptime) / 100.0,
        interfaces=interfaces,
        missing=tuple(missing),
        known=tuple(names.get(i) or descr.get(i) or f"ifIndex {i}" for i in indexes),
    )


def rows(readings: list[GearReading]) -> dict[str, list[wire.Row]]:
    """The wire rows of several devices (a family only when some device has a value)."""
    out: dict[str, list[wire.Row]] = {}
    for reading in readings:
        if reading.uptime_seconds is not None:
            out.setdefault("netgear_uptime_seconds", []).append(
                ((reading.name,), reading.uptime_seconds))
        for iface in reading.interfaces:
            labels = (reading.name, label(iface.label))
            for metric, attr in _INTERFACE_METRICS:
                value = getattr(iface, attr)
                if value is not None:
                    out.setdefault(metric, []).append((labels, float(value)))
    return out


_INTERFACE_METRICS = (
    ("netgear_interface_up", "oper_up"),
    ("netgear_interface_admin_up", "admin_up"),
    ("netgear_interface_speed_bits_per_second", "speed_bits_per_second"),
    ("netgear_interface_receive_bytes_total", "receive_bytes"),
    ("netgear_interface_transmit_bytes_total", "transmit_bytes"),
    ("netgear_interface_receive_errors_total", "receive_errors"),
    ("netgear_interface_transmit_errors_total", "transmit_errors"),
    ("netgear_interface_receive_discards_total", "receive_discards"),
    ("netgear_interface_transmit_discards_total", "transmit_discards"),
)


def _texts(rows: list[tuple[str, Any]], column: str) -> dict[int, str]:
    """{ifIndex: text} of one walked column (rows outside ``column.<index>`` are skipped)."""
    out: dict[int, str] = {}
    prefix = column + "."
    for oid, value in rows:
        rest = oid[len(prefix):] if oid.startswith(prefix) else ""
        if rest.isdigit():
            out[int(rest)] = snmp.as_text(oid, value)
    return out


def _choose(wanted: tuple[str, ...], indexes: list[int], descr: Mapping[int, str],
            names: Mapping[int, str]) -> tuple[list[int], list[str]]:
    """The ifIndexes of the configured interfaces, in configured order, and the missing."""
    chosen: list[int] = []
    missing: list[str] = []
    for want in wanted:
        exact = [i for i in indexes if want in (names.get(i), descr.get(i))]
        folded = want.casefold()
        loose = [i for i in indexes
                 if folded in (names.get(i, "").casefold(), descr.get(i, "").casefold())]
        found = exact or loose
        if not found:
            missing.append(want)
        for index in found:
            if index not in chosen:
                chosen.append(index)
    return chosen, missing


def _labels(chosen: list[int], descr: Mapping[int, str],
            names: Mapping[int, str]) -> dict[int, str]:
    """ifName, else ifDescr; a name two interfaces share gets its ifIndex appended."""
    base = {i: names.get(i) or descr.get(i) or f"ifIndex {i}" for i in chosen}
    taken = [label(text) for text in base.values()]
    return {i: text if taken.count(label(text)) == 1 else f"{text} #{i}"
            for i, text in base.items()}


def _interface(index: int, name: str, values: Mapping[str, Any]) -> InterfaceReading:
    def number(column: str) -> int | None:
        oid = f"{COLUMNS[column]}.{index}"
        value = values.get(oid)
        return None if value is None else snmp.as_int(oid, value)

    def status(column: str) -> bool | None:
        value = number(column)
        return None if value is None else value == _UP

    high, low = number("ifHighSpeed"), number("ifSpeed")
    if high is not None and (high > 0 or not low):
        speed: float | None = high * 1e6
    else:
        speed = None if low is None else float(low)
    rx = number("ifHCInOctets")
    tx = number("ifHCOutOctets")
    return InterfaceReading(
        index=index,
        label=name,
        oper_up=status("ifOperStatus"),
        admin_up=status("ifAdminStatus"),
        speed_bits_per_second=speed,
        receive_bytes=rx if rx is not None else number("ifInOctets"),
        transmit_bytes=tx if tx is not None else number("ifOutOctets"),
        receive_errors=number("ifInErrors"),
        transmit_errors=number("ifOutErrors"),
        receive_discards=number("ifInDiscards"),
        transmit_discards=number("ifOutDiscards"),
    )
