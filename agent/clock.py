"""A one-shot SNTP v4 client (RFC 4330, RFC 5905): how far the PC's clock is from a server.

Session recordings and test deadlines are stamped with the bridge PC's clock, so the agent
measures the offset θ = server - local against the site's NTP server and reports it.

Only a reply that is provably the answer to *our* request is used: it must come from the
address we asked, be a server-mode packet, and echo our request's transmit timestamp (a
fresh random nonce) as its originate timestamp. Anything else (a spoofed or stale reply,
garbage, a truncated packet) is ignored and we keep waiting, so a stray datagram can
neither fake an offset nor abort the measurement; the last such reason is named in the
timeout error. An authentic reply that says "do not use me" (a Kiss-o'-Death, an
unsynchronised server) ends the query at once with that reason.
"""

from __future__ import annotations

import math
import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

NTP_PORT = 123
# Seconds from the NTP prime epoch (1900-01-01) to the Unix epoch (1970-01-01).
NTP_UNIX_DELTA = 2_208_988_800
_ERA_SECONDS = 2**32
_PACKET = struct.Struct("!BBbbII4sQQQQ")  # RFC 5905 figure 8, without extensions/MAC
PACKET_SIZE = _PACKET.size  # 48
MODE_CLIENT = 3
MODE_SERVER = 4
LEAP_UNSYNCHRONIZED = 3
MAX_STRATUM = 15  # 16 means unsynchronised
# A lost datagram is resent after this share of the timeout (at least _MIN_RESEND).
_RESEND_FRACTION = 1 / 3
_MIN_RESEND = 0.2


class SntpError(Exception):
    """The server could not be queried or its answer cannot be used; the text says why."""


class SntpUnusable(SntpError):
    """The server did answer us, but says not to use its time (Kiss-o'-Death, unsynchronised).

    Distinct from silence: the server is up, so waiting or asking another of its addresses
    would not help.
    """


@dataclass(frozen=True)
class SntpResult:
    offset: float  # seconds the server's clock is ahead of the local one (θ)
    delay: float  # round-trip network delay, server processing excluded (δ)
    stratum: int  # 1..15, as the server announced
    server_address: str  # the address that answered (IPv4 or IPv6 literal)


def to_ntp(unix_time: float) -> int:
    """A Unix time as a 64-bit NTP timestamp (32.32 fixed point, modulo the era)."""
    seconds = math.floor(unix_time)
    fraction = int((unix_time - seconds) * 2**32)
    return (((seconds + NTP_UNIX_DELTA) % _ERA_SECONDS) << 32) | min(fraction, 2**32 - 1)


def from_ntp(timestamp: int, pivot: float) -> float:
    """An NTP timestamp as Unix time, in the era that puts it nearest to ``pivot``.

    NTP timestamps wrap every 2^32 s (next in 2036): the era is not in the packet, so the
    answer is taken within ±68 years of a time we know (the local clock), as RFC 5905
    section 6 suggests.
    """
    seconds = timestamp >> 32
    fraction = (timestamp & 0xFFFFFFFF) / 2**32
    pivot_ntp = math.floor(pivot) + NTP_UNIX_DELTA
    era = pivot_ntp // _ERA_SECONDS
    candidate = era * _ERA_SECONDS + seconds
    if candidate - pivot_ntp > _ERA_SECONDS // 2:
        candidate -= _ERA_SECONDS
    elif pivot_ntp - candidate > _ERA_SECONDS // 2:
        candidate += _ERA_SECONDS
    return candidate - NTP_UNIX_DELTA + fraction


def request_packet(nonce: int) -> bytes:
    """A client request: LI=0, VN=4, mode 3, the nonce as transmit timestamp, rest zero."""
    return _PACKET.pack((0 << 6) | (4 << 3) | MODE_CLIENT, 0, 0, 0, 0, 0, b"\0" * 4,
                        0, 0, 0, nonce)


@dataclass(frozen=True)
class _Reply:
    leap: int
    version: int
    mode: int
    stratum: int
    reference_id: bytes
    originate: int
    receive: int
    transmit: int


def _parse(data: bytes) -> _Reply:
    """Decode the fixed 48-byte header; ValueError names what is wrong with it."""
    if len(data) < PACKET_SIZE:
        raise ValueError(f"truncated packet ({len(data)} bytes < {PACKET_SIZE})")
    first, stratum, _poll, _precision, _root_delay, _root_disp, ref_id, _ref, orig, recv, \
        xmit = _PACKET.unpack_from(data)
    return _Reply(first >> 6, (first >> 3) & 7, first & 7, stratum, ref_id, orig, recv, xmit)


def _kiss_code(reference_id: bytes) -> str:
    """The four ASCII letters of a Kiss-o'-Death (e.g. RATE, DENY), made printable."""
    code = "".join(chr(b) if 0x20 < b < 0x7F else "?" for b in reference_id.rstrip(b"\0"))
    return code or "?"


def _same_host(a: str, b: str) -> bool:
    """Compare two address literals, ignoring an IPv6 scope suffix and its spelling."""
    a, b = a.split("%", 1)[0], b.split("%", 1)[0]
    if a == b:
        return True
    for family in (socket.AF_INET6, socket.AF_INET):
        try:
            return socket.inet_pton(family, a) == socket.inet_pton(family, b)
        except OSError:
            continue
    return False


