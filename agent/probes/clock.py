"""The PC's clock against the site's NTP server, measured with one SNTP query per run.

Recordings and test deadlines are stamped with this clock, so a drifting PC is a fault of
the room: an offset beyond ``clock.max_offset_seconds`` makes the probe ``ok=False`` with
e.g. "clock off by +3.20 s from ntp.example (limit 0.50 s)" while still sending the
measured rows. A server that does not answer (or refuses: Kiss-o'-Death, unsynchronised)
fails the probe with the reason, and no rows: there is nothing measured to send.
"""

from __future__ import annotations

from agent import clock as sntp
from agent.probes import Metrics, ProbeContext, ProbePartial, label, register


def offset_fault(offset: float, server: str, limit: float) -> str | None:
    """The technician's sentence for an offset beyond the limit; None when within it."""
    if abs(offset) <= limit:
        return None
    return f"clock off by {offset:+.2f} s from {server} (limit {limit:.2f} s)"


@register("clock", needs=lambda config: config.clock is not None, default_interval=60.0)
def collect(ctx: ProbeContext) -> Metrics:
    config = ctx.config.clock
    if config is None:  # run without a clock section (enabled by hand): idle, like link
        return {}
    result = sntp.query(config.server, config.port, config.timeout_seconds, clock=ctx.clock)
    server = (label(config.server),)
    metrics: Metrics = {
        "clock_offset_seconds": [(server, result.offset)],
        "clock_round_trip_seconds": [(server, result.delay)],
        "clock_server_stratum": [(server, float(result.stratum))],
        "clock_offset_limit_seconds": [((), config.max_offset_seconds)],
    }
    fault = offset_fault(result.offset, config.server, config.max_offset_seconds)
    if fault is not None:
        raise ProbePartial(metrics, fault)
    return metrics
