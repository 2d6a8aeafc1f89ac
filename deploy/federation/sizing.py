"""What federating N provinces costs, measured on one real provincial stack.

    .venv/bin/python -m deploy.federation.sizing [--sites 200] [--provinces 34]

Starts one province as tests/test_federation.py does (Mosquitto, the collector with the
demo's schedule, ``--sites`` simulated bridges, Prometheus with alerts/rules), then counts
series where they are: the collector's /metrics (what remote-write of everything ships,
with the rules' output: Prometheus's head series) and the provincial /federate answer to
the national configuration's match[] selectors (what federation ships). Prints the
figures per bridge, per province and for ``--provinces`` provinces, with samples/s at the
shipped intervals (provincial scrape 15 s, national federation 30 s).

Readiness series grow with the schedule, not only with bridges: the demo's schedule has
three sessions ahead (all members, half of them, all), three checkpoints each.
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bench.fleetdata import inventory_document
from deploy.federation.stack import NATIONAL_CONFIG, ProvincialStack, fetch
from deploy.localstack import wait_until

PROVINCIAL_SCRAPE_SECONDS = 15
FEDERATION_SECONDS = 30
STEADY_MESSAGES = 3
ONE_HOT = "bridge_readiness"


def federate_selectors() -> list[str]:
    """The match[] selectors of the national configuration's first federate job."""
    config = yaml.safe_load(NATIONAL_CONFIG.read_text(encoding="utf-8"))
    return list(config["scrape_configs"][0]["params"]["match[]"])


def series_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def federate_text(stack: ProvincialStack, selectors: list[str] | None = None) -> str:
    """The provincial /federate answer to the national selectors (or others), as the
    national side reads it (uncompressed text)."""
    assert stack.prometheus is not None
    query = urllib.parse.urlencode([("match[]", s) for s in selectors or federate_selectors()])
    return fetch(f"{stack.prometheus.url}/federate?{query}")


def federate(stack: ProvincialStack) -> list[Sample]:
    """The provincial /federate answer, one sample per series."""
    return [s for family in text_string_to_metric_families(federate_text(stack))
            for s in family.samples]


def bridges_up(stack: ProvincialStack) -> float | None:
    """province:bridges_up:sum of the stack's own province, as the national side gets it."""
    for sample in federate(stack):
        if sample.name == "province:bridges_up:sum" and sample.labels.get(
                "province") == stack.province:
            return sample.value
    return None


def fewest_messages(stack: ProvincialStack) -> float:
    """The least bridge_messages_received_total over the stack's bridges."""
    text = fetch(stack.collector_url + "/metrics")
    counts = [s.value for family in text_string_to_metric_families(text)
              for s in family.samples if s.name == "bridge_messages_received_total"]
    return min(counts) if len(counts) == len(stack.sites) else 0.0


@dataclass(frozen=True)
class Sizing:
    bridges: int
    collector_series: int  # every series on the collector's /metrics
    bridge_series: int  # those with a site label
    head_series: int  # the provincial Prometheus's TSDB: scraped series + rule outputs
    federated_series: int  # the /federate answer to the national selectors
    federated_bytes: int  # its size, uncompressed ...
    federated_gzip_bytes: int  # ... and gzipped (Prometheus scrapes with gzip)
    federated_by_name: dict[str, int]  # federated series per metric name
    one_hot_series: int  # bridge_readiness{state}, which the selectors leave out

    def report(self, provinces: int) -> str:
        per = self.bridge_series / self.bridges
        rows = [
            ("series on /metrics per bridge", f"{per:.0f}"),
            ("collector series (province)", f"{self.collector_series}"),
            ("provincial Prometheus head series", f"{self.head_series}"),
            ("federated series (province)", f"{self.federated_series}"),
            ("federated series per bridge", f"{self.federated_series / self.bridges:.1f}"),
            ("/federate answer, bytes uncompressed", f"{self.federated_bytes:,}"),
            ("/federate answer, bytes gzipped", f"{self.federated_gzip_bytes:,}"),
            *((f"  federated {name}", f"{count}") for name, count in sorted(
                self.federated_by_name.items(), key=lambda item: -item[1])),
            ("not federated: bridge_readiness{state} one-hot", f"{self.one_hot_series}"),
        ]
        for name, series, seconds in (
                ("remote-write everything", self.head_series, PROVINCIAL_SCRAPE_SECONDS),
                ("federation, curated", self.federated_series, FEDERATION_SECONDS)):
            rows.append((f"{name}: {provinces} provinces, series",
                         f"{series * provinces:,}"))
            rows.append((f"{name}: {provinces} provinces, samples/s (every {seconds} s)",
                         f"{series * provinces / seconds:,.0f}"))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def measure(stack: ProvincialStack) -> Sizing:
    """Count series on a started stack once its rules cover every bridge."""
    assert stack.prometheus is not None
    bridges = len(stack.sites)
    wait_until(lambda: bridges_up(stack) == bridges, 60, "the rules over every bridge",
               interval=0.5)
    # Every probe reported: a few telemetry messages from every bridge, not just its state.
    wait_until(lambda: fewest_messages(stack) >= STEADY_MESSAGES,
               STEADY_MESSAGES * stack.telemetry_seconds * 3 + 30, "telemetry from every bridge",
               interval=0.5)
    metrics = series_lines(fetch(stack.collector_url + "/metrics"))
    text = federate_text(stack).encode()
    federated = [s for family in text_string_to_metric_families(text.decode())
                 for s in family.samples]
    # Prometheus's own /metrics: it does not scrape itself here.
    head = next(float(line.split()[-1]) for line in
                series_lines(fetch(stack.prometheus.url + "/metrics"))
                if line.startswith("prometheus_tsdb_head_series "))
    return Sizing(bridges=bridges, collector_series=len(metrics),
                  bridge_series=sum('site="' in line for line in metrics),
                  head_series=int(head), federated_series=len(federated),
                  federated_bytes=len(text), federated_gzip_bytes=len(gzip.compress(text)),
                  federated_by_name=dict(Counter(s.name for s in federated)),
                  one_hot_series=len(series_lines(federate_text(stack, [ONE_HOT]))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.federation.sizing",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=200, help="bridges of the province")
    parser.add_argument("--provinces", type=int, default=34)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bw-sizing-") as work:
        inventory = Path(work) / "inventory.yaml"
        inventory.write_text(yaml.safe_dump(inventory_document(args.sites), allow_unicode=True),
                             encoding="utf-8")
        stack = ProvincialStack("dong-thap", Path(work) / "stack", inventory=inventory,
                                telemetry_seconds=10.0)
        try:
            stack.start()
            sizing = measure(stack)
        finally:
            stack.stop()
    print(f"{args.sites} simulated bridges, one real provincial stack:")
    print(sizing.report(args.provinces))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
