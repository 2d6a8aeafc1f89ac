"""Receive timestamps taken by the kernel (``SO_TIMESTAMPNS``), with a user-space fallback.

A timestamp read in Python after ``recv`` returns includes however long the thread waited
for the GIL or the scheduler; the kernel stamps the datagram when it arrives, so a busy
agent does not inflate the RTT. ``SO_TIMESTAMPNS`` gives CLOCK_REALTIME in nanoseconds:
the sending side must then stamp with ``time.time_ns()`` (same clock) for differences to
make sense. Where the option does not exist (not Linux), both sides use
``time.monotonic_ns()`` and the measurement says ``timestamps: "user"``.
"""

from __future__ import annotations

import platform
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

# <asm-generic/socket.h>: SO_TIMESTAMPNS_OLD, also the cmsg type (SCM_TIMESTAMPNS). Python
# does not export it. Architectures with other numbers (alpha, parisc, sparc) fall back.
SO_TIMESTAMPNS = 35
_GENERIC_ARCH = sys.platform.startswith("linux") and not any(
    arch in platform.machine() for arch in ("alpha", "parisc", "sparc"))
_TIMESPEC = {16: struct.Struct("=qq"), 8: struct.Struct("=ii")}  # 64- and 32-bit longs
ANCILLARY_BUFFER = socket.CMSG_SPACE(16) if hasattr(socket, "CMSG_SPACE") else 0

KERNEL = "kernel"
USER = "user"


def enable(sock: socket.socket) -> bool:
    """Ask the kernel to stamp every received datagram; False where it cannot."""
    if not _GENERIC_ARCH or not ANCILLARY_BUFFER:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def send_clock(kernel: bool) -> Callable[[], int]:
    """The clock whose readings are comparable with this socket's receive timestamps."""
    return time.time_ns if kernel else time.monotonic_ns


class Datagram(NamedTuple):
    data: bytes
    address: Any
    ns: int  # receive time on the clock of ``send_clock(kernel)``
    kernel: bool  # stamped by the kernel (else read in user space, after the fact)


def receive(sock: socket.socket, bufsize: int, kernel: bool) -> Datagram:
    """One datagram with its receive time; raises what ``recv`` raises (timeouts too).

    Without a kernel stamp on a datagram the time is read here, from the same clock, so
    the caller can still use it and report that it was not the kernel's.
    """
    if not kernel:
        data, address = sock.recvfrom(bufsize)
        return Datagram(data, address, time.monotonic_ns(), False)
    data, ancillary, _flags, address = sock.recvmsg(bufsize, ANCILLARY_BUFFER)
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) in _TIMESPEC:
            seconds, nanoseconds = _TIMESPEC[len(value)].unpack(value)
            return Datagram(data, address, seconds * 1_000_000_000 + nanoseconds, True)
    return Datagram(data, address, time.time_ns(), False)
