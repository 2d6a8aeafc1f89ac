"""TCP connect time: how long the three-way handshake to ``host:port`` takes.

For targets that answer nothing else, such as the conference platform on :443. The name
is resolved before the clock starts, so DNS time is not connect time. A connect is
synchronous and timed in user space (``timestamps: "user"``): good to a fraction of a
millisecond on an idle agent, which is what a connect time is used for.

``TcpConnectProber`` repeats it at a fixed interval with the same bookkeeping as the
other probers: a connect that fails or times out is a lost probe.
"""

from __future__ import annotations

import socket
import time

from agent.link.prober import Address, Prober, Resolver, resolve

DEFAULT_TIMEOUT = 2.0


def connect_address(address: Address, timeout: float = DEFAULT_TIMEOUT) -> float:
    """Seconds to connect to a resolved address; OSError (or TimeoutError) on failure."""
    family, sockaddr = address
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        start = time.perf_counter_ns()
        sock.connect(sockaddr)
        return (time.perf_counter_ns() - start) / 1e9


def connect_time(host: str, port: int, timeout: float = DEFAULT_TIMEOUT,
                 resolver: Resolver = resolve) -> float:
    """Seconds to connect to ``host:port`` (resolution not included)."""
    return connect_address(resolver(host, port, socket.SOCK_STREAM), timeout)


class TcpConnectProber(Prober):
    method = "tcp-connect"
    socktype = socket.SOCK_STREAM

    def _transmit(self, seq: int, address: Address) -> None:
        sent = self.now_ns()
        self.tracker.sent(seq, sent)
        try:
            elapsed = connect_address(address, self.timeout)
        except OSError as err:  # refused, unreachable, timed out: the probe is lost
            self.warn_once(f"connect-{type(err).__name__}", f"connect failed: {err}")
            return
        self.tracker.reply(seq, sent + int(elapsed * 1e9))

    def _start_receiving(self) -> None:
        """Nothing to start: each connect is timed where it is made."""

    def _close(self) -> None:
        """Nothing to close: each connect closes its own socket."""
