"""The storage probe on this machine's real filesystems: recording room and backup disk."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from agent import wire
from agent.config import AgentConfig, SessionPlan, SpoolConfig, StorageConfig
from agent.probes import ProbeContext, enabled_probes, load_all, run_probe
from agent.probes.storage import recording_seconds_left


def make_config(tmp_path: Path, **overrides: object) -> AgentConfig:
    return AgentConfig(site="dt-01", province="dong-thap",
                       spool=SpoolConfig(path=tmp_path / "spool.db"), **overrides)  # type: ignore[arg-type]


def run(ctx: ProbeContext) -> wire.ProbeReport:
    return run_probe(load_all()["storage"], ctx, 60.0)


def test_hours_left_follow_the_bitrate() -> None:
    """1 GB at 4 Mbit/s is 2,000 s; at 8 Mbit/s half of it."""
    assert recording_seconds_left(1e9, 4.0) == pytest.approx(2000.0)
    assert recording_seconds_left(1e9, 8.0) == pytest.approx(1000.0)


def test_recording_volume_with_room_passes(tmp_path: Path) -> None:
    """A tiny bitrate and a 1-minute session: this machine's free space holds it."""
    rec = tmp_path / "recordings"
    rec.mkdir()
    config = make_config(tmp_path, recording_volume=str(rec),
                         storage=StorageConfig(recording_bitrate_mbps=0.01),
                         session=SessionPlan(length_seconds=60.0))
    report = run(ProbeContext(config))
    assert report.ok, report.error
    metrics = {k: dict(v) for k, v in report.metrics.items()}
    free = psutil.disk_usage(str(rec)).free
    # Free space moves as other programs write: a gigabyte of slack.
    assert metrics["recording_seconds_left"][()] == pytest.approx(free * 8 / 1e4, abs=8e9 / 1e4)
    assert metrics["volume_mounted"] == {("recording",): 1.0}
    assert metrics["planned_session_seconds"][()] == 60.0
    assert metrics["recording_bitrate_bits_per_second"][()] == 1e4


def test_recording_volume_too_small_for_the_session_fails_with_rows(tmp_path: Path) -> None:
    """A bitrate so high that the free space holds less than the 3 h session."""
    rec = tmp_path / "recordings"
    rec.mkdir()
    free = psutil.disk_usage(str(rec)).free
    bitrate = free * 8 / 3600 / 1e6  # the free space holds about one hour
    config = make_config(tmp_path, recording_volume=str(rec),
                         storage=StorageConfig(recording_bitrate_mbps=bitrate))
    report = run(ProbeContext(config))
    assert not report.ok
    assert report.error is not None and "session needs 3.0 h" in report.error
    left = dict(report.metrics["recording_seconds_left"])[()]
    assert 3000 < left < 4200  # about an hour: the row is still sent


def test_unmounted_backup_and_unplugged_disk_are_named(tmp_path: Path) -> None:
    """Backup volume path missing and the backup device node absent: both in the error."""
    (tmp_path / "dev" / "disk" / "by-label").mkdir(parents=True)
    config = make_config(tmp_path, backup_volume=str(tmp_path / "media" / "backup" / "bw"),
                         storage=StorageConfig(backup_device="/dev/disk/by-label/BW-BACKUP"))
    report = run(ProbeContext(config, fs_root=str(tmp_path)))
    assert not report.ok
    assert report.error is not None
    assert f"backup volume {tmp_path}/media/backup/bw not mounted" in report.error
    assert "backup disk /dev/disk/by-label/BW-BACKUP not plugged in" in report.error
    metrics = {k: dict(v) for k, v in report.metrics.items()}
    assert metrics["volume_mounted"] == {("backup",): 0.0}
    assert metrics["volume_device_present"] == {("backup",): 0.0}


def test_plugged_backup_device_is_seen(tmp_path: Path) -> None:
    """The device node (a by-label symlink on Linux) exists under the injected root."""
    labels = tmp_path / "dev" / "disk" / "by-label"
    labels.mkdir(parents=True)
    os.symlink("../../sdb1", labels / "BW-BACKUP")
    (tmp_path / "dev" / "sdb1").touch()
    storage = StorageConfig(backup_device="/dev/disk/by-label/BW-BACKUP")
    config = make_config(tmp_path, storage=storage)
    report = run(ProbeContext(config, fs_root=str(tmp_path)))
    assert report.ok, report.error
    assert dict(report.metrics["volume_device_present"]) == {("backup",): 1.0}


def test_unreadable_recording_volume_is_a_clear_failure(tmp_path: Path) -> None:
    """disk_usage raising (a dead NFS mount, an I/O error) names the volume; no crash."""
    rec = tmp_path / "recordings"
    rec.mkdir()

    class BrokenDisk:
        def __getattr__(self, name: str) -> object:
            return getattr(psutil, name)

        @staticmethod
        def disk_usage(path: str) -> object:
            raise OSError(5, "Input/output error", path)

    config = make_config(tmp_path, recording_volume=str(rec))
    report = run(ProbeContext(config, ps=BrokenDisk(), process=psutil.Process()))
    assert not report.ok
    assert report.error is not None and "recording volume" in report.error
    assert "Input/output error" in report.error
    assert dict(report.metrics["volume_mounted"]) == {("recording",): 1.0}


def test_storage_is_off_without_volumes(tmp_path: Path) -> None:
    """Nothing configured: the probe does not run (no empty report every interval)."""
    config = make_config(tmp_path)
    assert "storage" not in enabled_probes(config)
    assert "storage" in enabled_probes(replace(config, recording_volume=str(tmp_path)))
