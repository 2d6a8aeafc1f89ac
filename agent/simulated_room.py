"""The equipment of a simulated bridge room: AV devices, UPS, storage, clock, software.

A demo fleet should show what a province really meets, not a wall of green: a small share
of rooms carry a standing fault (an aged UPS battery, an unplugged backup disk, a drifting
clock, a camera left unplugged) and now and then the mains drops and the UPS carries the
room. Rows are built with the real probes' own code (``agent.ups.model``,
``agent.devices.expect``, ``agent.probes.storage``) so simulated and real rooms read the
same downstream.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agent.config import DeviceExpectation, SessionPlan
from agent.devices import Device, Inventory
from agent.devices.expect import evaluate
from agent.probes.clock import offset_fault
from agent.probes.storage import recording_seconds_left
from agent.ups.model import UpsReading, assess
from agent.ups.model import rows as ups_rows
from agent.wire import ProbeReport, Row

PLAN = SessionPlan()
RECORDING_MBPS = 4.0
MEAN_SECONDS_BETWEEN_OUTAGES = 6 * 3600.0
OUTAGE_SECONDS = (120.0, 1800.0)
NTP_SERVER = "ntp.gov.vn"
CLOCK_LIMIT_SECONDS = 0.5
SOFTWARE = "vconf"
# What a room has (kind, name): the province's standard kit, a bigger one at the centre.
KIT = {
    "member": (("camera", "Logitech ConferenceCam Rally"), ("microphone", "Yamaha YVC-330"),
               ("speaker", "Yamaha YVC-330"), ("display", "HDMI-A-1 (SAMSUNG)")),
    "central": (("camera", "Sony SRG-X400"), ("camera", "Sony SRG-X400"),
                ("microphone", "Shure MXA910"), ("speaker", "Bose FreeSpace DS 40SE"),
                ("display", "HDMI-A-1 (SAMSUNG)"), ("display", "HDMI-A-2 (SAMSUNG)")),
}
KIT["national"] = KIT["central"]


@dataclass
class Faults:
    """Standing faults of one room, drawn once: most rooms have none."""

    aged_battery: bool
    backup_unplugged: bool
    clock_drift: float  # seconds; 0 when the clock is disciplined
    camera_unplugged: bool
    display_off: bool

    @classmethod
    def draw(cls, rng: random.Random) -> Faults:
        return cls(aged_battery=rng.random() < 0.05, backup_unplugged=rng.random() < 0.04,
                   clock_drift=rng.uniform(2.0, 9.0) * rng.choice((-1, 1))
                   if rng.random() < 0.03 else 0.0,
                   camera_unplugged=rng.random() < 0.03, display_off=rng.random() < 0.02)


class SimulatedRoom:
    """The UPS and the rest of a room's equipment, advanced one interval at a time."""

    def __init__(self, level: str, rng: random.Random) -> None:
        self.level = level
        self.rng = rng
        self.faults = Faults.draw(rng)
        # Rooms are fitted for the rule (runtime >= session + margin): a long-runtime UPS
        # with a battery pack lasts 4-7 hours at a 30 % load; a worn battery a fraction.
        full = rng.uniform(4 * 3600, 7 * 3600)
        self.full_runtime = full * (rng.uniform(0.08, 0.25) if self.faults.aged_battery else 1)
        self.charge = 1.0
        self.outage_left = 0.0
        self.load = rng.uniform(0.22, 0.3)
        self.offset = rng.gauss(0, 0.004) + self.faults.clock_drift
        self.software_open = rng.random() < 0.6

    @property
    def on_battery(self) -> bool:
        return self.outage_left > 0

    def advance(self, dt: float, in_call: bool) -> None:
        rng = self.rng
        if self.on_battery:
            self.outage_left -= dt
            self.charge = max(0.0, self.charge - dt / self.full_runtime)
        else:
            if rng.random() < dt / MEAN_SECONDS_BETWEEN_OUTAGES:
                self.outage_left = rng.uniform(*OUTAGE_SECONDS)
            self.charge = min(1.0, self.charge + dt / (8 * 3600))  # recharge takes hours
        self.load = min(0.9, max(0.1, (0.32 if in_call else 0.26) + rng.gauss(0, 0.01)))
        self.offset += rng.gauss(0, 0.0005) + self.faults.clock_drift * dt / 86400

    def ups(self, name: str = "ups-1") -> UpsReading:
        runtime = self.full_runtime * self.charge * 0.3 / self.load
        flags = {"OB", "DISCHRG"} if self.on_battery else (
            {"OL", "CHRG"} if self.charge < 1.0 else {"OL"})
        if self.on_battery and (self.charge < 0.2 or runtime < 300):
            flags.add("LB")
        return UpsReading(
            name=name, source="nut", model="Santak Blazer-1500 Pro", flags=frozenset(flags),
            charge_ratio=round(self.charge, 3), runtime_seconds=round(runtime),
            load_ratio=round(self.load, 3),
            input_voltage=0.0 if self.on_battery else round(self.rng.gauss(226, 3), 1),
            input_frequency=0.0 if self.on_battery else round(self.rng.gauss(50, 0.05), 2),
            output_voltage=round(self.rng.gauss(220, 1), 1),
            self_test_passed=not self.faults.aged_battery, alarms=0)

    def devices(self) -> tuple[Inventory, tuple[DeviceExpectation, ...]]:
        """What the OS would list, and what the site's configuration expects."""
        kit = KIT[self.level]
        expected = tuple(DeviceExpectation(kind, sum(k == kind for k, _ in kit))
                         for kind in ("camera", "microphone", "speaker", "display"))
        found = list(kit)
        if self.faults.camera_unplugged:
            found.remove(next(d for d in found if d[0] == "camera"))
        if self.faults.display_off:
            found.remove(next(d for d in found if d[0] == "display"))
        return Inventory([Device(kind, name, f"{kind}{i}") for i, (kind, name)
                          in enumerate(found)]), expected

    def reports(self, interval: float, recording_avail_bytes: float,
                in_call: bool) -> dict[str, ProbeReport]:
        """The room's probes, as the real agent reports them."""
        def report(duration: float, metrics: dict[str, list[Row]],
                   error: str | None = None) -> ProbeReport:
            return ProbeReport(error is None, duration * self.rng.uniform(0.7, 1.3), interval,
                               error, metrics)

        reading, required = self.ups(), PLAN.length_seconds + PLAN.ups_margin_seconds
        ups = ups_rows([reading])
        ups["ups_runtime_required_seconds"] = [((), required)]
        left = recording_seconds_left(recording_avail_bytes, RECORDING_MBPS)
        backup = 0.0 if self.faults.backup_unplugged else 1.0
        running = self.software_open or in_call
        clock_error = offset_fault(self.offset, NTP_SERVER, CLOCK_LIMIT_SECONDS)
        devices = evaluate(*self.devices())
        return {
            "devices": report(0.002, devices.metrics, "; ".join(devices.problems) or None),
            "ups": report(0.004, ups, assess(reading, required)),
            "storage": report(0.0003, {
                "recording_bitrate_bits_per_second": [((), RECORDING_MBPS * 1e6)],
                "planned_session_seconds": [((), PLAN.length_seconds)],
                "volume_mounted": [(("recording",), 1.0), (("backup",), backup)],
                "volume_device_present": [(("backup",), backup)],
                "recording_seconds_left": [((), round(left))],
            }, "backup disk /dev/disk/by-label/BW-BACKUP not plugged in" if not backup else None),
            "clock": report(0.012, {
                "clock_offset_seconds": [((NTP_SERVER,), round(self.offset, 4))],
                "clock_round_trip_seconds": [((NTP_SERVER,), round(
                    self.rng.uniform(0.02, 0.06), 4))],
                "clock_server_stratum": [((NTP_SERVER,), 2.0)],
                "clock_offset_limit_seconds": [((), CLOCK_LIMIT_SECONDS)],
            }, clock_error),
            "software": report(0.02, {
                "software_running": [((SOFTWARE,), float(running))],
                "software_processes": [((SOFTWARE,), 3.0 if running else 0.0)],
                "software_version_info": [((SOFTWARE, "5.17.11"), 1.0)],
            }),
        }
