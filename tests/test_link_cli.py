"""The command lines: ``python -m agent.link.measure`` and ``bridgewatch-agent bandwidth``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import load_config
from agent.link import results
from agent.main import main as agent_main
from collector.reflector import Reflector, ReflectorSettings

KEY = b"link-cli-test-key-0123456789"
TOP_KEYS = {"method", "timestamps", "sent", "received", "lost", "duplicates", "reordered",
            "late", "invalid", "rtt", "rtts", "jitter", "r_factor", "mos"}


@pytest.fixture
def reflector() -> Iterator[Reflector]:
    settings = ReflectorSettings(key=KEY, host="127.0.0.1", udp_port=0, tcp_port=0)
    with Reflector(settings) as r:
        yield r


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "reflector.key"
    path.write_bytes(KEY + b"\n")
    return path


def measure(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.link.measure", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_measure_prints_one_json_object(reflector: Reflector, key_file: Path) -> None:
    done = measure("--host", "127.0.0.1", "--port", str(reflector.udp_port), "--key-file",
                   str(key_file), "--count", "10", "--interval", "0.005", "--size", "200",
                   "--bandwidth", "upload", "--seconds", "1",
                   "--tcp-port", str(reflector.tcp_port), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # exactly one object: anything else fails to parse
    assert set(result) == TOP_KEYS | {"bandwidth"}
    assert (result["method"], result["sent"], result["received"], result["lost"]) == (
        "udp-reflector", 10, 10, 0)
    assert result["timestamps"] in ("kernel", "user")
    assert set(result["rtt"]) == {"min", "p50", "p90", "p99", "max", "mean"}
    assert result["rtt"]["min"] <= result["rtt"]["p50"] <= result["rtt"]["max"]
    assert sorted(seq for seq, _ in result["rtts"]) == list(range(10))
    assert all(isinstance(rtt, float) for _, rtt in result["rtts"])
    assert set(result["jitter"]) == {"rfc3550", "mean_abs_diff"}
    assert 1.0 <= result["mos"] <= 4.5 and result["r_factor"] == pytest.approx(93.2, abs=1)
    bw = result["bandwidth"]
    assert set(bw) == {"direction", "bits_per_second", "bytes", "seconds"}
    assert bw["direction"] == "upload" and bw["bits_per_second"] > 0
    assert isinstance(bw["seconds"], float)


def test_measure_against_silence_reports_total_loss(key_file: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        done = measure("--host", "127.0.0.1", "--port", str(silent.getsockname()[1]),
                       "--key-file", str(key_file), "--count", "3", "--interval", "0.005",
                       "--timeout", "0.2", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["sent"], result["received"], result["lost"]) == (3, 0, 3)
    assert result["rtt"] == dict.fromkeys(("min", "p50", "p90", "p99", "max", "mean"))
    assert result["rtts"] == [] and result["mos"] < 1.5


def test_measure_prints_text_without_json(reflector: Reflector, key_file: Path) -> None:
    done = measure("--host", "127.0.0.1", "--port", str(reflector.udp_port), "--key-file",
                   str(key_file), "--count", "3", "--interval", "0.005")
    assert done.returncode == 0, done.stderr
    assert "sent 3, received 3" in done.stdout and "MOS" in done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--size", "20"], "packet size must be"),
    (["--count", "0"], "must be > 0"),
    (["--key-file", "/nonexistent/key"], "No such file"),
])
def test_measure_refuses_bad_arguments(key_file: Path, args: list[str], message: str) -> None:
    done = measure("--host", "127.0.0.1", "--key-file", str(key_file), *args)
    assert done.returncode == 2 and message in done.stderr


def agent_config(tmp_path: Path, reflector: Reflector, required_mbps: float) -> Path:
    (tmp_path / "reflector.key").write_bytes(KEY)
    path = tmp_path / "agent.yaml"
    path.write_text(f"""
site: hn-01
province: ha-noi
spool: {{path: spool.db}}
link:
  reflector: {{host: 127.0.0.1, udp_port: {reflector.udp_port}, tcp_port: {reflector.tcp_port},
              key_file: reflector.key}}
  required_bandwidth_mbps: {required_mbps}
""", encoding="utf-8")
    return path


def test_bandwidth_command_passes_a_modest_requirement(
        tmp_path: Path, reflector: Reflector, capsys: pytest.CaptureFixture[str]) -> None:
    config = agent_config(tmp_path, reflector, 1)
    assert agent_main(["bandwidth", "--config", str(config), "--seconds", "0.5"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Tải lên / upload: ") and "✓ cần / needs ≥ 1 Mbit/s" in lines[0]
    assert lines[1].startswith("Tải xuống / download: ") and "✓" in lines[1]
    assert "[" + "#" * 30 + "] 100%" in err  # the progress bar, on stderr
    kept = results.load(load_config(config))
    assert kept is not None and set(kept[1]) == {"upload", "download"}


def test_bandwidth_command_fails_an_impossible_requirement(
        tmp_path: Path, reflector: Reflector, capsys: pytest.CaptureFixture[str]) -> None:
    config = agent_config(tmp_path, reflector, 100_000)  # 100 Gbit/s
    assert agent_main(["bandwidth", "--config", str(config), "--seconds", "0.5"]) == 1
    out = capsys.readouterr().out
    assert out.count("✗ cần / needs ≥ 100000 Mbit/s") == 2


def test_bandwidth_command_needs_a_reflector(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("site: hn-01\nprovince: ha-noi\nspool: {path: spool.db}\n")
    assert agent_main(["bandwidth", "--config", str(config)]) == 2
    assert "link.reflector is not configured" in capsys.readouterr().err


def test_bandwidth_command_reports_an_unreachable_reflector(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        closed = server.getsockname()[1]
    (tmp_path / "reflector.key").write_bytes(KEY)
    config = tmp_path / "agent.yaml"
    config.write_text("site: hn-01\nprovince: ha-noi\nspool: {path: spool.db}\n"
                      f"link: {{reflector: {{host: 127.0.0.1, tcp_port: {closed}, "
                      "key_file: reflector.key}}\n")
    assert agent_main(["bandwidth", "--config", str(config), "--seconds", "0.5"]) == 1
    out = capsys.readouterr().out
    assert out.count("lỗi / error: cannot connect") == 2
