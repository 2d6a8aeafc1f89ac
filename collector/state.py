"""Per-site state of the fleet, fed by validated messages, rendered into the cache.

``apply`` is the whole of intake: validate, drop duplicates, update state, and re-render
the chunks of only the families the message touched. Staleness is explicit: a site that
goes silent or whose Last Will says offline gets ``bridge_up 0`` and loses its measured
series (Prometheus marks them stale) instead of showing frozen values.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent import wire
from agent.wire import Reason, WireError

from .dedup import SeqTracker, Verdict
from .exposition import ExpositionCache, Family, escape_label, format_value
from .inventory import Inventory, Site
from .selfmetrics import LogOnce, SelfMetrics

log = logging.getLogger("bridgewatch.collector")

STALE_INTERVALS = 3.0  # a site or probe is stale after missing this many reports
MIN_STALE_SECONDS = 5.0

# Families the collector derives itself (the catalogue's come from the agents).
UP = Family("bridge_up", "gauge", "1 when the agent is connected and reporting on time.")
CONNECTED = Family("bridge_agent_connected", "gauge",
                   "1 while the agent's retained state is online (0 after its Last Will).")
LAST_SEEN = Family("bridge_last_seen_timestamp_seconds", "gauge",
                   "Collector time of the last message accepted from the site.")
RECEIVED = Family("bridge_messages_received_total", "counter",
                  "Messages accepted from the site (each (epoch, seq) once).")
DUPLICATE = Family("bridge_messages_duplicate_total", "counter",
                   "Re-sent messages dropped as already accepted.")
LOST = Family("bridge_messages_lost_total", "counter",
              "Sequence numbers the site will never deliver (dropped by its spool bound).")
AGENT_INFO = Family("bridge_agent_info", "gauge", "Agent version and host, value 1.")
PROBE_SUCCESS = Family("bridge_probe_success", "gauge", "1 when the probe's last run succeeded.")
PROBE_DURATION = Family("bridge_probe_duration_seconds", "gauge",
                        "Duration of the probe's last run.")
TEST_PASSED = Family("bridge_test_last_passed", "gauge", "1 when the site's last test passed.")
TEST_TIME = Family("bridge_test_last_timestamp_seconds", "gauge", "Time of the site's last test.")
SITE_INFO = Family("bridge_site_info", "gauge", "Inventory entry of the site, value 1.")
SITE_BANDWIDTH = Family("bridge_site_required_bandwidth_bits_per_second", "gauge",
                        "Link bandwidth the site needs for a session.")
SITE_LAT = Family("bridge_site_latitude_degrees", "gauge", "Latitude of the bridge room.")
SITE_LON = Family("bridge_site_longitude_degrees", "gauge", "Longitude of the bridge room.")

FLEET_FAMILIES = [SITE_INFO, SITE_BANDWIDTH, SITE_LAT, SITE_LON, UP, CONNECTED, LAST_SEEN,
                  RECEIVED, DUPLICATE, LOST, AGENT_INFO, PROBE_SUCCESS, PROBE_DURATION,
                  TEST_PASSED, TEST_TIME]
CATALOGUE_FAMILIES = {name: Family(spec.exposed_name, spec.type, spec.help)
                      for name, spec in wire.CATALOGUE.items()}
PROBE_FAMILIES = (PROBE_SUCCESS.name, PROBE_DURATION.name)


@dataclass
class ProbeView:
    report: wire.ProbeReport
    ts: float
    expires: float  # collector time after which this probe's series are stale


@dataclass
class SiteState:
    site: Site
    tracker: SeqTracker = field(default_factory=SeqTracker)
    probes: dict[str, ProbeView] = field(default_factory=dict)
    conn: int = 0
    connected: bool | None = None  # None until the first retained state arrives
    last_seen: float | None = None
    stale_after: float = 30.0
    deadline: float = 0.0  # the next time sweep() has anything to do for this site
    up: bool = False


Changes = dict[str, bytes | None]


class FleetState:
    def __init__(self, inventory: Inventory, prefix: str = wire.DEFAULT_PREFIX,
                 metrics: SelfMetrics | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.inventory = inventory
        self.prefix = prefix
        self.metrics = metrics or SelfMetrics()
        self.clock = clock
        self.cache = ExpositionCache([*FLEET_FAMILIES, *CATALOGUE_FAMILIES.values()])
        self.sites = {sid: SiteState(site) for sid, site in inventory.sites.items()}
        self._lock = threading.Lock()
        self._log_once = LogOnce(log)
        self._label_cache: dict[tuple[str, tuple[str, ...]], str] = {}
        for state in self.sites.values():
            changes = self._static(state.site)
            changes[UP.name] = self._flag(UP, state, False)
            self.cache.update(state.site.id, changes)

    # -- intake -------------------------------------------------------------------------

    def apply(self, topic: str, payload: bytes, received_at: float | None = None) -> bool:
        """Take one MQTT message; True when it changed state. Never raises on bad input."""
        now = self.clock() if received_at is None else received_at
        try:
            province, site_id, kind = wire.parse_topic(self.prefix, topic)
            state = self.sites.get(site_id)
            if state is None:
                raise WireError(Reason.UNKNOWN_SITE, f"site {site_id} not in inventory")
            if state.site.province != province:
                raise WireError(Reason.SPOOFED, f"site {site_id} is not in province {province}")
            message = wire.decode(payload, kind, now)
            if message.site != site_id or message.province != province:
                raise WireError(Reason.SPOOFED, "payload names another site than its topic")
        except WireError as err:
            self.reject(err.reason, topic, str(err))
            return False
        self.metrics.received.labels(kind.value).inc()
        changes: Changes = {}
        with self._lock:
            changed = self._apply(state, message, now, changes)
            self.cache.update(site_id, changes)
        return changed

    def reject(self, reason: Reason, topic: str, detail: str) -> None:
        """Count a refused message and say why, once per (reason, topic)."""
        self.metrics.rejected.labels(reason.value).inc()
        self._log_once.warning((reason, topic[:200]), "rejected message on %r: %s",
                               topic[:200], detail)

    def _apply(self, state: SiteState, message: wire.Message, now: float,
               changes: Changes) -> bool:
        if isinstance(message, wire.State):
            return self._apply_state(state, message, now, changes)
        assert isinstance(message, (wire.Telemetry, wire.TestResult))
        verdict = state.tracker.accept(message.epoch, message.seq, message.floor)
        if verdict is Verdict.OLD_EPOCH:
            self.reject(Reason.OLD_EPOCH, f"{state.site.id} epoch {message.epoch}",
                        f"epoch older than {state.tracker.epoch}")
            return False
        if verdict is Verdict.DUPLICATE:
            self.metrics.duplicates.inc()
            self._counters(state, changes)
            return False
        self.metrics.lag.observe(max(0.0, now - message.ts))
        self._seen(state, now, changes)
        if isinstance(message, wire.Telemetry):
            self._apply_telemetry(state, message, now, changes)
        else:
            changes[TEST_PASSED.name] = self._flag(TEST_PASSED, state, message.passed)
            changes[TEST_TIME.name] = self._line(TEST_TIME, state, message.ts)
        self._counters(state, changes)
        return True

    def _seen(self, state: SiteState, now: float, changes: Changes) -> None:
        state.last_seen = now
        state.deadline = min(state.deadline, now + state.stale_after)
        changes[LAST_SEEN.name] = self._line(LAST_SEEN, state, round(now, 3))
        if not state.up and state.connected is not False:
            state.up = True
            changes[UP.name] = self._flag(UP, state, True)

    def _apply_state(self, state: SiteState, message: wire.State, now: float,
                     changes: Changes) -> bool:
        online = message.state == "online"
        # Within one connection, offline (the Will) wins; a newer connection wins over all.
        if state.connected is not None and (
                (message.conn, not online) <= (state.conn, not state.connected)):
            return False
        state.conn, state.connected = message.conn, online
        changes[CONNECTED.name] = self._flag(CONNECTED, state, online)
        info = (f'agent_version="{escape_label(message.agent_version)}",'
                f'hostname="{escape_label(message.hostname)}",os="{escape_label(message.os)}"')
        changes[AGENT_INFO.name] = f"{AGENT_INFO.name}{{{state.site.labels},{info}}} 1\n".encode()
        if online:
            self._seen(state, now, changes)
        else:
            self._go_down(state, changes)
        return True

    def _apply_telemetry(self, state: SiteState, message: wire.Telemetry, now: float,
                         changes: Changes) -> None:
        probes_changed = False
        for name, report in message.probes.items():
            old = state.probes.get(name)
            if old is not None and old.ts > message.ts:
                continue  # a late re-send of history: counted, but not the current view
            if old is not None:
                for metric in old.report.metrics.keys() - report.metrics.keys():
                    changes[CATALOGUE_FAMILIES[metric].name] = None
            expires = now + max(MIN_STALE_SECONDS, STALE_INTERVALS * report.interval_seconds)
            state.probes[name] = ProbeView(report, message.ts, expires)
            for metric, rows in report.metrics.items():
                changes[CATALOGUE_FAMILIES[metric].name] = self._rows(state, metric, rows)
            probes_changed = True
        if probes_changed:
            views = state.probes.values()
            state.stale_after = max(MIN_STALE_SECONDS, STALE_INTERVALS * min(
                view.report.interval_seconds for view in views))
            state.deadline = min(view.expires for view in views)
            self._probe_lines(state, changes)

    # -- staleness ----------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> None:
        """Mark silent sites down and drop probes that stopped reporting."""
        now = self.clock() if now is None else now
        with self._lock:
            for state in self.sites.values():
                if not state.up or now <= state.deadline:
                    continue
                changes: Changes = {}
                if state.last_seen is None or now - state.last_seen > state.stale_after:
                    self._go_down(state, changes)
                else:
                    for name in [n for n, v in state.probes.items() if now > v.expires]:
                        for metric in state.probes.pop(name).report.metrics:
                            changes[CATALOGUE_FAMILIES[metric].name] = None
                    self._probe_lines(state, changes)
                    state.deadline = min((v.expires for v in state.probes.values()),
                                         default=state.last_seen + state.stale_after)
                self.cache.update(state.site.id, changes)

    def _go_down(self, state: SiteState, changes: Changes) -> None:
        state.up = False
        changes[UP.name] = self._flag(UP, state, False)
        for view in state.probes.values():
            for metric in view.report.metrics:
                changes[CATALOGUE_FAMILIES[metric].name] = None
        state.probes.clear()
        for family in PROBE_FAMILIES:
            changes[family] = None

    def render(self) -> bytes:
        self.sweep()
        return self.cache.render()

    # -- rendering (each returns the site's chunk of one family) ------------------------

    @staticmethod
    def _line(family: Family, state: SiteState, value: float) -> bytes:
        return f"{family.name}{{{state.site.labels}}} {format_value(value)}\n".encode()

    @staticmethod
    def _flag(family: Family, state: SiteState, on: bool) -> bytes:
        return f"{family.name}{{{state.site.labels}}} {1 if on else 0}\n".encode()

    def _counters(self, state: SiteState, changes: Changes) -> None:
        t = state.tracker
        for family, value in ((RECEIVED, t.received), (DUPLICATE, t.duplicates), (LOST, t.lost)):
            changes[family.name] = self._line(family, state, value)

    def _label_suffix(self, metric: str, values: tuple[str, ...]) -> str:
        key = (metric, values)
        suffix = self._label_cache.get(key)
        if suffix is None:
            names = wire.CATALOGUE[metric].labels
            pairs = zip(names, values, strict=True)
            suffix = "".join(f',{n}="{escape_label(v)}"' for n, v in pairs)
            if len(self._label_cache) < 200_000:
                self._label_cache[key] = suffix
        return suffix + "} "

    def _rows(self, state: SiteState, metric: str, rows: list[wire.Row]) -> bytes | None:
        if not rows:
            return None
        head = f"{CATALOGUE_FAMILIES[metric].name}{{{state.site.labels}"
        suffix = self._label_suffix
        return "".join([f"{head}{suffix(metric, labels)}{value!r}\n"
                        for labels, value in rows]).encode()

    def _probe_lines(self, state: SiteState, changes: Changes) -> None:
        labels = state.site.labels
        ok, dur = [], []
        for name, view in state.probes.items():
            ok.append(f'{PROBE_SUCCESS.name}{{{labels},probe="{name}"}} {int(view.report.ok)}\n')
            dur.append(f'{PROBE_DURATION.name}{{{labels},probe="{name}"}} '
                       f"{view.report.duration_seconds!r}\n")
        changes[PROBE_SUCCESS.name] = "".join(ok).encode() or None
        changes[PROBE_DURATION.name] = "".join(dur).encode() or None

    def _static(self, site: Site) -> Changes:
        labels = site.labels
        changes: Changes = {
            SITE_INFO.name: f'{SITE_INFO.name}{{{labels},name="{escape_label(site.name)}"}} 1\n'
            .encode(),
            SITE_BANDWIDTH.name: f"{SITE_BANDWIDTH.name}{{{labels}}} "
            f"{format_value(site.bandwidth_bits_per_second)}\n".encode(),
        }
        for family, value in ((SITE_LAT, site.lat), (SITE_LON, site.lon)):
            if value is not None:
                changes[family.name] = f"{family.name}{{{labels}}} {format_value(value)}\n".encode()
        return changes
