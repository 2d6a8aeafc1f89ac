"""Link state, negotiated speed and raw traffic/error counters per interface (no loopback)."""

from __future__ import annotations

from typing import Any

from agent.probes import Metrics, ProbeContext, label, register

MBIT = 1_000_000
# psutil name of each counter -> the wire metric it feeds.
COUNTERS = {
    "bytes_recv": "network_receive_bytes_total",
    "bytes_sent": "network_transmit_bytes_total",
    "errin": "network_receive_errors_total",
    "errout": "network_transmit_errors_total",
    "dropin": "network_receive_drop_total",
    "dropout": "network_transmit_drop_total",
}


def _is_loopback(name: str, stats: Any) -> bool:
    # psutil >= 5.9.3 reports interface flags on POSIX; names cover Windows and older psutil.
    flags = getattr(stats, "flags", "") if stats is not None else ""
    return ("loopback" in flags.split(",") or name == "lo"
            or name.lower().startswith("loopback"))


@register("network")
def collect(ctx: ProbeContext) -> Metrics:
    stats = ctx.ps.net_if_stats()
    io = ctx.ps.net_io_counters(pernic=True)
    metrics: Metrics = {"network_up": [], "network_speed_bits_per_second": []}
    metrics.update({metric: [] for metric in COUNTERS.values()})
    for name in sorted(set(stats) | set(io)):
        st = stats.get(name)
        if _is_loopback(name, st):
            continue
        labels = (label(name),)
        if st is not None:
            metrics["network_up"].append((labels, 1.0 if st.isup else 0.0))
            # psutil gives Mbit/s, 0 when unknown; the wire wants bits/s.
            metrics["network_speed_bits_per_second"].append((labels, float(st.speed) * MBIT))
        counters = io.get(name)
        if counters is not None:
            for field, metric in COUNTERS.items():
                metrics[metric].append((labels, float(getattr(counters, field))))
    return metrics

