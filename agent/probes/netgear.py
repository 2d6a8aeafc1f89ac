"""The room's routers and switches over SNMP IF-MIB: uptime and each watched interface.

Several devices per agent, each read on its own: one that does not answer is named in
the probe's error (``ProbePartial``) while the others' rows are still sent, and so is a
configured interface the device does not have (a renamed or re-cabled port).
"""

from __future__ import annotations

from agent.probes import Metrics, ProbeContext, ProbePartial, register, short_error


@register("netgear", needs=lambda config: bool(config.network_gear),
          default_interval=30.0)
def collect(ctx: ProbeContext) -> Metrics:
    # Imported here so an agent without network gear never loads pysnmp.
    from agent import netgear

    readings: list[netgear.GearReading] = []
    errors: list[str] = []
    for gear in ctx.config.network_gear:
        try:
            reading = netgear.read(gear)
        except Exception as err:  # one device's fault is reported, never fatal to the others
            errors.append(f"{gear.name}: {short_error(err)}")
            continue
        readings.append(reading)
        missing = reading.missing_text()
        if missing is not None:
            errors.append(f"{gear.name}: {missing}")
    metrics = netgear.rows(readings)
    if errors:
        raise ProbePartial(metrics, "; ".join(errors))
    return metrics
