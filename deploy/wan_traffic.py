"""Test traffic for the WAN emulator: a UDP echo and its pinger, a TCP bulk sender and sink.

The emulator has to prove itself with traffic that depends on nothing else in the project,
measured precisely enough that a 1 ms disagreement with the relay log is the emulator's
fault and not the measuring tool's. So the pinger takes the receive time from the kernel
(SO_TIMESTAMPNS, not when Python got round to it), and the echo reports, TWAMP-style, how
long it held each packet (kernel receive time to just before its reply), which the pinger
subtracts: the scheduling delays of two Python processes on a busy machine stay out of
the RTT.

Probe packet (UDP payload): magic ``b"WANT"``, 4 zero bytes, seq (u32 BE), send time
(u64 ns), the echo's turnaround (u64 ns, zero on the way up), padding. The seq sits where
the agent's BWL1 packets carry theirs (bytes 8..12), inside the 16 bytes the relay logs,
so ``Wan.applied_delays(direction, MAGIC)`` matches these probes as it matches BWL1.

    python -m deploy.wan_traffic udp-echo --port 7000
    python -m deploy.wan_traffic udp-ping --host 198.18.2.2 --port 7000 --count 200 \\
        --interval 0.01            # prints {"sent": N, "rtts": [[seq, seconds], ...]}
    python -m deploy.wan_traffic tcp-sink --port 5001 --warmup 1
        # prints {"listening": port}, then {"bytes", "seconds", "bits_per_second"} at EOF
    python -m deploy.wan_traffic tcp-send --host 198.18.2.2 --port 5001 --seconds 6
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import sys
import time

MAGIC = b"WANT"
HEADER = struct.Struct("!4s4xIQQ")  # magic, (pad), seq, send time ns, echo turnaround ns
TIMESTAMP = struct.Struct("@qq")  # struct timespec, as SO_TIMESTAMPNS delivers it
# Python 3.11's socket module does not name it; 35 is Linux's value on 64-bit machines.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESTAMP_CMSG_BYTES = 64  # room for the one control message we ask for
RECV_BYTES = 2048
CHUNK = 64 * 1024
RT_PRIORITY = 40  # below the relay's 50: the delay line comes first


def kernel_receive(sock: socket.socket) -> tuple[bytes, tuple[str, int], int]:
    """recvmsg with the kernel's receive timestamp (ns, CLOCK_REALTIME)."""
    data, ancillary, _, address = sock.recvmsg(RECV_BYTES, socket.CMSG_SPACE(TIMESTAMP_CMSG_BYTES))
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = TIMESTAMP.unpack(value[:TIMESTAMP.size])
            return data, address, sec * 1_000_000_000 + nsec
    raise RuntimeError("no SO_TIMESTAMPNS on a received datagram")


def realtime_if_allowed() -> None:
    """SCHED_FIFO (as root): what remains uncompensated is the instant between reading the
    clock and sending, and a normal-priority neighbour must not be scheduled into it."""
    with contextlib.suppress(PermissionError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))


def timestamped_udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    return sock


def udp_echo(port: int) -> None:
    """Reflect every datagram, writing into it how long it was held here."""
    realtime_if_allowed()
    sock = timestamped_udp_socket()
    sock.bind(("0.0.0.0", port))
    while True:
        data, address, received_ns = kernel_receive(sock)
        if len(data) < HEADER.size or not data.startswith(MAGIC):
            continue
        magic, seq, sent_ns, _ = HEADER.unpack_from(data)
        turnaround = time.time_ns() - received_ns
        sock.sendto(HEADER.pack(magic, seq, sent_ns, turnaround) + data[HEADER.size:], address)


def udp_ping(host: str, port: int, count: int, interval: float, size: int,
             wait: float) -> dict[str, object]:
    """Send ``count`` probes ``interval`` apart; RTT = kernel receive - send - turnaround."""
    realtime_if_allowed()
    sock = timestamped_udp_socket()  # not connected: an early ICMP refusal is just a loss
    padding = bytes(max(0, size - HEADER.size))
    sent: dict[int, int] = {}
    rtts: dict[int, float] = {}
    duplicates = 0
    start = time.monotonic()
    seq = 0
    while True:
        now = time.monotonic()
        if seq < count and now >= start + seq * interval:
            sent_ns = time.time_ns()
            sock.sendto(HEADER.pack(MAGIC, seq, sent_ns, 0) + padding, (host, port))
            sent[seq] = sent_ns
            seq += 1
            continue
        if seq < count:
            timeout = start + seq * interval - now
        else:
            timeout = start + (count - 1) * interval + wait - now
            if timeout <= 0 or len(rtts) == count:
                break
        sock.settimeout(timeout)
        try:
            data, _, received_ns = kernel_receive(sock)
        except TimeoutError:
            continue
        _, got, sent_ns, turnaround = HEADER.unpack_from(data)
        if got in rtts:
            duplicates += 1
        elif sent.get(got) == sent_ns:
            rtts[got] = (received_ns - sent_ns - turnaround) / 1e9
    return {"sent": count, "duplicates": duplicates, "rtts": sorted(rtts.items())}


def tcp_sink(port: int, warmup: float) -> dict[str, float]:
    """Receive one connection to EOF; the rate over all but its first ``warmup`` seconds
    (slow start is the sender's business, not the link's)."""
    with socket.create_server(("0.0.0.0", port)) as server:
        print(json.dumps({"listening": port}), flush=True)
        conn, _ = server.accept()
    buffer = bytearray(CHUNK)
    marks: list[tuple[float, int]] = []
    total = 0
    with conn:
        while n := conn.recv_into(buffer):
            total += n
            marks.append((time.monotonic(), total))
    first = marks[0][0]
    begin = next((t, b) for t, b in marks if t >= first + warmup)
    end = marks[-1]
    seconds = end[0] - begin[0]
    return {"bytes": end[1] - begin[1], "seconds": seconds,
            "bits_per_second": 8 * (end[1] - begin[1]) / seconds}


def tcp_send(host: str, port: int, seconds: float) -> None:
    """Send as fast as the path takes for ``seconds``, then close."""
    chunk = bytes(CHUNK)
    with socket.create_connection((host, port), timeout=30) as conn:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            conn.sendall(chunk)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.wan_traffic",
                                     description=__doc__.split("\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    echo = sub.add_parser("udp-echo")
    echo.add_argument("--port", type=int, required=True)
    ping = sub.add_parser("udp-ping")
    ping.add_argument("--host", required=True)
    ping.add_argument("--port", type=int, required=True)
    ping.add_argument("--count", type=int, required=True)
    ping.add_argument("--interval", type=float, required=True)
    ping.add_argument("--size", type=int, default=64, help="UDP payload bytes")
    ping.add_argument("--wait", type=float, default=1.0, help="for replies after the last")
    sink = sub.add_parser("tcp-sink")
    sink.add_argument("--port", type=int, required=True)
    sink.add_argument("--warmup", type=float, default=1.0)
    send = sub.add_parser("tcp-send")
    send.add_argument("--host", required=True)
    send.add_argument("--port", type=int, required=True)
    send.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    if args.command == "udp-echo":
        udp_echo(args.port)
    elif args.command == "udp-ping":
        print(json.dumps(udp_ping(args.host, args.port, args.count, args.interval, args.size,
                                  args.wait)))
    elif args.command == "tcp-sink":
        print(json.dumps(tcp_sink(args.port, args.warmup)), flush=True)
    else:
        tcp_send(args.host, args.port, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
