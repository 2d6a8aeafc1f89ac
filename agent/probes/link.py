"""Link quality per target: packet counters, RTT quantiles, jitter, R and MOS.

Enabled by default but idle (no rows, no threads) until the configuration has a ``link``
section. The probers then run in the background for the life of the process, one per
target (``agent.link``), and each run of this probe reports:

- ``link_packets_{sent,received,duplicate,reordered}_total``, cumulative;
- over the window since the previous run: ``link_rtt_seconds`` by quantile, both jitter
  definitions, ``link_r_factor`` and ``link_mos`` (``agent.link.stats``);
- ``link_connect_seconds`` (median of the window) for tcp-connect targets;
- ``link_target_resolved``, 1 when the target's name resolved in the latest attempt;
- the last bandwidth test by ``bridgewatch-agent bandwidth`` (``agent.link.results``).

ICMP targets need CAP_NET_RAW; without it they fall back to tcp-connect when they have a
port, else to the reflector's UDP echo when they are the reflector's host, and the
``method`` label says which was used. A target that cannot be measured (no fallback, a
key file not readable, a name that does not resolve) makes the probe ``ok=false`` with
the reason, and is retried on the next run: it never stops the other targets.

The first run waits up to a few packet intervals for the first replies, so a one-shot
``sample`` already has numbers; later runs never wait.
"""

from __future__ import annotations

import threading
import time

from agent.config import REFLECTOR_TARGET, AgentConfig, LinkConfig, LinkTarget
from agent.link import packet, results, stats
from agent.link.icmp import IcmpProber, icmp_available
from agent.link.prober import Prober
from agent.link.tcp import TcpConnectProber
from agent.link.udp import UdpProber
from agent.probes import Metrics, ProbeContext, ProbePartial, register

_WARMUP_PACKETS = 3
_WARMUP_MAX_SECONDS = 6.0


class LinkSession:
    """The probers of one link configuration, started on the first run, kept across runs."""

    def __init__(self, config: LinkConfig) -> None:
        self.config = config
        self.probers: dict[str, Prober] = {}
        self.setup_errors: dict[str, str] = {}
        self._started = False

    def ensure_started(self) -> None:
        """Start every target's prober not yet running (a failed one is retried)."""
        for target in self.config.all_targets():
            if target.name in self.probers:
                continue
            try:
                prober = self._prober(target)
            except (OSError, ValueError, RuntimeError) as err:
                self.setup_errors[target.name] = str(err)
                continue
            self.setup_errors.pop(target.name, None)
            prober.start()
            self.probers[target.name] = prober
        if not self._started:
            self._started = True
            self._warm_up()

    def _prober(self, target: LinkTarget) -> Prober:
        c = self.config
        if target.method == "icmp":
            if icmp_available():
                return IcmpProber(target.host, interval=c.packet_interval_seconds)
            if target.port is not None:
                return TcpConnectProber(target.host, target.port,
                                        interval=c.connect_interval_seconds)
            if c.reflector is not None and c.reflector.host == target.host:
                return self._udp(target.host, c.reflector.udp_port)
            raise RuntimeError("ICMP needs CAP_NET_RAW and there is no fallback "
                               "(give the target a port for tcp-connect)")
        if target.method == "tcp-connect":
            assert target.port is not None  # the configuration requires it
            return TcpConnectProber(target.host, target.port,
                                    interval=c.connect_interval_seconds)
        assert target.port is not None  # udp-reflector targets default to the reflector port
        return self._udp(target.host, target.port)

    def _udp(self, host: str, port: int) -> UdpProber:
        assert self.config.reflector is not None  # the configuration requires it
        key = packet.load_key(self.config.reflector.key_file)
        return UdpProber(host, port, key=key, interval=self.config.packet_interval_seconds)

    def _warm_up(self) -> None:
        """Wait (once) until each prober has resolved a few packets, or a few intervals."""
        deadline = time.monotonic() + min(
            _WARMUP_MAX_SECONDS,
            max((p.interval * _WARMUP_PACKETS + p.timeout for p in self.probers.values()),
                default=0.0))
        while time.monotonic() < deadline:
            counters = [p.counters() for p in self.probers.values()]
            if all(c.received + c.lost >= _WARMUP_PACKETS for c in counters):
                return
            time.sleep(0.05)

    def stop(self) -> None:
        for prober in self.probers.values():
            prober.stop()
        self.probers.clear()

    def collect(self) -> tuple[Metrics, list[str]]:
        """The rows of every running target, and the problems to report."""
        self.ensure_started()
        metrics: Metrics = {name: [] for name in (
            "link_packets_sent_total", "link_packets_received_total",
            "link_packets_duplicate_total", "link_packets_reordered_total",
            "link_rtt_seconds", "link_jitter_seconds", "link_r_factor", "link_mos",
            "link_connect_seconds", "link_target_resolved")}
        errors = [f"target {name}: {error}" for name, error in self.setup_errors.items()]
        for name, prober in self.probers.items():
            _target_rows(metrics, name, prober)
            if prober.resolved is False:
                errors.append(f"target {name}: cannot resolve {prober.host}")
        return {m: rows for m, rows in metrics.items() if rows}, errors


