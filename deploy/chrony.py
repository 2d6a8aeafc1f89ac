"""A real chronyd serving NTP on loopback, for tests and demos of the clock probe.

chronyd runs with its own config file, pid file and drift file in a work folder, never
touches the system clock (``-x``) and has no control socket (``cmdport 0``), so it can run
beside (or instead of) the machine's own time service without disturbing it.

With ``local stratum N`` and no sources chronyd answers as a synchronised stratum-N server
from its first packet (chrony 4.3: the first query, 0.3 s after start, already got a
valid stratum-8 reply). Without ``local`` it answers every query as unsynchronised
(leap 3, stratum 0, empty reference ID): ``local_stratum=None`` gives that server, which is
what a site's NTP box looks like after losing its upstream.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from agent import clock
from deploy.localstack import Process, find_binary, free_port, wait_until


def ipv6_loopback_available() -> bool:
    """Whether ::1 can be bound here (containers sometimes run without IPv6)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class Chrony(Process):
    """chronyd as an NTP server on 127.0.0.1:<port> (and ::1 when ``ipv6``)."""

    def __init__(self, workdir: Path, port: int | None = None,
                 local_stratum: int | None = 8, ipv6: bool = False) -> None:
        self.workdir = workdir
        self.port = port or free_port(udp=True)
        self.local_stratum = local_stratum
        self.ipv6 = ipv6
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path = workdir / "chrony.conf"
        lines = [
            f"port {self.port}",
            "bindaddress 127.0.0.1",
            "allow 127.0.0.1",
            "cmdport 0",  # no control socket: nothing to collide with the system chronyd
            f"pidfile {workdir / 'chronyd.pid'}",
            f"driftfile {workdir / 'chrony.drift'}",
        ]
        if ipv6:
            lines += ["bindaddress ::1", "allow ::1"]
        if local_stratum is not None:
            lines.append(f"local stratum {local_stratum}")
        self.conf_path.write_text("\n".join(lines) + "\n")
        argv = [find_binary("chronyd"), "-f", str(self.conf_path),
                "-x",  # never set or slew the system clock
                "-d"]  # stay in the foreground, log to stderr (our log file)
        if os.geteuid() == 0:
            # As root chronyd drops to _chrony, which cannot write the drift file into a
            # private temporary folder: stay root (it holds no clock privileges with -x).
            argv += ["-u", "root"]
        super().__init__(argv, workdir / "chronyd.log")

    @property
    def hosts(self) -> list[str]:
        """The addresses it serves on."""
        return ["127.0.0.1", "::1"] if self.ipv6 else ["127.0.0.1"]

    def start(self) -> None:
        super().start()
        for host in self.hosts:
            wait_until(lambda h=host: self._answers(h) or not self.running, 10,
                       f"chronyd to answer NTP on {host} port {self.port}")
            if not self.running:
                raise RuntimeError(f"chronyd exited:\n{self.log()}")

    def _answers(self, host: str) -> bool:
        """Whether chronyd replies (synchronised, or unsynchronised when that is wanted)."""
        try:
            clock.query(host, self.port, timeout=0.3)
            return True
        except clock.SntpUnusable:
            return self.local_stratum is None
        except clock.SntpError:
            return False
