"""The reflector's UDP packet, in the spirit of TWAMP-light (RFC 5357 §4.2 and §4.3).

Layout (network byte order), then padding to the requested size::

    magic    4 bytes  b"BWL1"
    flags    1 byte   bit 0: this is a reply (set by the reflector)
    (pad)    3 bytes  zero
    seq      u32      the sender's sequence number
    sent     u64      sender's transmit time, ns (the sender's clock; echoed untouched)
    rx       u64      reflector's receive time, ns (the reflector's clock; 0 in a request)
    tx       u64      reflector's transmit time, ns (the reflector's clock; 0 in a request)
    mac      16 bytes HMAC-SHA256(key, the 36 header bytes), truncated to 16 bytes

Why these choices:

- The reply is the request with the reply flag, the two reflector timestamps and a new
  MAC: exactly as long as the request, so the reflector never amplifies (RFC 5357 §4.2.1
  asks the same of TWAMP-light reflectors). Padding lets a prober test with packets the
  size of a video frame's fragments, up to ``MAX_SIZE``.
- ``rx`` and ``tx`` come from the same clock, so ``tx - rx`` (time spent in the
  reflector) can be taken out of the RTT without any clock synchronisation.
- The MAC authenticates both directions: a reflector answers only holders of the shared
  key (it is no open reflector), and a prober ignores forged or garbled replies. The
  padding is not covered: it carries nothing.
- The reply flag stops two reflectors from bouncing one packet between them forever.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"BWL1"
FLAG_REPLY = 0x01
_HEADER = struct.Struct(">4sB3xIQQQ")
HEADER_SIZE = _HEADER.size  # 36
MAC_SIZE = 16
MIN_SIZE = HEADER_SIZE + MAC_SIZE  # 52
DEFAULT_SIZE = 160
MAX_SIZE = 1400  # fits a 1500-byte MTU with IPv6 and UDP headers, never fragments
MIN_KEY_BYTES = 16
_U32 = 2**32
_U64 = 2**64


class PacketError(ValueError):
    """A datagram that is not a valid packet; ``reason`` is a short slug for counting."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Packet:
    seq: int
    sent_ns: int
    reflector_rx_ns: int = 0
    reflector_tx_ns: int = 0
    flags: int = 0
    size: int = DEFAULT_SIZE

    @property
    def is_reply(self) -> bool:
        return bool(self.flags & FLAG_REPLY)

    @property
    def residence_ns(self) -> int:
        """How long the reflector held the packet (0 for a request)."""
        return max(0, self.reflector_tx_ns - self.reflector_rx_ns)


def load_key(path: str | Path) -> bytes:
    """Read the shared secret; surrounding whitespace (a trailing newline) is not part of it."""
    key = Path(path).read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"key file {path} holds {len(key)} bytes; at least "
                         f"{MIN_KEY_BYTES} are needed (e.g. `openssl rand -hex 32`)")
    return key


def _mac(key: bytes, header: bytes) -> bytes:
    return hmac.new(key, header, hashlib.sha256).digest()[:MAC_SIZE]


def check_size(size: int) -> int:
    """The packet size if it is one this protocol allows, else ValueError saying the range."""
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"packet size must be an integer from {MIN_SIZE} to {MAX_SIZE} bytes, "
                         f"got {size!r}")
    return size


def encode(packet: Packet, key: bytes) -> bytes:
    """Serialise and sign a packet, zero-padded to ``packet.size`` bytes."""
    check_size(packet.size)
    if not 0 <= packet.seq < _U32:
        raise ValueError(f"seq {packet.seq} does not fit 32 bits")
    for name in ("sent_ns", "reflector_rx_ns", "reflector_tx_ns"):
        if not 0 <= getattr(packet, name) < _U64:
            raise ValueError(f"{name} does not fit 64 bits")
    header = _HEADER.pack(MAGIC, packet.flags & 0xFF, packet.seq, packet.sent_ns,
                          packet.reflector_rx_ns, packet.reflector_tx_ns)
    return header + _mac(key, header) + bytes(packet.size - MIN_SIZE)


def decode(data: bytes, key: bytes, max_size: int = MAX_SIZE) -> Packet:
    """Parse and authenticate a datagram; PacketError says why it was refused."""
    if len(data) > max_size:
        raise PacketError("oversize", f"{len(data)} bytes > {max_size}")
    if len(data) < MIN_SIZE:
        raise PacketError("malformed", f"{len(data)} bytes < {MIN_SIZE}")
    header = bytes(data[:HEADER_SIZE])
    magic, flags, seq, sent, rx, tx = _HEADER.unpack(header)
    if magic != MAGIC:
        raise PacketError("malformed", "not a BridgeWatch link packet (bad magic)")
    if not hmac.compare_digest(_mac(key, header), bytes(data[HEADER_SIZE:MIN_SIZE])):
        raise PacketError("bad_hmac", "MAC does not match the shared key")
    return Packet(seq, sent, rx, tx, flags, len(data))


def reply(request: Packet, key: bytes, rx_ns: int, tx_ns: int) -> bytes:
    """The reflector's answer: same seq, size and sender time, its own rx/tx times."""
    return encode(Packet(request.seq, request.sent_ns, rx_ns, tx_ns,
                         request.flags | FLAG_REPLY, request.size), key)
