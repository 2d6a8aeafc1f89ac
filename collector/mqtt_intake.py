"""A lean MQTT v5 subscriber for the collector's high-rate QoS 1 intake.

Why not paho here: measured on these 2-core machines, paho spends ~90 µs of CPU per
received QoS 1 message (one select and several reads per packet, v5 property objects,
message objects, topic matching), which alone caps a collector below 10,000 msg/s. This
reader does only what intake needs and does it in bulk: one large ``recv`` parses every
packet it holds, the handler runs for each PUBLISH, and the PUBACKs of the whole batch go
back in one write *after* the handler has taken the messages in, so a crash before the
ack makes the broker re-send (at-least-once; the state drops the duplicates).

Scope: MQTT 5 client, persistent session (clean start off, explicit session expiry),
username/password, TLS, QoS 0/1 subscriptions, keepalive, reconnect with backoff. It
never publishes; the agent side keeps paho.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Sequence

from agent.broker import BrokerSettings

log = logging.getLogger("bridgewatch.collector.mqtt")

Handler = Callable[[str, bytes], None]

_CONNECT, _CONNACK, _PUBLISH, _PUBACK = 1, 2, 3, 4
_SUBSCRIBE, _SUBACK, _PINGREQ, _PINGRESP, _DISCONNECT = 8, 9, 12, 13, 14
_PROP_SESSION_EXPIRY, _PROP_RECEIVE_MAXIMUM = 0x11, 0x21
_RECV_BYTES = 1 << 18


class ProtocolError(Exception):
    """The broker said no, or sent something an MQTT 5 client must not accept."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + _varint(len(body)) + body


def connect_packet(settings: BrokerSettings, client_id: str) -> bytes:
    flags = 0  # clean start off: the broker keeps our session and backlog while we're away
    password = settings.password()
    if settings.username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    props = (bytes([_PROP_SESSION_EXPIRY]) + struct.pack("!I", settings.session_expiry_seconds)
             + bytes([_PROP_RECEIVE_MAXIMUM]) + struct.pack("!H", 65535))
    body = (_utf8("MQTT") + bytes([5, flags]) + struct.pack("!H", settings.keepalive)
            + _varint(len(props)) + props + _utf8(client_id))
    if settings.username is not None:
        body += _utf8(settings.username)
    if password is not None:
        body += _utf8(password)
    return _packet(_CONNECT, 0, body)


