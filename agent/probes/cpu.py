"""CPU time per mode (raw cumulative seconds) and the logical core count."""

from __future__ import annotations

from agent.probes import Metrics, ProbeContext, register


@register("cpu")
def collect(ctx: ProbeContext) -> Metrics:
    # Every field the platform has (Linux: iowait, steal...; Windows: interrupt, dpc).
    times = ctx.ps.cpu_times()
    metrics: Metrics = {
        "cpu_seconds_total": [((mode,), float(getattr(times, mode))) for mode in times._fields],
    }
    cores = ctx.ps.cpu_count(logical=True)
    if cores:  # psutil returns None when the platform cannot tell
        metrics["cpu_logical_cores"] = [((), float(cores))]
    return metrics
