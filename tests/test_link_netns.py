"""Issue 3's proof on a real network: namespaces, tbf, nft and the delay line of deploy/wan.

A bridge site and the central site in their own namespaces, the WAN between them shaped
as the test says; the reflector runs at the central site and the agent's own measuring
code at the site, each as the operator would run it. What was injected is known exactly
(the caps, the drop rule, the relay's log of every delay it applied), so each measurement
is checked against it.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from deploy.localstack import Process
from deploy.wan import Wan, start_reflector
from tests.conftest import require_binary, require_root

pytestmark = pytest.mark.real
UDP_PORT, TCP_PORT = 8620, 8621


@pytest.fixture
def wan(tmp_path: Path) -> Iterator[Wan]:
    require_root()
    for tool in ("ip", "tc", "nft"):
        require_binary(tool)
    with Wan(tmp_path / "wan") as w:
        yield w


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "reflector.key"
    path.write_text(secrets.token_hex(32) + "\n")
    return path


@pytest.fixture
def reflector(wan: Wan, key_file: Path, tmp_path: Path) -> Iterator[Process]:
    process = start_reflector(wan, tmp_path, key_file, UDP_PORT, TCP_PORT)
    yield process
    process.stop()


def measure(wan: Wan, key_file: Path, *args: str) -> dict:
    """The agent's one-shot measurement, run at the site; its JSON result."""
    out = wan.check([sys.executable, "-m", "agent.link.measure", "--host", wan.central_ip,
                     "--port", str(UDP_PORT), "--key-file", str(key_file), "--json", *args])
    return json.loads(out)


def binomial_interval(n: int, p: float, z: float) -> tuple[float, float]:
    """Where a loss ratio measured over n packets lands (normal approximation)."""
    half = z * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


@pytest.mark.parametrize("mbit", [2, 5])
def test_bandwidth_is_within_ten_percent_of_the_cap(
        wan: Wan, reflector: Process, key_file: Path, mbit: int) -> None:
    wan.set_bandwidth("up", mbit)
    wan.set_bandwidth("down", mbit)
    for direction in ("upload", "download"):
        result = measure(wan, key_file, "--count", "1", "--interval", "0.1",
                         "--bandwidth", direction, "--seconds", "5",
                         "--tcp-port", str(TCP_PORT))["bandwidth"]
        assert result["direction"] == direction
        measured = result["bits_per_second"] / 1e6
        assert abs(measured - mbit) <= 0.1 * mbit, f"{direction}: {measured:.2f} Mbit/s"


def test_loss_is_within_the_binomial_interval(
        wan: Wan, reflector: Process, key_file: Path) -> None:
    wan.set_loss("up", 0.05)
    result = measure(wan, key_file, "--count", "2000", "--interval", "0.002")
    measured = result["lost"] / result["sent"]
    # The 95 % interval is what the issue names; a test held to it would fail one correct
    # run in twenty, so the assertion uses 1 - 1e-6 (z = 4.89) and the exact check below.
    low95, high95 = binomial_interval(2000, 0.05, 1.96)
    low, high = binomial_interval(2000, 0.05, 4.89)
    assert low <= measured <= high, (
        f"measured {measured:.4f}; 95 % interval [{low95:.4f}, {high95:.4f}]")
    assert result["lost"] == wan.dropped("up"), "every loss seen is a drop the WAN made"


def test_rtt_and_jitter_match_what_the_delay_line_applied(
        wan: Wan, reflector: Process, key_file: Path) -> None:
    base = measure(wan, key_file, "--count", "100", "--interval", "0.01")["rtt"]["p50"]
    wan.set_delay("up", 0.030, jitter_seconds=0.008, seed=3)
    result = measure(wan, key_file, "--count", "300", "--interval", "0.02")
    applied = wan.applied_delays("up")  # seq -> seconds, from the relay's own log
    rtts = dict((seq, rtt) for seq, rtt in result["rtts"])
    matched = [seq for seq in rtts if seq in applied]
    assert len(matched) >= 290
    errors = sorted(abs(rtts[seq] - base - applied[seq]) for seq in matched)
    # Each packet is matched to the very delay it got. A busy VM can only add time to a
    # few of them (steal, softirq backlog), so most, not all, must be within 1 ms.
    within = sum(e <= 0.001 for e in errors) / len(errors)
    median = errors[len(errors) // 2]
    assert within >= 0.9, f"only {within:.0%} of packets within 1 ms; median {median}"
    injected = [applied[seq] for seq in sorted(matched)]
    mad = sum(abs(b - a) for a, b in itertools.pairwise(injected)) / (len(injected) - 1)
    assert abs(result["jitter"]["mean_abs_diff"] - mad) <= 0.001
    assert abs(result["rtt"]["mean"] - base - sum(injected) / len(injected)) <= 0.001


@pytest.mark.parametrize("mbit,passes", [(2, False), (10, True)])
def test_a_member_site_needs_five_megabits(
        wan: Wan, reflector: Process, key_file: Path, tmp_path: Path,
        mbit: int, passes: bool) -> None:
    wan.set_bandwidth("up", mbit)
    wan.set_bandwidth("down", mbit)
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "site": "dt-xa-my-an", "province": "dong-thap",
        "spool": {"path": str(tmp_path / "spool.sqlite")},
        "link": {"reflector": {"host": wan.central_ip, "udp_port": UDP_PORT,
                               "tcp_port": TCP_PORT, "key_file": str(key_file)},
                 "required_bandwidth_mbps": 5}}))
    check = wan.run("site", [sys.executable, "-m", "agent.main", "bandwidth", "--config",
                             str(config)], tmp_path / "bandwidth.log")
    assert check.proc is not None
    code = check.proc.wait(120)
    assert (code == 0) is passes, check.log()
    assert ("✗" in check.log()) is not passes
