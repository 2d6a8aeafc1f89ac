"""Debian's ``prometheus-mqtt-exporter`` (mqtt2prometheus 0.1.7) as a real process, configured
for BridgeWatch telemetry: the peer the national bench (bench/national_bench.py) measures the
collector against, on the same broker, in the same run.

Its config maps one JSON path (gojsonq; ``[i]`` indexes an array) to one series, labelled
with the device id cut from the topic (``sensor``), the topic, and constant labels. What
that can express of wire-v1 telemetry is decided by :func:`telemetry_fields`:

- every unlabelled metric, ``probes.<probe>.metrics.<name>.[0].[0]``, as ``bridge_<name>``;
- each probe's ``ok`` and ``duration_seconds``, as ``bridge_probe_success`` and
  ``bridge_probe_duration_seconds`` with a constant ``probe`` label;
- rows labelled only by an enumeration the agent fixes itself, by position with constant
  labels: ``cpu_seconds_total`` by ``mode`` (psutil's order);
- the message's ``ts`` as ``bridge_publish_timestamp_seconds``, the bench's marker: the
  exporter stamps each sample with its ingest time, so stamp minus value is the intake lag.

Not expressible (:attr:`Mapping.unmapped` names each family with the reason): rows labelled
by site data (interface, mountpoint, link target, UPS, NTP server, device and software
names): a label value cannot come from the payload, and a position does not say which row
it is. Neither can the probe's ``error`` text, nor the state topic and Last Will: the
exporter keeps one metric set per device id, and a state message on the same id would
replace the telemetry's (its README's answer is a second instance). A silent site's series
go only by ``cache.timeout``, set to the collector's 3 intervals.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import wire
from collector.state import PROBE_DURATION, PROBE_SUCCESS, STALE_INTERVALS

from .localstack import Process, find_binary, free_port, wait_until

BINARY = "prometheus-mqtt-exporter"
MARKER = "bridge_publish_timestamp_seconds"
# Labels whose values the agent itself enumerates in a fixed order: addressable by position.
ENUMERATED_LABELS = frozenset({"mode"})
# 0.1.7 calls its message counter ``received_messages``; later releases add the prefix.
_RECEIVED = re.compile(rb'^(?:mqtt2prometheus_)?received_messages(?:_total)?\{([^}]*)\} (\S+)',
                       re.M)


@dataclass(frozen=True)
class Field:
    """One entry of the exporter's ``metrics`` list."""

    prom_name: str
    path: str
    help: str
    type: str = "gauge"
    const_labels: tuple[tuple[str, str], ...] = ()

    def config(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"prom_name": self.prom_name, "mqtt_name": self.path,
                                 "help": self.help, "type": self.type}
        if self.const_labels:
            entry["const_labels"] = dict(self.const_labels)
        return entry


@dataclass(frozen=True)
class Mapping:
    fields: tuple[Field, ...]
    unmapped: dict[str, str]  # exposed family -> why the exporter cannot carry it


def telemetry_fields(samples: Iterable[bytes]) -> Mapping:
    """What the exporter can be told to take from these telemetry payloads (see above)."""
    fields: dict[str, Field] = {"ts": Field(MARKER, "ts", "Sample time of the last telemetry "
                                            "(the agent's ts): the bench's intake marker.")}
    unmapped: dict[str, str] = {}
    for sample in samples:
        for probe, report in json.loads(sample)["probes"].items():
            label = (("probe", probe),)
            for key, family in (("ok", PROBE_SUCCESS), ("duration_seconds", PROBE_DURATION)):
                path = f"probes.{probe}.{key}"
                fields[path] = Field(family.name, path, family.help, const_labels=label)
            unmapped["bridge_probe_error"] = "text, not a number"
            for metric, rows in report["metrics"].items():
                spec = wire.CATALOGUE[metric]
                base = f"probes.{probe}.metrics.{metric}"
                site_data = [name for name in spec.labels if name not in ENUMERATED_LABELS]
                if site_data:
                    unmapped[spec.exposed_name] = f"labelled by site data ({', '.join(site_data)})"
                    continue
                for i, row in enumerate(rows[:1] if not spec.labels else rows):
                    path = f"{base}.[{i}].[{len(spec.labels)}]"
                    fields[path] = Field(spec.exposed_name, path, spec.help, spec.type,
                                         tuple(zip(spec.labels, map(str, row), strict=False)))
    return Mapping(tuple(fields.values()), unmapped)


def exporter_config(broker_port: int, mapping: Mapping, interval_seconds: float,
                    prefix: str = wire.DEFAULT_PREFIX,
                    client_id: str = "mqtt2prometheus") -> dict[str, Any]:
    """The exporter's YAML (as a dict): telemetry topics at QoS 1, the site id as ``sensor``."""
    return {
        "mqtt": {"server": f"tcp://127.0.0.1:{broker_port}", "client_id": client_id,
                 "topic_path": f"{prefix}/v{wire.WIRE_VERSION}/+/+/{wire.Kind.TELEMETRY.value}",
                 "device_id_regex": f"{prefix}/v{wire.WIRE_VERSION}/[^/]+/(?P<deviceid>[^/]+)/"
                                    f"{wire.Kind.TELEMETRY.value}",
                 "qos": 1},
        "cache": {"timeout": f"{round(STALE_INTERVALS * interval_seconds)}s"},
        "json_parsing": {"separator": "."},
        "metrics": [field.config() for field in mapping.fields],
    }


class MqttExporter(Process):
    """The real exporter on a loopback port, with its config written into ``workdir``."""

    def __init__(self, workdir: Path, config: dict[str, Any], port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "mqtt-exporter.yaml"
        path.write_text(json.dumps(config, indent=1))  # JSON is valid YAML
        super().__init__([find_binary(BINARY), "-config", str(path), "-listen-address",
                          "127.0.0.1", "-listen-port", str(self.port), "-log-level", "warn"],
                         workdir / "mqtt-exporter.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self) -> None:
        super().start()
        wait_until(lambda: not self.running or b"mqtt2prometheus_connected 1" in self.scrape(),
                   30, "the mqtt exporter to connect to the broker")
        if not self.running:
            raise RuntimeError(f"{BINARY} exited:\n{self.log()}")

    def scrape(self, timeout: float = 120) -> bytes:
        with urllib.request.urlopen(self.url, timeout=timeout) as resp:
            return resp.read()


def received(exposition: bytes) -> dict[str, float]:
    """The exporter's message counter summed over topics, by status (``success``...)."""
    totals: dict[str, float] = {}
    for labels, value in _RECEIVED.findall(exposition):
        status = re.search(rb'status="([^"]*)"', labels)
        key = status.group(1).decode() if status else ""
        totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def series(exposition: bytes, name: str) -> dict[str, tuple[float, float | None]]:
    """``sensor`` -> (value, timestamp in seconds or None) of one family's samples."""
    found: dict[str, tuple[float, float | None]] = {}
    pattern = re.compile(rb"^" + re.escape(name.encode()) + rb"\{([^}]*)\} (\S+)(?: (\d+))?$",
                         re.M)
    for labels, value, stamp in pattern.findall(exposition):
        sensor = re.search(rb'sensor="([^"]*)"', labels)
        if sensor:
            found[sensor.group(1).decode()] = (float(value),
                                               int(stamp) / 1000 if stamp else None)
    return found
