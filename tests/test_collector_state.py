"""FleetState: intake, duplicates, staleness, Last Will and the cached exposition."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent import wire
from agent.wire import Kind, Reason
from collector.http import metrics_parts
from collector.inventory import parse_inventory
from collector.state import FleetState
from tests.conftest import require_binary

PREFIX = "bridgewatch"
INVENTORY = parse_inventory({
    "provinces": {"dong-thap": {"name": "Đồng Tháp"}, "gia-lai": {"name": "Gia Lai"}},
    "sites": [
        {"id": "dt-trung-tam", "province": "dong-thap", "level": "central",
         "name": "Điểm cầu trung tâm tỉnh Đồng Tháp", "lat": 10.46, "lon": 105.63},
        {"id": "dt-xa-my-an", "province": "dong-thap", "name": "UBND xã Mỹ An"},
        {"id": "gl-pleiku", "province": "gia-lai", "name": "Phường Pleiku"},
    ],
})


class Clock:
    def __init__(self, now: float = 1_795_300_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fleet(clock: Clock) -> FleetState:
    return FleetState(INVENTORY, PREFIX, clock=clock, render_delay=0)


def telemetry(site: str, seq: int, ts: float, *, epoch: int = 1, floor: int | None = None,
              province: str = "dong-thap", memory: float = 8e9,
              interval: float = 10.0) -> bytes:
    probes = {
        "memory": wire.ProbeReport(True, 0.001, interval, None, {
            "memory_total_bytes": [((), 16e9)], "memory_available_bytes": [((), memory)]}),
        "network": wire.ProbeReport(True, 0.002, interval, None, {
            "network_up": [(("Ethernet",), 1), (('Wi-Fi "2"',), 0)]}),
    }
    return wire.encode(wire.Telemetry(province, site, epoch, seq, floor or seq, ts, probes))


def state(site: str, conn: int, online: bool, ts: float) -> bytes:
    return wire.encode(wire.State("dong-thap", site, 0, conn, ts,
                                  "online" if online else "offline", "0.1.0", "pc", "Linux"))


def topic(site: str, kind: Kind, province: str = "dong-thap") -> str:
    return f"{PREFIX}/v1/{province}/{site}/{kind.value}"


def samples(fleet: FleetState) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = fleet.render().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(fleet: FleetState, metric_name: str, site: str, **labels: str) -> float | None:
    for (metric, label_items), v in samples(fleet).items():
        found = dict(label_items)
        if metric == metric_name and found.get("site") == site and all(
                found.get(k) == val for k, val in labels.items()):
            return v
    return None


def rejected(fleet: FleetState, reason: Reason) -> float:
    got = fleet.metrics.registry.get_sample_value("bridge_collector_messages_rejected_total",
                                                  {"reason": reason.value})
    assert got is not None
    return got


def test_inventory_sites_are_exposed_down_before_they_report(fleet: FleetState) -> None:
    assert value(fleet, "bridge_up", "dt-xa-my-an") == 0
    assert value(fleet, "bridge_site_info", "dt-trung-tam", name="Điểm cầu trung tâm tỉnh "
                 "Đồng Tháp") == 1
    assert value(fleet, "bridge_site_required_bandwidth_bits_per_second", "dt-trung-tam") == 30e6
    assert value(fleet, "bridge_site_required_bandwidth_bits_per_second", "dt-xa-my-an") == 5e6
    assert value(fleet, "bridge_site_latitude_degrees", "dt-trung-tam") == 10.46


def test_telemetry_becomes_labelled_series(fleet: FleetState, clock: Clock) -> None:
    assert fleet.apply(topic("dt-xa-my-an", Kind.TELEMETRY),
                       telemetry("dt-xa-my-an", 1, clock.now))
    assert value(fleet, "bridge_up", "dt-xa-my-an") == 1
    assert value(fleet, "bridge_memory_available_bytes", "dt-xa-my-an") == 8e9
    assert value(fleet, "bridge_network_up", "dt-xa-my-an", interface='Wi-Fi "2"') == 0
    assert value(fleet, "bridge_probe_success", "dt-xa-my-an", probe="memory") == 1
    assert value(fleet, "bridge_messages_received_total", "dt-xa-my-an") == 1
    key = ("bridge_memory_total_bytes",
           (("level", "member"), ("province", "dong-thap"), ("site", "dt-xa-my-an")))
    assert samples(fleet)[key] == 16e9


def test_exposition_passes_promtool_check_metrics(fleet: FleetState, clock: Clock) -> None:
    promtool = require_binary("promtool")
    for seq, site in enumerate(("dt-xa-my-an", "dt-trung-tam"), start=1):
        fleet.apply(topic(site, Kind.STATE), state(site, 1, True, clock.now))
        fleet.apply(topic(site, Kind.TELEMETRY), telemetry(site, seq, clock.now))
    fleet.apply(topic("dt-xa-my-an", Kind.TELEMETRY), b"not json")  # a rejection counter too
    body = b"".join(metrics_parts(fleet))  # exactly what a scrape of /metrics returns
    assert b"bridge_collector_messages_rejected_total" in body
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    findings = set((result.stdout + result.stderr).decode().splitlines())
    # Link rates are in bits per second by design (the telecom unit every site's contract
    # states); promtool's style lint prefers bytes. That is the only finding we accept.
    accepted = {f'{name} use base unit "bytes" instead of "bits"' for name in (
        "bridge_site_required_bandwidth_bits_per_second",
        "bridge_network_speed_bits_per_second")}
    assert findings <= accepted, findings - accepted


def test_duplicates_are_dropped_and_counted(fleet: FleetState, clock: Clock) -> None:
    payload = telemetry("dt-xa-my-an", 7, clock.now)
    assert fleet.apply(topic("dt-xa-my-an", Kind.TELEMETRY), payload)
    assert not fleet.apply(topic("dt-xa-my-an", Kind.TELEMETRY), payload)
    assert value(fleet, "bridge_messages_received_total", "dt-xa-my-an") == 1
    assert value(fleet, "bridge_messages_duplicate_total", "dt-xa-my-an") == 1
    assert fleet.metrics.registry.get_sample_value(
        "bridge_collector_messages_duplicate_total") == 1


def test_a_gap_below_the_floor_is_counted_lost_once(fleet: FleetState, clock: Clock) -> None:
    t = topic("dt-xa-my-an", Kind.TELEMETRY)
    fleet.apply(t, telemetry("dt-xa-my-an", 1, clock.now))
    fleet.apply(t, telemetry("dt-xa-my-an", 4, clock.now, floor=2))  # 2, 3 still coming
    assert value(fleet, "bridge_messages_lost_total", "dt-xa-my-an") == 0
    fleet.apply(t, telemetry("dt-xa-my-an", 2, clock.now))
    fleet.apply(t, telemetry("dt-xa-my-an", 6, clock.now, floor=5))  # 3 was dropped by spool
    assert value(fleet, "bridge_messages_lost_total", "dt-xa-my-an") == 1
    assert value(fleet, "bridge_messages_received_total", "dt-xa-my-an") == 4


def test_older_sample_does_not_overwrite_newer_view(fleet: FleetState, clock: Clock) -> None:
    t = topic("dt-xa-my-an", Kind.TELEMETRY)
    fleet.apply(t, telemetry("dt-xa-my-an", 2, clock.now, memory=2e9, floor=1))
    fleet.apply(t, telemetry("dt-xa-my-an", 1, clock.now - 30, memory=9e9))
    assert value(fleet, "bridge_memory_available_bytes", "dt-xa-my-an") == 2e9
    assert value(fleet, "bridge_messages_received_total", "dt-xa-my-an") == 2


def test_silent_site_goes_stale_instead_of_freezing(fleet: FleetState, clock: Clock) -> None:
    fleet.apply(topic("dt-xa-my-an", Kind.TELEMETRY), telemetry("dt-xa-my-an", 1, clock.now))
    clock.now += 29
    assert value(fleet, "bridge_up", "dt-xa-my-an") == 1
    clock.now += 2  # past 3 intervals of 10 s
    assert value(fleet, "bridge_up", "dt-xa-my-an") == 0
    assert value(fleet, "bridge_memory_available_bytes", "dt-xa-my-an") is None
    assert value(fleet, "bridge_last_seen_timestamp_seconds", "dt-xa-my-an") == clock.now - 31
    fleet.apply(topic("dt-xa-my-an", Kind.TELEMETRY), telemetry("dt-xa-my-an", 2, clock.now))
    assert value(fleet, "bridge_up", "dt-xa-my-an") == 1


def test_last_will_marks_down_at_once_and_a_new_connection_wins(
        fleet: FleetState, clock: Clock) -> None:
    site = "dt-xa-my-an"
    fleet.apply(topic(site, Kind.STATE), state(site, 5, True, clock.now))
    fleet.apply(topic(site, Kind.TELEMETRY), telemetry(site, 1, clock.now))
    fleet.apply(topic(site, Kind.STATE), state(site, 5, False, clock.now - 100))  # the Will
    assert value(fleet, "bridge_up", site) == 0
    assert value(fleet, "bridge_agent_connected", site) == 0
    assert value(fleet, "bridge_memory_available_bytes", site) is None
    fleet.apply(topic(site, Kind.STATE), state(site, 6, True, clock.now))
    # The broker may deliver connection 5's online late (retained redelivery): ignored.
    fleet.apply(topic(site, Kind.STATE), state(site, 5, True, clock.now))
    fleet.apply(topic(site, Kind.STATE), state(site, 5, False, clock.now))
    assert value(fleet, "bridge_agent_connected", site) == 1
    assert value(fleet, "bridge_up", site) == 1


def test_a_probe_that_stops_reporting_loses_its_series(fleet: FleetState, clock: Clock) -> None:
    site, t = "dt-xa-my-an", topic("dt-xa-my-an", Kind.TELEMETRY)
    fleet.apply(t, telemetry(site, 1, clock.now, interval=2))
    only_memory = wire.encode(wire.Telemetry("dong-thap", site, 1, 2, 2, clock.now + 5, {
        "memory": wire.ProbeReport(True, 0.001, 2, None, {"memory_total_bytes": [((), 1.0)]})}))
    clock.now += 5
    fleet.apply(t, only_memory)
    clock.now += 1.5
    assert value(fleet, "bridge_up", site) == 1
    assert value(fleet, "bridge_network_up", site, interface="Ethernet") is None
    assert value(fleet, "bridge_probe_success", site, probe="network") is None
    assert value(fleet, "bridge_memory_total_bytes", site) == 1.0
    # A metric the probe no longer sends is gone too.
    assert value(fleet, "bridge_memory_available_bytes", site) is None


@pytest.mark.parametrize("what,topic_name,payload,reason", [
    ("a site not in the inventory", topic("dt-ghost", Kind.TELEMETRY),
     telemetry("dt-ghost", 1, 1_795_300_000.0), Reason.UNKNOWN_SITE),
    ("a site publishing on another site's topic", topic("dt-trung-tam", Kind.TELEMETRY),
     telemetry("dt-xa-my-an", 1, 1_795_300_000.0), Reason.SPOOFED),
    ("a site under another province", topic("gl-pleiku", Kind.TELEMETRY, "dong-thap"),
     telemetry("gl-pleiku", 1, 1_795_300_000.0), Reason.SPOOFED),
    ("a payload naming another province", topic("gl-pleiku", Kind.TELEMETRY, "gia-lai"),
     telemetry("gl-pleiku", 1, 1_795_300_000.0, province="dong-thap"), Reason.SPOOFED),
    ("a site ID with quotes", f'{PREFIX}/v1/dong-thap/x",evil="1/telemetry',
     telemetry("dt-xa-my-an", 1, 1_795_300_000.0), Reason.BAD_SLUG),
    ("malformed JSON", topic("dt-xa-my-an", Kind.TELEMETRY), b'{"v":1,', Reason.MALFORMED_JSON),
    ("an oversized payload", topic("dt-xa-my-an", Kind.TELEMETRY), b" " * (65 * 1024),
     Reason.OVERSIZED),
    ("an unknown schema version", topic("dt-xa-my-an", Kind.STATE),
     state("dt-xa-my-an", 1, True, 1_795_300_000.0).replace(b'"v":1', b'"v":9'),
     Reason.SCHEMA_VERSION),
])
def test_bad_messages_are_counted_logged_and_never_exposed(
        fleet: FleetState, what: str, topic_name: str, payload: bytes, reason: Reason,
        caplog: pytest.LogCaptureFixture) -> None:
    before = fleet.render()
    assert not fleet.apply(topic_name, payload)
    assert not fleet.apply(topic_name, payload)
    assert rejected(fleet, reason) == 2
    assert fleet.render() == before, f"{what} changed the exposition"
    assert b"evil" not in fleet.render()
    warnings = [r for r in caplog.records if reason.value in r.getMessage()]
    assert len(warnings) == 1, "each (reason, topic) is logged once"


def test_a_reinstalled_agent_with_a_smaller_epoch_is_accepted(
        fleet: FleetState, clock: Clock) -> None:
    t, site = topic("dt-xa-my-an", Kind.TELEMETRY), "dt-xa-my-an"
    assert fleet.apply(t, telemetry(site, 50, clock.now, epoch=2, floor=1))
    assert fleet.apply(t, telemetry(site, 1, clock.now, epoch=1))  # clock was behind
    assert not fleet.apply(t, telemetry(site, 50, clock.now, epoch=2, floor=1))
    assert value(fleet, "bridge_messages_received_total", site) == 2
    assert value(fleet, "bridge_messages_duplicate_total", site) == 1


def test_rendering_waits_render_delay_and_coalesces_a_burst(clock: Clock) -> None:
    fleet = FleetState(INVENTORY, PREFIX, clock=clock, render_delay=1.0)
    t, site = topic("dt-xa-my-an", Kind.TELEMETRY), "dt-xa-my-an"
    for seq in range(1, 51):  # a spool draining: 50 messages within the second
        fleet.apply(t, telemetry(site, seq, clock.now, memory=seq * 1e6))
    assert fleet.flush() == 0, "nothing is due before render_delay"
    assert value(fleet, "bridge_memory_available_bytes", site) is None
    assert value(fleet, "bridge_up", site) == 1, "up/down is rendered at once"
    clock.now += 1.0
    assert fleet.flush() == 1, "one render for the whole burst"
    assert value(fleet, "bridge_memory_available_bytes", site) == 50e6
    assert value(fleet, "bridge_messages_received_total", site) == 50
