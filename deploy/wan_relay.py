"""The delay line of the WAN emulator: a TUN device read and written by one timing loop.

netem is not available on the bridge PCs' kernels, so delay and jitter are made in user
space. The wan namespace routes every forwarded packet into ``tun0`` once; this process
reads it, holds it for the configured delay of its direction plus a jitter sample, and
writes it back at the due time, when the kernel forwards it on to the real interface.

One single-threaded loop does both the reading and the releasing: ``select()`` on the TUN
device and on the control pipe (stdin) with the time to the next due packet as its
timeout. A separate reader thread would have to win the GIL back from the timing thread
(up to the 5 ms switch interval) and add exactly the jitter we are trying to control.
``select`` takes a microsecond timeout (``epoll`` rounds to milliseconds), but on these
VMs a timed wake-up is still 40-950 us late (p50 ~140 us, measured). So the loop sleeps
until ``SPIN_SECONDS`` before the next due time and then polls (``select`` with a zero
timeout, so arriving packets are still read at once) until it is due: releases are then
late by a few microseconds, at the price of up to 0.5 ms of CPU per held packet. The
timer slack is 1 ns and, when allowed, the process runs SCHED_FIFO, so the other tenants
of a noisy core do not preempt the spin. Every release records its overshoot (actual
write time minus due time), so the accuracy is measured on every run, not assumed.

Control, one JSON object a line on stdin, one JSON reply a line on stdout:
``{"op": "set", "dir": "up", "delay": 0.02, "jitter": 0.005, "seed": 1}`` and
``{"op": "flush"}`` (writes out the packet log). EOF on stdin stops the relay.

Packet log, one JSON object a line: ``dir``, ``proto``, ``src``, ``dst``, ``len``, the
identifier (``sport``/``dport``/``payload`` = first 16 UDP payload bytes in hex, or
``icmp_type``/``icmp_id``/``icmp_seq``, or TCP ports), ``delay`` (the hold applied, s),
``overshoot`` (release lateness, s; for a packet passed straight through with zero delay,
the relay's own time from read to write) and ``t`` (wall-clock release time).
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import heapq
import ipaddress
import json
import os
import random
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
PR_SET_TIMERSLACK = 29
RT_PRIORITY = 50  # SCHED_FIFO: above normal tasks; RT throttling still bounds a runaway
SPIN_SECONDS = 0.0005  # poll instead of sleeping this close to a due time
READ_BATCH = 64  # packets read per wake-up before releasing due ones again
MAX_PACKET = 65535
PAYLOAD_ID_BYTES = 16
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}


@dataclass
class Direction:
    """Delay settings of one direction; the RNG is per direction so a seed reproduces it."""

    delay: float = 0.0
    jitter: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def sample(self) -> float:
        if self.jitter == 0.0:
            return self.delay
        return self.delay + self.rng.uniform(-self.jitter, self.jitter)


def open_tun(name: str) -> int:
    """Attach to the (persistent) TUN device ``name``; raw IP packets, no extra header."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def tighten_timing() -> str:
    """Make wake-ups punctual; return the scheduling obtained, for reports."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)  # 1 ns: the default 50 us slack is all error
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
        return "SCHED_FIFO"
    except PermissionError:  # e.g. a container without CAP_SYS_NICE: works, less exactly
        return "SCHED_OTHER (SCHED_FIFO refused)"


def describe(packet: bytes) -> dict[str, Any]:
    """The fields that let a test match this packet to what a prober sent or received."""
    ihl = (packet[0] & 0x0F) * 4
    proto = packet[9]
    info: dict[str, Any] = {
        "proto": PROTO_NAMES.get(proto, proto),
        "src": socket.inet_ntoa(packet[12:16]),
        "dst": socket.inet_ntoa(packet[16:20]),
        "len": len(packet),
    }
    first_fragment = struct.unpack_from("!H", packet, 6)[0] & 0x1FFF == 0
    l4 = packet[ihl:]
    if not first_fragment:
        info["fragment"] = True
    elif proto == 17 and len(l4) >= 8:
        info["sport"], info["dport"] = struct.unpack_from("!HH", l4)
        info["payload"] = l4[8:8 + PAYLOAD_ID_BYTES].hex()
    elif proto == 6 and len(l4) >= 4:
        info["sport"], info["dport"] = struct.unpack_from("!HH", l4)
    elif proto == 1 and len(l4) >= 8:
        info["icmp_type"] = l4[0]
        info["icmp_id"], info["icmp_seq"] = struct.unpack_from("!HH", l4, 4)
    return info


class Relay:
    """The heap of held packets, the per-direction settings and the packet log."""

    def __init__(self, tun_fd: int, up_net: ipaddress.IPv4Network, log: TextIO):
        self.tun_fd = tun_fd
        self.up_prefix = int(up_net.network_address)
        self.up_mask = int(up_net.netmask)
        self.log = log
        self.directions = {"up": Direction(), "down": Direction()}
        self.heap: list[tuple[float, int, bytes, str, float]] = []
        self.counter = 0  # tie-breaker: equal due times leave in arrival order

    def direction_of(self, packet: bytes) -> str:
        # Only the two subnets are routed into tun0: whatever is not for central is for site.
        destination = int.from_bytes(packet[16:20], "big")
        return "up" if destination & self.up_mask == self.up_prefix else "down"

    def receive(self, packet: bytes, now: float) -> None:
        if len(packet) < 20 or packet[0] >> 4 != 4:
            return  # IPv6 is disabled in the namespaces; anything else is not ours to pass
        direction = self.direction_of(packet)
        delay = self.directions[direction].sample()
        if delay <= 0.0:
            self.release(packet, direction, 0.0, now)
            return
        self.counter += 1
        heapq.heappush(self.heap, (now + delay, self.counter, packet, direction, delay))

    def release(self, packet: bytes, direction: str, delay: float, due: float) -> None:
        # Lateness is taken before the write: the write itself runs the kernel's forwarding
        # of the packet (tens of us), which the zero-delay base path pays just the same.
        overshoot = time.monotonic() - due
        try:
            os.write(self.tun_fd, packet)
        except OSError as err:  # e.g. the kernel's backlog is full: the packet is lost
            print(f"wan_relay: write failed: {err}", file=sys.stderr)
            return
        entry = describe(packet)
        entry.update(dir=direction, delay=delay, overshoot=overshoot, t=time.time())
        self.log.write(json.dumps(entry, separators=(",", ":")) + "\n")

    def release_due(self) -> float | None:
        """Write out every packet whose time has come; return seconds to the next one."""
        while self.heap:
            due = self.heap[0][0]
            now = time.monotonic()
            if due > now:
                return due - now
            _, _, packet, direction, delay = heapq.heappop(self.heap)
            self.release(packet, direction, delay, due)
        return None

    def read_batch(self) -> None:
        for _ in range(READ_BATCH):
            try:
                packet = os.read(self.tun_fd, MAX_PACKET)
            except BlockingIOError:
                return
            self.receive(packet, time.monotonic())

    def control(self, line: str) -> dict[str, Any]:
        request = json.loads(line)
        if request["op"] == "set":
            self.directions[request["dir"]] = Direction(
                float(request["delay"]), float(request["jitter"]),
                random.Random(request["seed"]))
            return {"ok": True}
        if request["op"] == "flush":
            self.log.flush()
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {request['op']!r}"}


def serve(relay: Relay, control_fd: int, control_out: TextIO) -> None:
    """The timing loop: sleep in select() until a packet, a command or the next due time
    (less the spin window, which is polled)."""
    pending = b""  # control bytes read but not yet a whole line
    while True:
        timeout = relay.release_due()
        if timeout is None:
            relay.log.flush()  # idle: nothing is waiting, so writing the log costs no accuracy
        else:
            timeout = max(0.0, timeout - SPIN_SECONDS)
        readable, _, _ = select.select([relay.tun_fd, control_fd], [], [], timeout)
        if relay.tun_fd in readable:
            relay.read_batch()
        if control_fd in readable:
            data = os.read(control_fd, 4096)
            if not data:
                return
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                control_out.write(json.dumps(relay.control(line.decode())) + "\n")
            control_out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.wan_relay",
                                     description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--tun", default="tun0")
    parser.add_argument("--up-net", type=ipaddress.IPv4Network, required=True,
                        help="destination subnet of the up (site -> central) direction")
    parser.add_argument("--log", required=True, help="packet log, JSON lines (truncated)")
    args = parser.parse_args(argv)
    tun_fd = open_tun(args.tun)
    policy = tighten_timing()
    with open(args.log, "w", buffering=1 << 16) as log:
        print(json.dumps({"ready": True, "policy": policy}), flush=True)
        serve(Relay(tun_fd, args.up_net, log), sys.stdin.fileno(), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
