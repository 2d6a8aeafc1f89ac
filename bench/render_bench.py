"""/metrics render time: BridgeWatch's cached exposition against the naive baseline.

The baseline is what a prometheus-client custom collector does: keep the decoded
messages, and on every scrape build a MetricFamily per metric, add every site's samples
and let generate_latest() format them. Both expose the same samples from the same
realistic payloads, in the same run.

    .venv/bin/python -m bench.render_bench [--sites 200 3400 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import wire
from bench.fleetdata import FleetFeed, inventory
from collector.inventory import Inventory
from collector.state import FleetState


class NaiveCollector(Collector):
    """Re-renders every sample of every site on each scrape."""

    def __init__(self, inv: Inventory) -> None:
        self.inv = inv
        self.latest: dict[str, wire.Telemetry] = {}

    def apply(self, topic: str, payload: bytes) -> None:
        _, site, kind = wire.parse_topic(wire.DEFAULT_PREFIX, topic)
        message = wire.decode(payload, kind)
        assert isinstance(message, wire.Telemetry)
        self.latest[site] = message

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        base = ("province", "site", "level")
        for site_id, message in self.latest.items():
            site = self.inv.sites[site_id]
            ids = [site.province, site.id, site.level]
            for probe in message.probes.values():
                for metric, rows in probe.metrics.items():
                    spec = wire.CATALOGUE[metric]
                    family = families.get(metric)
                    if family is None:
                        cls = CounterMetricFamily if spec.type == "counter" else GaugeMetricFamily
                        name = spec.exposed_name.removesuffix("_total")
                        family = families[metric] = cls(name, spec.help,
                                                        labels=[*base, *spec.labels])
                    for labels, value in rows:
                        family.add_metric([*ids, *labels], value)
        yield from families.values()


def timed(fn: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def measure(sites: int, repeat: int) -> dict[str, float]:
    inv = inventory(sites)
    feed = FleetFeed(inv)
    ours = FleetState(inv)
    naive = NaiveCollector(inv)
    registry = CollectorRegistry()
    registry.register(naive)
    for topic, payload in feed.next_round():
        ours.apply(topic, payload)
        naive.apply(topic, payload)
    body = ours.render()
    naive_body = generate_latest(registry)
    rounds = [feed.next_round() for _ in range(repeat)]

    # Every site sent a new message since the previous scrape (10 s interval, 15 s scrape).
    changed, intake = [], []
    for batch in rounds:
        started = time.perf_counter()
        for topic, payload in batch:
            ours.apply(topic, payload)
        intake.append(time.perf_counter() - started)
        started = time.perf_counter()
        ours.render()
        changed.append(time.perf_counter() - started)
    decode = timed(lambda: [wire.decode(p, wire.Kind.TELEMETRY) for _, p in rounds[-1]], 1)
    return {
        "sites": sites,
        "series": body.count(b"\n") - body.count(b"\n#"),
        "mb": len(body) / 1e6,
        "naive_mb": len(naive_body) / 1e6,
        "naive": timed(lambda: generate_latest(registry), repeat),
        "changed": statistics.median(changed),
        "unchanged": timed(ours.render, repeat),
        "render_at_intake_us": (statistics.median(intake) - decode) / sites * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[200, 3400, 20000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'sites':>6} {'series':>9} {'body MB':>8} {'naive ms':>9} {'ours ms':>8} "
          f"{'ratio':>6} {'unchanged ms':>13} {'intake render us/msg':>21}")
    for sites in args.sites:
        r = measure(sites, args.repeat)
        print(f"{r['sites']:>6} {r['series']:>9} {r['mb']:>8.1f} {r['naive'] * 1e3:>9.1f} "
              f"{r['changed'] * 1e3:>8.1f} {r['naive'] / r['changed']:>5.1f}x "
              f"{r['unchanged'] * 1e3:>13.2f} {r['render_at_intake_us']:>21.1f}")
    print("ours = every site changed since the last scrape (the realistic worst case); "
          "unchanged = nothing new; intake render = state update + chunk rendering per "
          "message, paid at intake instead of at scrape.")


if __name__ == "__main__":
    main()
