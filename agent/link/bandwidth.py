"""The bandwidth test against the reflector's TCP endpoint: client, protocol and arithmetic.

Protocol (one JSON object per line, UTF-8; the reflector is ``collector.reflector``):

1. reflector -> ``{"v":1,"nonce":"<32 hex>"}``, a fresh random nonce per connection
   (or ``{"v":1,"ok":false,"error":"busy"}`` and close);
2. client -> ``{"v":1,"direction":"upload"|"download","seconds":S,"hmac":"<64 hex>"}``,
   the HMAC-SHA256 with the shared key of the nonce, direction and seconds
   (``request_mac``). The nonce makes every request good for one connection only: a
   recorded request replayed on a new connection does not match the new nonce;
3. reflector -> ``{"v":1,"ok":true,"seconds":G}`` (G = S capped by the reflector) or
   ``{"v":1,"ok":false,"error":"..."}`` and close;
4. upload: the client sends; the reflector counts for G seconds from the first byte and
   answers ``{"v":1,"bytes":N,"seconds":T,"marks":[[t,bytes],...]}``.
   download: the reflector sends for G seconds and closes; the client counts.

The result is measured where the bytes arrive (the sender's count is only what entered
its socket buffer). **The first 0.5 s after the first byte are skipped**
(``SLOW_START_SECONDS``: TCP slow start and the filling of buffers), and
``bits_per_second`` is the rate over the rest; ``bytes`` and ``seconds`` are the whole
transfer, for reference (a test too short for a steady part is measured whole, see
``steady_rate``). Both ends cap unsent data in the socket (``TCP_NOTSENT_LOWAT``)
so the transfer stops soon after the test does, even behind a slow link.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_PORT = 8621
DEFAULT_SECONDS = 5.0
SLOW_START_SECONDS = 0.5
DIRECTIONS = ("upload", "download")
MAX_LINE_BYTES = 64 * 1024
CHUNK_BYTES = 64 * 1024
NOTSENT_LOWAT_BYTES = 128 * 1024
PROGRESS_EVERY_SECONDS = 0.25
GRACE_SECONDS = 15.0  # beyond the test's own length, for a slow link to drain
_MAC_CONTEXT = b"BWL1-bandwidth\n"

Progress = Callable[[float, float], None]  # (fraction done, bits/s so far)


class BandwidthError(RuntimeError):
    """The test could not run or complete (refused, timed out, connection lost)."""


class ReflectorBusy(BandwidthError):
    """The reflector runs its maximum of tests at once: a reason to wait, not a result."""


BUSY_WAIT_SECONDS = 30.0  # how long a test waits in all for a busy reflector to free up
BUSY_FIRST_PAUSE = 1.0  # then doubling, with jitter, so bridges ordered together spread out


@dataclass(frozen=True)
class BandwidthResult:
    direction: str
    bits_per_second: float  # over the steady part (after SLOW_START_SECONDS)
    bytes: int  # the whole transfer
    seconds: float  # first byte to last
    steady_seconds: float  # the span bits_per_second is measured over


def new_nonce() -> str:
    return secrets.token_hex(16)


def request_mac(key: bytes, nonce: str, direction: str, seconds: float) -> str:
    """The request's authenticator: binds the key, this connection's nonce and the test."""
    message = _MAC_CONTEXT + f"{nonce}\n{direction}\n{seconds:.3f}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def meets(bits_per_second: float, required_bits_per_second: float) -> bool:
    """Pass/fail against a site's requirement."""
    return bits_per_second >= required_bits_per_second


class Meter:
    """Counts bytes where they arrive; keeps the marks the steady rate needs.

    Marks are ``(seconds since the first byte, bytes so far)``: the first arrival, the
    first at or after ``skip`` (the start of the steady part) and the latest.
    """

    def __init__(self, skip: float = SLOW_START_SECONDS) -> None:
        self.skip = skip
        self.bytes = 0
        self.first: float | None = None  # monotonic time of the first byte
        self._first_mark: tuple[float, int] | None = None
        self._steady_mark: tuple[float, int] | None = None
        self._last_mark: tuple[float, int] | None = None

    def add(self, now: float, nbytes: int) -> None:
        if self.first is None:
            self.first = now
        self.bytes += nbytes
        mark = (now - self.first, self.bytes)
        if self._first_mark is None:
            self._first_mark = mark
        elif self._steady_mark is None and mark[0] >= self.skip:
            self._steady_mark = mark
        self._last_mark = mark

    @property
    def marks(self) -> list[tuple[float, int]]:
        out: list[tuple[float, int]] = []
        for mark in (self._first_mark, self._steady_mark, self._last_mark):
            if mark is not None and mark not in out:
                out.append(mark)
        return out

    def elapsed(self, now: float) -> float:
        return 0.0 if self.first is None else now - self.first


def steady_rate(marks: list[tuple[float, int]] | list[list[float]],
                skip: float = SLOW_START_SECONDS) -> tuple[float, float]:
    """(bits/s, seconds) from the first mark at or after ``skip`` to the last mark.

    When that steady part would cover less than half of the transfer (a test too short,
    or one whose tail is only buffers draining), the whole transfer is used instead.
    """
    if len(marks) < 2:
        return 0.0, 0.0
    t_end, b_end = marks[-1]
    start = next((m for m in marks if m[0] >= skip), None)
    if start is None or t_end - start[0] < 0.5 * (t_end - marks[0][0]):
        start = marks[0]
    span = t_end - start[0]
    if span <= 0:
        return 0.0, 0.0
    return (b_end - start[1]) * 8 / span, span


