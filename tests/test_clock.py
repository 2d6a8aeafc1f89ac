"""The SNTP client and the clock probe, against a real chronyd on loopback.

Protocol violations a real server never sends (spoofed, truncated, Kiss-o'-Death) come
from a tiny UDP server thread in this file; everything else is asked of chronyd.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import clock as sntp
from agent.config import AgentConfig, parse_config
from agent.probes import ProbeContext, enabled_probes, load_all, run_probe
from deploy.chrony import Chrony, ipv6_loopback_available
from deploy.localstack import free_port
from tests.conftest import IN_CI, require_binary

TOLERANCE = 0.5  # a correctness bound on loopback, not a timing one


@pytest.fixture(scope="module")
def chrony(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chrony]:
    require_binary("chronyd")
    server = Chrony(tmp_path_factory.mktemp("chrony"), local_stratum=8)
    server.start()
    yield server
    server.stop()


def make_config(tmp_path: Path, **sections: Any) -> AgentConfig:
    raw = {"site": "hn-01", "province": "ha-noi", "spool": {"path": "spool.db"}, **sections}
    return parse_config(raw, base_dir=tmp_path)


# --- the client against real chronyd ---------------------------------------------------


def test_true_clock_has_near_zero_offset(chrony: Chrony) -> None:
    """Against a server sharing this machine's clock, the offset is about zero and the
    stratum is the one chronyd was configured with."""
    result = sntp.query("127.0.0.1", chrony.port, timeout=2.0)
    assert abs(result.offset) < TOLERANCE
    assert result.stratum == 8
    assert result.server_address == "127.0.0.1"
    assert result.delay >= 0


@pytest.mark.parametrize("shift", [-5.0, +5.0])
def test_shifted_local_clock_gives_opposite_offset(chrony: Chrony, shift: float) -> None:
    """A local clock shifted by ``shift`` s is off by ``-shift`` from the server's view:
    offset = server - local, with the conversion to and from NTP timestamps in between."""
    result = sntp.query("127.0.0.1", chrony.port, timeout=2.0,
                        clock=lambda: time.time() + shift)
    assert result.offset == pytest.approx(-shift, abs=TOLERANCE)
    assert result.delay < TOLERANCE  # the shift must not leak into the round trip


def test_ipv6_server_with_its_own_stratum(tmp_path: Path) -> None:
    """chronyd on ::1 (and 127.0.0.1) at stratum 11: the IPv6 path answers, and the stratum
    in the result is the server's, not a constant."""
    require_binary("chronyd")
    if not ipv6_loopback_available():
        if IN_CI:
            pytest.fail("prerequisite missing in CI: IPv6 loopback (::1)")
        pytest.skip("no IPv6 loopback here")
    server = Chrony(tmp_path / "chrony6", local_stratum=11, ipv6=True)
    server.start()
    try:
        result = sntp.query("::1", server.port, timeout=2.0)
        assert result.server_address == "::1"
        assert result.stratum == 11
        assert abs(result.offset) < TOLERANCE
        assert sntp.query("127.0.0.1", server.port, timeout=2.0).stratum == 11
    finally:
        server.stop()


def test_unsynchronised_chronyd_is_refused(tmp_path: Path) -> None:
    """chronyd without ``local`` or sources answers with leap 3, stratum 0 and an empty
    reference ID: that is an unsynchronised server (not a Kiss-o'-Death), and its time
    must not be used."""
    require_binary("chronyd")
    server = Chrony(tmp_path / "unsync", local_stratum=None)
    server.start()
    try:
        with pytest.raises(sntp.SntpUnusable, match="not synchronised"):
            sntp.query("127.0.0.1", server.port, timeout=2.0)
    finally:
        server.stop()


def test_stopped_server_is_refused_not_waited_for(tmp_path: Path) -> None:
    """After chronyd stops, its port is closed: the ICMP error ends the query with
    "refused" rather than a silent timeout; stop() may be called again."""
    require_binary("chronyd")
    server = Chrony(tmp_path / "stopped")
    server.start()
    server.stop()
    server.stop()
    with pytest.raises(sntp.SntpError, match="refused"):
        sntp.query("127.0.0.1", server.port, timeout=2.0)


