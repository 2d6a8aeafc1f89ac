"""``bridgewatch-agent check``, the technician's full test, as a subprocess against real parts.

On loopback: the real reflector (``collector.reflector``, UDP echo and TCP bandwidth), a
real NUT upsd with a dummy-ups UPS (``deploy.nut.Upsd``), a real chronyd as the NTP server
(``deploy.chrony.Chrony``); the conference software is chronyd's own process, the
recording and backup volumes are the test's folder, and no AV device is expected (this
machine has none). Tests are kept short: a 1 s link burst and 1 s per bandwidth direction.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agent import wire
from agent.main import main as agent_main
from agent.readiness.catalogue import CRITERIA
from collector.reflector import Reflector, ReflectorSettings
from deploy.chrony import Chrony
from deploy.localstack import free_port
from deploy.nut import LOW_BATTERY, NUT_DIRS, ONLINE, Upsd
from tests.conftest import require_binary

pytestmark = pytest.mark.real

KEY = b"agent-check-test-key-0123456789"
AGENT = [sys.executable, "-m", "agent.main"]
CHECKED = {"link-rtt", "link-jitter", "link-loss", "link-mos", "bandwidth-up", "bandwidth-down",
           "camera", "ups-power", "ups-runtime", "recording-space", "backup-disk", "clock",
           "software"}


@pytest.fixture(scope="module")
def reflector() -> Iterator[Reflector]:
    settings = ReflectorSettings(key=KEY, host="127.0.0.1", udp_port=0, tcp_port=0)
    with Reflector(settings) as r:
        yield r


@pytest.fixture(scope="module")
def upsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upsd]:
    require_binary("upsd", *NUT_DIRS)
    require_binary("dummy-ups", *NUT_DIRS)
    with Upsd(tmp_path_factory.mktemp("nut"), {"ups1": ONLINE}) as server:
        yield server


@pytest.fixture(scope="module")
def chrony(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chrony]:
    require_binary("chronyd")
    server = Chrony(tmp_path_factory.mktemp("chrony"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def config(tmp_path: Path, reflector: Reflector, upsd: Upsd, chrony: Chrony) -> Path:
    """A bridge whose every configured part is there: ready for a 20-minute session."""
    (tmp_path / "reflector.key").write_bytes(KEY)
    (tmp_path / "backup-disk").write_bytes(b"")  # stands in for /dev/disk/by-label/...
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({
        "site": "hn-01", "province": "ha-noi", "spool": {"path": "spool.db"},
        "link": {"reflector": {"host": "127.0.0.1", "udp_port": reflector.udp_port,
                               "tcp_port": reflector.tcp_port, "key_file": "reflector.key"},
                 "required_bandwidth_mbps": 1},
        "readiness": {"link_seconds": 1, "bandwidth_seconds": 1},
        "devices": {"camera": 0},
        "recording_volume": str(tmp_path), "backup_volume": str(tmp_path),
        # 0.01 Mbit/s: 20 minutes of recording fit in any test machine's free space.
        "storage": {"recording_bitrate_mbps": 0.01,
                    "backup_device": str(tmp_path / "backup-disk")},
        "ups": [{"name": "ups-1", "nut": {"host": upsd.host, "port": upsd.port,
                                          "ups": "ups1"}}],
        "clock": {"server": "127.0.0.1", "port": chrony.port},
        "software": [{"name": "vconf", "processes": ["chronyd"]}],
        # ONLINE carries 2580 s: enough for 1200 s + 600 s margin.
        "session": {"length_seconds": 1200, "ups_margin_seconds": 600},
    }), encoding="utf-8")
    return path


def check(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENT, "check", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, check=False)


def spooled_results(config: Path) -> list[tuple[str, wire.TestResult, int]]:
    """(topic, result, spool epoch) of each test result in the spool, read as another
    process would (WAL allows it)."""
    path = config.parent / "spool.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        epoch = dict(db.execute("SELECT key, value FROM meta"))["epoch"]
        rows = db.execute("SELECT topic, payload FROM messages ORDER BY seq").fetchall()
    db.close()
    out = []
    for topic, payload in rows:
        if topic.endswith("/test"):
            result = wire.decode(payload, wire.Kind.TEST)
            assert isinstance(result, wire.TestResult)
            out.append((topic, result, epoch))
    return out


def test_ready_bridge_exits_0_with_a_vietnamese_checklist_and_queues_the_result(
        config: Path) -> None:
    """Every configured part is there: each line ✓, the verdict SẴN SÀNG, exit 0, a
    progress bar on stderr, and the result waiting in the spool for the collector."""
    done = check(config)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Kiểm tra điểm cầu ha-noi/hn-01, phiên 20 phút, mã local/")
    test_id = lines[0].rsplit(" ", 1)[1]
    marks = [line for line in lines[1:-1] if not line.startswith("○")]
    assert len(marks) == len(CHECKED) and all(line.startswith("✓ ") for line in marks), marks
    assert any(line.startswith("✓ Độ trễ khứ hồi: ") and "(giới hạn ≤ 150 ms)" in line
               for line in marks)
    assert "✓ Thời gian lưu điện: 43 phút (cần ≥ 30 phút)" in lines
    assert "✓ Phần mềm hội nghị: đang chạy" in lines
    assert "○ Micrô: không kiểm tra (chưa cấu hình)" in lines
    assert lines[-1] == "SẴN SÀNG"
    assert "[" + "#" * 30 + "] 100%" in done.stderr  # the bandwidth test's bar
    assert f"Đã lưu kết quả {test_id}" in done.stderr

    [(topic, result, epoch)] = spooled_results(config)
    assert topic == "bridgewatch/v1/ha-noi/hn-01/test"
    assert (result.test_id, result.trigger, result.passed) == (test_id, "technician", True)
    assert (result.epoch, result.seq) == (epoch, 1)
    assert {c.name for c in result.criteria} == CHECKED
    assert all(c.ok and c.value is not None for c in result.criteria)


def test_low_battery_exits_1_naming_the_ups_with_advice(config: Path, upsd: Upsd) -> None:
    """The UPS runs on battery, low: mains and runtime fail with what to do; --no-publish
    leaves the spool alone."""
    upsd.set_state("ups1", LOW_BATTERY)
    try:
        done = check(config, "--no-publish")
    finally:
        upsd.set_state("ups1", ONLINE)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert ("✗ Nguồn điện lưới: đang chạy pin — ups-1: low battery → UPS đang chạy pin: "
            "kiểm tra điện lưới") in lines
    assert ("✗ Thời gian lưu điện: 2 phút (cần ≥ 30 phút) — ups-1: 2 min (low battery) "
            "→ Sạc đầy hoặc thay ắc quy UPS; giảm tải") in lines
    assert sum(line.startswith("✗") for line in lines) == 2, lines
    assert lines[-1] == "CHƯA SẴN SÀNG: 2 tiêu chí không đạt"
    assert not (config.parent / "spool.db").exists()


def test_json_in_english_judges_the_ordered_session_length(config: Path) -> None:
    """--json --lang en with a 50-minute session: 2580 s of UPS runtime no longer covers
    3000 s + 600 s margin, so exit 1; the JSON names the session in the test_id and
    matches what was spooled."""
    done = check(config, "--json", "--lang", "en", "--session", "s-2026-11-23",
                 "--session-seconds", "3000")
    assert done.returncode == 1, done.stdout + done.stderr
    body = json.loads(done.stdout)  # exactly one object
    assert body["passed"] is False and body["recorded"] is True
    assert body["test_id"].startswith("s-2026-11-23/local/")
    assert (body["trigger"], body["site"], body["session_seconds"]) == (
        "technician", "hn-01", 3000)
    criteria = {c["name"]: c for c in body["criteria"]}
    assert set(criteria) == CHECKED
    runtime = criteria["ups-runtime"]
    assert (runtime["ok"], runtime["value"], runtime["limit"], runtime["unit"]) == (
        False, 2580, 3600, "s")
    assert runtime["label"] == "UPS runtime" == CRITERIA["ups-runtime"].en
    assert runtime["advice"] == "Charge or replace the battery; cut load"
    assert [n for n, c in criteria.items() if not c["ok"]] == ["ups-runtime"]
    assert criteria["recording-space"]["limit"] == 3000
    assert criteria["bandwidth-up"]["value"] > criteria["bandwidth-up"]["limit"] == 1e6
    assert set(body["not_checked"]) == {"microphone", "speaker", "display"}

    [(_, result, _)] = spooled_results(config)
    assert result.test_id == body["test_id"] and result.ts == pytest.approx(body["ts"])
    assert [(c.name, c.ok, c.value, c.limit, c.unit) for c in result.criteria] == [
        (c["name"], c["ok"], c["value"], c["limit"], c["unit"]) for c in body["criteria"]]


def test_configuration_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad configuration or a bad session id is a usage error, not "not ready"."""
    bad = tmp_path / "agent.yaml"
    bad.write_text("site: hn-01\nprovince: ha-noi\nspool: {path: s.db}\n"
                   "readiness: {max_rtt: 100}\n")
    assert agent_main(["check", "--config", str(bad)]) == 2
    assert "unknown key readiness.max_rtt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        agent_main(["check", "--config", str(bad), "--session", "Not A Slug"])
    assert exit_.value.code == 2


