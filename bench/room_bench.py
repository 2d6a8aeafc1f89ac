"""What watching the room costs the bridge PC: each room probe against real servers.

Starts a real NUT ``upsd`` (dummy-ups), ``snmpsimd`` (UPS-MIB, APC, a switch) and
``chronyd``, then runs every room probe through the agent's own ``run_probe`` many times
and prints, per probe, the median wall time and CPU time of one run and what it costs
per hour at its default interval, beside the ``cpu`` probe (psutil) as the baseline that
runs every round anyway. Also prints the telemetry payload a room adds.

    .venv/bin/python -m bench.room_bench [--runs 50]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from agent import wire
from agent.config import parse_config
from agent.probes import ProbeContext, enabled_probes, load_all, run_probe
from deploy.chrony import Chrony
from deploy.nut import ONLINE, Upsd
from deploy.snmpsim import SnmpSim

ROOM = ("devices", "storage", "clock", "software", "ups", "netgear")


def configs(work: Path, upsd: Upsd, snmp: SnmpSim, ntp: Chrony) -> dict[str, dict[str, object]]:
    """One agent configuration per UPS flavour; the rest of the room is the same."""
    rec = work / "recordings"
    rec.mkdir(exist_ok=True)
    v2c = {"host": "127.0.0.1", "port": snmp.port}
    v3 = snmp.v3_target("ups-mib-online")
    room: dict[str, object] = {
        "site": "bench-01", "province": "bench", "spool": {"path": "spool.db"},
        "recording_volume": str(rec), "backup_volume": str(rec),
        "devices": {"camera": 1, "microphone": 1, "speaker": 1, "display": 1},
        "clock": {"server": "127.0.0.1", "port": ntp.port},
        "software": [{"name": "vconf", "processes": ["vconf", "VConf.exe"]}],
        "network_gear": [{"name": "switch", "snmp": {**v2c, "community": "router"}}],
    }
    return {
        "nut": {**room, "ups": [{"name": "ups-1", "nut": {"host": upsd.host,
                                                         "port": upsd.port, "ups": "ups1"}}]},
        "snmp-v2c": {**room, "ups": [{"name": "ups-1", "mib": "ups-mib",
                                      "snmp": {**v2c, "community": "ups-mib-online"}}]},
        "snmp-v3-authpriv": {**room, "ups": [{"name": "ups-1", "mib": "ups-mib", "snmp": {
            "host": v3.host, "port": v3.port, "version": "3", "user": v3.user,
            "auth_protocol": v3.auth_protocol, "auth_key": v3.auth_key,
            "priv_protocol": v3.priv_protocol, "priv_key": v3.priv_key}}]},
    }


def measure(name: str, ctx: ProbeContext, runs: int) -> tuple[float, float, int]:
    """Median wall and CPU seconds of one run, and the payload bytes of its report."""
    probe = load_all()[name]
    run_probe(probe, ctx, 10.0)  # warm: imports, SNMP engine, name resolution
    walls, cpus = [], []
    report = None
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        report = run_probe(probe, ctx, 10.0)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    assert report is not None
    size = len(wire.encode(wire.Telemetry("bench", "bench-01", 1, 1, 1, time.time(),
                                          {name: report})))
    return statistics.median(walls), statistics.median(cpus), size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bw-room-bench-") as tmp:
        work = Path(tmp)
        upsd = Upsd(work / "nut", {"ups1": ONLINE})
        snmp = SnmpSim(work / "snmp", v3=("ups-mib-online",))
        ntp = Chrony(work / "chrony")
        try:
            upsd.start()
            snmp.start()
            ntp.start()
            empty = wire.encode(wire.Telemetry("bench", "bench-01", 1, 1, 1, time.time(), {}))
            print(f"{'probe':<24}{'wall ms':>9}{'CPU ms':>9}{'interval':>10}"
                  f"{'CPU s/h':>9}{'bytes':>7}")
            for flavour, raw in configs(work, upsd, snmp, ntp).items():
                config = parse_config(raw, work)
                intervals = enabled_probes(config)
                ctx = ProbeContext(config)
                names = ("cpu", *ROOM) if flavour == "nut" else ("ups",)
                for name in names:
                    wall, cpu, size = measure(name, ctx, args.runs)
                    per_hour = cpu * 3600 / intervals[name]
                    label = name if name != "ups" else f"ups ({flavour})"
                    print(f"{label:<24}{wall * 1e3:>9.2f}{cpu * 1e3:>9.2f}"
                          f"{intervals[name]:>9.0f}s{per_hour:>9.2f}{size - len(empty):>7}")
        finally:
            ntp.stop()
            snmp.stop()
            upsd.stop()
    print("CPU s/h: CPU seconds per hour at the default interval (3600 s = one core).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
