"""The reflector, in-process on loopback: echo, refusals, and the bandwidth endpoint."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.link import bandwidth, packet
from agent.link.udp import UdpProber
from collector.reflector import Reflector, ReflectorSettings, load_settings
from deploy.localstack import free_port, port_open, wait_until

KEY = b"reflector-test-key-0123456789"
REPLY_WAIT = 5.0  # generous: only ever reached when a test is about to fail


@contextmanager
def running(**overrides: object) -> Iterator[Reflector]:
    settings = ReflectorSettings(key=KEY, host="127.0.0.1", udp_port=0, tcp_port=0,
                                 **overrides)  # type: ignore[arg-type]
    with Reflector(settings) as reflector:
        yield reflector


@pytest.fixture
def reflector() -> Iterator[Reflector]:
    with running() as r:
        yield r


@pytest.fixture
def client() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(REPLY_WAIT)
        yield sock


def request(seq: int, size: int = packet.DEFAULT_SIZE, key: bytes = KEY, flags: int = 0) -> bytes:
    return packet.encode(packet.Packet(seq, 1_000 + seq, flags=flags, size=size), key)


def echo(client: socket.socket, reflector: Reflector, data: bytes) -> bytes:
    client.sendto(data, ("127.0.0.1", reflector.udp_port))
    return client.recv(65535)


def refused_then_answered(client: socket.socket, reflector: Reflector, bad: bytes) -> None:
    """Send a bad datagram, then a good one: the first reply must be the good one's.

    The reflector handles datagrams in order, so the bad one is counted by then.
    """
    client.sendto(bad, ("127.0.0.1", reflector.udp_port))
    answer = packet.decode(echo(client, reflector, request(99)), KEY)
    assert answer.seq == 99


# --- UDP echo ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [packet.MIN_SIZE, packet.DEFAULT_SIZE, packet.MAX_SIZE])
def test_echo_replies_with_the_same_size_and_its_timestamps(
        reflector: Reflector, client: socket.socket, size: int) -> None:
    data = request(7, size)
    raw = echo(client, reflector, data)
    assert len(raw) == len(data) == size
    answer = packet.decode(raw, KEY)
    assert answer.is_reply and answer.seq == 7 and answer.sent_ns == 1_007
    assert 0 < answer.reflector_rx_ns <= answer.reflector_tx_ns
    wait_until(lambda: reflector.echoed == 1, REPLY_WAIT, "the echo to be counted")
    assert not reflector.refusals.counts


@pytest.mark.parametrize(("bad", "reason"), [
    (request(1, key=b"not the reflector's key!!"), "bad_hmac"),
    (b"hello", "malformed"),
    (request(1, flags=packet.FLAG_REPLY), "not_request"),
])
def test_invalid_requests_are_refused_and_counted(
        reflector: Reflector, client: socket.socket, bad: bytes, reason: str) -> None:
    refused_then_answered(client, reflector, bad)
    assert reflector.refusals.counts == {reason: 1}
    wait_until(lambda: reflector.echoed == 1, REPLY_WAIT, "the echo to be counted")


def test_oversize_is_refused(client: socket.socket) -> None:
    with running(max_packet_bytes=200) as reflector:
        refused_then_answered(client, reflector, request(1, size=201))
        assert reflector.refusals.counts == {"oversize": 1}
        # A datagram over the protocol's own cap too, not only the configured one.
        refused_then_answered(client, reflector, bytes(3000))
        assert reflector.refusals.counts == {"oversize": 2}


def test_sources_outside_the_allow_list_are_refused(client: socket.socket) -> None:
    allow = (ipaddress.ip_network("10.0.0.0/8"),)
    with running(allow=allow) as reflector:
        client.sendto(request(1), ("127.0.0.1", reflector.udp_port))
        wait_until(lambda: reflector.refusals.counts["not_allowed"] == 1, REPLY_WAIT,
                   "the UDP refusal")
        with socket.create_connection(("127.0.0.1", reflector.tcp_port)) as conn:
            conn.settimeout(REPLY_WAIT)
            assert conn.recv(100) == b""  # closed without a word
        assert reflector.refusals.counts == {"not_allowed": 2}
        assert reflector.echoed == 0


def test_rate_limit_per_source(client: socket.socket) -> None:
    with running(rate_limit_pps=5) as reflector:
        for seq in range(40):  # a burst far beyond 5 packets/s
            client.sendto(request(seq), ("127.0.0.1", reflector.udp_port))
        wait_until(lambda: reflector.echoed + reflector.refusals.counts["rate_limited"] == 40,
                   REPLY_WAIT, "every packet answered or refused")
        assert reflector.refusals.counts["rate_limited"] > 0
        assert 5 <= reflector.echoed < 40


def test_each_refusal_is_logged_once_per_source_and_reason(
        reflector: Reflector, client: socket.socket, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bridgewatch.reflector")
    for _ in range(3):
        refused_then_answered(client, reflector, b"garbage")
    refused_then_answered(client, reflector, request(1, key=b"not the reflector's key!!"))
    assert reflector.refusals.counts == {"malformed": 3, "bad_hmac": 1}
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 2, refusals
    assert "malformed from 127.0.0.1" in refusals[0] and "bad_hmac" in refusals[1]


def test_the_prober_measures_through_it(reflector: Reflector) -> None:
    m = UdpProber("127.0.0.1", reflector.udp_port, key=KEY).measure(10, 0.005)
    assert (m.counters.sent, m.counters.received, m.counters.lost) == (10, 10, 0)
    assert all(rtt > 0 for _, rtt in m.window.events)


# --- TCP bandwidth -----------------------------------------------------------------------


@pytest.mark.parametrize("direction", bandwidth.DIRECTIONS)
def test_bandwidth_on_loopback_is_plausible(reflector: Reflector, direction: str) -> None:
    seen: list[tuple[float, float]] = []
    result = bandwidth.run_test("127.0.0.1", reflector.tcp_port, KEY, direction, 2.0,
                                progress=lambda f, bps: seen.append((f, bps)))
    assert result.direction == direction
    assert result.bits_per_second > 10e6  # loopback moves far more than 10 Mbit/s
    assert result.bytes * 8 >= result.bits_per_second * result.steady_seconds
    assert 0 < result.steady_seconds < result.seconds
    assert seen and seen[-1][0] == 1.0 and all(0 <= f <= 1 for f, _ in seen)
    assert reflector.bandwidth_tests == {direction: 1}


def test_steady_rate_skips_slow_start() -> None:
    meter = bandwidth.Meter()
    for t, n in ((10.0, 100), (10.2, 400), (10.5, 500), (10.7, 1000), (15.0, 9000)):
        meter.add(t, n)
    assert meter.bytes == 11_000
    assert meter.marks == [(0.0, 100), (0.5, 1000), (5.0, 11_000)]
    assert bandwidth.steady_rate(meter.marks) == pytest.approx((10_000 * 8 / 4.5, 4.5))
    # Too short for a steady part: the whole transfer.
    short = [(0.0, 100), (0.5, 1000), (0.6, 5000)]
    assert bandwidth.steady_rate(short) == pytest.approx((4900 * 8 / 0.6, 0.6))
    assert bandwidth.steady_rate([(0.0, 100)]) == (0.0, 0.0)


def test_the_reflector_caps_the_test_length() -> None:
    with running(max_bandwidth_seconds=0.6) as reflector:
        result = bandwidth.run_test("127.0.0.1", reflector.tcp_port, KEY, "upload", 20.0)
        assert result.seconds <= 0.6  # the reflector counts for the granted time only


def _hello(conn: socket.socket) -> tuple[bandwidth.LineReader, str]:
    reader = bandwidth.LineReader(conn)
    return reader, reader.read(time.monotonic() + REPLY_WAIT)["nonce"]


def test_a_replayed_bandwidth_request_is_refused(reflector: Reflector) -> None:
    with socket.create_connection(("127.0.0.1", reflector.tcp_port), timeout=REPLY_WAIT) as c:
        reader, nonce = _hello(c)
        line = (f'{{"v":1,"direction":"download","seconds":0.5,"hmac":'
                f'"{bandwidth.request_mac(KEY, nonce, "download", 0.5)}"}}\n').encode()
        c.sendall(line)
        assert reader.read(time.monotonic() + REPLY_WAIT)["ok"] is True
    with socket.create_connection(("127.0.0.1", reflector.tcp_port), timeout=REPLY_WAIT) as c:
        reader, _ = _hello(c)
        c.sendall(line)  # the recorded request, on a new connection with a new nonce
        assert reader.read(time.monotonic() + REPLY_WAIT) == {
            "v": 1, "ok": False, "error": "not authenticated"}
    assert reflector.refusals.counts == {"bad_hmac": 1}
    assert reflector.bandwidth_tests == {"download": 1}


def test_a_wrong_key_or_a_bad_request_is_refused(reflector: Reflector) -> None:
    with pytest.raises(bandwidth.BandwidthError, match="not authenticated"):
        bandwidth.run_test("127.0.0.1", reflector.tcp_port, b"x" * 32, "upload", 1.0)
    with socket.create_connection(("127.0.0.1", reflector.tcp_port), timeout=REPLY_WAIT) as c:
        reader, _ = _hello(c)
        c.sendall(b'{"v":1,"direction":"sideways","seconds":1,"hmac":"00"}\n')
        assert reader.read(time.monotonic() + REPLY_WAIT)["ok"] is False
    with socket.create_connection(("127.0.0.1", reflector.tcp_port), timeout=REPLY_WAIT) as c:
        _hello(c)
        c.sendall(b"not json\n")
        assert c.recv(100) == b""
    assert reflector.refusals.counts == {"bad_hmac": 1, "bad_request": 2}
    assert not reflector.bandwidth_tests


def test_concurrent_tests_are_capped() -> None:
    with running(max_concurrent_bandwidth_tests=1) as reflector, \
            socket.create_connection(("127.0.0.1", reflector.tcp_port)) as holder:
        _hello(holder)  # holds the only slot while it says nothing
        with pytest.raises(bandwidth.ReflectorBusy, match="busy"):
            bandwidth.run_test("127.0.0.1", reflector.tcp_port, KEY, "download", 0.5,
                               busy_wait=0)
        assert reflector.refusals.counts == {"busy": 1}


def test_a_busy_reflector_delays_a_test_instead_of_failing_it() -> None:
    """Every bridge is ordered when a window opens: a test refused as busy waits (growing,
    jittered pauses) and runs once the slot frees, so a healthy bridge does not fail its
    bandwidth criteria for the reflector's limit."""
    with running(max_concurrent_bandwidth_tests=1) as reflector:
        holder = socket.create_connection(("127.0.0.1", reflector.tcp_port))
        _hello(holder)  # holds the only slot...
        freed = threading.Timer(1.5, holder.close)  # ...until another bridge's test ends
        freed.start()
        try:
            result = bandwidth.run_test("127.0.0.1", reflector.tcp_port, KEY, "download", 0.5)
        finally:
            freed.cancel()
            holder.close()
        assert result.direction == "download" and result.bits_per_second > 0
        assert reflector.refusals.counts["busy"] >= 1


