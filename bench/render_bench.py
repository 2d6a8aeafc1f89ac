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

# What the collector exposes per site beside the measured series (same count, for fairness).
SITE_SERIES = ("bridge_site_info", "bridge_site_required_bandwidth_bits_per_second",
               "bridge_up", "bridge_agent_connected", "bridge_last_seen_timestamp_seconds",
               "bridge_messages_received", "bridge_messages_duplicate", "bridge_messages_lost",
               "bridge_agent_info")


class NaiveCollector(Collector):
    """Re-renders every sample of every site on each scrape, the same series as ours."""

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
        per_site = {name: GaugeMetricFamily(name, "per-site series the collector adds", labels=base)
                    for name in SITE_SERIES}
        success = GaugeMetricFamily("bridge_probe_success", "probe ok", labels=[*base, "probe"])
        duration = GaugeMetricFamily("bridge_probe_duration_seconds", "probe duration",
                                     labels=[*base, "probe"])
        for site_id, message in self.latest.items():
            site = self.inv.sites[site_id]
            ids = [site.province, site.id, site.level]
            for family in per_site.values():
                family.add_metric(ids, 1.0)
            for name, probe in message.probes.items():
                success.add_metric([*ids, name], float(probe.ok))
                duration.add_metric([*ids, name], probe.duration_seconds)
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
        yield from per_site.values()
        yield success
        yield duration


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
    ours.flush(everything=True)
    rounds = [feed.next_round() for _ in range(repeat)]

    # Every site sent a new message since the previous scrape (10 s interval, 15 s scrape):
    # the realistic worst case. The collector renders those changes once (in the intake
    # thread's spare time); the scrape then only sends the cached chunks.
    render, scrape = [], []
    for batch in rounds:
        for topic, payload in batch:
            ours.apply(topic, payload)
            naive.apply(topic, payload)
        started = time.perf_counter()
        ours.flush(everything=True)
        render.append(time.perf_counter() - started)
        started = time.perf_counter()
        body = b"".join(ours.exposition())
        scrape.append(time.perf_counter() - started)
    naive_body = generate_latest(registry)
    series = body.count(b"\n") - body.count(b"\n#") - 1
    naive_series = naive_body.count(b"\n") - naive_body.count(b"\n#") - 1
    return {
        "sites": sites, "series": series, "naive_series": naive_series, "mb": len(body) / 1e6,
        "naive": timed(lambda: generate_latest(registry), repeat),
        "render": statistics.median(render), "scrape": statistics.median(scrape),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[200, 3400, 20000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'sites':>6} {'series':>9} {'MB':>6} {'naive ms':>9} {'render ms':>10} "
          f"{'scrape ms':>10} {'naive/(render+scrape)':>22} {'naive/scrape':>13}")
    for sites in args.sites:
        r = measure(sites, args.repeat)
        both = r["render"] + r["scrape"]
        print(f"{r['sites']:>6} {r['series']:>9} {r['mb']:>6.1f} {r['naive'] * 1e3:>9.1f} "
              f"{r['render'] * 1e3:>10.1f} {r['scrape'] * 1e3:>10.1f} "
              f"{r['naive'] / both:>21.1f}x {r['naive'] / r['scrape']:>12.1f}x")
        if r["naive_series"] != r["series"]:
            print(f"  (naive exposes {r['naive_series']} series, ours {r['series']})")
    print("Every site changed since the previous scrape (the realistic worst case). render: "
          "the collector re-rendering what changed, done in the intake thread between "
          "scrapes; scrape: what a /metrics request costs; naive: a prometheus-client custom "
          "collector re-rendering everything per scrape. Medians of --repeat runs.")


if __name__ == "__main__":
    main()
