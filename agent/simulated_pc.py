"""A plausible bridge PC, advanced one interval at a time: what a simulated site reports.

The numbers follow what the real probes read on a Linux bridge PC (psutil's CPU modes,
one wired NIC, system / recording / backup filesystems) and are sized by the site's level:
a central bridge has a bigger PC and a 30 Mbps line, a commune bridge a modest PC and
5 Mbps. Video calls come far more often than real sessions do, so a few minutes of demo
show both an idle PC and one in a call (CPU, memory, traffic and recording space move).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from agent.link import stats
from agent.readiness.criteria import DeviceFacts, Facts, Limits, judge
from agent.simulated_room import PLAN, SimulatedRoom
from agent.wire import Criterion, ProbeReport, Row

GB = 10**9
GIB = 2**30
MIB = 2**20

# Share of the busy CPU time per mode; iowait and idle are computed apart.
BUSY_SHARES = {"user": 0.74, "nice": 0.01, "system": 0.19, "irq": 0.01, "softirq": 0.05}
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest",
             "guest_nice")  # psutil's order on Linux
MEAN_SECONDS_BETWEEN_CALLS = 600.0
CALL_SECONDS = (300.0, 1200.0)
RECORDING_BITS_PER_SECOND = 4e6  # 1080p H.264 of the whole session
# The room's equipment changes slowly: its probes run every 6th round (a minute at 10 s).
ROOM_EVERY_ROUNDS = 6


@dataclass(frozen=True)
class Hardware:
    """The PC in a bridge room; disks are in marketing bytes, like the label on the box."""

    cores: int
    ram_bytes: int
    swap_bytes: int
    system_disk_bytes: int
    recording_disk_bytes: int
    backup_disk_bytes: int
    interface: str
    busy_in_call: float  # CPU share while the video-conference client runs a session


_BIG_PC = Hardware(12, 32 * GIB, 2 * GIB, 512 * GB, 1000 * GB, 2000 * GB, "eno1", 0.30)
HARDWARE = {
    "central": _BIG_PC,
    "national": _BIG_PC,
    "member": Hardware(4, 8 * GIB, 2 * GIB, 256 * GB, 500 * GB, 1000 * GB, "enp2s0", 0.45),
}
MOUNTS = (("/", "system"), ("/srv/recordings", "recording"), ("/media/backup", "backup"))
# The path to the central reflector: (base RTT s, jitter s, loss ratio) ranges per level.
# A commune's line is longer and busier than the province's own LAN to the reflector.
LINK = {"central": ((0.002, 0.006), (0.0003, 0.001), (0.0, 0.001)),
        "national": ((0.015, 0.030), (0.001, 0.004), (0.0, 0.005)),
        "member": ((0.020, 0.070), (0.002, 0.015), (0.0, 0.003))}


def _formatted(disk_bytes: int) -> int:
    """What statvfs reports for a whole-disk ext4: a little less, in 4 KiB blocks."""
    return int(disk_bytes * 0.982) // 4096 * 4096


class SimulatedPc:
    """Counters and gauges of one bridge PC; ``advance`` moves it on by one interval."""

    def __init__(self, level: str, link_bits_per_second: float, rng: random.Random,
                 now: float) -> None:
        self.level = level
        self.hw = HARDWARE[level]
        self.link = link_bits_per_second
        self.rng = rng
        uptime = rng.uniform(2 * 3600, 21 * 86400)
        self.boot_time = float(int(now - uptime))
        self.memory_total = int(self.hw.ram_bytes * 0.975) // 4096 * 4096
        self.call_seconds_left = 0.0
        # Counters start where a PC up this long would be: mostly idle, some calls; steal and
        # guest stay 0 on a physical PC.
        busy, cpu_total = 0.06, uptime * self.hw.cores
        self.cpu = {mode: cpu_total * busy * BUSY_SHARES.get(mode, 0.0) for mode in CPU_MODES}
        self.cpu["iowait"] = cpu_total * 0.006
        self.cpu["idle"] = cpu_total - sum(self.cpu.values())
        self.load = [busy * self.hw.cores] * 3
        self.memory_available = self.memory_total * rng.uniform(0.55, 0.65)
        self.swap_used = rng.uniform(0, 96) * MIB
        self.fs_size = {role: _formatted(size) for role, size in zip(
            ("system", "recording", "backup"),
            (self.hw.system_disk_bytes, self.hw.recording_disk_bytes, self.hw.backup_disk_bytes),
            strict=True)}
        used = {"system": rng.uniform(0.25, 0.45), "recording": rng.uniform(0.2, 0.7),
                "backup": rng.uniform(0.3, 0.7)}
        self.fs_avail = {role: size * (0.95 - used[role]) for role, size in self.fs_size.items()}
        rx_rate, tx_rate = self._rates(in_call=False)
        self.rx = uptime * rx_rate * 1.5 / 8  # some past calls on top of the idle rate
        self.tx = uptime * tx_rate * 1.5 / 8
        self.rx_drop = int(uptime / 3600)
        self.agent_rss = rng.uniform(36, 42) * MIB
        self.agent_cpu = uptime * 0.0006
        (rtt_lo, rtt_hi), (jit_lo, jit_hi), (loss_lo, loss_hi) = LINK[level]
        self.rtt_base = rng.uniform(rtt_lo, rtt_hi)
        self.rtt_jitter = rng.uniform(jit_lo, jit_hi)
        self.loss = rng.uniform(loss_lo, loss_hi)
        self.link_sent = self.link_received = 0
        self.room = SimulatedRoom(level, rng)
        # Like the real agent, the first message has every probe; after that, sites take
        # turns so the bigger room messages do not all come in the same round.
        self.rounds_to_room = 0
        self.room_rounds_first_gap = rng.randint(1, ROOM_EVERY_ROUNDS)

    @property
    def in_call(self) -> bool:
        return self.call_seconds_left > 0

    def _rates(self, in_call: bool) -> tuple[float, float]:
        """Receive and transmit bits per second on the NIC."""
        noise = self.rng.uniform(0.85, 1.15)
        if not in_call:
            return 40e3 * noise, 25e3 * noise
        if self.level == "member":
            return self.link * 0.52 * noise, self.link * 0.42 * noise
        return self.link * 0.45 * noise, self.link * 0.28 * noise  # hosts many members

    def advance(self, dt: float) -> None:
        """Move every counter and gauge on by ``dt`` seconds of (simulated) bridge life."""
        rng = self.rng
        if self.in_call:
            self.call_seconds_left -= dt
        elif rng.random() < dt / MEAN_SECONDS_BETWEEN_CALLS:
            self.call_seconds_left = rng.uniform(*CALL_SECONDS)
        in_call = self.in_call
        busy = (self.hw.busy_in_call if in_call else 0.04) * rng.uniform(0.8, 1.2)
        iowait = (0.02 if in_call else 0.005) * rng.uniform(0.5, 1.5)
        cpu_total = self.hw.cores * dt
        for mode, share in BUSY_SHARES.items():
            self.cpu[mode] += cpu_total * busy * share
        self.cpu["iowait"] += cpu_total * iowait
        self.cpu["idle"] += cpu_total * (1 - busy - iowait)
        running = busy * self.hw.cores * 1.1
        for i, period in enumerate((60.0, 300.0, 900.0)):
            self.load[i] = running + (self.load[i] - running) * math.exp(-dt / period)
        target = self.memory_total * (0.38 if in_call else 0.60)
        self.memory_available += (target - self.memory_available) * (1 - math.exp(-dt / 60))
        self.memory_available *= rng.uniform(0.99, 1.01)
        self.swap_used = min(self.hw.swap_bytes, max(0.0, self.swap_used + rng.gauss(0, MIB)))
        self.fs_avail["system"] -= 2e3 * dt  # logs
        if in_call:
            self.fs_avail["recording"] -= RECORDING_BITS_PER_SECOND / 8 * dt
        if self.fs_avail["recording"] < 0.05 * self.fs_size["recording"]:
            # the technician archives old recordings to the backup disk
            moved = 0.4 * self.fs_size["recording"]
            self.fs_avail["recording"] += moved
            self.fs_avail["backup"] = max(0.0, self.fs_avail["backup"] - moved)
        rx_rate, tx_rate = self._rates(in_call)
        self.rx += rx_rate / 8 * dt
        self.tx += tx_rate / 8 * dt
        if rng.random() < 0.05:
            self.rx_drop += rng.randint(1, 3)
        self.agent_rss = min(48 * MIB, max(32 * MIB, self.agent_rss + rng.gauss(0, 0.2 * MIB)))
        self.agent_cpu += dt * rng.uniform(0.0004, 0.0008)
        self.room.advance(dt, in_call)

    def link_probe(self, interval: float) -> ProbeReport:
        """One window of 1 Hz probing to the reflector, summarised by the agent's own maths."""
        rng, target = self.rng, ("reflector", "udp-reflector")
        sent = max(1, round(interval))
        rtts = [self.rtt_base + abs(rng.gauss(0, self.rtt_jitter)) * (3 if self.in_call else 1)
                for _ in range(sent) if rng.random() >= self.loss]
        self.link_sent += sent
        self.link_received += len(rtts)
        metrics: dict[str, list[Row]] = {
            "link_packets_sent_total": [(target, self.link_sent)],
            "link_packets_received_total": [(target, self.link_received)],
            "link_packets_duplicate_total": [(target, 0)],
            "link_packets_reordered_total": [(target, 0)],
            "link_target_resolved": [(("reflector",), 1)],
        }
        if rtts:
            jitter = stats.rfc3550_jitter(rtts)
            r = stats.r_factor(stats.quantiles(rtts)[0.5], jitter, 1 - len(rtts) / sent)
            metrics["link_rtt_seconds"] = [((*target, str(q)), round(v, 6)) for q, v in
                                           zip(("0", "0.5", "0.9", "0.99", "1"),
                                               stats.quantiles(rtts).values(), strict=True)]
            metrics["link_jitter_seconds"] = [
                ((*target, "rfc3550"), round(jitter, 6)),
                ((*target, "mean_abs_diff"),
                 round(stats.mean_abs_diff(list(enumerate(rtts))) or 0.0, 6))]
            metrics["link_r_factor"] = [(("reflector",), round(r, 2))]
            metrics["link_mos"] = [(("reflector",), round(stats.mos(r), 3))]
        return ProbeReport(True, interval * 0.001, interval, None, metrics)

    def readiness_test(self, session_seconds: float | None) -> tuple[Criterion, ...]:
        """The full test a technician's agent would run now, judged by the agent's code."""
        rng, room = self.rng, self.room
        rtts = [self.rtt_base + abs(rng.gauss(0, self.rtt_jitter)) for _ in range(200)]
        received = [r for r in rtts if rng.random() >= self.loss]
        loss = 1 - len(received) / len(rtts)
        jitter = stats.rfc3550_jitter(received) if len(received) > 1 else 0.0
        median = stats.quantiles(received)[0.5] if received else 1.0
        # Lines are bought with headroom over the requirement; a bad day (1 in 10) is not.
        share = rng.uniform(0.35, 0.7) if rng.random() < 0.1 else rng.uniform(1.0, 1.4)
        inventory, expected = room.devices()
        facts = Facts(
            rtt_median=median, jitter=jitter, loss_ratio=loss,
            mos=stats.mos(stats.r_factor(median, jitter, loss)),
            bandwidth_up=self.link * share, bandwidth_down=self.link * share * 1.05,
            devices={e.kind: DeviceFacts(sum(d.kind == e.kind for d in inventory.devices),
                                         e.count) for e in expected},
            ups={"ups-1": room.ups()},
            recording_seconds_left=self.fs_avail["recording"] * 8 / 4e6,
            backup_present=not room.faults.backup_unplugged,
            clock_offset=room.offset, software={"vconf": True})
        limits = Limits(min_bandwidth_bps=self.link, session_seconds=session_seconds
                        or PLAN.length_seconds, ups_margin_seconds=PLAN.ups_margin_seconds)
        return tuple(j.criterion for j in judge(facts, limits))

    def probes(self, interval: float) -> dict[str, ProbeReport]:
        """One telemetry round, grouped by probe like the real agent's report."""
        hw, nic = self.hw, (self.hw.interface,)

        def probe(duration: float, metrics: dict[str, list[Row]]) -> ProbeReport:
            return ProbeReport(True, duration * self.rng.uniform(0.7, 1.3), interval, None,
                               metrics)

        def single(value: float) -> list[Row]:
            return [((), value)]

        room: dict[str, ProbeReport] = {}
        if self.rounds_to_room == 0:
            room = self.room.reports(interval * ROOM_EVERY_ROUNDS, self.fs_avail["recording"],
                                     self.in_call)
            self.rounds_to_room = self.room_rounds_first_gap or ROOM_EVERY_ROUNDS
            self.room_rounds_first_gap = 0
        self.rounds_to_room -= 1
        fs = [((mount, role), self.fs_size[role]) for mount, role in MOUNTS]
        fs_avail = [((mount, role), int(self.fs_avail[role])) for mount, role in MOUNTS]
        return {
            "cpu": probe(0.0006, {
                "cpu_seconds_total": [((m,), round(self.cpu[m], 2)) for m in CPU_MODES],
                "cpu_logical_cores": single(hw.cores),
            }),
            "load": probe(0.0001, {
                "load1": single(round(self.load[0], 2)),
                "load5": single(round(self.load[1], 2)),
                "load15": single(round(self.load[2], 2)),
            }),
            "uptime": probe(0.0001, {"boot_time_seconds": single(self.boot_time)}),
            "memory": probe(0.0003, {
                "memory_total_bytes": single(self.memory_total),
                "memory_available_bytes": single(int(self.memory_available)),
                "swap_total_bytes": single(hw.swap_bytes),
                "swap_used_bytes": single(int(self.swap_used)),
            }),
            "disk": probe(0.002, {
                "filesystem_size_bytes": fs,
                "filesystem_avail_bytes": fs_avail,
            }),
            "network": probe(0.0008, {
                "network_up": [(nic, 1)],
                "network_speed_bits_per_second": [(nic, 1_000_000_000)],
                "network_receive_bytes_total": [(nic, int(self.rx))],
                "network_transmit_bytes_total": [(nic, int(self.tx))],
                "network_receive_errors_total": [(nic, 0)],
                "network_transmit_errors_total": [(nic, 0)],
                "network_receive_drop_total": [(nic, self.rx_drop)],
                "network_transmit_drop_total": [(nic, 0)],
            }),
            "link": self.link_probe(interval),
            "agent": probe(0.0002, {
                "agent_resident_memory_bytes": single(int(self.agent_rss)),
                "agent_cpu_seconds_total": single(round(self.agent_cpu, 3)),
                "agent_spool_messages": single(0),
                "agent_spool_bytes": single(0),
                "agent_spool_dropped_total": single(0),
            }),
            **room,
        }
