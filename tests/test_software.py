"""The software probe against this machine's real process table, plus injected races.

Real processes with distinctive names are copies of ``sleep`` started by the test; the
races psutil can raise (a process gone, or not ours to read) come from a small fake.
"""

from __future__ import annotations

import codecs
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent import wire
from agent.config import AgentConfig, parse_config
from agent.probes import ProbeContext, enabled_probes, load_all, run_probe
from agent.probes.software import count_processes, normalized, read_version

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="starts ELF copies of sleep")


def make_config(tmp_path: Path, software: list[dict[str, Any]] | None = None) -> AgentConfig:
    raw: dict[str, Any] = {"site": "hn-01", "province": "ha-noi", "spool": {"path": "spool.db"}}
    if software is not None:
        raw["software"] = software
    return parse_config(raw, base_dir=tmp_path)


def run(config: AgentConfig, ps: Any = psutil) -> wire.ProbeReport:
    ctx = ProbeContext(config, ps=ps, process=psutil.Process())
    return run_probe(load_all()["software"], ctx, 10.0)


def rows(report: wire.ProbeReport, metric: str) -> dict[tuple[str, ...], float]:
    return dict(report.metrics[metric])


class Spawner:
    """Starts copies of ``sleep`` under a chosen file name; kills them all at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, name: str) -> subprocess.Popen[bytes]:
        binary = self.folder / name
        if not binary.exists():
            sleep = shutil.which("sleep")
            assert sleep is not None
            shutil.copy(sleep, binary)
        # Popen returns once exec has succeeded, so the process has its name already.
        child = subprocess.Popen([str(binary), "300"])
        self.children.append(child)
        return child

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait()


@pytest.fixture
def spawner(tmp_path: Path) -> Iterator[Spawner]:
    folder = tmp_path / "bin"
    folder.mkdir()
    s = Spawner(folder)
    yield s
    s.close()


def unique(stem: str) -> str:
    """A process name no other test run on this machine uses (pid of the test run)."""
    return f"{stem}{os.getpid()}"


def test_probe_is_off_without_software(tmp_path: Path) -> None:
    """No software section: the probe has nothing to look for and is off."""
    assert "software" not in enabled_probes(make_config(tmp_path))
    config = make_config(tmp_path, [{"name": "zoom", "processes": "zoom"}])
    assert "software" in enabled_probes(config)


@linux_only
def test_real_process_counted_then_missed_when_killed(tmp_path: Path,
                                                      spawner: Spawner) -> None:
    """A running "zc<pid>" counts for software zoom even when configured as "ZC<pid>.EXE"
    (case and .exe ignored); a second one makes 2; with both killed and reaped the probe
    is still ok (a closed client between sessions is normal) and sends running=0."""
    name = unique("zc")
    config = make_config(tmp_path, [{"name": "zoom", "processes": [f"{name.upper()}.EXE"]}])
    first = spawner.start(name)
    report = run(config)
    assert report.ok, report.error
    assert rows(report, "software_running") == {("zoom",): 1.0}
    assert rows(report, "software_processes") == {("zoom",): 1.0}
    assert report.metrics["software_version_info"] == []

    second = spawner.start(name)
    assert rows(run(config), "software_processes") == {("zoom",): 2.0}

    for child in (first, second):
        child.kill()
        child.wait()
    report = run(config)
    assert report.ok, report.error
    assert rows(report, "software_running") == {("zoom",): 0.0}
    assert rows(report, "software_processes") == {("zoom",): 0.0}


@linux_only
def test_long_process_name_beyond_the_kernels_15_chars(tmp_path: Path,
                                                       spawner: Spawner) -> None:
    """Linux keeps only 15 characters of a process name; a longer configured name still
    matches (psutil's full name and the executable's file name)."""
    name = unique("bridgewatch-conference-client-")
    assert len(name) > 15
    config = make_config(tmp_path, [{"name": "client", "processes": name}])
    spawner.start(name)
    report = run(config)
    assert report.ok, report.error
    assert rows(report, "software_processes") == {("client",): 1.0}


@linux_only
def test_zombie_is_not_running(tmp_path: Path, spawner: Spawner) -> None:
    """A process killed but not yet reaped by its parent stays in the table as a zombie:
    it is not running, so it must not count."""
    name = unique("zz")
    config = make_config(tmp_path, [{"name": "zoom", "processes": name}])
    child = spawner.start(name)
    os.kill(child.pid, signal.SIGKILL)
    zombie = psutil.Process(child.pid)
    # Wait (without reaping) until the kernel has turned it into a zombie.
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    assert zombie.status() == psutil.STATUS_ZOMBIE
    report = run(config)
    assert rows(report, "software_processes") == {("zoom",): 0.0}
    assert rows(report, "software_running") == {("zoom",): 0.0}


@linux_only
def test_several_software_one_missing(tmp_path: Path, spawner: Spawner) -> None:
    """Two software, one running under either of its names, one not at all: rows for both,
    running 1 and 0."""
    alt = unique("tm")
    config = make_config(tmp_path, [
        {"name": "teams", "processes": [unique("teams-main"), alt]},
        {"name": "zoom", "processes": unique("zm")},
    ])
    spawner.start(alt)
    report = run(config)
    assert report.ok, report.error
    assert rows(report, "software_running") == {("teams",): 1.0, ("zoom",): 0.0}


def test_version_file_first_line(tmp_path: Path) -> None:
    """The version is the first line of version_file, stripped; other lines are ignored.
    The version is reported even while the software does not run."""
    version_file = tmp_path / "version.txt"
    version_file.write_text("  5.17.11 (3835)  \nbuilt by ci\n")
    config = make_config(tmp_path, [{"name": "zoom", "processes": unique("nothere"),
                                     "version_file": str(version_file)}])
    report = run(config)
    assert rows(report, "software_running") == {("zoom",): 0.0}
    assert rows(report, "software_version_info") == {("zoom", "5.17.11 (3835)"): 1.0}


@pytest.mark.parametrize("content", [
    codecs.BOM_UTF8 + b"6.0.2\r\n",
    codecs.BOM_UTF16_LE + "6.0.2\r\n".encode("utf-16-le"),
])
def test_version_file_with_byte_order_mark(tmp_path: Path, content: bytes) -> None:
    """Windows tools write version files with a BOM, in UTF-8 or UTF-16: same version."""
    path = tmp_path / "version"
    path.write_bytes(content)
    assert read_version(str(path)) == "6.0.2"


def test_version_with_control_characters_is_sanitized(tmp_path: Path) -> None:
    """Control characters and an overlong line cannot reach the wire as a label value."""
    path = tmp_path / "version"
    path.write_bytes(b"1.0\x1b[31m" + b"x" * 300 + b"\n")
    version = read_version(str(path))
    assert version is not None
    assert version.startswith("1.0?[31m")
    assert len(version) == wire.MAX_LABEL_VALUE_CHARS


@pytest.mark.parametrize("kind", ["missing", "empty", "directory", "fifo"])
def test_unusable_version_file_gives_no_row_and_no_fault(tmp_path: Path, kind: str) -> None:
    """A missing version file is normal on some installs; empty, a directory or a FIFO
    (which would block a plain open) is no better. None of them is a fault of the room:
    no version row, and the probe's ok depends only on the software running."""
    path = tmp_path / "version"
    if kind == "empty":
        path.write_text("\n\n")
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs here")
        os.mkfifo(path)
    config = make_config(tmp_path, [{"name": "me", "processes": psutil.Process().name(),
                                     "version_file": str(path)}])
    report = run(config)
    assert report.ok, report.error
    assert report.metrics["software_version_info"] == []
    assert rows(report, "software_running") == {("me",): 1.0}


