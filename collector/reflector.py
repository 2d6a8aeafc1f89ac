"""``bridgewatch-reflector``: the central end of the link test, next to the collector.

- **UDP echo** (default port 8620), in the spirit of TWAMP-light (RFC 5357): each signed
  request (``agent.link.packet``) comes back as a reply of exactly the same size with the
  reflector's receive and send times, so the prober can take the reflector's own delay
  out of the RTT. The receive time is the kernel's (``SO_TIMESTAMPNS``); the send time is
  read just before the system call, on the same clock.
- **TCP bandwidth** (default port 8621): one upload or download test per connection, the
  protocol of ``agent.link.bandwidth`` (a nonce per connection, so a recorded request
  cannot be replayed).

It must not be an open amplifier or an open traffic generator: a request needs the shared
key, a reply is never larger than its request, each source address gets a token bucket
(``rate_limit_pps``, a second's worth of burst), packets over ``max_packet_bytes`` and
sources outside ``allow`` are dropped, and bandwidth tests are capped in length and
number. Every refusal is counted by reason and logged once per source and reason (a
flood does not flood the log). Replies go out unsigned by anything but the key: a host
with several addresses should listen on the one the agents use.

Before a bandwidth request is authenticated, the reflector reads at most one line of
``agent.link.bandwidth.MAX_LINE_BYTES`` (64 KiB), and only for ``_REQUEST_TIMEOUT``
seconds in all, however slowly it trickles in: a peer that sends nothing, too slowly, or
garbage without an end is cut off and counted (``timeout``, ``line_too_long``,
``bad_request``), and its test slot is free again.

It has **no HTTP surface**: nothing here speaks HTTP, serves a page or takes a token. Its
refusal counts are written to the log when it stops. Should they ever be scraped, the
proposal is a read-only ``/metrics`` bound to loopback and served by the collector's
hardened ``collector.http`` server, not a second HTTP server here.

Example ``reflector.yaml``::

    listen: 0.0.0.0
    udp_port: 8620
    tcp_port: 8621
    key_file: /etc/bridgewatch/reflector.key   # the same file the agents have
    allow: [10.0.0.0/8, 2001:db8::/32]         # default: every source
    rate_limit_pps: 50
    max_packet_bytes: 1400
    max_bandwidth_seconds: 30
    max_concurrent_bandwidth_tests: 4
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import logging
import math
import secrets
import signal
import socket
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.link import bandwidth, kerneltime, packet, udp
from agent.yamlfile import read_yaml

log = logging.getLogger("bridgewatch.reflector")

DEFAULT_UDP_PORT = udp.DEFAULT_PORT
DEFAULT_TCP_PORT = bandwidth.DEFAULT_PORT
_POLL_SECONDS = 0.2  # how often blocked loops look at the stop flag
_REQUEST_TIMEOUT = 5.0  # for the client's request line
_FIRST_BYTE_TIMEOUT = 10.0  # for an upload's first byte
_DRAIN_SECONDS = 2.0  # reading what an uploader still sends after its result
_MAX_LOGGED = 10_000  # distinct (source, reason) pairs logged before going quiet
_MAX_BUCKETS = 65_536

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_KEYS = {"listen", "udp_port", "tcp_port", "key_file", "allow", "rate_limit_pps",
         "max_packet_bytes", "max_bandwidth_seconds", "max_concurrent_bandwidth_tests"}


@dataclass(frozen=True)
class ReflectorSettings:
    key: bytes
    host: str = "0.0.0.0"
    udp_port: int = DEFAULT_UDP_PORT  # 0: any free port (tests)
    tcp_port: int = DEFAULT_TCP_PORT
    allow: tuple[Network, ...] | None = None  # None: every source
    rate_limit_pps: float = 50.0
    max_packet_bytes: int = packet.MAX_SIZE
    max_bandwidth_seconds: float = 30.0
    max_concurrent_bandwidth_tests: int = 4

    def __post_init__(self) -> None:
        if len(self.key) < packet.MIN_KEY_BYTES:
            raise ValueError(f"key must be at least {packet.MIN_KEY_BYTES} bytes")
        for name in ("udp_port", "tcp_port"):
            port = getattr(self, name)
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
                raise ValueError(f"{name} must be a port number, got {port!r}")
        if not _positive(self.rate_limit_pps):
            raise ValueError(f"rate_limit_pps must be > 0, got {self.rate_limit_pps!r}")
        if (isinstance(self.max_packet_bytes, bool) or not isinstance(self.max_packet_bytes, int)
                or not packet.MIN_SIZE <= self.max_packet_bytes <= packet.MAX_SIZE):
            raise ValueError(f"max_packet_bytes must be from {packet.MIN_SIZE} to "
                             f"{packet.MAX_SIZE}, got {self.max_packet_bytes!r}")
        if not _positive(self.max_bandwidth_seconds):
            raise ValueError("max_bandwidth_seconds must be > 0, got "
                             f"{self.max_bandwidth_seconds!r}")
        tests = self.max_concurrent_bandwidth_tests
        if isinstance(tests, bool) or not isinstance(tests, int) or tests < 1:
            raise ValueError(f"max_concurrent_bandwidth_tests must be an integer >= 1, "
                             f"got {tests!r}")


def _positive(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value) and value > 0)


def parse_allow(raw: Any) -> tuple[Network, ...] | None:
    """The allow-list as networks; None (allow all) when absent."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise ValueError("allow must be a non-empty list of CIDRs (leave it out to allow all)")
    try:
        return tuple(ipaddress.ip_network(str(cidr), strict=False) for cidr in raw)
    except ValueError as err:
        raise ValueError(f"allow: {err}") from None


