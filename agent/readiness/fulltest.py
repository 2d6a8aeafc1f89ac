"""The full readiness test of one bridge: measure everything once, then judge it.

Three stages, one after the other so they never disturb each other's figures:

1. a probe burst to the central reflector (``readiness.link_seconds`` at
   ``readiness.link_packets_per_second``) with the link probe's own UDP prober
   (``agent.link.udp.UdpProber.measure``): median RTT, RFC 3550 jitter, loss, MOS;
2. the bandwidth test up then down against the reflector's TCP endpoint
   (``agent.link.bandwidth.run_test``, ``readiness.bandwidth_seconds`` each), kept for the
   link probe like ``bridgewatch-agent bandwidth`` keeps its results;
3. the room probes the site configures (devices, storage, UPS, clock, software), each run
   once through ``run_probe``, their rows read back into ``Facts``. A probe that failed
   leaves its criteria ``Failed`` with the probe's error as the reason.

Used by ``bridgewatch-agent check`` (a technician, on the spot) and by the running agent
when the collector orders a test (``agent.readiness.runner``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from agent import wire
from agent.config import AgentConfig
from agent.devices.expect import match_names
from agent.link import bandwidth, packet, results
from agent.link.stats import WindowStats
from agent.link.udp import UdpProber
from agent.probes import REGISTRY, ProbeContext, load_all, run_probe
from agent.readiness.criteria import (
    NO_REFLECTOR,
    DeviceFacts,
    Facts,
    Failed,
    Judged,
    Limits,
    Reading,
    judge,
    not_checked,
)
from agent.ups.model import UpsReading

log = logging.getLogger(__name__)

ROOM_PROBES = ("devices", "storage", "ups", "clock", "software")
BANDWIDTH_CRITERIA = {"upload": "bandwidth-up", "download": "bandwidth-down"}


class Progress:
    """What a running test tells whoever watches it; this base says nothing.

    ``stage`` announces "link" (with its length in seconds) and "room";
    ``bandwidth(direction)`` wraps one direction's transfer and yields the callback that
    ``bandwidth.run_test`` feeds (fraction done, bit/s so far), or None.
    """

    def stage(self, name: str, seconds: float | None = None) -> None:
        """A stage begins."""

    @contextlib.contextmanager
    def bandwidth(self, direction: str) -> Iterator[bandwidth.Progress | None]:
        yield None


@dataclass(frozen=True)
class FullTest:
    """One finished test: the judged criteria and what they rest on."""

    judged: tuple[Judged, ...]
    facts: Facts
    limits: Limits
    started: float  # unix time
    ts: float  # unix time it finished: the result's timestamp

    @property
    def criteria(self) -> tuple[wire.Criterion, ...]:
        return tuple(j.criterion for j in self.judged)

    @property
    def passed(self) -> bool:
        """Ready: every criterion passed (and there were criteria to pass)."""
        return bool(self.judged) and all(j.criterion.ok for j in self.judged)

    @property
    def notes(self) -> dict[str, str]:
        return {j.criterion.name: j.note for j in self.judged if j.note}

    @property
    def not_checked(self) -> tuple[str, ...]:
        return not_checked(self.judged)

    @property
    def failing(self) -> tuple[str, ...]:
        return tuple(j.criterion.name for j in self.judged if not j.criterion.ok)


# ---------------------------------------------------------------------------------------
# Stage 1 and 2: the link


@dataclass(frozen=True)
class LinkFacts:
    rtt_median: Reading
    jitter: Reading
    loss_ratio: Reading
    mos: Reading
    bandwidth: dict[str, Reading]  # direction -> bit/s


def _all_failed(reason: str) -> LinkFacts:
    failed = Failed(reason)
    return LinkFacts(failed, failed, failed, failed,
                     dict.fromkeys(bandwidth.DIRECTIONS, failed))


def measure_link(config: AgentConfig, progress: Progress) -> LinkFacts:
    """Burst then bandwidth against the configured reflector; Failed parts say why."""
    link = config.link
    if link is None or link.reflector is None:
        return _all_failed(NO_REFLECTOR)
    reflector = link.reflector
    try:
        key = packet.load_key(reflector.key_file)
    except (OSError, ValueError) as err:
        return _all_failed(f"reflector key {reflector.key_file}: {err}")
    r = config.readiness
    count = max(2, round(r.link_seconds * r.link_packets_per_second))
    progress.stage("link", r.link_seconds)
    try:
        measurement = UdpProber(reflector.host, reflector.udp_port, key=key).measure(
            count, 1.0 / r.link_packets_per_second)
    except Exception as err:  # a test must always end in a result, never a traceback
        log.exception("link burst failed")
        burst = _all_failed(f"link burst failed: {err}")
    else:
        burst = _burst_facts(measurement.resolved, measurement.window.stats,
                             f"{reflector.host}:{reflector.udp_port}", count)
    rates: dict[str, Reading] = {}
    kept: list[bandwidth.BandwidthResult] = []
    for direction in bandwidth.DIRECTIONS:
        with progress.bandwidth(direction) as callback:
            try:
                result = bandwidth.run_test(reflector.host, reflector.tcp_port, key, direction,
                                            r.bandwidth_seconds, progress=callback)
            except (bandwidth.BandwidthError, OSError, ValueError) as err:
                rates[direction] = Failed(f"{direction}: {err}")
                continue
        kept.append(result)
        rates[direction] = result.bits_per_second
    if kept:  # the link probe reports the latest bandwidth test, whoever ran it
        try:
            results.save(config, kept, time.time())
        except OSError as err:
            log.warning("bandwidth results not kept for the link probe: %s", err)
    return LinkFacts(burst.rtt_median, burst.jitter, burst.loss_ratio, burst.mos, rates)


def _burst_facts(resolved: bool, s: WindowStats, where: str, sent: int) -> LinkFacts:
    """Median RTT, RFC 3550 jitter, loss and MOS from the burst's window statistics."""
    if not resolved:
        return _all_failed(f"cannot resolve the reflector {where.rsplit(':', 1)[0]}")
    silent = Failed(f"no reply from the reflector {where} ({sent} packets sent)")
    rtt: Reading = silent if s.rtt is None else s.rtt[0.5]
    if s.jitter_rfc3550 is not None:
        jitter: Reading = s.jitter_rfc3550
    else:
        jitter = silent if s.received == 0 else Failed("too few replies to measure jitter")
    loss: Reading = Failed("no packet resolved") if s.loss_ratio is None else s.loss_ratio
    mos: Reading = Failed("no packet resolved") if s.mos is None else s.mos
    return LinkFacts(rtt, jitter, loss, mos, {})


