"""The sending side shared by every transport: a fixed-rate sender thread, name resolution
retried each round, and a ``Tracker`` for what comes back.

The sender has a thread of its own and sends on a fixed grid (``start + k * interval``,
skipping missed slots rather than bursting), out of the way of the agent's probe loop,
and stamps each packet just before the system call. Transports subclass ``Prober`` and
implement ``_transmit`` (and, for datagram transports, a receiver thread).

A name that does not resolve is retried every round (it may come back) and reported in
``resolved``; it never stops the prober. Once resolved, the name is looked up again every
``resolve_every`` seconds; if that fails, ``resolved`` turns false and the prober keeps
probing the last address it had, so DNS trouble and path trouble can be told apart.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from agent.link import kerneltime
from agent.link.tracker import Counters, Tracker, Window

log = logging.getLogger(__name__)

Address = tuple[int, Any]  # (address family, socket address)
Resolver = Callable[[str, int | None, int], Address]

DEFAULT_INTERVAL = 1.0
DEFAULT_TIMEOUT = 2.0
DEFAULT_WINDOW_SECONDS = 300.0
DEFAULT_RESOLVE_EVERY = 60.0
_POLL_SECONDS = 0.2  # how often an idle receiver looks at the stop flag


def resolve(host: str, port: int | None, socktype: int) -> Address:
    """The first address ``getaddrinfo`` gives; OSError (gaierror) when there is none."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socktype)[0]
    return family, address


@dataclass(frozen=True)
class Measurement:
    """A finished one-shot run (``Prober.measure``)."""

    method: str
    timestamps: str  # kerneltime.KERNEL or kerneltime.USER
    resolved: bool
    counters: Counters
    window: Window


class Prober(ABC):
    """Probes one target at a fixed interval; subclasses provide the transport."""

    method: ClassVar[str]
    socktype: ClassVar[int] = socket.SOCK_DGRAM

    def __init__(self, host: str, port: int | None, *, interval: float = DEFAULT_INTERVAL,
                 timeout: float = DEFAULT_TIMEOUT,
                 window_seconds: float | None = DEFAULT_WINDOW_SECONDS,
                 resolve_every: float = DEFAULT_RESOLVE_EVERY,
                 resolver: Resolver = resolve) -> None:
        if not interval > 0:
            raise ValueError("interval must be > 0")
        self.host = host
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.resolve_every = resolve_every
        self.tracker = Tracker(timeout, window_seconds)
        self.resolve_attempts = 0
        self._resolver = resolver
        self._address: Address | None = None
        self._resolved: bool | None = None
        self._resolved_at = 0.0
        self._kernel = False  # the socket delivers kernel receive stamps
        self._user_stamped = False  # yet some reply came without one
        self._clock: Callable[[], int] = kerneltime.send_clock(False)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_send = 0.0
        self._warned: set[str] = set()

    # -- what the transports provide ----------------------------------------------------

    @abstractmethod
    def _transmit(self, seq: int, address: Address) -> None:
        """Send probe ``seq`` (recording it in the tracker before it leaves)."""

    @abstractmethod
    def _start_receiving(self) -> None:
        """Start whatever collects replies (datagram transports: a receiver thread)."""

    @abstractmethod
    def _close(self) -> None:
        """Release the transport's sockets."""

    # -- life cycle ---------------------------------------------------------------------

    @property
    def resolved(self) -> bool | None:
        """Whether the latest lookup of the name worked (None before the first)."""
        return self._resolved

    @property
    def timestamps(self) -> str:
        """Whether receive times come from the kernel (``kernel``) or user space."""
        kernel = self._kernel and not self._user_stamped
        return kerneltime.KERNEL if kernel else kerneltime.USER

    def now_ns(self) -> int:
        """Now, on the clock packets are stamped with."""
        return self._clock()

    def start(self, count: int | None = None) -> None:
        """Start probing in the background: forever, or ``count`` rounds."""
        if self._threads:
            raise RuntimeError("prober already started")
        self._start_receiving()
        self._spawn(self._send_loop, count)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._close()

    def measure(self, count: int, interval: float | None = None) -> Measurement:
        """Send ``count`` probes, wait for their replies or timeouts, stop; the whole run."""
        if count < 1:
            raise ValueError("count must be >= 1")
        if interval is not None:
            if not interval > 0:
                raise ValueError("interval must be > 0")
            self.interval = interval
        self.tracker.window_ns = None  # the whole run, however long
        self.start(count)
        self._threads[-1].join()
        deadline = self._last_send + self.timeout
        while self.tracker.counters().in_flight and time.monotonic() < deadline:
            time.sleep(0.005)
        self.stop()
        self.tracker.expire(self.now_ns(), everything=True)
        return Measurement(self.method, self.timestamps, bool(self._resolved),
                           self.tracker.counters(), self.tracker.take_window())

    def counters(self) -> Counters:
        self.tracker.expire(self.now_ns())
        return self.tracker.counters()

    def take_window(self) -> Window:
        """Everything resolved since the previous call (see ``Tracker.take_window``)."""
        self.tracker.expire(self.now_ns())
        return self.tracker.take_window()

    # -- internals ----------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        name = f"link-{self.method}-{self.host}"
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _use_clock(self, kernel: bool) -> None:
        """Stamp sends on the clock of the socket's receive stamps."""
        self._kernel = kernel
        self._clock = kerneltime.send_clock(kernel)

    def _note_stamp(self, datagram: kerneltime.Datagram) -> None:
        """Remember when a reply had to be stamped in user space (reported as ``user``)."""
        if not datagram.kernel:
            self._user_stamped = True

    def _round_address(self) -> Address | None:
        """The address to probe this round, resolving when due; None when there is none."""
        now = time.monotonic()
        if self._address is None or now - self._resolved_at >= self.resolve_every:
            self.resolve_attempts += 1
            self._resolved_at = now
            try:
                self._address = self._resolver(self.host, self.port, self.socktype)
                self._resolved = True
            except (OSError, UnicodeError) as err:
                self._resolved = False
                self.warn_once("resolve", f"cannot resolve {self.host}: {err}")
        return self._address

    def warn_once(self, key: str, message: str) -> None:
        """Log a problem the first time only: a prober repeats itself every second."""
        if key not in self._warned:
            self._warned.add(key)
            log.warning("link %s %s: %s", self.method, self.host, message)

    def _send_loop(self, count: int | None) -> None:
        rounds = 0
        slot = time.monotonic()
        while not self._stop.is_set() and (count is None or rounds < count):
            rounds += 1
            address = self._round_address()
            if address is not None:
                self._last_send = time.monotonic()
                try:
                    self._transmit(self.tracker.next_seq(), address)
                except Exception as err:  # never let one round kill the prober
                    self.warn_once(f"send-{type(err).__name__}", f"send failed: {err}")
            self.tracker.expire(self.now_ns())
            if count is not None and rounds >= count:
                break
            now = time.monotonic()
            slot += self.interval
            if slot < now:  # late (a slow lookup, a suspended machine): skip, do not burst
                slot += (int((now - slot) / self.interval) + 1) * self.interval
            self._stop.wait(slot - now)