def load_settings(path: str | Path) -> ReflectorSettings:
    """Read and validate ``reflector.yaml``; ``key_file`` is relative to the file."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: must be a mapping")
    unknown = sorted(str(k) for k in set(raw) - _KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]} (known: {', '.join(sorted(_KEYS))})")
    if not isinstance(raw.get("key_file"), str):
        raise ValueError(f"{path}: key_file is required (the shared secret's path)")
    key = packet.load_key(path.resolve().parent / Path(raw["key_file"]).expanduser())
    host = raw.get("listen", "0.0.0.0")
    if not isinstance(host, str) or not host:
        raise ValueError(f"{path}: listen must be a host address")
    defaults = ReflectorSettings(key=key)
    return ReflectorSettings(
        key=key, host=host,
        udp_port=raw.get("udp_port", defaults.udp_port),
        tcp_port=raw.get("tcp_port", defaults.tcp_port),
        allow=parse_allow(raw.get("allow")),
        rate_limit_pps=raw.get("rate_limit_pps", defaults.rate_limit_pps),
        max_packet_bytes=raw.get("max_packet_bytes", defaults.max_packet_bytes),
        max_bandwidth_seconds=raw.get("max_bandwidth_seconds", defaults.max_bandwidth_seconds),
        max_concurrent_bandwidth_tests=raw.get("max_concurrent_bandwidth_tests",
                                               defaults.max_concurrent_bandwidth_tests),
    )


class RateLimiter:
    """A token bucket per source address (``rate`` per second, ``rate`` of burst).

    Bounded: past ``max_sources`` the longest-idle source is forgotten (its bucket
    would be full again by then anyway, unless under a spoofed-source flood, where
    forgetting costs at most one burst per address).
    """

    def __init__(self, rate: float, max_sources: int = _MAX_BUCKETS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self.max_sources = max_sources
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, source: str) -> bool:
        now = self._clock()
        tokens, last = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return allowed


class Refusals:
    """Counts refusals by reason; logs the first of each (source, reason) pair only."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._logged: set[tuple[str, str]] = set()
        self._quiet = False
        self._lock = threading.Lock()

    def refuse(self, source: str, reason: str, detail: str = "") -> None:
        with self._lock:
            self.counts[reason] += 1
            pair = (source, reason)
            if pair in self._logged or self._quiet:
                return
            if len(self._logged) >= _MAX_LOGGED:
                self._quiet = True
                log.warning("%d sources refused: no more refusals will be logged", _MAX_LOGGED)
                return
            self._logged.add(pair)
        log.warning("refused %s from %s%s (not logged again for this source)",
                    reason, source, f": {detail}" if detail else "")


