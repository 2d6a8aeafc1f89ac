"""Size and free space of the physical filesystems, each tagged with its role in the room.

``recording_volume`` and ``backup_volume`` are paths *on* those volumes: the filesystem
containing the path gets the role (so a directory works as well as a mountpoint). Point
them at a directory inside the volume (``/mnt/rec/recordings``), not at the bare
mountpoint: an unmounted volume then shows as a missing path, which this probe reports as
``ok=False`` with e.g. "backup volume /mnt/backup/bw not mounted" while still sending
every other filesystem (see ``ProbePartial``). On a shared filesystem ``recording`` wins
over ``backup``, which wins over ``system``.
"""

from __future__ import annotations

import os

from agent import wire
from agent.probes import Metrics, ProbeContext, label, register


def _is_system(mountpoint: str) -> bool:
    if os.name == "nt":
        drive = os.environ.get("SYSTEMDRIVE", "C:")
        return os.path.normcase(mountpoint.rstrip("\\/")) == os.path.normcase(drive)
    return mountpoint == "/"


def mount_of(path: str) -> str | None:
    """The mountpoint of the filesystem holding ``path``; None when the path is missing."""
    if not os.path.exists(path):
        return None
    current = os.path.realpath(path)
    while not os.path.ismount(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


@register("disk")
def collect(ctx: ProbeContext) -> Metrics:
    roles: dict[str, str] = {}
    for part in ctx.ps.disk_partitions(all=False):
        roles.setdefault(part.mountpoint, "system" if _is_system(part.mountpoint) else "other")
    known = {os.path.normcase(mp): mp for mp in roles}
    # Later wins: recording over backup when both live on one filesystem.
    for role, path in (("backup", ctx.config.backup_volume),
                       ("recording", ctx.config.recording_volume)):
        if path is None:
            continue
        mountpoint = mount_of(path)
        if mountpoint is None:
            continue  # the storage probe names it
        # A network or virtual filesystem is not among the physical ones: add it.
        roles[known.get(os.path.normcase(mountpoint), mountpoint)] = role
    size: list[wire.Row] = []
    avail: list[wire.Row] = []
    for mountpoint, role in sorted(roles.items()):
        try:
            usage = ctx.ps.disk_usage(mountpoint)
        except OSError:
            continue  # an empty card reader or DVD drive; the storage probe judges the room's
        labels = (label(mountpoint), role)
        size.append((labels, float(usage.total)))
        avail.append((labels, float(usage.free)))
    return {"filesystem_size_bytes": size, "filesystem_avail_bytes": avail}
