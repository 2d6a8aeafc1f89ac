"""The reflector packet: layout, signing, size rules and the errors for bad datagrams."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from agent.link import packet

KEY = b"k" * 32


def test_round_trip_keeps_every_field_and_pads_to_size() -> None:
    for size in (packet.MIN_SIZE, packet.DEFAULT_SIZE, packet.MAX_SIZE):
        sent = packet.Packet(seq=2**32 - 1, sent_ns=2**64 - 1, reflector_rx_ns=5,
                             reflector_tx_ns=9, flags=packet.FLAG_REPLY, size=size)
        data = packet.encode(sent, KEY)
        assert len(data) == size
        assert packet.decode(data, KEY) == sent


def test_layout_is_the_documented_one() -> None:
    """Other implementations read these offsets: a change here breaks them."""
    data = packet.encode(packet.Packet(seq=7, sent_ns=1000, reflector_rx_ns=2000,
                                       reflector_tx_ns=3500, size=64), KEY)
    assert data[:4] == b"BWL1" and data[4] == 0 and data[5:8] == b"\0\0\0"
    assert struct.unpack(">IQQQ", data[8:36]) == (7, 1000, 2000, 3500)
    assert data[52:] == bytes(12)  # zero padding after the 16-byte MAC
    assert packet.decode(data, KEY).residence_ns == 1500


@pytest.mark.parametrize("size", [packet.MIN_SIZE - 1, packet.MAX_SIZE + 1, True, 160.0])
def test_sizes_outside_the_protocol_are_refused(size: object) -> None:
    with pytest.raises(ValueError, match="packet size must be"):
        packet.encode(packet.Packet(1, 1, size=size), KEY)  # type: ignore[arg-type]


def test_fields_that_do_not_fit_are_refused() -> None:
    with pytest.raises(ValueError, match="seq"):
        packet.encode(packet.Packet(2**32, 1), KEY)
    with pytest.raises(ValueError, match="sent_ns"):
        packet.encode(packet.Packet(1, -1), KEY)


def _tamper(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "malformed"),
    (b"BWL1" + bytes(40), "malformed"),  # shorter than header + MAC
    (b"XXXX" + bytes(156), "malformed"),
    (_tamper(packet.encode(packet.Packet(1, 1), KEY), 9), "bad_hmac"),  # seq changed
    (_tamper(packet.encode(packet.Packet(1, 1), KEY), 40), "bad_hmac"),  # MAC changed
    (packet.encode(packet.Packet(1, 1), b"another key, 16+ bytes"), "bad_hmac"),
    (bytes(packet.MAX_SIZE + 1), "oversize"),
])
def test_bad_datagrams_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(packet.PacketError) as err:
        packet.decode(data, KEY)
    assert err.value.reason == reason


def test_decode_honours_a_smaller_size_cap() -> None:
    data = packet.encode(packet.Packet(1, 1, size=300), KEY)
    with pytest.raises(packet.PacketError, match="oversize"):
        packet.decode(data, KEY, max_size=200)


def test_reply_is_the_same_size_and_carries_the_reflector_times() -> None:
    request = packet.decode(packet.encode(packet.Packet(42, 123456789, size=999), KEY), KEY)
    assert not request.is_reply
    answer = packet.decode(packet.reply(request, KEY, rx_ns=10_000, tx_ns=10_250), KEY)
    assert len(packet.reply(request, KEY, 10_000, 10_250)) == 999
    assert answer == packet.Packet(42, 123456789, 10_000, 10_250, packet.FLAG_REPLY, 999)
    assert answer.is_reply and answer.residence_ns == 250


def test_padding_is_not_echoed() -> None:
    """Whatever a sender puts in the padding, the reply's is zero: nothing is reflected."""
    data = packet.encode(packet.Packet(1, 1, size=100), KEY)
    dirty = data[:packet.MIN_SIZE] + b"\xff" * (100 - packet.MIN_SIZE)
    answer = packet.reply(packet.decode(dirty, KEY), KEY, 1, 2)
    assert answer[packet.MIN_SIZE:] == bytes(100 - packet.MIN_SIZE)


def test_load_key_strips_the_newline_and_refuses_short_keys(tmp_path: Path) -> None:
    good = tmp_path / "key"
    good.write_bytes(b"0123456789abcdef0123\n")
    assert packet.load_key(good) == b"0123456789abcdef0123"
    short = tmp_path / "short"
    short.write_bytes(b"secret\n")
    with pytest.raises(ValueError, match="at least 16"):
        packet.load_key(short)