# ---------------------------------------------------------------------------------------
# Stage 3: the room


def room_probes(config: AgentConfig) -> tuple[str, ...]:
    """The room probes this site's configuration gives something to check."""
    wanted = {
        "devices": bool(config.devices),
        "storage": bool(config.recording_volume or config.backup_volume
                        or config.storage.backup_device),
        "ups": bool(config.ups),
        "clock": config.clock is not None,
        "software": bool(config.software),
    }
    return tuple(name for name in ROOM_PROBES if wanted[name])


def run_room(config: AgentConfig, clock: Callable[[], float] = time.time,
             ctx: ProbeContext | None = None) -> dict[str, wire.ProbeReport]:
    """Each configured room probe once (``run_probe`` never raises)."""
    load_all()
    ctx = ctx or ProbeContext(config, clock=clock)
    out = {}
    for name in room_probes(config):
        probe = REGISTRY[name]
        out[name] = run_probe(probe, ctx, max(config.interval_seconds, probe.default_interval))
    return out


def _rows(report: wire.ProbeReport | None, metric: str) -> dict[tuple[str, ...], float]:
    if report is None:
        return {}
    return dict(report.metrics.get(metric, []))


def _why(report: wire.ProbeReport | None, what: str, prefix: str | None = None) -> Failed:
    """Why a value is missing: the probe's error (the part about ``prefix`` if named)."""
    if report is None:
        return Failed(f"{what}: probe did not run")
    error = report.error or f"{what} not reported"
    if prefix is not None:
        mine = [part for part in error.split("; ") if part.startswith(prefix)]
        if mine:
            return Failed("; ".join(mine))
    return Failed(error)


