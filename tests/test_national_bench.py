"""The national bench's harness, small: 200 bridges for a few seconds, every part real.

bench/national_bench.py is only worth its figures if its counts hold, so this runs it
against a real Mosquitto, the real collector process, Debian's real prometheus-mqtt-exporter
and a real Prometheus, and checks the bookkeeping, never the speed (2 noisy cores):

- every simulated bridge connected over its own connection and its online state reached
  the collector (run_scale waits for that, or fails);
- the generator got a PUBACK for every telemetry message it sent, and both subscribers
  took in exactly that many after the drain: no loss, no double count;
- both subscribers' latency figures come from real samples (the exporter's from the marker
  series it stamps with its ingest time, read back through Prometheus);
- the exporter exposes every mapped field of the fast probes (in every message) for every
  bridge, the collector the same families; Prometheus scraped both without a failure.

Also tried: the fleet plan spreads bridges over brokers within the per-broker bound, and the
exporter config names only fields present in real telemetry. Room-probe fields come every
6th message and the exporter replaces a bridge's whole set on each message, so they are
not required for every bridge there (the bench's report says so).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.fleet_sim import plan
from bench.national_bench import LatencyHistogram, run_scale, sample_payloads
from deploy.mqtt_exporter import BINARY, MARKER, telemetry_fields
from tests.conftest import require_binary

pytestmark = pytest.mark.real
BRIDGES = 200
FAST_PROBES = ("cpu", "load", "uptime", "memory", "agent")


def test_plan_spreads_bridges_within_the_per_broker_bound() -> None:
    shares = plan(20_000, [1001, 1002], per_worker=10_000)
    assert [(s.port, s.count) for s in shares] == [(1001, 10_000), (1002, 10_000)]
    shares = plan(25_001, [1001, 1002], per_worker=10_000)
    assert sum(s.count for s in shares) == 25_001
    assert max(s.count for s in shares) <= 10_000
    assert {s.port for s in shares} == {1001, 1002}
    assert [s.first for s in shares] == sorted(s.first for s in shares)


def test_exporter_fields_exist_in_real_telemetry() -> None:
    """Every mapped path resolves to a number in a real payload; labelled rows are refused."""
    payloads = [json.loads(p) for p in sample_payloads()]
    mapping = telemetry_fields(sample_payloads())
    for field in mapping.fields:
        values = [_path(p, field.path) for p in payloads]
        assert any(isinstance(v, (int, float)) for v in values), field
    assert "bridge_network_receive_bytes_total" in mapping.unmapped
    assert "bridge_load1" not in mapping.unmapped
    modes = {dict(f.const_labels)["mode"] for f in mapping.fields
             if f.prom_name == "bridge_cpu_seconds_total"}
    assert {"user", "system", "idle"} <= modes


def test_latency_histogram_quantiles_within_one_percent() -> None:
    histogram = LatencyHistogram()
    for i in range(1, 1001):
        histogram.add(i / 1000)  # 1 ms .. 1 s
    p99 = LatencyHistogram.quantile(histogram.counts, 0.99)
    assert p99 is not None and 0.99 <= p99 <= 0.99 * 1.0201
    assert LatencyHistogram.quantile({}, 0.99) is None


def test_small_fleet_counts_agree(tmp_path: Path) -> None:
    for name in ("mosquitto", "prometheus", BINARY):
        require_binary(name)
    r = run_scale(BRIDGES, seconds=4, interval=2, work=tmp_path, scrape_interval="1s",
                  warmup=3)
    final = r.final
    assert r.peer is not None
    assert final.bridges == BRIDGES and final.closed == 0
    assert final.state_acked == BRIDGES
    assert final.sent > BRIDGES and final.acked == final.sent
    assert r.bw.taken_in_total == final.acked
    assert r.peer.taken_in_total == final.acked
    assert r.window.sent > 0 and r.bw.messages > 0 and r.peer.messages > 0
    assert r.bw.latency_samples > 0 and r.peer.latency_samples > 0
    assert r.bw.up == 1 and r.peer.up == 1
    fast = {f.prom_name for f in telemetry_fields(sample_payloads()).fields
            if f.path.startswith(tuple(f"probes.{p}." for p in FAST_PROBES))}
    assert {"bridge_load1", "bridge_cpu_seconds_total", "bridge_probe_success"} <= fast
    for family in [*fast, MARKER]:
        assert r.peer.coverage[family] == BRIDGES, family
    for family in fast:
        assert r.bw.coverage[family] == BRIDGES, family


def _path(body: dict, path: str) -> object:
    value: object = body
    for part in path.split("."):
        if part.startswith("["):
            assert isinstance(value, list)
            index = int(part[1:-1])
            value = value[index] if index < len(value) else None
        else:
            assert isinstance(value, dict)
            value = value.get(part)
        if value is None:
            return None
    return value
