"""A lean MQTT v5 QoS 1 load generator for the ingest benchmark (not for production).

paho costs about 90 µs of CPU per publish on these machines; a load generator that slow
would take the very core it is meant to measure. This one writes pre-framed PUBLISH
packets to a socket in batches and counts PUBACKs, so nearly all of the CPU is left to
Mosquitto and the collector. Payloads are real wire-v1 telemetry with ``ts`` set at send.

Each site's payload is encoded once with fixed-width ``seq``, ``floor`` and ``ts`` slots
that are overwritten in place per message (JSON allows the leading zeros' stand-in:
spaces), so the generator costs a few microseconds a message.

Run as a child process by bench/ingest_bench.py:
    python -m bench.loadgen --port P --sites N --rate R --seconds S
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time

from bench.fleetdata import FleetFeed, inventory


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


def connect_packet(client_id: str, keepalive: int = 60, session_expiry: int | None = None,
                   will: tuple[bytes, bytes] | None = None) -> bytes:
    """MQTT v5 CONNECT: clean start and no properties, unless it is to look like an agent's.

    An agent keeps its session (clean start off, ``session_expiry`` seconds) and arms a
    retained QoS 1 Last Will ``(topic, payload)`` on its state topic.
    """
    flags = 0x02 if session_expiry is None else 0x00
    props = b"" if session_expiry is None else b"\x11" + struct.pack("!I", session_expiry)
    payload = _string(client_id.encode())
    if will is not None:
        flags |= 0x04 | 0x08 | 0x20  # will, will QoS 1, will retain
        payload += b"\x00" + _string(will[0]) + _string(will[1])  # no will properties
    var = (_string(b"MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive)
           + _varint(len(props)) + props)
    body = var + payload
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: bytes, packet_id: int, payload: bytes, retain: bool = False) -> bytes:
    body = _string(topic) + struct.pack("!H", packet_id) + b"\x00" + payload  # no properties
    return (b"\x33" if retain else b"\x32") + _varint(len(body)) + body  # PUBLISH, QoS 1


def split_packets(buf: bytearray) -> list[tuple[int, bytes]]:
    """Take every complete MQTT packet off the front of ``buf``: (type, body)."""
    out, pos, end = [], 0, len(buf)
    while end - pos >= 2:
        length, shift, i = 0, 0, pos + 1
        while i < end and i < pos + 5:
            byte = buf[i]
            length |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if not byte & 0x80:
                break
        else:
            break
        if end < i + length:
            break
        out.append((buf[pos] >> 4, bytes(buf[i:i + length])))
        pos = i + length
    del buf[:pos]
    return out


class Acks:
    """Counts PUBACK packets in the bytes the broker sends back."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.count = 0

    def feed(self, data: bytes) -> None:
        self.buffer += data
        self.count += sum(kind == 4 for kind, _ in split_packets(self.buffer))  # PUBACK


_SEQ_SLOT = 999_999_999_999  # 12 digits: room for any seq this benchmark reaches
_TS_SLOT = 9_999_999_999.123456  # 17 characters of ts


class Template:
    """One site's PUBLISH packet with the places of seq, floor and ts known."""

    def __init__(self, topic: str, payload: bytes) -> None:
        body = json.loads(payload)
        body["seq"] = body["floor"] = _SEQ_SLOT
        body["ts"] = _TS_SLOT
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        self.packet = bytearray(publish_packet(topic.encode(), 1, text))
        offset = len(self.packet) - len(text)
        self.pid_at = offset - 3  # packet id, then a zero properties length, then payload
        self.seq_at = [offset + m for m in _find_all(text, str(_SEQ_SLOT).encode())]
        self.ts_at = offset + text.index(repr(_TS_SLOT).encode())

    def fill(self, packet_id: int, seq: int, ts: float) -> bytes:
        packet = self.packet
        packet[self.pid_at:self.pid_at + 2] = struct.pack("!H", packet_id)
        seq_text = str(seq).rjust(12).encode()
        for at in self.seq_at:
            packet[at:at + 12] = seq_text
        packet[self.ts_at:self.ts_at + 17] = f"{ts:17.6f}".encode()
        return bytes(packet)


def _find_all(text: bytes, needle: bytes) -> list[int]:
    found, at = [], text.find(needle)
    while at >= 0:
        found.append(at)
        at = text.find(needle, at + 1)
    return found


def run(port: int, sites: int, rate: float, seconds: float, window: int) -> dict[str, float]:
    feed = FleetFeed(inventory(sites))
    templates = [Template(topic, payload) for topic, payload in feed.next_round()]
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(f"loadgen-{port}-{time.monotonic_ns()}"))
    connack = sock.recv(64)
    if not connack or connack[0] != 0x20:
        raise RuntimeError(f"broker refused the load generator: {connack!r}")
    sock.setblocking(False)
    acks = Acks()
    total = int(rate * seconds)
    sent, started, started_at = 0, time.perf_counter(), time.time()
    batch = max(1, int(rate / 1000))  # a batch per millisecond
    while sent < total:
        due = started + sent / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        if sent - acks.count >= window:
            _drain(sock, acks, 0.001)
            continue
        out = []
        now = time.time()
        for _ in range(min(batch, total - sent)):
            seq, site = divmod(sent, len(templates))
            out.append(templates[site].fill(sent % 65535 + 1, seq + 1, now))
            sent += 1
        sock.setblocking(True)
        sock.sendall(b"".join(out))
        sock.setblocking(False)
        _drain(sock, acks, 0)
    deadline = time.monotonic() + 30
    while acks.count < total and time.monotonic() < deadline:
        _drain(sock, acks, 0.05)
    elapsed = time.perf_counter() - started
    sock.close()
    return {"sent": sent, "acked": acks.count, "seconds": elapsed, "rate": sent / elapsed,
            "started_at": started_at}


def _drain(sock: socket.socket, acks: Acks, wait: float) -> None:
    if wait:
        time.sleep(wait)
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            raise ConnectionError("broker closed the connection")
        acks.feed(data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sites", type=int, default=3400)
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--window", type=int, default=5000)
    args = parser.parse_args()
    result = run(args.port, args.sites, args.rate, args.seconds, args.window)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