def subscribe_packet(packet_id: int, filters: Sequence[str], qos: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + b"\x00"  # no properties
    for topic_filter in filters:
        body += _utf8(topic_filter) + bytes([qos])
    return _packet(_SUBSCRIBE, 0x2, body)


def _read_varint(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(value, next position), or None when the buffer ends inside the number."""
    value, shift = 0, 0
    for i in range(pos, min(pos + 4, len(buf))):
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    if len(buf) - pos >= 4:
        raise ProtocolError("malformed remaining length")
    return None


class MqttIntake:
    """Subscribes and hands every (topic, payload) to ``handler`` on its own thread."""

    def __init__(self, settings: BrokerSettings, client_id: str, filters: Sequence[str],
                 handler: Handler, on_connection: Callable[[bool], None] | None = None,
                 tick: Callable[[], object] | None = None, tick_seconds: float = 0.25) -> None:
        self.settings = settings
        self.client_id = client_id
        self.filters = list(filters)
        self.handler = handler
        self.on_connection = on_connection or (lambda up: None)
        # Called after every batch and at least every tick_seconds: the owner's deferred work.
        self.tick = tick or (lambda: None)
        self.tick_seconds = tick_seconds
        self.connected = False
        self.session_present = False
        self._stopping = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._ping_sent_at: float | None = None  # a PINGREQ awaiting its PINGRESP

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt-intake", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already gone: nothing to say goodbye to
                sock.sendall(_packet(_DISCONNECT, 0, b""))
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        delay = self.settings.reconnect_min_seconds
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self._session()
            except (OSError, ProtocolError) as err:
                if not self._stopping.is_set():
                    log.warning("broker %s:%d: %s", self.settings.host, self.settings.port, err)
            finally:
                self._close()
            if time.monotonic() - started > 30:
                delay = self.settings.reconnect_min_seconds  # it had been working: retry soon
            if self._stopping.wait(delay * random.uniform(0.8, 1.2)):
                break
            delay = min(delay * 2, self.settings.reconnect_max_seconds)

    def _close(self) -> None:
        if self.connected:
            self.connected = False
            self.on_connection(False)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- one connection -----------------------------------------------------------------

    def _open(self) -> socket.socket:
        s = self.settings
        sock = socket.create_connection((s.host, s.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if s.tls:
            context = ssl.create_default_context(cafile=s.ca_file)
            if s.cert_file:
                context.load_cert_chain(s.cert_file, s.key_file)
            sock = context.wrap_socket(sock, server_hostname=s.host)
        return sock

    def _session(self) -> None:
        sock = self._sock = self._open()
        if self._stopping.is_set():
            return
        sock.sendall(connect_packet(self.settings, self.client_id))
        buf = bytearray()
        keepalive = self.settings.keepalive
        sock.settimeout(min(self.tick_seconds, keepalive / 2) if keepalive else self.tick_seconds)
        last_sent = time.monotonic()
        self._ping_sent_at = None
        while not self._stopping.is_set():
            try:
                data = sock.recv(_RECV_BYTES)
            except TimeoutError:
                data = None
            now = time.monotonic()
            if data == b"":
                raise ConnectionError("broker closed the connection")
            if data:
                buf += data
                acks = self._dispatch(buf, sock)
                if acks:
                    sock.sendall(acks)
                    last_sent = now
            self.tick()
            if not keepalive:
                continue
            if self._ping_sent_at is not None and now - self._ping_sent_at > keepalive:
                raise ConnectionError(f"no answer to PINGREQ within {keepalive} s")
            if self._ping_sent_at is None and now - last_sent >= keepalive / 2:
                sock.sendall(_packet(_PINGREQ, 0, b""))
                last_sent = self._ping_sent_at = now

    def _dispatch(self, buf: bytearray, sock: socket.socket) -> bytes:
        """Handle every complete packet in ``buf``; return the PUBACKs to send."""
        acks = bytearray()
        pos, end = 0, len(buf)
        handler = self.handler
        while end - pos >= 2:
            header = buf[pos]
            length_at = _read_varint(buf, pos + 1)
            if length_at is None:
                break
            length, start = length_at
            stop = start + length
            if stop > end:
                break
            kind = header >> 4
            if kind == _PUBLISH:
                qos = (header >> 1) & 3
                topic_len = buf[start] << 8 | buf[start + 1]
                at = start + 2 + topic_len
                topic = buf[start + 2:at].decode("utf-8", "replace")
                if qos:
                    if qos != 1:
                        raise ProtocolError("QoS 2 delivery on a QoS 1 subscription")
                    packet_id = buf[at:at + 2]
                    at += 2
                props_len, at = _read_varint(buf, at) or (0, at)
                payload = bytes(buf[at + props_len:stop])
                try:
                    handler(topic, payload)
                except Exception:  # a bug in a handler must not stop intake; say it loudly
                    log.exception("intake handler failed on %r", topic[:200])
                if qos:
                    acks += b"\x40\x02" + packet_id
            elif kind == _CONNACK:
                self._connack(buf[start:stop], sock)
            elif kind == _SUBACK:
                refused = [c for c in buf[start + 3:stop] if c >= 0x80]
                if refused:
                    log.error("broker refused subscriptions %s: reason codes %s", self.filters,
                              [hex(c) for c in refused])
            elif kind == _PINGRESP:
                self._ping_sent_at = None
            elif kind == _DISCONNECT:
                reason = buf[start] if length else 0
                raise ProtocolError(f"broker disconnected us (reason 0x{reason:02x})")
            pos = stop
        del buf[:pos]
        return bytes(acks)

    def _connack(self, body: bytes | bytearray, sock: socket.socket) -> None:
        if len(body) < 2:
            raise ProtocolError("short CONNACK")
        if body[1] >= 0x80:
            raise ProtocolError(f"broker refused the connection (reason 0x{body[1]:02x})")
        self.session_present = bool(body[0] & 1)
        # Subscribe on every connect: a no-op when the session kept them, a repair if not.
        # A shard may hold thousands of per-site filters: a packet per thousand.
        for packet_id, start in enumerate(range(0, len(self.filters), 1000), start=1):
            sock.sendall(subscribe_packet(packet_id, self.filters[start:start + 1000]))
        self.connected = True
        self.on_connection(True)
        log.info("connected to %s:%d as %s (session present: %s)", self.settings.host,
                 self.settings.port, self.client_id, self.session_present)
