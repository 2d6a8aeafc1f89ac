"""Boot time as a Unix timestamp: the collector derives uptime and spots reboots."""

from __future__ import annotations

from agent.probes import Metrics, ProbeContext, register


@register("uptime")
def collect(ctx: ProbeContext) -> Metrics:
    return {"boot_time_seconds": [((), float(ctx.ps.boot_time()))]}