def build_facts(config: AgentConfig, link: LinkFacts,
                reports: Mapping[str, wire.ProbeReport]) -> Facts:
    """``Facts`` from the link's figures and the room probes' rows."""
    out: dict[str, Any] = {}
    details: dict[str, str] = {}
    if config.devices:
        report = reports.get("devices")
        counts = _rows(report, "device_count")
        present = _rows(report, "device_present")
        devices: dict[str, DeviceFacts] = {}
        for e in config.devices:
            count = counts.get((e.kind,))
            if count is None:
                devices[e.kind] = DeviceFacts(_why(report, f"{e.kind} count", e.kind), e.count)
                continue
            missing: tuple[str, ...] = ()
            if e.names:
                working = [name for (kind, name), v in present.items() if kind == e.kind and v]
                matched = match_names(e.names, working)
                missing = tuple(p for p, i in zip(e.names, matched, strict=True) if i is None)
            devices[e.kind] = DeviceFacts(int(count), e.count, missing)
        out["devices"] = devices
    storage = reports.get("storage")
    if config.recording_volume:
        left = _rows(storage, "recording_seconds_left").get(())
        out["recording_seconds_left"] = (_why(storage, "recording time", "recording")
                                         if left is None else left)
        details["recording-space"] = (f"{config.recording_volume} at "
                                      f"{config.storage.recording_bitrate_mbps:g} Mbit/s")
    if config.backup_volume or config.storage.backup_device:
        checks = []
        if config.backup_volume:
            checks.append(_rows(storage, "volume_mounted").get(("backup",)))
        if config.storage.backup_device:
            checks.append(_rows(storage, "volume_device_present").get(("backup",)))
        if any(v is None for v in checks):
            out["backup_present"] = _why(storage, "backup disk", "backup")
        else:
            out["backup_present"] = all(checks)
            if not all(checks) and storage is not None and storage.error:
                details["backup-disk"] = "; ".join(
                    p for p in storage.error.split("; ") if p.startswith("backup"))
    if config.ups:
        report = reports.get("ups")
        info = {labels[0]: labels for labels in _rows(report, "ups_info")}
        flags = _rows(report, "ups_status_flag")
        runtimes = _rows(report, "ups_runtime_seconds")
        ups: dict[str, UpsReading | Failed] = {}
        for u in config.ups:
            if u.name not in info:  # the criterion names the UPS: not twice
                why = _why(report, "UPS", f"{u.name}: ").reason
                ups[u.name] = Failed(why.removeprefix(f"{u.name}: "))
                continue
            ups[u.name] = UpsReading(
                name=u.name, source=info[u.name][1], model=info[u.name][2],
                flags=frozenset(f for (n, f), v in flags.items() if n == u.name and v),
                runtime_seconds=runtimes.get((u.name,)))
        out["ups"] = ups
    if config.clock is not None:
        report = reports.get("clock")
        offsets = list(_rows(report, "clock_offset_seconds").values())
        out["clock_offset"] = offsets[0] if offsets else _why(report, "clock offset")
    if config.software:
        report = reports.get("software")
        running = _rows(report, "software_running")
        out["software"] = {
            sw.name: (_why(report, f"software {sw.name}") if (sw.name,) not in running
                      else bool(running[(sw.name,)]))
            for sw in config.software}
    return Facts(link.rtt_median, link.jitter, link.loss_ratio, link.mos,
                 link.bandwidth["upload"], link.bandwidth["download"], details=details, **out)


# ---------------------------------------------------------------------------------------


def run_full_test(config: AgentConfig, session_seconds: float | None = None,
                  progress: Progress | None = None,
                  clock: Callable[[], float] = time.time) -> FullTest:
    """Measure the link, the bandwidth and the room once; judge against the site's limits.

    ``session_seconds`` (the collector's order) replaces the planned session length.
    """
    progress = progress or Progress()
    limits = Limits.from_config(config, session_seconds)
    started = clock()
    link = measure_link(config, progress)
    progress.stage("room")
    facts = build_facts(config, link, run_room(config, clock))
    return FullTest(judge(facts, limits), facts, limits, started, clock())
