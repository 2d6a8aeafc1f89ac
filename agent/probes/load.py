"""Load averages (psutil emulates them on Windows)."""

from __future__ import annotations

from agent.probes import Metrics, ProbeContext, register


@register("load")
def collect(ctx: ProbeContext) -> Metrics:
    load1, load5, load15 = ctx.ps.getloadavg()
    return {
        "load1": [((), float(load1))],
        "load5": [((), float(load5))],
        "load15": [((), float(load15))],
    }
