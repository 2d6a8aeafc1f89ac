"""Ingest through a real Mosquitto into the collector, with a real Prometheus scraping it.

For each offered rate, bench/loadgen.py publishes realistic QoS 1 telemetry for N sites;
the collector takes it in while Prometheus scrapes /metrics every 5 s. With --shards K the
province is split between K collector processes (the scale path: each owns a stable share
of the sites): shard 0 runs in this process, where each message's publish -> state latency
is recorded exactly, the others are real ``bridgewatch-collector`` processes. Printed:
offered and achieved rates (all shards), intake p50/p99 (shard 0), and shard 0's CPU per
message.

    .venv/bin/python -m bench.ingest_bench [--sites 200] [--shards 2] [--rates 5000 10000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

from agent import broker
from bench.fleetdata import inventory, inventory_document
from collector.http import CollectorServer
from collector.ingest import Ingest
from collector.main import tune_gc
from collector.state import FleetState
from deploy.localstack import Mosquitto, Process, Prometheus, free_port, wait_until

ROOT = Path(__file__).parents[1]


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


def received(port: int) -> float:
    """Telemetry messages a collector process has taken in (its /healthz, not a scrape)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
        return float(json.loads(resp.read())["received"]["telemetry"])


def _healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
        return bool(json.loads(resp.read())["connected"])


def expected_per_shard(site_ids: list[str], shards: int, total: int) -> list[int]:
    """How many of ``total`` round-robin messages each shard's sites receive."""
    counts = [0] * shards
    whole, rest = divmod(total, len(site_ids))
    owner = {sid: i for i in range(shards) for sid in inventory_owner(site_ids, i, shards)}
    for position, sid in enumerate(site_ids):
        counts[owner[sid]] += whole + (1 if position < rest else 0)
    return counts


def inventory_owner(site_ids: list[str], index: int, shards: int) -> list[str]:
    inv = inventory(len(site_ids)).shard(index, shards)
    return list(inv.sites)


class Shards:
    """Shard 0 here (timed), shards 1..K-1 as collector processes."""

    def __init__(self, work: Path, sites: int, count: int, broker_port: int) -> None:
        self.count = count
        self.fleet = TimedFleetState(inventory(sites).shard(0, count))
        self.http_port = free_port()
        self.server = CollectorServer(("127.0.0.1", self.http_port), self.fleet)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.ingest = Ingest(self.fleet, broker.BrokerSettings(port=broker_port),
                             client_id="bench-shard-0", per_site=count > 1)
        (work / "inventory.yaml").write_text(yaml.safe_dump(inventory_document(sites),
                                                            allow_unicode=True))
        self.others: list[tuple[Process, int]] = []
        for index in range(1, count):
            port = free_port()
            config = work / f"collector-{index}.yaml"
            config.write_text(yaml.safe_dump({
                "inventory": str(work / "inventory.yaml"), "listen": f"127.0.0.1:{port}",
                "shard": f"{index}/{count}", "broker": {"port": broker_port}}))
            self.others.append((Process([sys.executable, "-m", "collector.main", "--config",
                                         str(config), "--log-level", "WARNING"],
                                        work / f"collector-{index}.log"), port))

    @property
    def ports(self) -> list[int]:
        return [self.http_port, *(port for _, port in self.others)]

    def start(self) -> None:
        self.ingest.start()
        for process, _ in self.others:
            process.start()
        wait_until(lambda: self.fleet.metrics.registry.get_sample_value(
            "bridge_collector_mqtt_connected"), 20, "shard 0 to connect")
        for _, port in self.others:
            wait_until(lambda port=port: _healthy(port), 20, "the other shards")
        time.sleep(1)  # let every shard's subscriptions settle

    def counts(self) -> list[float]:
        return [self.fleet.applied, *(received(port) for _, port in self.others)]

    def stop(self) -> None:
        self.ingest.stop()
        self.server.shutdown()
        for process, _ in self.others:
            process.stop()


def run_rate(shards: Shards, broker_port: int, sites: int, rate: float,
             seconds: float) -> dict[str, float]:
    fleet = shards.fleet
    fleet.latencies = []
    before = shards.counts()
    cpu0 = time.process_time()
    gen = subprocess.run([sys.executable, "-m", "bench.loadgen", "--port", str(broker_port),
                          "--sites", str(sites), "--rate", str(rate), "--seconds", str(seconds)],
                         capture_output=True, check=True, cwd=ROOT)
    sent = json.loads(gen.stdout)
    site_ids = list(inventory(sites).sites)
    expected = expected_per_shard(site_ids, shards.count, sent["acked"])
    wait_until(lambda: all(now - was >= want for now, was, want
                           in zip(shards.counts(), before, expected, strict=True)),
               180, "every shard to take in its acknowledged messages", interval=0.05)
    applied = fleet.applied - before[0]
    return {  # collected: from the first message sent to the last one taken in
        "offered": rate, "generated": sent["rate"],
        "achieved": sent["acked"] / (time.time() - sent["started_at"]),
        "p50": quantile(fleet.latencies, 0.5), "p99": quantile(fleet.latencies, 0.99),
        "cpu_us": (time.process_time() - cpu0) / applied * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[2000, 5000, 10000])
    parser.add_argument("--sites", type=int, default=3400)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--scrape-interval", default="5s",
                        help="Prometheus scrape interval; 'off' to run without Prometheus")
    args = parser.parse_args()
    tune_gc()
    with tempfile.TemporaryDirectory(prefix="bw-ingest-") as tmp:
        work = Path(tmp)
        mosquitto = Mosquitto(work / "mosquitto")
        mosquitto.start()
        shards = Shards(work, args.sites, args.shards, mosquitto.port)
        prometheus = None
        try:
            shards.start()
            if args.scrape_interval != "off":
                prometheus = Prometheus(work / "prometheus",
                                        [f"127.0.0.1:{p}" for p in shards.ports],
                                        args.scrape_interval)
                prometheus.start()
            print(f"{args.sites} sites, {args.shards} collector process(es), "
                  f"{args.seconds:.0f} s per rate, Prometheus scraping every "
                  f"{args.scrape_interval}; payload ~{_payload_size()} B of wire-v1 telemetry")
            print(f"{'offered/s':>10} {'generated/s':>12} {'collected/s':>12} {'p50 ms':>8} "
                  f"{'p99 ms':>8} {'CPU us/msg':>11}")
            for rate in args.rates:
                r = run_rate(shards, mosquitto.port, args.sites, rate, args.seconds)
                print(f"{r['offered']:>10.0f} {r['generated']:>12.0f} {r['achieved']:>12.0f} "
                      f"{r['p50'] * 1e3:>8.1f} {r['p99'] * 1e3:>8.1f} {r['cpu_us']:>11.1f}",
                      flush=True)
            if prometheus is not None:
                took = prometheus.value("max(max_over_time(scrape_duration_seconds[5m]))")
                print(f"Prometheus targets up: {prometheus.value('sum(up)')} of "
                      f"{args.shards}; slowest scrape {took:.3f} s")
            print("collected/s: all shards, until the last acknowledged message was taken in; "
                  "p50/p99 publish -> state and CPU us/msg (intake, decode, state, rendering, "
                  "scrapes): shard 0")
        finally:
            shards.stop()
            if prometheus is not None:
                prometheus.stop()
            mosquitto.stop()


def _payload_size() -> int:
    from bench.fleetdata import FleetFeed
    return len(FleetFeed(inventory(2)).next_round()[-1][1])


if __name__ == "__main__":
    main()
