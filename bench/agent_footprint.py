"""The agent's footprint on a bridge PC: resident memory and CPU, against the budget.

Runs the real ``bridgewatch-agent run`` (every probe, the spool, QoS 1 to a real
Mosquitto) at its production interval and samples it with psutil. Beside it runs a bare
``python -c "import time; time.sleep(...)"``, so the interpreter's own share of the RSS
is visible: that much is the price of Python, the rest is the agent.

    .venv/bin/python -m bench.agent_footprint [--seconds 60] [--interval 10]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
import yaml

from agent import wire
from agent.broker import BrokerSettings, connect_async, make_client
from deploy.localstack import Mosquitto, Process, wait_until

BUDGET_RSS_MB = 40.0
BUDGET_CPU_PERCENT = 1.0
MB = 1024 * 1024
PROVINCE, SITE = "bench", "footprint-01"


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def count_telemetry(port: int, counter: list[int]) -> mqtt.Client:
    """Count what reaches the broker, so the figures come from an agent that is working."""
    settings = BrokerSettings(port=port, session_expiry_seconds=0)
    client = make_client(settings, "footprint-counter")
    lock = threading.Lock()

    def on_message(*_: object) -> None:
        with lock:
            counter[0] += 1

    client.on_connect = lambda c, *a: c.subscribe(
        wire.topic(wire.DEFAULT_PREFIX, PROVINCE, SITE, wire.Kind.TELEMETRY), 1)
    client.on_message = on_message
    connect_async(client, settings)
    client.loop_start()
    return client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement length")
    parser.add_argument("--interval", type=float, default=10.0, help="agent sampling interval")
    args = parser.parse_args()
    agent_exe = shutil.which("bridgewatch-agent", path=str(Path(sys.executable).parent))
    if agent_exe is None:
        sys.exit("bridgewatch-agent is not installed in this environment (pip install -e .)")

    with tempfile.TemporaryDirectory(prefix="bw-footprint-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "mosquitto")
        config = work / "agent.yaml"
        config.write_text(yaml.safe_dump({
            "site": SITE, "province": PROVINCE, "interval_seconds": args.interval,
            "spool": {"path": str(work / "spool.db")}, "broker": {"port": broker.port}}))
        agent = Process([agent_exe, "run", "--config", str(config)], work / "agent.log")
        sleep_for = args.seconds + 10 * args.interval + 60
        baseline = Process([sys.executable, "-c", f"import time; time.sleep({sleep_for})"],
                           work / "baseline.log")
        received = [0]
        broker.start()
        counter = count_telemetry(broker.port, received)
        try:
            agent.start()
            baseline.start()
            assert agent.proc is not None and baseline.proc is not None
            # Start measuring once the agent has delivered its first sample (start-up done).
            wait_until(lambda: received[0] >= 1 or not agent.running, 60, "first telemetry")
            if not agent.running:
                sys.exit(f"agent exited:\n{agent.log()}")
            me, base = psutil.Process(agent.proc.pid), psutil.Process(baseline.proc.pid)
            first_count, cpu0, t0 = received[0], cpu_seconds(me), time.monotonic()
            rss: list[int] = []
            base_rss: list[int] = []
            while time.monotonic() - t0 < args.seconds:
                rss.append(me.memory_info().rss)
                base_rss.append(base.memory_info().rss)
                time.sleep(1.0)
            cpu_percent = 100 * (cpu_seconds(me) - cpu0) / (time.monotonic() - t0)
            delivered = received[0] - first_count
        finally:
            agent.stop()
            baseline.stop()
            counter.disconnect()
            counter.loop_stop()
            broker.stop()

    peak, last, base_peak = max(rss) / MB, rss[-1] / MB, max(base_rss) / MB
    print(f"agent footprint over {args.seconds:g} s at a {args.interval:g} s interval "
          f"({delivered} telemetry messages delivered meanwhile)")
    print(f"  {'':26}{'measured':>10}{'budget':>10}{'bare python':>13}")
    print(f"  {'RSS peak (MB)':26}{peak:10.1f}{BUDGET_RSS_MB:10.1f}{base_peak:13.1f}")
    print(f"  {'RSS at end (MB)':26}{last:10.1f}{BUDGET_RSS_MB:10.1f}{base_rss[-1] / MB:13.1f}")
    print(f"  {'CPU (% of one core)':26}{cpu_percent:10.2f}{BUDGET_CPU_PERCENT:10.1f}{'':>13}")
    within = peak <= BUDGET_RSS_MB and cpu_percent <= BUDGET_CPU_PERCENT
    print(f"SUMMARY agent RSS {peak:.1f} MB (bare python {base_peak:.1f} MB, agent's own "
          f"{peak - base_peak:.1f} MB), CPU {cpu_percent:.2f} % of a core; budget "
          f"{BUDGET_RSS_MB:g} MB / {BUDGET_CPU_PERCENT:g} %: {'OK' if within else 'OVER'}")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
