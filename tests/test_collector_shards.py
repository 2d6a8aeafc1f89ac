"""Two collector shards on one real broker: each takes in exactly its own sites."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from agent import wire
from agent.broker import BrokerSettings, make_client
from collector.ingest import Ingest
from collector.inventory import parse_inventory
from collector.main import load_config
from collector.state import FleetState
from deploy.localstack import Mosquitto, wait_until

pytestmark = pytest.mark.real
INVENTORY = parse_inventory({"provinces": {"dong-thap": {}}, "sites": [
    {"id": f"dt-xa-{i}", "province": "dong-thap"} for i in range(20)]})


def telemetry(site: str, seq: int) -> tuple[str, bytes]:
    message = wire.Telemetry("dong-thap", site, 1, seq, seq, 1_795_300_000.0, {
        "memory": wire.ProbeReport(True, 0.001, 10, None, {"memory_total_bytes": [((), 1.0)]})})
    return (wire.topic(wire.DEFAULT_PREFIX, "dong-thap", site, wire.Kind.TELEMETRY),
            wire.encode(message))


def test_each_shard_takes_in_only_its_sites(broker: Mosquitto) -> None:
    settings = BrokerSettings(port=broker.port, reconnect_min_seconds=0.2)
    fleets = [FleetState(INVENTORY.shard(i, 2), render_delay=0) for i in range(2)]
    ingests = [Ingest(f, settings, client_id=f"shard-{i}", per_site=True)
               for i, f in enumerate(fleets)]
    for ingest in ingests:
        ingest.start()
    publisher = make_client(settings, "publisher")
    publisher.connect("127.0.0.1", broker.port)
    publisher.loop_start()
    try:
        for ingest in ingests:
            wait_until(lambda ingest=ingest: ingest.intake.connected, 10, "shard connected")
        infos = [publisher.publish(*telemetry(site, 1), qos=1) for site in INVENTORY.sites]
        for info in infos:
            info.wait_for_publish(10)
            assert info.rc == mqtt.MQTT_ERR_SUCCESS
        for fleet in fleets:
            wait_until(lambda fleet=fleet: sum(s.tracker.received for s in fleet.sites.values())
                       == len(fleet.sites), 10, "every site of the shard")
        assert {sid for f in fleets for sid in f.sites} == set(INVENTORY.sites)
        for fleet in fleets:
            assert all(s.tracker.received == 1 for s in fleet.sites.values())
            rejected = fleet.metrics.registry.get_sample_value(
                "bridge_collector_messages_rejected_total", {"reason": "unknown_site"})
            assert rejected == 0, "a shard never even receives the other shard's sites"
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        for ingest in ingests:
            ingest.stop()


@pytest.mark.parametrize("shard,ok", [("1/2", True), ("0/1", True), ("2/2", False),
                                      ("x/2", False), ("1", False)])
def test_shard_setting(tmp_path: Path, shard: str, ok: bool) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump({"inventory": "inventory.yaml", "shard": shard}))
    if not ok:
        with pytest.raises(ValueError, match="shard"):
            load_config(path)
        return
    config = load_config(path)
    index, count = map(int, shard.split("/"))
    assert (config.shard_index, config.shard_count) == (index, count)
    assert (config.client_id == "bridgewatch-collector") == (count == 1)
