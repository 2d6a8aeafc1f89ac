"""The UDP prober: signed packets to the central reflector, replies matched by seq.

One socket per target, not connected, so a multi-homed reflector may answer from any of
its addresses (the MAC, not the source address, says a reply is genuine). Receive times
are the kernel's (``SO_TIMESTAMPNS``) where it offers them; the RTT is
``receive - send - (reflector tx - reflector rx)``, so the time the reflector held the
packet is not counted (RFC 5357's round-trip computation).

Anything that is not a valid reply to a packet we sent (garbage, a bad MAC, a request,
the wrong size, an unknown seq) is counted by reason and ignored: never a crash.
"""

from __future__ import annotations

import socket
from typing import Any

from agent.link import kerneltime, packet
from agent.link.prober import Address, DatagramProber

DEFAULT_PORT = 8620


class UdpProber(DatagramProber):
    method = "udp-reflector"

    def __init__(self, host: str, port: int = DEFAULT_PORT, *, key: bytes,
                 size: int = packet.DEFAULT_SIZE, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self.key = key
        self.size = packet.check_size(size)

    @property
    def _bufsize(self) -> int:
        return packet.MAX_SIZE + 1

    def _new_socket(self, family: int) -> socket.socket:
        return socket.socket(family, socket.SOCK_DGRAM)

    def _transmit(self, seq: int, address: Address) -> None:
        family, sockaddr = address
        sock = self._socket(family)
        data = packet.encode(packet.Packet(seq, self.now_ns(), size=self.size), self.key)
        self.tracker.sent(seq, self.now_ns())
        # A failed send (no route while the link is down) stays counted: it times out as
        # lost, which is what the link did to it.
        sock.sendto(data, sockaddr)

    def _handle(self, datagram: kerneltime.Datagram) -> None:
        try:
            reply = packet.decode(datagram.data, self.key)
        except packet.PacketError as err:
            self.tracker.invalid(err.reason)
            return
        if not reply.is_reply:
            self.tracker.invalid("not_reply")
        elif reply.size != self.size:
            self.tracker.invalid("wrong_size")
        else:
            self._note_stamp(datagram)
            self.tracker.reply(reply.seq, datagram.ns, reply.residence_ns)
