"""Ingest through a real Mosquitto into the collector, with a real Prometheus scraping it.

For each offered rate, bench/loadgen.py publishes realistic QoS 1 telemetry for N sites;
the collector (the real Ingest + FleetState + HTTP server, in this process so each
message's publish -> state latency can be recorded exactly) takes it in while Prometheus
scrapes /metrics every 5 s. Printed: offered and achieved rates, intake p50/p99, and the
collector's CPU per message.

    .venv/bin/python -m bench.ingest_bench [--rates 2000 5000 10000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from agent import broker
from bench.fleetdata import inventory
from collector.http import CollectorServer
from collector.ingest import Ingest
from collector.main import tune_gc
from collector.state import FleetState
from deploy.localstack import Mosquitto, Prometheus, free_port, wait_until


class TimedFleetState(FleetState):
    """FleetState that notes, for every accepted message, how long after its publish."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.latencies: list[float] = []
        self.applied = 0

    def _apply(self, state, message, now, changes) -> bool:  # type: ignore[no-untyped-def]
        changed = super()._apply(state, message, now, changes)
        self.latencies.append(time.time() - message.ts)
        self.applied += 1
        return changed


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_rate(fleet: TimedFleetState, port: int, sites: int, rate: float,
             seconds: float) -> dict[str, float]:
    fleet.latencies = []
    start_applied = fleet.applied
    cpu0, t0 = time.process_time(), time.perf_counter()
    gen = subprocess.run([sys.executable, "-m", "bench.loadgen", "--port", str(port),
                          "--sites", str(sites), "--rate", str(rate), "--seconds", str(seconds)],
                         capture_output=True, check=True, cwd=Path(__file__).parents[1])
    sent = json.loads(gen.stdout)
    wait_until(lambda: fleet.applied - start_applied >= sent["acked"], 120,
               "the collector to take in every acknowledged message", interval=0.02)
    elapsed = time.perf_counter() - t0
    applied = fleet.applied - start_applied
    return {
        "offered": rate, "generated": sent["rate"], "applied": applied,
        "achieved": applied / elapsed, "p50": quantile(fleet.latencies, 0.5),
        "p99": quantile(fleet.latencies, 0.99),
        "cpu_us": (time.process_time() - cpu0) / applied * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[2000, 5000, 10000])
    parser.add_argument("--sites", type=int, default=3400)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--scrape-interval", default="5s",
                        help="Prometheus scrape interval; 'off' to run without Prometheus")
    parser.add_argument("--gc", choices=["default", "tuned"], default="tuned")
    args = parser.parse_args()
    if args.gc == "tuned":
        tune_gc()
    with tempfile.TemporaryDirectory(prefix="bw-ingest-") as tmp:
        work = Path(tmp)
        mosquitto = Mosquitto(work / "mosquitto")
        mosquitto.start()
        fleet = TimedFleetState(inventory(args.sites))
        http_port = free_port()
        server = CollectorServer(("127.0.0.1", http_port), fleet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        ingest = Ingest(fleet, broker.BrokerSettings(port=mosquitto.port))
        ingest.start()
        prometheus = None
        if args.scrape_interval != "off":
            prometheus = Prometheus(work / "prometheus", [f"127.0.0.1:{http_port}"],
                                    args.scrape_interval)
            prometheus.start()
        try:
            wait_until(lambda: fleet.metrics.registry.get_sample_value(
                "bridge_collector_mqtt_connected"), 20, "the collector to connect")
            print(f"{args.sites} sites, {args.seconds:.0f} s per rate, Prometheus scraping every "
                  f"{args.scrape_interval}, gc {args.gc}; payload ~{_payload_size(args.sites)} B "
                  "of wire-v1 telemetry")
            print(f"{'offered/s':>10} {'generated/s':>12} {'collector/s':>12} {'p50 ms':>8} "
                  f"{'p99 ms':>8} {'CPU us/msg':>11}")
            for rate in args.rates:
                r = run_rate(fleet, mosquitto.port, args.sites, rate, args.seconds)
                print(f"{r['offered']:>10.0f} {r['generated']:>12.0f} {r['achieved']:>12.0f} "
                      f"{r['p50'] * 1e3:>8.1f} {r['p99'] * 1e3:>8.1f} {r['cpu_us']:>11.1f}")
            if prometheus is not None:
                took = prometheus.value("max_over_time(scrape_duration_seconds[5m])")
                print(f"Prometheus target up: {prometheus.value('up')}, slowest scrape: "
                      f"{took} s")
            print("collector CPU us/msg: MQTT intake, decode, state, rendering and the scrapes")
        finally:
            ingest.stop()
            server.shutdown()
            if prometheus is not None:
                prometheus.stop()
            mosquitto.stop()


def _payload_size(sites: int) -> int:
    from bench.fleetdata import FleetFeed
    return len(FleetFeed(inventory(min(sites, 2))).next_round()[-1][1])


if __name__ == "__main__":
    main()
