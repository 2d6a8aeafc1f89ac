"""Every configured UPS, each read over its own protocol (NUT or SNMP), one row set.

One unreachable UPS must not hide the others: each is read on its own and a failure is
named in the probe's error (``ProbePartial``) while the others' rows are still sent. A
UPS that is read fine but would not carry the session (on battery, runtime short of the
planned session plus margin, failed self-test) is a fault too, said the same way.
"""

from __future__ import annotations

from agent.config import UpsConfig
from agent.probes import Metrics, ProbeContext, ProbePartial, register, short_error
from agent.ups import model


def read(config: UpsConfig) -> model.UpsReading:
    """Read one UPS with the reader its configuration names."""
    # Imported here so an agent without UPSes never loads pysnmp.
    if config.nut is not None:
        from agent.ups import nut

        return nut.read(config)
    from agent.ups import snmp

    return snmp.read(config)


@register("ups", needs=lambda config: bool(config.ups))
def collect(ctx: ProbeContext) -> Metrics:
    plan = ctx.config.session
    required = plan.length_seconds + plan.ups_margin_seconds
    readings: list[model.UpsReading] = []
    errors: list[str] = []
    for ups in ctx.config.ups:
        try:
            reading = read(ups)
        except Exception as err:  # one UPS's fault is reported, never fatal to the others
            errors.append(f"{ups.name}: {short_error(err)}")
            continue
        readings.append(reading)
        problem = model.assess(reading, required)
        if problem is not None:
            errors.append(problem)
    metrics: Metrics = model.rows(readings)
    metrics["ups_runtime_required_seconds"] = [((), required)]
    if errors:
        raise ProbePartial(metrics, "; ".join(errors))
    return metrics