def test_unresolvable_host() -> None:
    """A name that cannot resolve (.invalid is reserved for that) is a clear error."""
    expected = re.escape("cannot resolve NTP server 'ntp.nowhere.invalid'")
    with pytest.raises(sntp.SntpError, match=expected):
        sntp.query("ntp.nowhere.invalid", 123, timeout=1.0)


# --- the probe --------------------------------------------------------------------------


def test_probe_is_off_without_a_clock_section(tmp_path: Path, chrony: Chrony) -> None:
    """The clock probe needs a server: absent section, no probe; present, it runs."""
    assert "clock" not in enabled_probes(make_config(tmp_path))
    config = make_config(tmp_path, clock={"server": "127.0.0.1", "port": chrony.port})
    assert "clock" in enabled_probes(config)


def test_probe_reports_offset_rows(tmp_path: Path, chrony: Chrony) -> None:
    """Through run_probe with a parsed configuration: ok, one row per family, labelled with
    the configured server, and the limit as configured."""
    config = make_config(tmp_path, clock={"server": "127.0.0.1", "port": chrony.port,
                                          "max_offset_seconds": 0.75})
    report = run_probe(load_all()["clock"], ProbeContext(config), 10.0)
    assert report.ok, report.error
    assert abs(dict(report.metrics["clock_offset_seconds"])[("127.0.0.1",)]) < TOLERANCE
    assert dict(report.metrics["clock_server_stratum"]) == {("127.0.0.1",): 8.0}
    assert dict(report.metrics["clock_round_trip_seconds"])[("127.0.0.1",)] >= 0
    assert report.metrics["clock_offset_limit_seconds"] == [((), 0.75)]


def test_probe_flags_a_clock_beyond_the_limit(tmp_path: Path, chrony: Chrony) -> None:
    """A PC clock 3.2 s fast (injected through ProbeContext.clock) is ok=False with a
    message saying by how much, and the measured rows are still sent."""
    config = make_config(tmp_path, clock={"server": "127.0.0.1", "port": chrony.port})
    ctx = ProbeContext(config, clock=lambda: time.time() + 3.2)
    report = run_probe(load_all()["clock"], ctx, 10.0)
    assert not report.ok
    assert report.error is not None
    assert re.fullmatch(r"clock off by -3\.\d\d s from 127\.0\.0\.1 \(limit 0\.50 s\)",
                        report.error), report.error
    offset = dict(report.metrics["clock_offset_seconds"])[("127.0.0.1",)]
    assert offset == pytest.approx(-3.2, abs=TOLERANCE)
    assert report.metrics["clock_offset_limit_seconds"] == [((), 0.5)]


def test_probe_fails_when_the_server_is_silent(tmp_path: Path) -> None:
    """A server that never answers is a failed probe with the reason and no rows."""
    with FakeServer(lambda request: []) as server:
        config = make_config(tmp_path, clock={"server": "127.0.0.1", "port": server.port,
                                              "timeout_seconds": 0.3})
        report = run_probe(load_all()["clock"], ProbeContext(config), 10.0)
    assert not report.ok
    assert report.error is not None and "SntpError" in report.error
    assert "no valid reply within 0.3 s" in report.error
    assert report.metrics == {}


# --- protocol violations, from a tiny server in this process -------------------------------


Handler = Callable[[bytes], list[bytes]]


