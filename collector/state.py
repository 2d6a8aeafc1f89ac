"""Per-site state of the fleet, fed by validated messages, rendered into the cache.

``apply`` is the whole of intake: validate, drop duplicates, update state, and note which
of the site's families changed. ``flush`` renders those changes into the exposition cache,
at most once per site every ``render_delay`` seconds; the intake thread calls it in its
spare time, so a site draining a day of spooled samples costs one render, not thousands,
and a scrape only joins bytes. Rare events that matter at once (connected, Last Will,
up/down, test results) are rendered immediately.

Staleness is explicit: a site that goes silent or whose Last Will says offline gets
``bridge_up 0`` and loses its measured series (Prometheus marks them stale) instead of
showing frozen values.

History is not news: a spooled sample that arrives after a newer one of the same site (a
day's backlog draining behind the agent's live samples, see ``agent.live_lane``) and is
older than it by more than the site's stale window is counted, but neither becomes the
current view nor refreshes ``bridge_up`` or last-seen. "Newer" is the agent's own order,
a higher seq of the same epoch, or a spool (epoch) not seen before, so a clock the agent
steps back never makes fresh samples look old; a late message of an older spool is
judged by its timestamp.

At DEBUG, the ``bridgewatch.collector.accepted`` logger writes one line per accepted
message (site, kind, epoch, seq, the agent's ts and the collector's time): the trail that
shows which message reached the collector when, for a fault hunt or a drain measurement.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent import wire
from agent.wire import Kind, Reason, WireError

from .dedup import SeqTracker, Verdict
from .exposition import ExpositionCache, Family, escape_label, format_value
from .inventory import Inventory, Site
from .selfmetrics import LogOnce, SelfMetrics

log = logging.getLogger("bridgewatch.collector")
trail = logging.getLogger("bridgewatch.collector.accepted")

RENDER_DELAY_SECONDS = 1.0
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
SITE_INFO = Family("bridge_site_info", "gauge", "Inventory entry of the site, value 1.")
SITE_BANDWIDTH = Family("bridge_site_required_bandwidth_bits_per_second", "gauge",
                        "Link bandwidth the site needs for a session.")
SITE_LAT = Family("bridge_site_latitude_degrees", "gauge", "Latitude of the bridge room.")
SITE_LON = Family("bridge_site_longitude_degrees", "gauge", "Longitude of the bridge room.")

FLEET_FAMILIES = [SITE_INFO, SITE_BANDWIDTH, SITE_LAT, SITE_LON, UP, CONNECTED, LAST_SEEN,
                  RECEIVED, DUPLICATE, LOST, AGENT_INFO, PROBE_SUCCESS, PROBE_DURATION]
# A site's latest test (bridge_test_last_*) is exposed by the readiness service alone, from
# its durable store: one family per name, and the same answer after a restart.
CATALOGUE_FAMILIES = {name: Family(spec.exposed_name, spec.type, spec.help)
                      for name, spec in wire.CATALOGUE.items()}
PROBE_FAMILIES = (PROBE_SUCCESS.name, PROBE_DURATION.name)


@dataclass(frozen=True)
class TrailEntry:
    """One line of the ``bridgewatch.collector.accepted`` trail (see the module doc)."""

    verdict: str  # "accepted" or "duplicate"
    site: str
    kind: str  # "telemetry" or "test"
    epoch: int
    seq: int
    ts: float  # the agent's timestamp of the message
    at: float  # when the collector took it in


_TRAIL_LINE = re.compile(r"\b(accepted|duplicate) (\S+) (telemetry|test) epoch=(\d+) "
                         r"seq=(\d+) ts=([\d.]+) at=([\d.]+)$")


def read_trail(log_text: str) -> list[TrailEntry]:
    """The trail entries in a collector log, in the order the collector took them in."""
    entries = []
    for line in log_text.splitlines():
        match = _TRAIL_LINE.search(line)
        if match:
            verdict, site, kind, epoch, seq, ts, at = match.groups()
            entries.append(TrailEntry(verdict, site, kind, int(epoch), int(seq), float(ts),
                                      float(at)))
    return entries


@dataclass(slots=True)
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
    dirty: set[str] = field(default_factory=set)  # catalogue metrics to re-render
    dirty_since: float | None = None  # None: nothing waits to be rendered
    rendered: dict[str, list[wire.Row]] = field(default_factory=dict)  # what the cache shows
    heads: dict[str, str] = field(default_factory=dict)  # metric -> 'bridge_x{<site labels>'
    newest: tuple[int, int, float] | None = None  # (epoch, seq, ts) of the newest telemetry


Changes = dict[str, bytes | None]


class FleetState:
    def __init__(self, inventory: Inventory, prefix: str = wire.DEFAULT_PREFIX,
                 metrics: SelfMetrics | None = None, clock: Callable[[], float] = time.time,
                 render_delay: float = RENDER_DELAY_SECONDS) -> None:
        self.inventory = inventory
        self.prefix = prefix
        self.metrics = metrics or SelfMetrics()
        self.clock = clock
        self.render_delay = render_delay
        self.cache = ExpositionCache([*FLEET_FAMILIES, *CATALOGUE_FAMILIES.values()])
        self.sites = {sid: SiteState(site) for sid, site in inventory.sites.items()}
        self._lock = threading.Lock()
        self._pending: dict[str, SiteState] = {}  # oldest dirty_since first
        self._log_once = LogOnce(log)
        self._trail = trail.isEnabledFor(logging.DEBUG)  # read once: intake is hot
        # Told of every new (not duplicate) test result, after state took it in: the
        # readiness service stores it against its session.
        self.on_test: Callable[[wire.TestResult], None] | None = None
        self._received = {kind: self.metrics.received.labels(kind.value) for kind in wire.Kind}
        # metric -> label values -> ',mode="user"} ': label sets repeat across sites.
        self._suffixes: dict[str, dict[tuple[str, ...], str]] = {m: {} for m in wire.CATALOGUE}
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
        self._received[kind].inc()
        changes: Changes = {}
        with self._lock:
            changed = self._apply(state, message, now, changes)
            if changes:
                self.cache.update(site_id, changes)
        if changed and self.on_test is not None and isinstance(message, wire.TestResult):
            self.on_test(message)
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
        new_spool = message.epoch not in state.tracker.streams
        verdict = state.tracker.accept(message.epoch, message.seq, message.floor)
        if verdict is Verdict.OLD_EPOCH:
            self.reject(Reason.OLD_EPOCH, f"{state.site.id} epoch {message.epoch}",
                        "a spool this site replaced several times since")
            return False
        if verdict is Verdict.BAD_FLOOR:
            self.reject(Reason.OUT_OF_RANGE, f"{state.site.id} seq {message.seq}",
                        f"floor {message.floor} or seq jumps further than any spool holds")
            return False
        self._mark(state, now)  # the per-site counters change either way
        if verdict is Verdict.DUPLICATE:
            self.metrics.duplicates.inc()
            if self._trail:
                self._trace("duplicate", state, message, now)
            return False
        self.metrics.lag.observe(max(0.0, now - message.ts))
        if self._trail:
            self._trace("accepted", state, message, now)
        if isinstance(message, wire.Telemetry) and self._history(state, message, new_spool):
            return True  # counted; what is current stays with the newer sample
        self._seen(state, now, changes)
        if isinstance(message, wire.Telemetry):
            self._apply_telemetry(state, message, now)
        return True

    @staticmethod
    def _trace(verdict: str, state: SiteState, message: wire.Telemetry | wire.TestResult,
               now: float) -> None:
        trail.debug("%s %s %s epoch=%d seq=%d ts=%.3f at=%.3f", verdict, state.site.id,
                    "test" if isinstance(message, wire.TestResult) else "telemetry",
                    message.epoch, message.seq, message.ts, now)

    @staticmethod
    def _history(state: SiteState, message: wire.Telemetry, new_spool: bool) -> bool:
        """True for a sample older than the site's newest by more than its stale window.

        A spool we had not heard of (a reinstalled agent) is the current one whatever its
        clock says; a late message of an older spool is judged by its timestamp.
        """
        newest = state.newest
        if newest is None or new_spool or (message.seq > newest[1] if message.epoch == newest[0]
                                           else message.ts > newest[2]):
            state.newest = (message.epoch, message.seq, message.ts)
            return False
        return message.ts + state.stale_after < newest[2]

    def _mark(self, state: SiteState, now: float) -> None:
        if state.dirty_since is None:
            state.dirty_since = now
            self._pending[state.site.id] = state

    def _seen(self, state: SiteState, now: float, changes: Changes) -> None:
        state.last_seen = now
        state.deadline = min(state.deadline, now + state.stale_after)
        self._mark(state, now)
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

    def _apply_telemetry(self, state: SiteState, message: wire.Telemetry, now: float) -> None:
        views = state.probes
        newest = state.newest == (message.epoch, message.seq, message.ts)  # see _history
        for name, report in message.probes.items():
            old = views.get(name)
            if old is not None:
                if old.ts > message.ts and not newest:
                    continue  # a late re-send of history: counted, but not the current view
                if old.report.metrics.keys() != report.metrics.keys():
                    state.dirty.update(old.report.metrics.keys() - report.metrics.keys())
            state.dirty.update(report.metrics)
            expires = now + max(MIN_STALE_SECONDS, STALE_INTERVALS * report.interval_seconds)
            views[name] = ProbeView(report, message.ts, expires)
        if views:
            state.stale_after = max(MIN_STALE_SECONDS, STALE_INTERVALS * min(
                view.report.interval_seconds for view in views.values()))
            state.deadline = min(view.expires for view in views.values())

    # -- rendering what changed ---------------------------------------------------------

    def flush(self, now: float | None = None, everything: bool = False) -> int:
        """Render sites whose changes waited ``render_delay`` (or all); return how many."""
        now = self.clock() if now is None else now
        due = now - self.render_delay
        done = 0
        while self._pending:
            with self._lock:
                if not self._pending:
                    break
                site_id, state = next(iter(self._pending.items()))
                if not everything and state.dirty_since is not None and state.dirty_since > due:
                    break
                del self._pending[site_id]
                state.dirty_since = None
                changes = self._render_site(state)
                self.cache.update(site_id, changes)
            done += 1
        return done

    def _render_site(self, state: SiteState) -> Changes:
        changes: Changes = {}
        if state.last_seen is not None:
            changes[LAST_SEEN.name] = self._line(LAST_SEEN, state, round(state.last_seen, 3))
        t = state.tracker
        for family, value in ((RECEIVED, t.received), (DUPLICATE, t.duplicates), (LOST, t.lost)):
            changes[family.name] = self._line(family, state, value)
        if not state.up:
            return changes  # measured series were dropped when the site went down
        current: dict[str, list[wire.Row]] = {}
        for view in state.probes.values():
            current.update(view.report.metrics)
        for metric in state.dirty:
            rows = current.get(metric)
            if rows != state.rendered.get(metric):  # most gauges repeat: nothing to redo
                changes[CATALOGUE_FAMILIES[metric].name] = self._rows(state, metric, rows)
                if rows:
                    state.rendered[metric] = rows
                else:
                    state.rendered.pop(metric, None)
        state.dirty.clear()
        self._probe_lines(state, changes)
        return changes

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
                        state.dirty.update(state.probes.pop(name).report.metrics)
                    self._mark(state, now - self.render_delay)  # render at the next flush
                    state.deadline = min((v.expires for v in state.probes.values()),
                                         default=state.last_seen + state.stale_after)
                self.cache.update(state.site.id, changes)

    def _go_down(self, state: SiteState, changes: Changes) -> None:
        state.up = False
        changes[UP.name] = self._flag(UP, state, False)
        for metric in state.rendered:
            changes[CATALOGUE_FAMILIES[metric].name] = None
        state.rendered.clear()
        state.probes.clear()
        state.dirty.clear()
        for family in PROBE_FAMILIES:
            changes[family] = None

    def health(self) -> dict[str, object]:
        """What a liveness check needs, without a scrape."""
        registry = self.metrics.registry
        return {
            "connected": registry.get_sample_value("bridge_collector_mqtt_connected") == 1,
            "received": {kind.value: int(registry.get_sample_value(
                "bridge_collector_messages_received_total", {"kind": kind.value}) or 0)
                for kind in (Kind.TELEMETRY, Kind.STATE, Kind.TEST)},
            "sites": len(self.sites),
            "sites_up": sum(state.up for state in self.sites.values()),
        }

    def exposition(self) -> list[bytes]:
        """The exposition for a scrape, in parts: what is due is rendered, nothing else."""
        now = self.clock()
        self.sweep(now)
        self.flush(now)
        return self.cache.snapshot()

    def render(self) -> bytes:
        return b"".join(self.exposition())

    # -- rendering (each returns the site's chunk of one family) ------------------------

    @staticmethod
    def _line(family: Family, state: SiteState, value: float) -> bytes:
        return f"{family.name}{{{state.site.labels}}} {format_value(value)}\n".encode()

    @staticmethod
    def _flag(family: Family, state: SiteState, on: bool) -> bytes:
        return f"{family.name}{{{state.site.labels}}} {1 if on else 0}\n".encode()

    def _suffix(self, metric: str, values: tuple[str, ...]) -> str:
        names = wire.CATALOGUE[metric].labels
        pairs = zip(names, values, strict=True)
        suffix = "".join(f',{n}="{escape_label(v)}"' for n, v in pairs) + "} "
        suffixes = self._suffixes[metric]
        if len(suffixes) < 10_000:  # label values come from agents: keep the cache bounded
            suffixes[values] = suffix
        return suffix

    def _rows(self, state: SiteState, metric: str, rows: list[wire.Row] | None) -> bytes | None:
        if not rows:
            return None
        head = state.heads.get(metric)
        if head is None:
            head = state.heads[metric] = f"{CATALOGUE_FAMILIES[metric].name}{{{state.site.labels}"
        suffixes = self._suffixes[metric]
        return "".join([
            f"{head}{suffixes.get(labels) or self._suffix(metric, labels)}{value!r}\n"
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