# --- races and odd process tables, through an injected psutil ---------------------------


class FakeProc:
    def __init__(self, info: dict[str, Any] | None = None,
                 error: Exception | None = None) -> None:
        self._info = info
        self._error = error

    @property
    def info(self) -> dict[str, Any]:
        if self._error is not None:
            raise self._error
        assert self._info is not None
        return self._info


class FakePs:
    """Just enough psutil for the probe: a fixed process table, and a count of scans."""

    def __init__(self, procs: list[FakeProc]) -> None:
        self.procs = procs
        self.scans: list[list[str]] = []

    def process_iter(self, attrs: list[str]) -> Iterator[FakeProc]:
        self.scans.append(attrs)
        yield from self.procs


def test_processes_vanishing_or_denied_mid_scan(tmp_path: Path) -> None:
    """Processes come and go: one gone (NoSuchProcess), one not ours (AccessDenied), one a
    zombie (ZombieProcess) are skipped, the rest counted, in a single scan."""
    ps = FakePs([
        FakeProc(error=psutil.NoSuchProcess(101, "Zoom.exe")),
        FakeProc({"name": "Zoom.exe", "exe": None, "status": "running"}),
        FakeProc(error=psutil.AccessDenied(102, "Zoom.exe")),
        FakeProc(error=psutil.ZombieProcess(103, "Zoom.exe")),
        FakeProc({"name": "zoom", "exe": "/opt/zoom/zoom", "status": "sleeping"}),
        FakeProc({"name": "bash", "exe": "/usr/bin/bash", "status": "sleeping"}),
    ])
    config = make_config(tmp_path, [{"name": "zoom", "processes": "zoom"}])
    report = run(config, ps)
    assert report.ok, report.error
    assert rows(report, "software_processes") == {("zoom",): 2.0}
    assert len(ps.scans) == 1


def test_windows_executable_path_matches(tmp_path: Path) -> None:
    """A process whose name is unreadable (None) but whose exe is a Windows path matches
    on the executable's file name."""
    ps = FakePs([FakeProc({"name": None, "exe": r"C:\Program Files\Zoom\bin\Zoom.exe",
                           "status": "running"})])
    config = make_config(tmp_path, [{"name": "zoom", "processes": "zoom"}])
    assert rows(run(config, ps), "software_running") == {("zoom",): 1.0}


def test_one_process_serving_two_software_counts_for_both(tmp_path: Path) -> None:
    """Two configured software may share a process name (a common helper): each counts it,
    and it is counted once per software even when listed twice."""
    ps = FakePs([FakeProc({"name": "cefhelper", "exe": None, "status": "running"})])
    software = [{"name": "zoom", "processes": ["CefHelper", "cefhelper.exe"]},
                {"name": "teams", "processes": ["cefhelper"]}]
    assert count_processes(ps, make_config(tmp_path, software).software) == {
        "zoom": 1, "teams": 1}


def test_name_normalization() -> None:
    """Case, surrounding blanks and one trailing .exe do not matter; inner dots do."""
    assert normalized(" Zoom.EXE ") == normalized("zoom") == "zoom"
    assert normalized("ms-teams.exe") == "ms-teams"
    assert normalized("app.exe.exe") == "app.exe"
    assert normalized("zoom.sh") == "zoom.sh"
