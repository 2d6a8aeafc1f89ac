"""Is there room to record the session, and is the backup disk there?

The regulations ask for a PC with large storage (it keeps the recordings) and an external
backup disk. This probe turns the configured volumes into the questions a technician is
asked: recording volume mounted, how many hours it still holds at the session bitrate
against the planned session, backup disk plugged in and mounted. A shortfall is a fault
(``ok=False`` with the reason) and the rows are still sent.
"""

from __future__ import annotations

import os

from agent.probes import Metrics, ProbeContext, ProbePartial, register
from agent.probes.disk import mount_of


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def recording_seconds_left(avail_bytes: float, bitrate_mbps: float) -> float:
    """Seconds of recording the free space holds at the bitrate."""
    return avail_bytes * 8 / (bitrate_mbps * 1e6)


def _in_root(fs_root: str, path: str) -> str:
    return os.path.join(fs_root, path.lstrip("/")) if fs_root != "/" else path


@register("storage", needs=lambda c: bool(c.recording_volume or c.backup_volume
                                          or c.storage.backup_device), default_interval=60.0)
def collect(ctx: ProbeContext) -> Metrics:
    config = ctx.config
    bitrate = config.storage.recording_bitrate_mbps
    session = config.session.length_seconds
    metrics: Metrics = {
        "recording_bitrate_bits_per_second": [((), bitrate * 1e6)],
        "planned_session_seconds": [((), session)],
    }
    errors: list[str] = []
    mounted = metrics.setdefault("volume_mounted", [])
    for role, path in (("recording", config.recording_volume),
                       ("backup", config.backup_volume)):
        if path is None:
            continue
        is_mounted = mount_of(path) is not None
        mounted.append(((role,), float(is_mounted)))
        if not is_mounted:
            errors.append(f"{role} volume {path} not mounted")
            continue
        if role != "recording":
            continue
        try:
            avail = float(ctx.ps.disk_usage(path).free)
        except OSError as err:
            errors.append(f"recording volume {path} unreadable: {err}")
            continue
        left = recording_seconds_left(avail, bitrate)
        metrics["recording_seconds_left"] = [((), left)]
        if left < session:
            errors.append(f"recording volume holds {hours(left)} at {bitrate:g} Mbit/s, "
                          f"session needs {hours(session)}")
    if config.storage.backup_device is not None:
        device = config.storage.backup_device
        present = os.path.exists(_in_root(ctx.fs_root, device))
        metrics["volume_device_present"] = [(("backup",), float(present))]
        if not present:
            errors.append(f"backup disk {device} not plugged in")
    if not mounted:
        del metrics["volume_mounted"]
    if errors:
        raise ProbePartial(metrics, "; ".join(errors))
    return metrics