def _closed_by_reflector(conn: socket.socket) -> bool:
    """True once the reflector closed the connection (EOF or reset), False while it waits."""
    try:
        return conn.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize(("what", "reason"), [
    ("nothing", "timeout"),
    ("a byte every 0.1 s", "timeout"),
    ("70 KiB without a newline", "line_too_long"),
])
def test_a_peer_that_never_sends_a_request_is_cut_off(monkeypatch: pytest.MonkeyPatch,
                                                      what: str, reason: str) -> None:
    """Before it authenticates, a peer gets one line and ``_REQUEST_TIMEOUT`` (0.5 s here)
    in all. Tried: a silent peer, one trickling garbage a byte at a time (each byte well
    within any per-read timeout), one sending a line too long. Each is closed, counted by
    reason, and the single test slot is free again: a real test runs right after."""
    monkeypatch.setattr("collector.reflector._REQUEST_TIMEOUT", 0.5)
    with running(max_concurrent_bandwidth_tests=1) as reflector:
        with socket.create_connection(("127.0.0.1", reflector.tcp_port), timeout=REPLY_WAIT) as c:
            _hello(c)
            if what == "nothing":
                assert _closed_by_reflector(c)  # REPLY_WAIT is 10 times the limit
            elif what == "70 KiB without a newline":
                with contextlib.suppress(OSError):  # closed while sending: a reset
                    c.sendall(b"x" * (70 * 1024))
                assert _closed_by_reflector(c)
            else:
                c.settimeout(0.1)
                for _ in range(int(REPLY_WAIT / 0.1)):  # ~5 s of trickling at most
                    with contextlib.suppress(TimeoutError):
                        c.send(b"x")
                    if _closed_by_reflector(c):
                        break
                else:
                    pytest.fail("the reflector waited for the trickle to end")
        wait_until(lambda: reflector.refusals.counts == {reason: 1}, REPLY_WAIT,
                   f"the refusal counted as {reason}")
        result = bandwidth.run_test("127.0.0.1", reflector.tcp_port, KEY, "download", 0.3,
                                    busy_wait=REPLY_WAIT)
        assert result.bits_per_second > 0
        assert reflector.refusals.counts == {reason: 1}  # not busy: the slot was free


