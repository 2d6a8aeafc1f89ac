"""Probes on this real machine, checked against what the OS says when read directly."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from agent import wire
from agent.config import AgentConfig, SpoolConfig, load_config
from agent.main import telemetry_payload
from agent.probes import (
    REGISTRY,
    Metrics,
    Probe,
    ProbeContext,
    ProbePartial,
    collect_reports,
    enabled_probes,
    load_all,
    run_probe,
)
from agent.probes.disk import mount_of
from agent.spool import Spool
from deploy.localstack import free_port

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def make_config(tmp_path: Path, **overrides: str | None) -> AgentConfig:
    return AgentConfig(site="hn-01", province="ha-noi",
                       spool=SpoolConfig(path=tmp_path / "spool.db"), **overrides)


def run(name: str, ctx: ProbeContext) -> wire.ProbeReport:
    return run_probe(load_all()[name], ctx, 10.0)


def rows(report: wire.ProbeReport, metric: str) -> dict[tuple[str, ...], float]:
    return dict(report.metrics[metric])


def value(report: wire.ProbeReport, metric: str) -> float:
    return rows(report, metric)[()]


@pytest.fixture
def ctx(tmp_path: Path) -> ProbeContext:
    return ProbeContext(make_config(tmp_path))


def test_registry_has_every_probe() -> None:
    assert set(load_all()) == {"cpu", "memory", "load", "uptime", "disk", "network", "agent",
                               "link", "devices", "storage", "clock", "software", "ups",
                               "netgear"}
    # The probes of optional configuration sections are off until their section is there.
    assert {n for n, p in REGISTRY.items() if p.needs is not None} == {
        "link", "storage", "clock", "software", "ups", "netgear"}


def test_every_probe_round_trips_the_wire(ctx: ProbeContext) -> None:
    """Every probe, even one enabled by hand without its section, gives a valid report."""
    reports = collect_reports(load_all().values(), ctx, dict.fromkeys(REGISTRY, 10.0))
    assert {n: r.error for n, r in reports.items()} == dict.fromkeys(REGISTRY)
    message = wire.Telemetry("ha-noi", "hn-01", 1, 1, 1, time.time(), reports)
    decoded = wire.decode(wire.encode(message), wire.Kind.TELEMETRY, now=time.time())
    assert isinstance(decoded, wire.Telemetry)
    assert {n: r.metrics for n, r in decoded.probes.items()} == {
        n: r.metrics for n, r in reports.items()}
    enabled = enabled_probes(ctx.config)
    for name, report in reports.items():
        assert report.ok
        if name not in enabled:  # off without its section; by hand it must still not fail
            continue
        assert report.metrics
        assert all(rows_ for rows_ in report.metrics.values())


def _proc_stat_user_seconds() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[1]) / os.sysconf("SC_CLK_TCK")


@linux_only
def test_cpu_matches_proc_stat(ctx: ProbeContext) -> None:
    before = _proc_stat_user_seconds()
    report = run("cpu", ctx)
    after = _proc_stat_user_seconds()
    cpu = rows(report, "cpu_seconds_total")
    assert before - 1e-6 <= cpu[("user",)] <= after + 1e-6
    assert {("user",), ("system",), ("idle",), ("iowait",), ("steal",)} <= set(cpu)
    assert value(report, "cpu_logical_cores") == os.cpu_count()


def _meminfo_bytes(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == key:
            return int(rest.split()[0]) * 1024
    raise KeyError(key)


def test_memory_matches_psutil(ctx: ProbeContext) -> None:
    report = run("memory", ctx)
    total = value(report, "memory_total_bytes")
    assert total == psutil.virtual_memory().total
    assert value(report, "swap_total_bytes") == psutil.swap_memory().total
    assert 0 < value(report, "memory_available_bytes") <= total
    assert 0 <= value(report, "swap_used_bytes") <= value(report, "swap_total_bytes")


@linux_only
def test_memory_matches_proc_meminfo(ctx: ProbeContext) -> None:
    report = run("memory", ctx)
    assert value(report, "memory_total_bytes") == _meminfo_bytes("MemTotal")
    assert value(report, "swap_total_bytes") == _meminfo_bytes("SwapTotal")


@pytest.mark.skipif(not hasattr(os, "getloadavg"), reason="no os.getloadavg")
def test_load_matches_os(ctx: ProbeContext) -> None:
    report = run("load", ctx)
    for metric, expected in zip(("load1", "load5", "load15"), os.getloadavg(), strict=True):
        assert value(report, metric) == pytest.approx(expected, abs=0.5)


@linux_only
def test_boot_time_matches_proc_stat(ctx: ProbeContext) -> None:
    btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                 if line.startswith("btime "))
    assert value(run("uptime", ctx), "boot_time_seconds") == pytest.approx(btime, abs=1)


def test_disk_reports_system_filesystem(ctx: ProbeContext) -> None:
    report = run("disk", ctx)
    size = rows(report, "filesystem_size_bytes")
    root = "/" if os.name != "nt" else os.environ["SYSTEMDRIVE"] + "\\"
    assert size[(root, "system")] == psutil.disk_usage(root).total
    if hasattr(os, "statvfs"):
        st = os.statvfs(root)
        assert size[(root, "system")] == st.f_blocks * st.f_frsize
        avail = rows(report, "filesystem_avail_bytes")[(root, "system")]
        # free space moves as other programs write; a gigabyte of slack is plenty
        assert avail == pytest.approx(st.f_bavail * st.f_frsize, abs=2**30)
    assert set(size) == set(rows(report, "filesystem_avail_bytes"))


def test_disk_recording_volume_gets_its_role(tmp_path: Path) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    report = run("disk", ProbeContext(make_config(tmp_path, recording_volume=str(recordings))))
    assert report.ok, report.error
    mountpoint = mount_of(str(recordings))
    assert rows(report, "filesystem_size_bytes")[(mountpoint, "recording")] == \
        psutil.disk_usage(str(recordings)).total
    roles = [labels[1] for labels in rows(report, "filesystem_size_bytes")]
    assert roles.count("recording") == 1


def test_disk_lists_filesystems_without_judging_a_missing_volume(tmp_path: Path) -> None:
    """A configured backup volume that is not mounted: disk still lists the others, ok."""
    missing = str(tmp_path / "not-mounted" / "backup")
    report = run("disk", ProbeContext(make_config(tmp_path, backup_volume=missing)))
    assert report.ok, report.error
    size = rows(report, "filesystem_size_bytes")
    assert size and all(role != "backup" for _, role in size)
    assert rows(report, "filesystem_avail_bytes").keys() == size.keys()


def _sys_counter(interface: str, name: str) -> int:
    return int(Path(f"/sys/class/net/{interface}/statistics/{name}").read_text())


@linux_only
def test_network_matches_sysfs(ctx: ProbeContext) -> None:
    interfaces = sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name != "lo")
    busiest = max(interfaces, key=lambda i: _sys_counter(i, "rx_bytes"))
    before = _sys_counter(busiest, "rx_bytes")
    report = run("network", ctx)
    after = _sys_counter(busiest, "rx_bytes")
    assert report.ok, report.error
    up = rows(report, "network_up")
    assert sorted(labels[0] for labels in up) == interfaces  # loopback skipped
    for interface in interfaces:
        operstate = Path(f"/sys/class/net/{interface}/operstate").read_text().strip()
        if operstate in ("up", "down"):
            assert up[(interface,)] == (1.0 if operstate == "up" else 0.0)
    assert before <= rows(report, "network_receive_bytes_total")[(busiest,)] <= after


def test_network_speed_is_bits_per_second(ctx: ProbeContext) -> None:
    report = run("network", ctx)
    stats = psutil.net_if_stats()
    speeds = rows(report, "network_speed_bits_per_second")
    assert speeds
    for (interface,), bits in speeds.items():
        assert bits == stats[interface].speed * 1_000_000


def test_agent_probe_reads_process_and_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", 10, 3600, 10**6)
    spool.append("t", lambda seq, floor: b"x" * 100)
    me = psutil.Process()
    cpu_before = sum(me.cpu_times()[:2])
    report = run("agent", ProbeContext(make_config(tmp_path), spool_stats=spool.stats))
    assert report.ok, report.error
    assert value(report, "agent_cpu_seconds_total") >= cpu_before
    rss = me.memory_info().rss
    assert value(report, "agent_resident_memory_bytes") == pytest.approx(rss, rel=0.5)
    assert (value(report, "agent_spool_messages"), value(report, "agent_spool_bytes"),
            value(report, "agent_spool_dropped_total")) == (1, 100, 0)


def test_raising_probe_fails_alone(ctx: ProbeContext) -> None:
    def boom(ctx: ProbeContext) -> Metrics:
        raise RuntimeError("sensor on fire\nsecond line " + "x" * 500)

    probes = [Probe("boom", boom), load_all()["memory"]]
    reports = collect_reports(probes, ctx, {"boom": 10.0, "memory": 10.0})
    assert not reports["boom"].ok and reports["boom"].metrics == {}
    error = reports["boom"].error
    assert error is not None and error.startswith("RuntimeError: sensor on fire second line")
    assert len(error) == wire.MAX_TEXT_CHARS
    assert reports["memory"].ok and reports["memory"].metrics


@pytest.mark.parametrize(("metrics", "why"), [
    ({"no_such_metric": [((), 1.0)]}, "not in the wire catalogue"),
    ({"load1": [(("extra",), 1.0)]}, "label values"),
    ({"network_up": [("eth0", 1.0)]}, "label values"),
    ({"load1": [((), math.nan)]}, "not JSON compliant"),
    ({"cpu_seconds_total": [(("user",), -1.0)]}, "out_of_range"),
    ({"network_up": [(("eth0",), 1.0), (("eth0",), 0.0)]}, "repeats a label set"),
    ({"network_up": [(("",), 1.0)]}, "bad_label"),
    ([], "not a dict"),
])
def test_invalid_probe_output_fails_the_probe(ctx: ProbeContext, metrics: object,
                                              why: str) -> None:
    report = run_probe(Probe("bad", lambda _: metrics), ctx, 10.0)
    assert not report.ok
    assert report.metrics == {}
    assert report.error is not None and why in report.error


def test_partial_result_keeps_rows(ctx: ProbeContext) -> None:
    def partial(ctx: ProbeContext) -> Metrics:
        raise ProbePartial({"load1": [((), 0.5)]}, "half of it")

    report = run_probe(Probe("partial", partial), ctx, 5.0)
    assert (report.ok, report.error) == (False, "half of it")
    assert report.metrics == {"load1": [((), 0.5)]}
    assert report.interval_seconds == 5.0 and report.duration_seconds >= 0


def test_oversized_telemetry_sheds_the_biggest_probe(tmp_path: Path) -> None:
    huge = {metric: [((f"if-{i:03d}-" + "x" * 100,), float(i)) for i in range(200)]
            for metric in ("network_up", "network_receive_bytes_total",
                           "network_transmit_bytes_total", "network_receive_errors_total")}
    reports = {"network": wire.ProbeReport(True, 0.01, 10.0, None, huge),
               "load": wire.ProbeReport(True, 0.01, 10.0, None, {"load1": [((), 0.5)]})}
    payload = telemetry_payload(make_config(tmp_path), 1, 1, 1, time.time(), reports)
    assert len(payload) <= wire.MAX_PAYLOAD_BYTES
    decoded = wire.decode(payload, wire.Kind.TELEMETRY)
    assert isinstance(decoded, wire.Telemetry)
    network = decoded.probes["network"]
    assert (network.ok, network.metrics) == (False, {})
    assert network.error is not None and "size limit" in network.error
    assert decoded.probes["load"] == reports["load"]


def test_sample_command_prints_a_valid_message(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    # Bad parts of the room: a backup volume not mounted, a UPS whose upsd is not there.
    config.write_text("site: hn-01\nprovince: ha-noi\nspool: {path: spool.db}\n"
                      f"backup_volume: {tmp_path / 'absent'}\n"
                      "ups: [{name: ups-1, nut: {host: 127.0.0.1, ups: santak, "
                      f"port: {free_port()}, timeout_seconds: 1}}}}]\n")
    done = subprocess.run([sys.executable, "-m", "agent.main", "sample", "--config", str(config)],
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr  # the missing backup volume fails storage
    message = wire.decode(done.stdout.strip(), wire.Kind.TELEMETRY, now=time.time())
    assert isinstance(message, wire.Telemetry)
    assert set(message.probes) == set(enabled_probes(load_config(config)))
    assert not message.probes["storage"].ok and message.probes["cpu"].ok
    ups = message.probes["ups"]
    assert not ups.ok and ups.error is not None and ups.error.startswith("ups-1: ")
    assert "netgear" not in message.probes  # not configured, not sent
    assert b"backup volume" in done.stderr
    assert not (tmp_path / "spool.db").exists()  # sample neither spools nor sends