class DatagramProber(Prober):
    """A prober whose replies come back on a datagram socket, read by a receiver thread.

    One socket per prober, opened on the first resolved address (and again if a new
    lookup changes the address family), kernel receive stamps enabled where possible.
    """

    def __init__(self, host: str, port: int | None, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self._sock: socket.socket | None = None
        self._family: int | None = None
        self._sock_ready = threading.Event()

    @abstractmethod
    def _new_socket(self, family: int) -> socket.socket:
        """A socket of this transport for the address family."""

    @abstractmethod
    def _handle(self, datagram: kerneltime.Datagram) -> None:
        """Match one received datagram to a probe, or count why it is not a reply."""

    @property
    def _bufsize(self) -> int:
        return 65535

    def _socket(self, family: int) -> socket.socket:
        """The socket for this address family (a new one if a re-resolution changed it)."""
        if self._sock is not None and self._family == family:
            return self._sock
        sock = self._new_socket(family)
        sock.settimeout(_POLL_SECONDS)
        self._use_clock(kerneltime.enable(sock))
        old, self._sock, self._family = self._sock, sock, family
        self._sock_ready.set()
        if old is not None:
            old.close()
        return sock

    def _start_receiving(self) -> None:
        self._spawn(self._receive_loop)

    def _receive_loop(self) -> None:
        while not self._stop.is_set():
            if not self._sock_ready.wait(_POLL_SECONDS):
                continue
            sock = self._sock
            if sock is None:
                continue
            try:
                datagram = kerneltime.receive(sock, self._bufsize, self._kernel)
            except TimeoutError:
                continue
            except OSError as err:  # closed by stop() or a family change, or an ICMP error
                if not self._stop.is_set() and sock is self._sock:
                    self.warn_once(f"recv-{type(err).__name__}", f"receive failed: {err}")
                    self._stop.wait(_POLL_SECONDS)
                continue
            try:
                self._handle(datagram)
            except Exception as err:  # a reply must never kill the receiver
                self.tracker.invalid("error")
                self.warn_once(f"handle-{type(err).__name__}", f"bad reply: {err}")

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
