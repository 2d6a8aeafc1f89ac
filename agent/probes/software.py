"""Whether each configured conference client is running, how many processes, which version.

One scan of the process table per run. A process belongs to a software when its name, or
the file name of its executable, equals one of the configured process names, compared
case-insensitively with a trailing ".exe" ignored on both sides (so "Zoom.exe" in the
config matches the Linux "zoom" and vice versa). The executable's name is checked too
because Linux cuts a process name to 15 characters and a process may rename itself. A
zombie (exited, not yet reaped by its parent) does not count as running.

A configured software that is not running is *not* a probe failure: between sessions the
client is normally closed, and a probe failing in every commune all week would teach the
NOC to ignore red. ``software_running 0`` says it; the readiness test before a session
(and the alert rules near a deadline) require it running.

The version comes from ``version_file`` (its first line), when configured. The version is
information: a missing file (normal on some installs), an unreadable, empty or
non-regular one gives no ``software_version_info`` row and never fails the probe.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from typing import Any

import psutil

from agent import wire
from agent.config import SoftwareConfig
from agent.probes import Metrics, ProbeContext, label, register

_VERSION_READ_BYTES = 4096  # a version file is one short line; never slurp a huge file
_PATH_SEPARATORS = re.compile(r"[\\/]")  # Windows and POSIX paths alike


def normalized(process_name: str) -> str:
    """The form names are compared in: trimmed, case-folded, without a ".exe" suffix."""
    name = process_name.strip().casefold()
    return name[:-4] if name.endswith(".exe") else name


def _names_of(info: dict[str, Any]) -> set[str]:
    """The names a process goes by: its name and its executable's file name."""
    names = set()
    if isinstance(info.get("name"), str) and info["name"]:
        names.add(normalized(info["name"]))
    exe = info.get("exe")
    if isinstance(exe, str) and exe:
        names.add(normalized(_PATH_SEPARATORS.split(exe)[-1]))
    return names


def count_processes(ps: Any, software: tuple[SoftwareConfig, ...]) -> dict[str, int]:
    """Software name -> running processes, from a single pass over the process table."""
    wanted: dict[str, list[str]] = {}  # normalized process name -> software names
    for sw in software:
        for process in sw.processes:
            owners = wanted.setdefault(normalized(process), [])
            if sw.name not in owners:
                owners.append(sw.name)
    counts = dict.fromkeys((sw.name for sw in software), 0)
    for proc in ps.process_iter(["name", "exe", "status"]):
        try:
            info = proc.info
            # A process that exited between the listing and the read has nothing to say.
            names = _names_of(info)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if info.get("status") == psutil.STATUS_ZOMBIE:  # exited, not yet reaped: not running
            continue
        matched = {owner for name in names for owner in wanted.get(name, ())}
        for owner in matched:
            counts[owner] += 1
    return counts


def read_version(path: str) -> str | None:
    """The first line of a version file as a label value; None when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device would block or lie
            return None
        data = os.read(fd, _VERSION_READ_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = data.decode("utf-16", "replace")  # Windows tools like to write UTF-16
    else:
        text = data.decode("utf-8-sig", "replace")
    lines = text.splitlines()
    first = lines[0].strip() if lines else ""
    return label(first) if first else None


@register("software", needs=lambda config: bool(config.software), default_interval=30.0)
def collect(ctx: ProbeContext) -> Metrics:
    software = ctx.config.software
    if not software:  # run without a software section (enabled by hand): idle, like link
        return {}
    counts = count_processes(ctx.ps, software)
    running: list[wire.Row] = []
    processes: list[wire.Row] = []
    versions: list[wire.Row] = []
    for sw in software:
        name = (sw.name,)
        running.append((name, 1.0 if counts[sw.name] else 0.0))
        processes.append((name, float(counts[sw.name])))
        version = read_version(sw.version_file) if sw.version_file else None
        if version is not None:
            versions.append(((sw.name, version), 1.0))
    return {"software_running": running, "software_processes": processes,
            "software_version_info": versions}
