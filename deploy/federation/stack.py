"""Provincial stacks and a national Prometheus on loopback, from deploy/federation's files.

Each province runs what deploy/demo.py runs (a real Mosquitto, the collector with a
schedule, simulated bridges, a real Prometheus with alerts/rules), but its Prometheus
runs the shipped ``<province>/prometheus.yml``; the national Prometheus runs
``national/prometheus.yml``. Only addresses, intervals and rule paths are substituted,
so what the test proves is the configuration an operator copies.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from collector.inventory import load_inventory
from deploy.demo import DEMO_CHECKPOINTS, PREFIX, console_script, demo_schedule, write_yaml
from deploy.localstack import Mosquitto, Process, Prometheus, free_port, port_open, wait_until

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
NATIONAL_CONFIG = HERE / "national" / "prometheus.yml"
NATIONAL_RULES = ROOT / "alerts" / "national"
INVENTORIES = {"dong-thap": ROOT / "deploy" / "demo-inventory.yaml",
               "an-giang": HERE / "an-giang" / "inventory.yaml"}


def provincial_config(province: str) -> Path:
    return HERE / province / "prometheus.yml"


def render_prometheus(source: Path, addresses: Mapping[str, str], interval: str | None = None,
                      rule_files: Sequence[Path] | None = None) -> dict[str, Any]:
    """The shipped configuration with every target address mapped through ``addresses``
    (an address missing from it is an error, so nothing points at a real host), rule
    paths made absolute (or replaced) and, when given, every interval set to ``interval``."""
    config: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8"))
    if rule_files is None:
        config["rule_files"] = [str((source.parent / f).resolve())
                                for f in config.get("rule_files", [])]
    else:
        config["rule_files"] = [str(Path(f).resolve()) for f in rule_files]
    if interval is not None:
        config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    jobs = config.get("scrape_configs", [])
    managers = config.get("alerting", {}).get("alertmanagers", [])
    for section in (*jobs, *managers):
        if interval is not None and "scrape_interval" in section:
            section.update(scrape_interval=interval, scrape_timeout=interval)
        for static in section.get("static_configs", []):
            unknown = [t for t in static["targets"] if t not in addresses]
            if unknown:
                raise KeyError(f"{source}: no local address for {unknown}")
            static["targets"] = [addresses[t] for t in static["targets"]]
    return config


class ConfiguredPrometheus(Prometheus):
    """localstack's Prometheus, run on a given configuration instead of the one it writes."""

    def __init__(self, workdir: Path, config: Mapping[str, Any], port: int | None = None):
        super().__init__(workdir, targets=(), port=port)
        (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is valid YAML


def targets(source: Path) -> list[str]:
    """Every address a shipped configuration names: scrape targets and Alertmanagers."""
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    sections = [*config.get("scrape_configs", []),
                *config.get("alerting", {}).get("alertmanagers", [])]
    return [t for s in sections for static in s.get("static_configs", [])
            for t in static["targets"]]


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


class ProvincialStack:
    """One province on loopback: broker, collector, simulated bridges, Prometheus."""

    def __init__(self, province: str, workdir: Path, interval: str = "1s",
                 inventory: Path | None = None, telemetry_seconds: float = 1.0) -> None:
        self.province = province
        self.workdir = workdir
        self.interval = interval
        self.telemetry_seconds = telemetry_seconds
        self.inventory = inventory or INVENTORIES[province]
        self.sites = list(load_inventory(self.inventory).sites.values())
        self.collector_port = free_port()
        self.parts: list[Process] = []
        self.broker: Mosquitto | None = None
        self.collector: Process | None = None
        self.simulator: Process | None = None
        self.prometheus: ConfiguredPrometheus | None = None

    @property
    def collector_url(self) -> str:
        return f"http://127.0.0.1:{self.collector_port}"

    def start(self) -> None:
        work = self.workdir
        work.mkdir(parents=True, exist_ok=True)
        self.broker = self._start(Mosquitto(work / "mosquitto"))
        collector_yaml = write_yaml(work / "collector.yaml", {
            "prefix": PREFIX, "inventory": str(self.inventory),
            "listen": f"127.0.0.1:{self.collector_port}",
            "broker": {"host": "127.0.0.1", "port": self.broker.port,
                       "reconnect_max_seconds": 1},
            "readiness": {"database": str(work / "readiness.sqlite"),
                          "schedule": str(write_yaml(work / "schedule.yaml",
                                                     demo_schedule(self.sites))),
                          "tick_seconds": 1, "checkpoints": DEMO_CHECKPOINTS}})
        self.collector = self._start(Process(
            [console_script("bridgewatch-collector"), "--config", str(collector_yaml)],
            work / "collector.log"))
        wait_until(lambda: port_open(self.collector_port) or not self.collector.running, 30,
                   f"{self.province}: the collector to serve /metrics")
        self.simulator = self._start(Process([
            console_script("bridgewatch-agent"), "simulate", "--inventory", str(self.inventory),
            "--broker-port", str(self.broker.port), "--prefix", PREFIX,
            "--interval", str(self.telemetry_seconds), "--seed", "1"], work / "simulate.log"))
        wait_until(self.all_up, 60, f"{self.province}: every simulated bridge up", interval=0.5)
        source = provincial_config(self.province)
        collector, alertmanager = targets(source)
        config = render_prometheus(source, {
            collector: f"127.0.0.1:{self.collector_port}",
            alertmanager: f"127.0.0.1:{free_port()}"},  # nobody listens: no pages here
            interval=self.interval)
        self.prometheus = self._start(ConfiguredPrometheus(work / "prometheus", config))

    def all_up(self) -> bool:
        """Every bridge of the inventory reports bridge_up 1 on the collector's /metrics."""
        ups = [line for line in fetch(self.collector_url + "/metrics").splitlines()
               if line.startswith("bridge_up{")]
        return len(ups) == len(self.sites) and all(float(u.rsplit(" ", 1)[1]) == 1 for u in ups)

    def _start(self, part: Any) -> Any:
        self.parts.append(part)
        part.start()
        return part

    def stop(self) -> None:
        for part in reversed(self.parts):
            part.stop()


def start_national(workdir: Path, stacks: Sequence[ProvincialStack], interval: str = "1s",
                   rule_files: Sequence[Path] | None = None) -> ConfiguredPrometheus:
    """The national Prometheus of national/prometheus.yml, federating ``stacks``."""
    addresses = {f"prometheus.{s.province}.example:9090": s.prometheus.url.removeprefix(
        "http://") for s in stacks if s.prometheus is not None}
    addresses["alertmanager.noc.example:9093"] = f"127.0.0.1:{free_port()}"
    config = render_prometheus(NATIONAL_CONFIG, addresses, interval, rule_files)
    national = ConfiguredPrometheus(workdir, config)
    national.start()
    return national