def query(host: str, port: int = NTP_PORT, timeout: float = 2.0,
          clock: Callable[[], float] = time.time) -> SntpResult:
    """Ask one NTP server for the time and return the offset of its clock from ``clock``.

    ``clock`` is the local clock being judged (injectable: a test shifts it by a known
    amount and expects the opposite offset). Each address ``host`` resolves to is tried in
    turn; one that fails at once (unreachable network, port refused) gives way to the next,
    one that stays silent uses up the timeout. Raises ``SntpError`` naming the reason
    (``SntpUnusable`` when the server answered but refused or is unsynchronised). The
    timeout covers the exchange; name resolution is bounded by the system's resolver.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0, got {timeout!r}")
    deadline = time.monotonic() + timeout
    try:
        addresses = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_DGRAM,
                                       socket.IPPROTO_UDP)
    except (socket.gaierror, UnicodeError) as err:
        raise SntpError(f"cannot resolve NTP server {host!r}: {err}") from None
    errors: list[str] = []
    seen: set[tuple[int, str]] = set()
    for family, socktype, proto, _name, sockaddr in addresses:
        key = (family, str(sockaddr[0]))
        if key in seen:
            continue
        seen.add(key)
        if time.monotonic() >= deadline:
            break
        where = host if key[1] == host else f"{host} ({key[1]})"
        try:
            return _query_address(family, socktype, proto, sockaddr, deadline, timeout, clock)
        except SntpUnusable as err:  # the server answered "no": another address won't differ
            raise SntpUnusable(f"{where}: {err}") from None
        except SntpError as err:
            errors.append(f"{where}: {err}")
    if not errors:
        raise SntpError(f"no address of {host!r} could be tried within {timeout:g} s")
    raise SntpError("; ".join(errors))


def _query_address(family: int, socktype: int, proto: int, sockaddr: tuple, deadline: float,
                   timeout: float, clock: Callable[[], float]) -> SntpResult:
    resend = max(_MIN_RESEND, timeout * _RESEND_FRACTION)
    sent: dict[int, float] = {}  # nonce -> T1: a late reply to an earlier send still counts
    ignored: list[str] = []
    try:
        sock = socket.socket(family, socktype, proto)
    except OSError as err:
        raise SntpError(f"cannot open a socket: {err}") from None
    with sock:
        try:
            # Connected: the kernel drops datagrams from other addresses, and a closed port
            # comes back as ConnectionRefusedError instead of a silent timeout.
            sock.connect(sockaddr)
        except OSError as err:
            raise SntpError(f"cannot reach: {err}") from None
        next_send = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                why = f" (ignored: {ignored[-1]})" if ignored else ""
                raise SntpError(f"no valid reply within {timeout:g} s{why}")
            if now >= next_send:
                nonce = _nonce(clock())
                while nonce in sent:
                    nonce = _nonce(clock())
                t1 = clock()
                try:
                    sock.send(request_packet(nonce))
                except OSError as err:
                    raise SntpError(f"cannot send: {err}") from None
                sent[nonce] = t1
                next_send = now + resend
            sock.settimeout(max(0.001, min(deadline, next_send) - time.monotonic()))
            try:
                data, source = sock.recvfrom(1024)
            except TimeoutError:
                continue
            except ConnectionRefusedError:
                raise SntpError("refused (no NTP server on that port)") from None
            except OSError as err:
                raise SntpError(f"cannot receive: {err}") from None
            t4 = clock()
            try:
                return _accept(data, source, sockaddr, sent, t4)
            except ValueError as err:
                ignored.append(str(err))


def _nonce(now: float) -> int:
    """The transmit timestamp of a request: this second, and 32 random bits of fraction.

    Servers echo it untouched, so it only has to be unguessable; keeping the seconds real
    leaves the packet plausible to servers and firewalls that look at it.
    """
    return (to_ntp(now) & ~0xFFFFFFFF) | secrets.randbits(32)


def _accept(data: bytes, source: tuple, sockaddr: tuple, sent: dict[int, float],
            t4: float) -> SntpResult:
    """Judge one datagram: ValueError to ignore it, SntpUnusable to stop, else the result."""
    if source[1] != sockaddr[1] or not _same_host(str(source[0]), str(sockaddr[0])):
        raise ValueError(f"reply from {source[0]} port {source[1]}, not the server")
    reply = _parse(data)
    if reply.mode != MODE_SERVER:
        raise ValueError(f"mode {reply.mode} packet, not a server reply (mode 4)")
    if reply.version not in (3, 4):
        raise ValueError(f"NTP version {reply.version} reply")
    t1 = sent.get(reply.originate)
    if t1 is None:
        raise ValueError("originate timestamp does not match our request (spoofed or stale)")
    # From here the reply is authentic: the server really says this.
    if reply.stratum == 0 and reply.reference_id.strip(b"\0"):
        # A KoD has stratum 0 and a code; an unsynchronised chronyd sends stratum 0 and
        # leap 3 with an empty reference ID, which is the next case, not a kiss.
        raise SntpUnusable(f"Kiss-o'-Death {_kiss_code(reply.reference_id)} (the server "
                           f"refuses to serve us)")
    if (reply.leap == LEAP_UNSYNCHRONIZED or reply.stratum == 0
            or reply.stratum > MAX_STRATUM):
        raise SntpUnusable(f"server is not synchronised (leap indicator {reply.leap}, "
                           f"stratum {reply.stratum})")
    if reply.transmit == 0 or reply.receive == 0:
        raise ValueError("reply without receive or transmit timestamp")
    t2 = from_ntp(reply.receive, t1)
    t3 = from_ntp(reply.transmit, t1)
    if t3 < t2:
        raise ValueError("reply sent before the request was received (bad timestamps)")
    # RFC 5905 section 8: offset theta and round-trip delay delta.
    offset = ((t2 - t1) + (t3 - t4)) / 2
    # Clock granularity can make a loopback delay a hair below zero: it is at least 0.
    delay = max(0.0, (t4 - t1) - (t3 - t2))
    return SntpResult(offset, delay, reply.stratum, str(source[0]))
