"""ICMP echo, traceroute and TCP connect time, on loopback with real sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from agent.link import icmp, tcp
from agent.link.tcp import TcpConnectProber
from tests.conftest import require_root


def test_icmp_echo_to_loopback() -> None:
    require_root()
    assert icmp.icmp_available()
    m = icmp.IcmpProber("127.0.0.1").measure(5, 0.005)
    assert m.method == "icmp" and m.timestamps == "kernel"
    c = m.counters
    assert (c.sent, c.received, c.lost, c.duplicates, c.invalid) == (5, 5, 0, 0, {})
    assert sorted(seq for seq, _ in m.window.events) == [0, 1, 2, 3, 4]
    assert all(rtt > 0 for _, rtt in m.window.events)


def test_two_icmp_probers_do_not_take_each_others_replies() -> None:
    """A raw socket sees every echo reply on the host: each prober must keep to its own,
    even when another one happens to use the same ICMP identifier."""
    require_root()
    a = icmp.IcmpProber("127.0.0.1", interval=0.005)
    b = icmp.IcmpProber("127.0.0.1")
    b.ident = a.ident
    a.start()
    try:
        mb = b.measure(20, 0.005)
    finally:
        a.stop()
    assert (mb.counters.received, mb.counters.duplicates) == (20, 0)
    assert mb.counters.invalid["foreign_payload"] > 0  # a's replies, seen and set aside
    assert set(mb.counters.invalid) == {"foreign_payload"}


def test_traceroute_to_loopback_is_one_hop() -> None:
    require_root()
    hops = icmp.traceroute("127.0.0.1", max_hops=5, timeout=2.0)
    assert len(hops) == 1
    hop = hops[0]
    assert (hop.ttl, hop.address, hop.reached) == (1, "127.0.0.1", True)
    assert hop.rtt is not None and hop.rtt >= 0


def test_traceroute_refuses_silly_hop_counts() -> None:
    with pytest.raises(ValueError, match="max_hops"):
        icmp.traceroute("127.0.0.1", max_hops=0)


def test_echo_request_checksum() -> None:
    # RFC 1071: the checksum of a message with its checksum filled in is zero.
    data = icmp.echo_request(socket.AF_INET, 0x1234, 7, b"abcdefgh")
    assert data[0] == 8 and icmp.checksum(data) == 0
    assert icmp.checksum(b"\x00\x01\xf2\x03\xf4\xf5\xf6\xf7") == 0x220D  # RFC 1071 §3


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def test_tcp_connect_time(listening_port: int) -> None:
    assert 0 < tcp.connect_time("127.0.0.1", listening_port) < tcp.DEFAULT_TIMEOUT


def test_tcp_connect_to_a_closed_port_fails_and_is_lost() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        closed = server.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        tcp.connect_time("127.0.0.1", closed)
    m = TcpConnectProber("127.0.0.1", closed, timeout=0.2).measure(2, 0.005)
    assert (m.method, m.counters.sent, m.counters.received, m.counters.lost) == (
        "tcp-connect", 2, 0, 2)


def test_tcp_connect_prober(listening_port: int) -> None:
    m = TcpConnectProber("127.0.0.1", listening_port).measure(3, 0.005)
    assert (m.counters.sent, m.counters.received, m.timestamps) == (3, 3, "user")
    assert m.window.stats.rtt is not None
