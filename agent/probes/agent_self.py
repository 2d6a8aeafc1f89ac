"""The agent's own footprint and spool backlog: is the monitor itself healthy?

``agent_spool_messages`` and ``agent_spool_bytes`` are the backlog: messages the broker
has not acknowledged. Acknowledged messages the spool keeps a while longer, in case the
broker loses them (``agent.spool``), are not counted: they are not waiting for the link.
"""

from __future__ import annotations

from agent.probes import Metrics, ProbeContext, register


@register("agent")
def collect(ctx: ProbeContext) -> Metrics:
    cpu = ctx.process.cpu_times()
    metrics: Metrics = {
        "agent_resident_memory_bytes": [((), float(ctx.process.memory_info().rss))],
        "agent_cpu_seconds_total": [((), float(cpu.user + cpu.system))],
    }
    if ctx.spool_stats is not None:  # `sample` runs without a spool
        messages, size, dropped = ctx.spool_stats()
        metrics["agent_spool_messages"] = [((), float(messages))]
        metrics["agent_spool_bytes"] = [((), float(size))]
        metrics["agent_spool_dropped_total"] = [((), float(dropped))]
    return metrics