# --- configuration and the command ---------------------------------------------------------


def _write_config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "reflector.key").write_bytes(KEY + b"\n")
    path = tmp_path / "reflector.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_settings(tmp_path: Path) -> None:
    settings = load_settings(_write_config(tmp_path, """
listen: 127.0.0.1
udp_port: 9620
key_file: reflector.key
allow: [10.0.0.0/8, "2001:db8::/32"]
rate_limit_pps: 20
"""))
    assert settings.key == KEY and settings.host == "127.0.0.1"
    assert (settings.udp_port, settings.tcp_port) == (9620, 8621)
    assert settings.allow == (ipaddress.ip_network("10.0.0.0/8"),
                              ipaddress.ip_network("2001:db8::/32"))
    assert (settings.rate_limit_pps, settings.max_packet_bytes,
            settings.max_bandwidth_seconds, settings.max_concurrent_bandwidth_tests) == (
        20, 1400, 30.0, 4)
    assert load_settings(_write_config(tmp_path, "key_file: reflector.key\n")).allow is None


@pytest.mark.parametrize(("text", "message"), [
    ("udp_port: 1\n", "key_file is required"),
    ("key_file: reflector.key\nport: 1\n", "unknown key port"),
    ("key_file: reflector.key\nallow: [10.0.0.300/8]\n", "allow:"),
    ("key_file: reflector.key\nallow: []\n", "non-empty list"),
    ("key_file: reflector.key\nrate_limit_pps: 0\n", "rate_limit_pps must be > 0"),
    ("key_file: reflector.key\nmax_packet_bytes: 4000\n", "max_packet_bytes must be"),
    ("key_file: reflector.key\nudp_port: 70000\n", "udp_port must be a port"),
    ("key_file: reflector.key\nmax_concurrent_bandwidth_tests: 0\n",
     "max_concurrent_bandwidth_tests"),
    ("key_file: missing.key\n", "missing.key"),
])
def test_bad_settings_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises((ValueError, OSError), match=message):
        load_settings(_write_config(tmp_path, text))


def test_the_command_serves_until_sigterm(tmp_path: Path) -> None:
    udp_port, tcp_port = free_port(), free_port()
    config = _write_config(tmp_path, f"listen: 127.0.0.1\nudp_port: {udp_port}\n"
                                     f"tcp_port: {tcp_port}\nkey_file: reflector.key\n")
    proc = subprocess.Popen([sys.executable, "-m", "collector.reflector", "--config",
                             str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: port_open(tcp_port), 20, "the reflector to listen")
        m = UdpProber("127.0.0.1", udp_port, key=KEY).measure(3, 0.01)
        assert m.counters.received == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0, output
    assert "3 echoed" in output


def test_the_command_refuses_a_bad_configuration(tmp_path: Path) -> None:
    config = _write_config(tmp_path, "key_file: reflector.key\nbogus: 1\n")
    done = subprocess.run([sys.executable, "-m", "collector.reflector", "--config",
                           str(config)], capture_output=True, timeout=60, check=False)
    assert done.returncode == 2
    assert b"unknown key bogus" in done.stderr