def test_silent_reflector_fails_the_link_with_reasons(tmp_path: Path) -> None:
    """The reflector's host answers nothing (a bound, silent UDP port; a closed TCP port):
    every link criterion fails unmeasured or at 100 % loss, saying why, and exit 1."""
    (tmp_path / "reflector.key").write_bytes(KEY)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        config = tmp_path / "agent.yaml"
        config.write_text(yaml.safe_dump({
            "site": "hn-01", "province": "ha-noi", "spool": {"path": "spool.db"},
            "link": {"reflector": {"host": "127.0.0.1", "udp_port": silent.getsockname()[1],
                                   "tcp_port": free_port(), "key_file": "reflector.key"}},
            "readiness": {"link_seconds": 1, "link_packets_per_second": 5},
        }), encoding="utf-8")
        done = check(config, "--json", "--lang", "en", "--no-publish")
    assert done.returncode == 1, done.stdout + done.stderr
    criteria = {c["name"]: c for c in json.loads(done.stdout)["criteria"]}
    assert set(criteria) == {"link-rtt", "link-jitter", "link-loss", "link-mos",
                             "bandwidth-up", "bandwidth-down"}
    assert not any(c["ok"] for c in criteria.values())
    assert criteria["link-rtt"]["value"] is None
    assert criteria["link-rtt"]["note"].startswith("no reply from the reflector 127.0.0.1:")
    assert criteria["link-loss"]["value"] == 1.0  # measured: everything lost
    assert criteria["link-mos"]["value"] < 1.5
    assert criteria["bandwidth-up"]["value"] is None
    assert "cannot connect" in criteria["bandwidth-up"]["note"]