def _target_rows(metrics: Metrics, name: str, prober: Prober) -> None:
    window = prober.take_window().stats
    counters = prober.counters()
    labels = (name, prober.method)
    metrics["link_packets_sent_total"].append((labels, float(counters.sent)))
    metrics["link_packets_received_total"].append((labels, float(counters.received)))
    metrics["link_packets_duplicate_total"].append((labels, float(counters.duplicates)))
    metrics["link_packets_reordered_total"].append((labels, float(counters.reordered)))
    if window.rtt is not None:
        for q in stats.QUANTILES:
            metrics["link_rtt_seconds"].append(((*labels, f"{q:g}"), window.rtt[q]))
        if prober.method == "tcp-connect":
            metrics["link_connect_seconds"].append(((name,), window.rtt[0.5]))
    for definition, value in (("rfc3550", window.jitter_rfc3550),
                              ("mean_abs_diff", window.jitter_mean_abs_diff)):
        if value is not None:
            metrics["link_jitter_seconds"].append(((*labels, definition), value))
    if window.r_factor is not None and window.mos is not None:
        metrics["link_r_factor"].append(((name,), window.r_factor))
        metrics["link_mos"].append(((name,), window.mos))
    if prober.resolved is not None:
        metrics["link_target_resolved"].append(((name,), 1.0 if prober.resolved else 0.0))


# -- sessions, one per configuration, for the life of the process ------------------------

_SESSIONS: dict[LinkConfig, LinkSession] = {}
_SESSIONS_LOCK = threading.Lock()


def session(config: LinkConfig) -> LinkSession:
    with _SESSIONS_LOCK:
        if config not in _SESSIONS:
            _SESSIONS[config] = LinkSession(config)
        return _SESSIONS[config]


def shutdown() -> None:
    """Stop every prober (the agent's exit, and tests)."""
    with _SESSIONS_LOCK:
        sessions = list(_SESSIONS.values())
        _SESSIONS.clear()
    for s in sessions:
        s.stop()


def _bandwidth_rows(config: AgentConfig, metrics: Metrics) -> str | None:
    """Add the last bandwidth test's rows; an error text if its file is unusable."""
    try:
        kept = results.load(config)
    except ValueError as err:
        return str(err)
    if kept is not None and kept[1]:
        ts, rates = kept
        metrics["link_bandwidth_bits_per_second"] = [
            ((REFLECTOR_TARGET, direction), bps) for direction, bps in sorted(rates.items())]
        metrics["link_bandwidth_test_timestamp_seconds"] = [((REFLECTOR_TARGET,), ts)]
    return None


@register("link", needs=lambda config: config.link is not None)
def collect(ctx: ProbeContext) -> Metrics:
    link = ctx.config.link
    if link is None:
        return {}  # enabled by hand without a link section: nothing to measure
    metrics, errors = session(link).collect()
    error = _bandwidth_rows(ctx.config, metrics)
    if error is not None:
        errors.append(error)
    if errors:
        raise ProbePartial(metrics, "; ".join(errors))
    return metrics
