"""``bridgewatch-collector``: subscribe, keep fleet state, serve /metrics and the API.

    bridgewatch-collector --config collector.yaml           # the service
    bridgewatch-collector schedule check|import|list ...    # the schedule (see --help)
    bridgewatch-collector report --config collector.yaml --session ID [--out DIR]
    bridgewatch-collector dashboards push --inventory inventory.yaml --url URL  # GRAFANA_TOKEN
    bridgewatch-collector pki init-ca|server-cert|sites ...  # broker CA, certs, passwords
"""

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

from .api import Api
from .apitokens import ApiTokens
from .commands import CommandSender
from .http import CollectorServer
from .ingest import Ingest
from .inventory import Inventory, load_inventory
from .readiness.config import ReadinessConfig, parse_readiness
from .readiness.metrics import ReadinessCollector
from .readiness.service import ReadinessService
from .readiness.store import Store
from .report import write_report
from .runbook import DEFAULT_PATH as RUNBOOK_PATH
from .runbook import Runbook
from .schedule import import_file
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
    readiness: ReadinessConfig | None = None  # sessions, tests, verdicts; off without it
    runbook_file: Path = RUNBOOK_PATH  # served at /runbook, where alerts' runbook_url point


def load_config(path: str | Path) -> CollectorConfig:
    raw: Any = read_yaml(path)
    if not isinstance(raw, dict) or "inventory" not in raw:
        raise ValueError(f"{path}: needs at least 'inventory: <file>'")
    unknown = set(raw) - {"inventory", "prefix", "listen", "client_id", "broker", "shard",
                          "readiness", "runbook_file"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    host, _, port = str(raw.get("listen", "127.0.0.1:9108")).rpartition(":")
    index, _, count = str(raw.get("shard", "0/1")).partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ValueError(f"{path}: shard must be 'index/count' with index < count")
    inventory = Path(raw["inventory"])
    if not inventory.is_absolute():
        inventory = Path(path).parent / inventory
    runbook = Path(raw.get("runbook_file", RUNBOOK_PATH))
    if not runbook.is_absolute():
        runbook = Path(path).parent / runbook
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
        readiness=None if raw.get("readiness") is None else parse_readiness(
            raw["readiness"], Path(path).resolve().parent),
        runbook_file=runbook,
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


def start_readiness(config: CollectorConfig, known: Inventory, inventory: Inventory,
                    state: FleetState) -> tuple[ReadinessService, Api] | None:
    """Open the store, import the configured schedule, hook results and metrics in.

    ``known`` is every bridge of the province (what a schedule may name); ``inventory``
    the ones this collector, or shard, owns and judges.
    """
    readiness = config.readiness
    if readiness is None:
        return None
    store = Store(readiness.database)
    if readiness.schedule is not None:
        # Sessions already over are skipped, not refused: the file outlives them.
        result = import_file(store, readiness.schedule, known, past="skip")
        for issue in result.issues:
            (log.error if issue.severity == "error" else log.warning)("%s", issue.format())
        if not result.ok:
            raise ValueError(f"{readiness.schedule}: not imported (errors above)")
    sender = CommandSender(config.broker, f"{config.client_id}-cmd", config.prefix)
    service = ReadinessService(store, readiness, inventory, state, sender, known=known)
    state.on_test = service.on_test
    state.metrics.registry.register(ReadinessCollector(service.snapshot))
    return service, Api(service, ApiTokens.load(readiness.api_tokens_file))


def report_main(argv: list[str]) -> int:
    """Write one session's biên bản (HTML and CSV) from the collector's store."""
    parser = argparse.ArgumentParser(prog="bridgewatch-collector report")
    parser.add_argument("--config", required=True)
    parser.add_argument("--session", required=True)
    parser.add_argument("--out", default=".", help="directory for the HTML and CSV files")
    parser.add_argument("--lang", choices=("vi", "en"), default="vi")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if config.readiness is None:
        print("collector.yaml has no readiness section", file=sys.stderr)
        return 2
    inventory = load_inventory(config.inventory)
    service = ReadinessService(Store(config.readiness.database), config.readiness, inventory,
                               FleetState(inventory, prefix=config.prefix), None)
    data = service.report(args.session)
    if data is None:
        print(f"không có phiên / no session {args.session}", file=sys.stderr)
        return 1
    for path in write_report(data, Path(args.out), args.lang):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["schedule"]:
        from .schedule.cli import main as schedule_main

        return schedule_main(argv[1:])
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    if argv[:1] == ["dashboards"]:
        from .grafana_push import main as dashboards_main

        return dashboards_main(argv[1:])
    if argv[:1] == ["pki"]:
        from .pki import main as pki_main

        return pki_main(argv[1:])
    parser = argparse.ArgumentParser(prog="bridgewatch-collector", description=__doc__)
    parser.add_argument("--config", required=True, help="collector YAML file")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        known = load_inventory(config.inventory)
        inventory = known.shard(config.shard_index, config.shard_count)
    except (OSError, ValueError) as err:  # InventoryError is a ValueError
        log.error("cannot start: %s", err)
        return 2
    state = FleetState(inventory, prefix=config.prefix)
    try:
        readiness = start_readiness(config, known, inventory, state)
    except (OSError, ValueError) as err:
        log.error("cannot start: %s", err)
        return 2
    server = CollectorServer((config.listen_host, config.listen_port), state,
                             readiness[1] if readiness else None, Runbook(config.runbook_file))
    ingest = Ingest(state, config.broker, client_id=config.client_id,
                    per_site=config.shard_count > 1)
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    tune_gc()
    ingest.start()
    if readiness is not None:
        readiness[0].sender.start()  # type: ignore[union-attr]
        # Verdicts drawn before /metrics first answers: a scrape right after a restart must
        # not see an empty readiness snapshot (the readiness alerts would glitch).
        try:
            readiness[0].tick()
        except Exception:
            log.exception("first readiness tick failed")
        threading.Thread(target=readiness[0].run, name="readiness", daemon=True).start()
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    log.info("collector up: %d sites, /metrics on http://%s:%d/metrics", len(inventory.sites),
             config.listen_host, config.listen_port)
    stopping.wait()
    log.info("stopping")
    server.shutdown()
    ingest.stop()
    if readiness is not None:
        readiness[0].stop()
        readiness[0].sender.stop()  # type: ignore[union-attr]
        readiness[0].store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
