"""The probe registry and runner: one module per probe, each timed and checked on its own.

A probe is a function ``(ctx) -> {metric name: [(label values, value), ...]}`` registered
with ``@register``. ``run_probe`` turns any exception into ``ok=False`` with a short error,
and checks the output against the wire contract, so a buggy probe shows up as a failed
probe in an otherwise valid message instead of poisoning the whole message.

A probe that measured something but found a fault (a configured volume that is not
mounted) raises ``ProbePartial(metrics, error)``: the report is ``ok=False`` with the
error *and* the rows it did collect.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import psutil

from agent import wire

if TYPE_CHECKING:
    from agent.config import AgentConfig

Metrics = dict[str, list[wire.Row]]

MODULES = ("cpu", "memory", "load", "uptime", "disk", "network", "agent_self", "link",
           "devices", "storage", "clock", "software", "ups", "netgear")


def run_command(argv: list[str], timeout: float) -> str:
    """Run a command and return its stdout; raises on a non-zero exit or a timeout."""
    done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {err[-1] if err else ''}")
    return done.stdout.decode("utf-8", "replace")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class ProbeContext:
    """What a probe may look at; every part is injectable so tests can swap the world."""

    config: AgentConfig
    ps: Any = psutil
    clock: Callable[[], float] = time.time
    process: Any = None  # psutil.Process of the agent; defaults to this process
    spool_stats: Callable[[], tuple[int, int, int]] | None = None
    fs_root: str = "/"  # where /sys, /proc and /dev are read from (a fixture tree in tests)
    platform: str = sys.platform  # "linux" or "win32": which device readers apply
    run_command: Callable[[list[str], float], str] = run_command  # argv, timeout -> stdout

    def __post_init__(self) -> None:
        if self.process is None:
            self.process = self.ps.Process()


@dataclass(frozen=True)
class Probe:
    name: str
    collect: Callable[[ProbeContext], Metrics]
    default_enabled: bool = True
    # A probe of an optional config section (a UPS, the clock): off while it is absent.
    needs: Callable[[AgentConfig], bool] | None = None
    # Slow-changing things (devices, the clock) need not be read every round: by default
    # such a probe runs at most this often (``probes.<name>.interval_seconds`` overrides).
    default_interval: float = 0.0


class ProbePartial(Exception):
    """Raised by a probe that has rows to report alongside a fault."""

    def __init__(self, metrics: Metrics, error: str) -> None:
        super().__init__(error)
        self.metrics = metrics
        self.error = error


REGISTRY: dict[str, Probe] = {}
_PROBE_CHECK = wire.Telemetry("probe", "check", 1, 1, 1, 0.0, {})


def register(name: str, default_enabled: bool = True,
             needs: Callable[[AgentConfig], bool] | None = None,
             default_interval: float = 0.0) -> Callable[
        [Callable[[ProbeContext], Metrics]], Callable[[ProbeContext], Metrics]]:
    """Add a probe function to the registry under a slug name (the wire's probe key).

    ``needs(config)`` says whether the configuration gives the probe anything to do; when it
    does not, the probe is off unless ``probes.<name>.enabled`` turns it on explicitly.
    """
    if not wire.is_slug(name):
        raise ValueError(f"probe name {name!r} is not a slug")

    def decorate(fn: Callable[[ProbeContext], Metrics]) -> Callable[[ProbeContext], Metrics]:
        if name in REGISTRY:
            raise ValueError(f"probe {name!r} registered twice")
        REGISTRY[name] = Probe(name, fn, default_enabled, needs, default_interval)
        return fn

    return decorate


def load_all() -> dict[str, Probe]:
    """Import every probe module so each registers itself; returns the registry."""
    for module in MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return REGISTRY


def enabled_probes(config: AgentConfig) -> dict[str, float]:
    """Name -> interval of every probe enabled by default or by configuration."""
    load_all()
    out: dict[str, float] = {}
    for name, probe in sorted(REGISTRY.items()):
        setting = config.probes.get(name)
        enabled = probe.default_enabled and (probe.needs is None or probe.needs(config))
        interval = max(config.interval_seconds, probe.default_interval)
        if setting is not None:
            enabled = enabled if setting.enabled is None else setting.enabled
            interval = interval if setting.interval_seconds is None else setting.interval_seconds
        if enabled:
            out[name] = interval
    return out


def label(value: str) -> str:
    """Make an OS-provided name a valid label value (no control chars, bounded length)."""
    cleaned = _CONTROL.sub("?", value)[: wire.MAX_LABEL_VALUE_CHARS]
    return cleaned or "?"


def short_error(err: BaseException | str) -> str:
    """An error text the wire accepts: one line, at most MAX_TEXT_CHARS."""
    text = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    return _CONTROL.sub(" ", text)[: wire.MAX_TEXT_CHARS]


def run_probe(probe: Probe, ctx: ProbeContext, interval: float) -> wire.ProbeReport:
    """Run one probe, timed; never raises, whatever the probe does."""
    error: str | None = None
    start = time.perf_counter()
    try:
        metrics = probe.collect(ctx)
    except ProbePartial as partial:
        metrics, error = partial.metrics, short_error(partial.error)
    except Exception as err:
        metrics, error = {}, short_error(err)
    duration = time.perf_counter() - start
    try:
        metrics = _checked(probe.name, metrics, duration, interval)
    except (TypeError, ValueError) as err:
        return wire.ProbeReport(False, duration, interval, short_error(f"invalid output: {err}"))
    return wire.ProbeReport(error is None, duration, interval, error, metrics)


def collect_reports(probes: Iterable[Probe], ctx: ProbeContext,
                    intervals: dict[str, float]) -> dict[str, wire.ProbeReport]:
    """Run several probes one after the other; one failing never stops the others."""
    return {p.name: run_probe(p, ctx, intervals[p.name]) for p in probes}


def _checked(name: str, metrics: Any, duration: float, interval: float) -> Metrics:
    """Check a probe's output against the catalogue; returns it as the wire would decode it."""
    if not isinstance(metrics, dict):
        raise TypeError(f"probe returned {type(metrics).__name__}, not a dict")
    for metric, rows in metrics.items():
        spec = wire.CATALOGUE.get(metric)
        if spec is None:
            raise ValueError(f"metric {str(metric)[:64]!r} is not in the wire catalogue")
        if not isinstance(rows, list):
            raise TypeError(f"{metric} rows are not a list")
        for row in rows:
            if (not isinstance(row, tuple) or len(row) != 2 or not isinstance(row[0], tuple)
                    or len(row[0]) != len(spec.labels)):
                raise ValueError(f"{metric} row {str(row)[:64]} is not "
                                 f"(({len(spec.labels)} label values), value)")
    # The wire's own decoder checks the rest (label text, duplicates, finite, counters >= 0).
    report = wire.ProbeReport(True, duration, interval, None, metrics)
    message = dataclasses.replace(_PROBE_CHECK, probes={name: report})
    decoded = cast(wire.Telemetry, wire.decode(wire.encode(message), wire.Kind.TELEMETRY))
    return decoded.probes[name].metrics