def _source(address: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address[0].split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    return ip


class Reflector:
    """The UDP echo and the TCP bandwidth endpoint, each on its own threads."""

    def __init__(self, settings: ReflectorSettings) -> None:
        self.settings = settings
        self.refusals = Refusals()
        self.echoed = 0
        self.bandwidth_tests: Counter[str] = Counter()
        self._limiter = RateLimiter(settings.rate_limit_pps)
        self._slots = threading.BoundedSemaphore(settings.max_concurrent_bandwidth_tests)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._kernel = False

    # -- life cycle ---------------------------------------------------------------------

    @property
    def udp_port(self) -> int:
        assert self._udp is not None, "not started"
        return self._udp.getsockname()[1]

    @property
    def tcp_port(self) -> int:
        assert self._tcp is not None, "not started"
        return self._tcp.getsockname()[1]

    def start(self) -> None:
        s = self.settings
        family, _, _, _, udp_address = socket.getaddrinfo(
            s.host, s.udp_port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)[0]
        self._udp = socket.socket(family, socket.SOCK_DGRAM)
        self._udp.bind(udp_address)
        self._udp.settimeout(_POLL_SECONDS)
        self._kernel = kerneltime.enable(self._udp)
        family, _, _, _, tcp_address = socket.getaddrinfo(
            s.host, s.tcp_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self._tcp = socket.socket(family, socket.SOCK_STREAM)
        self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._tcp.bind(tcp_address)
        self._tcp.listen(16)
        self._tcp.settimeout(_POLL_SECONDS)
        self._spawn(self._echo_loop, "reflector-udp")
        self._spawn(self._accept_loop, "reflector-tcp")
        log.info("reflector listening: UDP echo on %s:%d, bandwidth on TCP %s:%d, %s timestamps",
                 s.host, self.udp_port, s.host, self.tcp_port,
                 kerneltime.KERNEL if self._kernel else kerneltime.USER)

    def stop(self) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=5)
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()

    def __enter__(self) -> Reflector:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _allowed(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        allow = self.settings.allow
        return allow is None or any(ip in network for network in allow)

    # -- UDP echo -----------------------------------------------------------------------

    def _echo_loop(self) -> None:
        assert self._udp is not None
        sock, key, limit = self._udp, self.settings.key, self.settings.max_packet_bytes
        clock = kerneltime.send_clock(self._kernel)
        while not self._stop.is_set():
            try:
                datagram = kerneltime.receive(sock, limit + 1, self._kernel)
            except TimeoutError:
                continue
            except OSError as err:  # e.g. an ICMP error queued by an earlier reply
                log.debug("UDP receive: %s", err)
                continue
            ip = _source(datagram.address)
            source = str(ip)
            if not self._allowed(ip):
                self.refusals.refuse(source, "not_allowed")
            elif len(datagram.data) > limit:
                self.refusals.refuse(source, "oversize", f"more than {limit} bytes")
            elif not self._limiter.allow(source):
                self.refusals.refuse(source, "rate_limited",
                                     f"over {self.settings.rate_limit_pps:g} packets/s")
            else:
                self._echo(sock, key, datagram, source, clock)

    def _echo(self, sock: socket.socket, key: bytes, datagram: kerneltime.Datagram,
              source: str, clock: Callable[[], int]) -> None:
        try:
            request = packet.decode(datagram.data, key)
        except packet.PacketError as err:
            self.refusals.refuse(source, err.reason, str(err))
            return
        if request.is_reply:  # never answer an answer: two reflectors would ping-pong
            self.refusals.refuse(source, "not_request")
            return
        data = packet.reply(request, key, datagram.ns, clock())
        try:
            sock.sendto(data, datagram.address)
        except OSError as err:
            log.debug("UDP reply to %s: %s", source, err)
            return
        self.echoed += 1

    # -- TCP bandwidth ------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._tcp is not None
        while not self._stop.is_set():
            try:
                conn, address = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError as err:
                log.debug("TCP accept: %s", err)
                continue
            ip = _source(address)
            if not self._allowed(ip):
                self.refusals.refuse(str(ip), "not_allowed")
                conn.close()
            elif not self._slots.acquire(blocking=False):
                self.refusals.refuse(str(ip), "busy")
                self._refuse_connection(conn, "busy")
            else:
                self._spawn(self._serve, "reflector-bandwidth", conn, str(ip))

    @staticmethod
    def _refuse_connection(conn: socket.socket, error: str) -> None:
        with conn:
            try:
                conn.settimeout(1.0)
                bandwidth.send_line(conn, {"v": 1, "ok": False, "error": error})
            except OSError:
                pass

    def _serve(self, conn: socket.socket, source: str) -> None:
        try:
            self._bandwidth_test(conn, source)
        except OSError as err:
            log.info("bandwidth test from %s ended: %s", source, err)
        finally:
            self._slots.release()  # before the close: a peer that sees it may come back now
            conn.close()

    def _bandwidth_test(self, conn: socket.socket, source: str) -> None:
        bandwidth.tune(conn)
        nonce = bandwidth.new_nonce()
        conn.settimeout(_REQUEST_TIMEOUT)
        bandwidth.send_line(conn, {"v": 1, "nonce": nonce})
        reader = bandwidth.LineReader(conn)
        deadline = time.monotonic() + _REQUEST_TIMEOUT  # for the whole line, not each read
        try:
            request = reader.read(deadline)
        except bandwidth.BandwidthError as err:
            reason = ("line_too_long" if len(reader.buffer) > bandwidth.MAX_LINE_BYTES
                      else "timeout" if time.monotonic() >= deadline else "bad_request")
            self.refusals.refuse(source, reason, str(err))
            return
        direction, seconds, mac = (request.get("direction"), request.get("seconds"),
                                   request.get("hmac"))
        if direction not in bandwidth.DIRECTIONS or not _positive(seconds) or not isinstance(
                mac, str):
            self.refusals.refuse(source, "bad_request", "needs direction, seconds > 0, hmac")
            bandwidth.send_line(conn, {"v": 1, "ok": False, "error": "bad request"})
            return
        expected = bandwidth.request_mac(self.settings.key, nonce, direction, seconds)
        if not hmac.compare_digest(expected, mac):
            self.refusals.refuse(source, "bad_hmac", "bandwidth request (wrong key or replayed)")
            bandwidth.send_line(conn, {"v": 1, "ok": False, "error": "not authenticated"})
            return
        granted = min(float(seconds), self.settings.max_bandwidth_seconds)
        bandwidth.send_line(conn, {"v": 1, "ok": True, "seconds": granted})
        self.bandwidth_tests[direction] += 1
        if direction == "upload":
            self._sink(conn, source, granted)
        else:
            self._source_bytes(conn, granted)

    def _sink(self, conn: socket.socket, source: str, seconds: float) -> None:
        meter = bandwidth.Meter()
        buffer = bytearray(256 * 1024)
        conn.settimeout(_POLL_SECONDS)
        first_byte_by = time.monotonic() + _FIRST_BYTE_TIMEOUT
        while not self._stop.is_set():
            now = time.monotonic()
            if meter.first is None and now > first_byte_by:
                self.refusals.refuse(source, "timeout", "upload sent nothing")
                return
            try:
                n = conn.recv_into(buffer)
            except TimeoutError:
                n = -1
            now = time.monotonic()
            if n == 0 or (meter.first is not None and now - meter.first > seconds):
                break
            if n > 0:
                meter.add(now, n)
        marks = meter.marks
        bandwidth.send_line(conn, {"v": 1, "bytes": meter.bytes,
                                   "seconds": marks[-1][0] if marks else 0.0,
                                   "marks": [[t, b] for t, b in marks]})
        drain_until = time.monotonic() + _DRAIN_SECONDS
        while time.monotonic() < drain_until:
            try:
                if not conn.recv_into(buffer):
                    break
            except TimeoutError:
                continue

    def _source_bytes(self, conn: socket.socket, seconds: float) -> None:
        chunk = secrets.token_bytes(bandwidth.CHUNK_BYTES)
        conn.settimeout(_POLL_SECONDS)
        end = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < end:
            try:
                conn.send(chunk)
            except TimeoutError:
                continue
        conn.shutdown(socket.SHUT_WR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bridgewatch-reflector",
                                     description="BridgeWatch link reflector (UDP echo and "
                                                 "TCP bandwidth endpoint).")
    parser.add_argument("--config", required=True, help="reflector YAML configuration")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.config)
    except (OSError, ValueError) as err:
        print(f"bridgewatch-reflector: bad configuration {args.config}: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for name in ("SIGTERM", "SIGINT"):
        signal.signal(getattr(signal, name), lambda signum, frame: stop.set())
    reflector = Reflector(settings)
    try:
        reflector.start()
    except OSError as err:
        print(f"bridgewatch-reflector: cannot listen: {err}", file=sys.stderr)
        return 1
    while not stop.wait(1.0):
        pass
    reflector.stop()
    log.info("reflector stopped: %d echoed, bandwidth tests %s, refused %s", reflector.echoed,
             dict(reflector.bandwidth_tests), dict(reflector.refusals.counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
