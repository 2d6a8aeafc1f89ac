"""The collector's own health, in its own prometheus-client registry."""

from __future__ import annotations

import logging
from collections.abc import Hashable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agent.wire import Kind, Reason

# Why the HTTP surface refused a request (``bridge_collector_http_rejected_total{reason}``);
# ``collector.api`` re-exports it. ``internal_error`` is a bug of ours, never a refusal of
# bad input: it should stay at zero, and the fuzz tests hold it there.
HTTP_REJECT_REASONS = (
    "bad_request",        # 400 not HTTP (bad request line, bad version)
    "uri_too_long",       # 414 request target over the limit (a huge query string)
    "header_too_large",   # 431 a header line too long, too many headers, or all too big
    "bad_length",         # 400 Content-Length not a number, or given twice
    "length_required",    # 411 a body without Content-Length (chunked is not accepted)
    "body_too_large",     # 413 over MAX_BODY_BYTES
    "timeout",            # 408 a request not complete in time (slowloris)
    "busy",               # 503 too many connections open at once
    "forbidden_method",   # 405 method not served on this path (with Allow)
    "not_found",          # 404 no such path or no such session
    "unauthorized",       # 401 no token, or not a valid one
    "bad_content_type",   # 415 not the Content-Type the route takes
    "bad_encoding",       # 400 body not UTF-8
    "bad_json",           # 400 body not JSON, or not an object
    "unknown_field",      # 400 a JSON field the route does not know
    "missing_field",      # 400 a required JSON field absent
    "bad_value",          # 400 a field that is not an id (slug)
    "bad_query",          # 400 unknown, repeated or malformed query parameter
    "bad_schedule",       # 422 the schedule import found errors (returned with lines)
    "unprocessable",      # 422 well formed but refused (bridge not in the session, ...)
    "internal_error",     # 500 a bug: logged with its traceback, never sent
)

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
        self.http_rejected = Counter("bridge_collector_http_rejected",
                                     "HTTP requests refused (API, pages, /metrics), by reason.",
                                     ["reason"], registry=r)
        # Pre-create every label so a zero is visible before the first event.
        for kind in (Kind.TELEMETRY, Kind.STATE, Kind.TEST):
            self.received.labels(kind.value)
        for reason in Reason:
            self.rejected.labels(reason.value)
        for name in HTTP_REJECT_REASONS:
            self.http_rejected.labels(name)


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
