"""Physical memory and swap, in bytes."""

from __future__ import annotations

from agent.probes import Metrics, ProbeContext, register


@register("memory")
def collect(ctx: ProbeContext) -> Metrics:
    vm = ctx.ps.virtual_memory()
    swap = ctx.ps.swap_memory()
    return {
        "memory_total_bytes": [((), float(vm.total))],
        "memory_available_bytes": [((), float(vm.available))],
        "swap_total_bytes": [((), float(swap.total))],
        "swap_used_bytes": [((), float(swap.used))],
    }