class FakeServer:
    """A UDP server on 127.0.0.1 answering each request with whatever ``handler`` returns."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.client: tuple[str, int] = ("", 0)  # where the last request came from
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            self.client = addr
            self.requests.append(data)
            for reply in self.handler(data):
                self.sock.sendto(reply, addr)


def transmit_of(request: bytes) -> int:
    return struct.unpack_from("!Q", request, 40)[0]


def reply(request: bytes, *, leap: int = 0, version: int = 4, mode: int = 4,
          stratum: int = 2, ref_id: bytes = b"GPS\0", originate: int | None = None,
          server_shift: float = 0.0, receive: int | None = None,
          transmit: int | None = None) -> bytes:
    """A server reply to ``request``: echoes its nonce unless told otherwise."""
    now = time.time() + server_shift
    return struct.pack("!BBbbII4sQQQQ", (leap << 6) | (version << 3) | mode, stratum, 6, -20,
                       0, 0, ref_id, sntp.to_ntp(now - 1),
                       transmit_of(request) if originate is None else originate,
                       sntp.to_ntp(now) if receive is None else receive,
                       sntp.to_ntp(now) if transmit is None else transmit)


def test_fake_server_time_is_measured() -> None:
    """The fake server itself is sound: a server 10 s ahead reads as offset +10."""
    with FakeServer(lambda r: [reply(r, server_shift=10.0)]) as server:
        result = sntp.query("127.0.0.1", server.port, timeout=2.0)
    assert result.offset == pytest.approx(10.0, abs=TOLERANCE)
    assert result.stratum == 2


def test_spoofed_reply_is_ignored_then_times_out() -> None:
    """A reply whose originate timestamp is not our nonce (a blind spoofer, or an answer to
    someone else) is never used; with nothing else coming, the query times out and says
    what it ignored."""
    with FakeServer(lambda r: [reply(r, originate=transmit_of(r) ^ 1, server_shift=100.0)]
                    ) as server, pytest.raises(sntp.SntpError) as caught:
        sntp.query("127.0.0.1", server.port, timeout=0.5)
    assert not isinstance(caught.value, sntp.SntpUnusable)
    assert "originate timestamp does not match" in str(caught.value)
    assert len(server.requests) >= 2  # it kept asking (resent) while it waited


def test_spoofed_reply_first_does_not_hide_the_real_one() -> None:
    """A forged reply arriving just before the genuine one is skipped, and the genuine one
    (server 10 s ahead, not the forger's 100 s) is the result."""
    def handler(r: bytes) -> list[bytes]:
        return [reply(r, originate=0, server_shift=100.0), reply(r, server_shift=10.0)]

    with FakeServer(handler) as server:
        result = sntp.query("127.0.0.1", server.port, timeout=2.0)
    assert result.offset == pytest.approx(10.0, abs=TOLERANCE)


def test_reply_from_another_port_is_ignored() -> None:
    """The right nonce sent from a different port is not the server talking: ignored."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))

        def handler(r: bytes) -> list[bytes]:
            other.sendto(reply(r), server.client)
            return []

        with FakeServer(handler) as server, \
                pytest.raises(sntp.SntpError, match=r"no valid reply within 0\.4 s"):
            sntp.query("127.0.0.1", server.port, timeout=0.4)
        assert server.requests  # the forger did see (and answer) the requests


@pytest.mark.parametrize("mode", [3, 5])
def test_non_server_mode_is_ignored(mode: int) -> None:
    """An echo of our own client packet (mode 3) or a broadcast (mode 5) is no answer."""
    with FakeServer(lambda r: [reply(r, mode=mode)]) as server, \
            pytest.raises(sntp.SntpError, match=f"mode {mode} packet"):
        sntp.query("127.0.0.1", server.port, timeout=0.4)


def test_kiss_of_death_rate_stops_at_once() -> None:
    """A Kiss-o'-Death RATE (stratum 0, code in the reference ID) names its code and ends
    the query on the first reply: asking again is what the server told us not to do."""
    with FakeServer(lambda r: [reply(r, leap=3, stratum=0, ref_id=b"RATE")]) as server, \
            pytest.raises(sntp.SntpUnusable, match="Kiss-o'-Death RATE"):
        sntp.query("127.0.0.1", server.port, timeout=5.0)
    assert len(server.requests) == 1


def test_leap_indicator_3_is_unsynchronised() -> None:
    """LI=3 (alarm) at an ordinary stratum: the server's time is not to be trusted."""
    with FakeServer(lambda r: [reply(r, leap=3, stratum=2)]) as server, \
            pytest.raises(sntp.SntpUnusable, match=r"not synchronised \(leap indicator 3"):
        sntp.query("127.0.0.1", server.port, timeout=5.0)


def test_stratum_16_is_unsynchronised() -> None:
    """Stratum 16 is NTP's "unsynchronised" even with a clean leap indicator."""
    with FakeServer(lambda r: [reply(r, stratum=16)]) as server, \
            pytest.raises(sntp.SntpUnusable, match="stratum 16"):
        sntp.query("127.0.0.1", server.port, timeout=5.0)


@pytest.mark.parametrize("garbage", [b"", b"hello", b"\x24" + b"\0" * 46])
def test_truncated_packet_is_ignored(garbage: bytes) -> None:
    """Less than 48 bytes cannot be a reply: ignored, and the timeout names it."""
    with FakeServer(lambda r: [garbage]) as server, \
            pytest.raises(sntp.SntpError, match=r"truncated packet \(\d+ bytes < 48\)"):
        sntp.query("127.0.0.1", server.port, timeout=0.4)


def test_truncated_copy_of_a_good_reply_is_ignored() -> None:
    """A good reply cut to 40 bytes (no transmit timestamp) is ignored; the full one sent
    after it is used."""
    with FakeServer(lambda r: [reply(r, server_shift=7.0)[:40], reply(r, server_shift=7.0)]
                    ) as server:
        result = sntp.query("127.0.0.1", server.port, timeout=2.0)
    assert result.offset == pytest.approx(7.0, abs=TOLERANCE)


def test_transmit_before_receive_is_ignored() -> None:
    """Timestamps saying the server answered before it received: nonsense, ignored."""
    now = time.time()
    with FakeServer(lambda r: [reply(r, receive=sntp.to_ntp(now + 1),
                                     transmit=sntp.to_ntp(now))]) as server, \
            pytest.raises(sntp.SntpError, match="sent before the request was received"):
        sntp.query("127.0.0.1", server.port, timeout=0.4)


def test_silent_server_times_out_after_retrying() -> None:
    """Nobody answers: the request is resent within the timeout, then a clear error."""
    with FakeServer(lambda r: []) as server, \
            pytest.raises(sntp.SntpError, match=r"no valid reply within 0\.7 s$"):
        sntp.query("127.0.0.1", server.port, timeout=0.7)
    assert len(server.requests) >= 2
    nonces = [transmit_of(r) for r in server.requests]
    assert len(set(nonces)) == len(nonces)  # each resend carries a fresh nonce


def test_lost_request_is_retried() -> None:
    """The first request is dropped (a lost datagram); the resend is answered."""
    def handler(r: bytes) -> list[bytes]:
        return [] if len(server.requests) == 1 else [reply(r, server_shift=3.0)]

    with FakeServer(handler) as server:
        result = sntp.query("127.0.0.1", server.port, timeout=2.0)
    assert result.offset == pytest.approx(3.0, abs=TOLERANCE)
    assert len(server.requests) == 2


def test_late_answer_to_an_earlier_request_still_counts() -> None:
    """The server answers the first request only after the resend arrives: that reply
    echoes the first nonce, which is still ours, and is measured from the first send."""
    def handler(r: bytes) -> list[bytes]:
        if len(server.requests) == 1:
            return []
        return [reply(server.requests[0], server_shift=-4.0)]

    with FakeServer(handler) as server:
        result = sntp.query("127.0.0.1", server.port, timeout=2.0)
    assert result.offset == pytest.approx(-4.0, abs=TOLERANCE)


def test_closed_port_is_refused() -> None:
    """No socket on the port at all: refused at once (loopback sends the ICMP error)."""
    with pytest.raises(sntp.SntpError, match="refused"):
        sntp.query("127.0.0.1", free_port(udp=True), timeout=2.0)


# --- timestamps -----------------------------------------------------------------------


def test_ntp_timestamps_round_trip() -> None:
    """Unix -> NTP -> Unix keeps the time to well under a microsecond."""
    for t in (0.0, 1_700_000_000.123456, 2_085_978_495.5):
        assert sntp.from_ntp(sntp.to_ntp(t), pivot=t) == pytest.approx(t, abs=1e-6)


def test_era_rollover_in_2036() -> None:
    """NTP seconds wrap on 2036-02-07 06:28:16 UTC (Unix 2085978496): a timestamp just past
    the wrap is small, and still converts to just after 2036 when the local clock is just
    before it (and the other way round)."""
    wrap = 2_085_978_496
    after = sntp.to_ntp(wrap + 10.25)
    assert after >> 32 == 10
    assert sntp.from_ntp(after, pivot=wrap - 5) == pytest.approx(wrap + 10.25)
    before = sntp.to_ntp(wrap - 10.5)
    assert sntp.from_ntp(before, pivot=wrap + 5) == pytest.approx(wrap - 10.5)


def test_request_packet_layout() -> None:
    """48 bytes, LI=0 VN=4 mode 3, the nonce in the transmit field and nothing else set."""
    packet = sntp.request_packet(0x0123456789ABCDEF)
    assert len(packet) == 48
    assert packet[0] == 0b00_100_011
    assert packet[1:40] == b"\0" * 39
    assert transmit_of(packet) == 0x0123456789ABCDEF
