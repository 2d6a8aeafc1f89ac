"""The collector's own health, in its own prometheus-client registry."""

from __future__ import annotations

import logging
from collections.abc import Hashable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agent.wire import Kind, Reason

LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)


class SelfMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connected = Gauge("bridge_collector_mqtt_connected",
                               "1 while the collector is connected to the broker.", registry=r)
        self.received = Counter("bridge_collector_messages_received",
                                "Messages received from the broker, by kind.", ["kind"],
                                registry=r)
        self.rejected = Counter("bridge_collector_messages_rejected",
                                "Messages refused, by reason.", ["reason"], registry=r)
        self.duplicates = Counter("bridge_collector_messages_duplicate",
                                  "Messages dropped as already seen (site, epoch, seq).",
                                  registry=r)
        self.lag = Histogram("bridge_collector_ingest_lag_seconds",
                             "Collector receive time minus the agent's sample time.",
                             buckets=LAG_BUCKETS, registry=r)
        self.render_seconds = Gauge("bridge_collector_render_seconds",
                                    "Time the last /metrics took to assemble.", registry=r)
        # Pre-create every label so a zero is visible before the first event.
        for kind in (Kind.TELEMETRY, Kind.STATE, Kind.TEST):
            self.received.labels(kind.value)
        for reason in Reason:
            self.rejected.labels(reason.value)


class LogOnce:
    """Log the first occurrence of each key, then stay quiet: a bad publisher can't flood."""

    def __init__(self, logger: logging.Logger, max_keys: int = 10_000) -> None:
        self._logger = logger
        self._seen: set[Hashable] = set()
        self._max_keys = max_keys

    def warning(self, key: Hashable, message: str, *args: object) -> None:
        if key in self._seen or len(self._seen) >= self._max_keys:
            return
        self._seen.add(key)
        self._logger.warning(message + " (further occurrences not logged)", *args)
