"""``bridgewatch-collector``: subscribe, keep fleet state, serve /metrics."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import broker, wire
from agent.yamlfile import read_yaml

from .http import CollectorServer
from .ingest import Ingest
from .inventory import load_inventory
from .state import FleetState

log = logging.getLogger("bridgewatch.collector")


@dataclass(frozen=True)
class CollectorConfig:
    inventory: Path
    prefix: str = wire.DEFAULT_PREFIX
    listen_host: str = "127.0.0.1"
    listen_port: int = 9108
    client_id: str = "bridgewatch-collector"
    broker: broker.BrokerSettings = field(default_factory=broker.BrokerSettings)
    shard_index: int = 0
    shard_count: int = 1  # >1: this process owns only its share of the sites (see Scale)


def load_config(path: str | Path) -> CollectorConfig:
    raw: Any = read_yaml(path)
    if not isinstance(raw, dict) or "inventory" not in raw:
        raise ValueError(f"{path}: needs at least 'inventory: <file>'")
    unknown = set(raw) - {"inventory", "prefix", "listen", "client_id", "broker", "shard"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    host, _, port = str(raw.get("listen", "127.0.0.1:9108")).rpartition(":")
    index, _, count = str(raw.get("shard", "0/1")).partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ValueError(f"{path}: shard must be 'index/count' with index < count")
    inventory = Path(raw["inventory"])
    if not inventory.is_absolute():
        inventory = Path(path).parent / inventory
    return CollectorConfig(
        inventory=inventory,
        prefix=raw.get("prefix", wire.DEFAULT_PREFIX),
        listen_host=host or "127.0.0.1",
        listen_port=int(port),
        # Each shard needs its own MQTT session.
        client_id=raw.get("client_id", "bridgewatch-collector" if count == "1"
                          else f"bridgewatch-collector-{index}-of-{count}"),
        broker=broker.BrokerSettings.from_dict(raw.get("broker")),
        shard_index=int(index),
        shard_count=int(count),
    )


def tune_gc() -> None:
    """Fewer collections of a large, long-lived heap.

    The state of thousands of sites is hundreds of thousands of long-lived objects; with
    the default thresholds the cyclic GC walks them all often enough to stall intake for
    tens of milliseconds. Intake allocates no reference cycles, so rarer passes lose nothing.
    """
    gc.collect()
    gc.freeze()  # what exists at start-up (modules, inventory) is never garbage
    gc.set_threshold(50_000, 50, 100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bridgewatch-collector", description=__doc__)
    parser.add_argument("--config", required=True, help="collector YAML file")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        inventory = load_inventory(config.inventory).shard(config.shard_index,
                                                           config.shard_count)
    except (OSError, ValueError) as err:  # InventoryError is a ValueError
        log.error("cannot start: %s", err)
        return 2
    state = FleetState(inventory, prefix=config.prefix)
    server = CollectorServer((config.listen_host, config.listen_port), state)
    ingest = Ingest(state, config.broker, client_id=config.client_id,
                    per_site=config.shard_count > 1)
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    tune_gc()
    ingest.start()
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    log.info("collector up: %d sites, /metrics on http://%s:%d/metrics", len(inventory.sites),
             config.listen_host, config.listen_port)
    stopping.wait()
    log.info("stopping")
    server.shutdown()
    ingest.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