def tune(sock: socket.socket) -> None:
    """Cap unsent data in the socket, so a transfer ends soon after its sender stops."""
    if hasattr(socket, "TCP_NOTSENT_LOWAT"):
        # An older kernel refuses it: the test still works, it just drains longer.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, NOTSENT_LOWAT_BYTES)


class LineReader:
    """Reads JSON lines from a socket, refusing any line over ``MAX_LINE_BYTES``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def read(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE_BYTES:
                raise BandwidthError("line too long")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BandwidthError("timed out waiting for a reply line")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                raise BandwidthError("connection closed before a reply line")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            obj = json.loads(line)
        except ValueError:
            raise BandwidthError("reply line is not JSON") from None
        if not isinstance(obj, dict) or obj.get("v") != 1:
            raise BandwidthError("reply line is not a version 1 object")
        return obj


def send_line(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.sendall(json.dumps(obj, separators=(",", ":")).encode() + b"\n")


def run_test(host: str, port: int, key: bytes, direction: str,
             seconds: float = DEFAULT_SECONDS, progress: Progress | None = None,
             connect_timeout: float = 5.0,
             busy_wait: float = BUSY_WAIT_SECONDS) -> BandwidthResult:
    """Run one upload or download test; BandwidthError says why one could not be had.

    When a window opens the collector orders every bridge's test at once, and the central
    reflector runs only a few bandwidth tests at a time: a "busy" refusal is retried after
    a growing, jittered pause for up to ``busy_wait`` seconds, so it delays the test
    instead of failing a healthy bridge's bandwidth criteria.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if not seconds > 0:
        raise ValueError("seconds must be > 0")
    give_up = time.monotonic() + busy_wait
    pause = BUSY_FIRST_PAUSE
    while True:
        try:
            return _one_test(host, port, key, direction, seconds, progress, connect_timeout)
        except ReflectorBusy:
            wait = pause * (0.5 + secrets.randbelow(1000) / 1000)
            if time.monotonic() + wait > give_up:
                raise
            time.sleep(wait)
            pause *= 2


def _one_test(host: str, port: int, key: bytes, direction: str, seconds: float,
              progress: Progress | None, connect_timeout: float) -> BandwidthResult:
    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
    except OSError as err:
        raise BandwidthError(f"cannot connect to {host}:{port}: {err}") from None
    with sock:
        tune(sock)
        try:
            reader = LineReader(sock)
            hello = reader.read(time.monotonic() + connect_timeout)
            if "nonce" not in hello:
                if hello.get("error") == "busy":
                    raise ReflectorBusy("reflector refused: busy")
                raise BandwidthError(f"reflector refused: {hello.get('error', hello)}")
            send_line(sock, {"v": 1, "direction": direction, "seconds": seconds,
                             "hmac": request_mac(key, str(hello["nonce"]), direction,
                                                 seconds)})
            answer = reader.read(time.monotonic() + connect_timeout)
            if answer.get("ok") is not True:
                raise BandwidthError(f"reflector refused: {answer.get('error', answer)}")
            granted = float(answer["seconds"])
            if direction == "upload":
                return _upload(sock, reader, granted, progress)
            return _download(sock, reader.buffer, granted, progress)
        except OSError as err:
            raise BandwidthError(f"{direction} test failed: {err}") from None
        except (KeyError, TypeError, ValueError) as err:
            raise BandwidthError(f"unexpected reply from the reflector: {err}") from None


def _report(progress: Progress | None, fraction: float, meter_bytes: int,
            elapsed: float) -> None:
    if progress is not None:
        progress(min(1.0, fraction), meter_bytes * 8 / elapsed if elapsed > 0 else 0.0)


def _upload(sock: socket.socket, reader: LineReader, seconds: float,
            progress: Progress | None) -> BandwidthResult:
    chunk = secrets.token_bytes(CHUNK_BYTES)  # incompressible, should a link compress
    sock.setblocking(False)
    start = time.monotonic()
    deadline = start + seconds + GRACE_SECONDS
    sent = 0
    next_progress = start
    while True:
        now = time.monotonic()
        if now > deadline:
            raise BandwidthError("upload: no result from the reflector in time")
        if progress is not None and now >= next_progress:
            _report(progress, (now - start) / seconds, sent, now - start)
            next_progress = now + PROGRESS_EVERY_SECONDS
        readable, writable, _ = select.select([sock], [sock], [], PROGRESS_EVERY_SECONDS)
        if readable:
            sock.setblocking(True)
            result = reader.read(deadline)
            bps, steady = steady_rate(result["marks"])
            if progress is not None:
                progress(1.0, bps)
            return BandwidthResult("upload", bps, int(result["bytes"]),
                                   float(result["seconds"]), steady)
        if writable:
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                continue


def _download(sock: socket.socket, already: bytes, seconds: float,
              progress: Progress | None) -> BandwidthResult:
    meter = Meter()
    start = time.monotonic()
    if already:
        meter.add(start, len(already))
    deadline = start + seconds + GRACE_SECONDS
    buffer = bytearray(256 * 1024)
    next_progress = start
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BandwidthError("download: the reflector did not finish in time")
        sock.settimeout(min(remaining, PROGRESS_EVERY_SECONDS))
        try:
            n = sock.recv_into(buffer)
        except TimeoutError:
            n = -1
        now = time.monotonic()
        if n == 0:
            break
        if n > 0:
            meter.add(now, n)
        if progress is not None and now >= next_progress:
            _report(progress, meter.elapsed(now) / seconds, meter.bytes, meter.elapsed(now))
            next_progress = now + PROGRESS_EVERY_SECONDS
    bps, steady = steady_rate(meter.marks)
    if progress is not None:
        progress(1.0, bps)
    total = meter.marks[-1][0] if meter.marks else 0.0
    return BandwidthResult("download", bps, meter.bytes, total, steady)
