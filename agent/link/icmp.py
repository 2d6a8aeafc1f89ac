"""ICMP echo and traceroute, for processes that hold CAP_NET_RAW.

**Echo** (``IcmpProber``) runs on a raw socket of its own: one long-lived socket with
kernel receive stamps (``SO_TIMESTAMPNS``), the same fixed-rate sender and the same
bookkeeping as the UDP prober. The echo request is built here (RFC 792 / RFC 4443, eight
header bytes and a checksum) rather than with scapy: importing scapy costs ~30 MB of
resident memory, more than the whole agent, for a packet this simple. Replies are
recognised by the prober's identifier *and* a random token in the payload, since a raw
socket sees every ICMP packet the host receives; the rest is not ours and is ignored.

**Traceroute** (``traceroute``) is an on-demand diagnosis, so it uses scapy, imported
only when called: TTL-limited echo requests, one per hop, sent together.

Without the privilege ``icmp_available()`` is false and ``IcmpUnavailable`` is raised;
callers fall back to the UDP reflector or TCP connect, and label what they used.
"""

from __future__ import annotations

import secrets
import socket
import struct
from dataclasses import dataclass
from typing import Any

from agent.link import kerneltime
from agent.link.prober import Address, DatagramProber, resolve

DEFAULT_PAYLOAD_BYTES = 56  # as ping(8): a 64-byte ICMP message
_ECHO_REQUEST = {socket.AF_INET: 8, socket.AF_INET6: 128}
_ECHO_REPLY = {socket.AF_INET: 0, socket.AF_INET6: 129}
_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
_TOKEN_BYTES = 8
_SEQ_MOD = 1 << 16


class IcmpUnavailable(RuntimeError):
    """This process may not open raw sockets (no root, no CAP_NET_RAW)."""


def icmp_available() -> bool:
    """Whether this process may send ICMP echo: try to open a raw socket."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
    except PermissionError:
        return False
    except OSError:  # no IPv4, or raw sockets unsupported here
        return False
    return True


def _require() -> None:
    if not icmp_available():
        raise IcmpUnavailable("ICMP needs CAP_NET_RAW (or root); use udp-reflector or "
                              "tcp-connect instead")


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(family: int, ident: int, seq16: int, payload: bytes) -> bytes:
    """An echo request; for ICMPv6 the kernel fills in the checksum (RFC 3542 §3.1)."""
    kind = _ECHO_REQUEST[family]
    body = _HEADER.pack(kind, 0, 0, ident, seq16) + payload
    if family == socket.AF_INET6:
        return body
    return _HEADER.pack(kind, 0, checksum(body), ident, seq16) + payload


class IcmpProber(DatagramProber):
    method = "icmp"

    def __init__(self, host: str, *, payload_bytes: int = DEFAULT_PAYLOAD_BYTES,
                 **kwargs: Any) -> None:
        _require()
        super().__init__(host, None, **kwargs)
        if not _TOKEN_BYTES <= payload_bytes <= 1400:
            raise ValueError(f"payload_bytes must be from {_TOKEN_BYTES} to 1400")
        self.ident = secrets.randbits(16)
        self.token = secrets.token_bytes(_TOKEN_BYTES)
        self.payload = self.token + bytes(payload_bytes - _TOKEN_BYTES)

    def _new_socket(self, family: int) -> socket.socket:
        proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
        return socket.socket(family, socket.SOCK_RAW, proto)

    def _transmit(self, seq: int, address: Address) -> None:
        family, sockaddr = address
        sock = self._socket(family)
        data = echo_request(family, self.ident, seq % _SEQ_MOD, self.payload)
        self.tracker.sent(seq, self.now_ns())
        sock.sendto(data, sockaddr)

    def _handle(self, datagram: kerneltime.Datagram) -> None:
        data = datagram.data
        if self._family == socket.AF_INET:  # raw IPv4 sockets deliver the IP header too
            if len(data) < 20 or data[0] >> 4 != 4:
                return
            data = data[(data[0] & 0x0F) * 4:]
        if len(data) < _HEADER.size + _TOKEN_BYTES:
            return
        kind, _, _, ident, seq16 = _HEADER.unpack_from(data)
        token = data[_HEADER.size:_HEADER.size + _TOKEN_BYTES]
        if kind != _ECHO_REPLY.get(self._family or 0) or ident != self.ident:
            return  # somebody else's ICMP
        if token != self.token:
            self.tracker.invalid("foreign_payload")
            return
        # ICMP carries 16 bits of seq: the reply is for the latest seq with those bits.
        latest = self.tracker.next_seq() - 1
        self._note_stamp(datagram)
        self.tracker.reply(latest - ((latest - seq16) % _SEQ_MOD), datagram.ns)


@dataclass(frozen=True)
class Hop:
    ttl: int
    address: str | None  # None: no answer within the timeout ("*")
    rtt: float | None
    reached: bool  # this hop is the destination


def traceroute(host: str, max_hops: int = 30, timeout: float = 2.0) -> list[Hop]:
    """The path to ``host`` as a hop list, up to and including the destination.

    Needs CAP_NET_RAW (``IcmpUnavailable`` otherwise); an unresolvable name raises
    OSError. Imports scapy on first use.
    """
    if not 1 <= max_hops <= 255:
        raise ValueError("max_hops must be from 1 to 255")
    _require()
    family, sockaddr = resolve(host, None, socket.SOCK_RAW)
    from scapy.sendrecv import sr  # lazily: ~30 MB, only for this diagnosis

    ident = secrets.randbits(16)
    if family == socket.AF_INET6:
        from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6

        probes = IPv6(dst=sockaddr[0], hlim=(1, max_hops)) / ICMPv6EchoRequest(id=ident)

        def hop_of(sent: Any) -> int:
            return int(sent.hlim)

        def is_destination(received: Any) -> bool:
            return bool(received.haslayer(ICMPv6EchoReply))
    else:
        from scapy.layers.inet import ICMP, IP

        probes = IP(dst=sockaddr[0], ttl=(1, max_hops)) / ICMP(id=ident)

        def hop_of(sent: Any) -> int:
            return int(sent.ttl)

        def is_destination(received: Any) -> bool:
            return bool(received.haslayer(ICMP) and received[ICMP].type == 0)

    answered, _ = sr(probes, timeout=timeout, verbose=0)
    by_hop = {hop_of(sent): (sent, received) for sent, received in answered}
    hops: list[Hop] = []
    for ttl in range(1, max_hops + 1):
        if ttl not in by_hop:
            hops.append(Hop(ttl, None, None, False))
            continue
        sent, received = by_hop[ttl]
        reached = is_destination(received)
        rtt = max(0.0, float(received.time - sent.sent_time))
        hops.append(Hop(ttl, str(received.src), rtt, reached))
        if reached:
            break
    return hops
