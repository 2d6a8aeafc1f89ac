"""A real SNMP agent (Debian's snmpsimd) on loopback serving recorded devices, for tests.

The SNMP readers are judged against a real agent speaking real SNMP v2c and v3 (USM,
authPriv), so what they decode is what a UPS card or a switch sends. Each device state is
an ``.snmprec`` file (``OID|type|value`` lines, sorted by OID) served under its own v2c
community, the file name without extension::

    with SnmpSim(workdir, {"ups": "ups-mib-online", "apc": "apc-on-battery"},
                 v3=["ups"]) as sim:
        snmp_ups.read(UpsConfig("ups", snmp=sim.target("ups"), mib="ups-mib"))
        snmp_ups.read(UpsConfig("ups", snmp=sim.v3_target("ups"), mib="ups-mib"))
        sim.set_state("ups", "ups-mib-on-battery")   # the same community, a new state

What snmpsimd 0.4.5 (on Debian's python3-pysnmp4) does, and how this copes:

- Data files are found once, at start: every community must exist then. A file's content
  is re-read when its mtime changes, compared in whole seconds, so ``set_state`` gives
  each write a strictly increasing whole-second mtime (possibly a little in the future)
  and lands it by rename, never half written.
- SNMPv3 selects a file by context name, and the readers send the empty context, as real
  devices expect. With an empty context snmpsimd serves the file named after the
  transport ID of the endpoint the request came in on (``1.3.6.1.6.1.1.<n>.snmprec`` for
  the n-th UDP endpoint). So each state in ``v3`` gets its own UDP port (``v3_port``)
  whose transport-ID file is a copy of that state.
- A wrong community or a wrong v3 key gets no answer at all (pysnmp 7 drops snmpsimd's
  unauthenticated reports), so a reader sees a timeout: the error text has to say why.
- snmpsimd refuses to run as root unless told which user to become; dropping to nobody
  would lose access to pytest's private temporary folders, so as root it stays root.
- Its index cache goes into the work folder, never the shared default /tmp/snmpsim.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

from agent.config import SnmpTarget
from deploy.localstack import Process, find_binary, free_port, wait_until

HOST = "127.0.0.1"
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "snmp"
# The SNMPv3 users every instance knows: user -> (auth protocol, auth key, priv protocol,
# priv key), protocol names as in the agent's configuration. V3_USER is the usual one
# (authPriv: HMAC-SHA-96 and AES-128-CFB); the others cover the other security levels and
# the strongest protocols.
V3_USER = "bridgewatch"
V3_USERS: Mapping[str, tuple[str | None, str | None, str | None, str | None]] = \
    MappingProxyType({
        V3_USER: ("sha", "bw-auth-key-2024", "aes", "bw-priv-key-2024"),
        "bw-sha512": ("sha512", "bw-auth-key-512", "aes256", "bw-priv-key-256"),
        "bw-md5-des": ("md5", "bw-auth-key-md5", "des", "bw-priv-key-des"),
        "bw-auth-only": ("sha256", "bw-auth-key-256", None, None),
        "bw-no-auth": (None, None, None, None),
    })
_UDP_DOMAIN = "1.3.6.1.6.1.1"  # snmpUDPDomain: transport IDs are this plus the endpoint index


def fixture(name: str | Path) -> Path:
    """A state by fixture name (``ups-mib-online``) or as a path to an .snmprec file."""
    path = Path(name)
    if path.suffix != ".snmprec":
        path = FIXTURES / f"{name}.snmprec"
    if not path.is_file():
        raise FileNotFoundError(f"no SNMP fixture {path}")
    return path


def fixture_names() -> list[str]:
    """Every fixture shipped in tests/fixtures/snmp, by name."""
    return sorted(p.stem for p in FIXTURES.glob("*.snmprec"))


class SnmpSim(Process):
    """snmpsimd on 127.0.0.1: one v2c community per state, v3 ports for chosen states.

    ``states`` maps community -> fixture name or path (default: every fixture under its
    own name). ``v3`` names the communities also served over SNMPv3 to the user
    ``V3_USER``, each on its own port. ``stop()`` is idempotent.
    """

    def __init__(self, workdir: Path, states: Mapping[str, str | Path] | None = None,
                 v3: Iterable[str] = ()) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (workdir / "cache").mkdir(exist_ok=True)
        if states is None:
            states = {name: name for name in fixture_names()}
        if not states:
            raise ValueError("SnmpSim needs at least one state")
        self.port = free_port(udp=True, host=HOST)
        self._v3_ports: dict[str, int] = {}
        self._files: dict[str, list[Path]] = {}
        self._mtime: dict[Path, int] = {}
        for community in states:
            if not community or "/" in community or community.startswith("."):
                raise ValueError(f"bad community {community!r}")
            self._files[community] = [self.data_dir / f"{community}.snmprec"]
        for index, community in enumerate(v3, start=1):
            if community not in self._files:
                raise ValueError(f"v3 state {community!r} is not among the states")
            self._v3_ports[community] = free_port(udp=True, host=HOST)
            self._files[community].append(self.data_dir / f"{_UDP_DOMAIN}.{index}.snmprec")
        for community, source in states.items():
            self._write(community, fixture(source))
        endpoints = [self.port, *self._v3_ports.values()]
        argv = [find_binary("snmpsimd"), f"--data-dir={self.data_dir}",
                f"--cache-dir={workdir / 'cache'}", "--logging-method=stdout",
                *(f"--agent-udpv4-endpoint={HOST}:{port}" for port in endpoints)]
        for user, (auth, auth_key, priv, priv_key) in V3_USERS.items():
            # Each user's options must follow its --v3-user.
            argv.append(f"--v3-user={user}")
            if auth is not None:
                argv += [f"--v3-auth-key={auth_key}", f"--v3-auth-proto={auth.upper()}"]
            if priv is not None:
                argv += [f"--v3-priv-key={priv_key}", f"--v3-priv-proto={priv.upper()}"]
        if os.geteuid() == 0:
            argv += [f"--process-user={pwd.getpwuid(0).pw_name}",
                     f"--process-group={grp.getgrgid(0).gr_name}"]
        super().__init__(argv, workdir / "snmpsimd.log",
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    @property
    def communities(self) -> list[str]:
        return sorted(self._files)

    def v3_port(self, community: str) -> int:
        """The UDP port where SNMPv3 requests (empty context) get ``community``'s state."""
        try:
            return self._v3_ports[community]
        except KeyError:
            raise KeyError(f"{community!r} is not served over SNMPv3 (pass it in v3=)") \
                from None

    def target(self, community: str, **overrides: Any) -> SnmpTarget:
        """An SNMP v2c target for one state; ``overrides`` replace SnmpTarget fields."""
        if community not in self._files:
            raise KeyError(f"no state {community!r} (have: {', '.join(self.communities)})")
        base = SnmpTarget(HOST, self.port, version="2c", community=community,
                          timeout_seconds=1.0, retries=1)
        return replace(base, **overrides)

    def v3_target(self, community: str, user: str = V3_USER,
                  **overrides: Any) -> SnmpTarget:
        """An SNMPv3 target for one state served over v3, as one of ``V3_USERS``."""
        auth, auth_key, priv, priv_key = V3_USERS[user]
        base = SnmpTarget(HOST, self.v3_port(community), version="3", user=user,
                          auth_protocol=auth, auth_key=auth_key,
                          priv_protocol=priv, priv_key=priv_key,
                          timeout_seconds=1.0, retries=1)
        return replace(base, **overrides)

    def set_state(self, community: str, source: str | Path) -> None:
        """Serve another state under an existing community (and its v3 port, if any)."""
        if community not in self._files:
            raise KeyError(f"no state {community!r}: communities are fixed at start")
        self._write(community, fixture(source))

    def _write(self, community: str, source: Path) -> None:
        for path in self._files[community]:
            tmp = path.with_name(f".{path.name}.tmp")
            shutil.copyfile(source, tmp)
            # snmpsimd notices a change by a different whole-second mtime.
            mtime = max(int(time.time()), self._mtime.get(path, 0) + 1)
            os.utime(tmp, (mtime, mtime))
            os.replace(tmp, path)
            self._mtime[path] = mtime

    def start(self) -> None:
        super().start()
        wait_until(lambda: self._answers() or not self.running, 30, "snmpsimd to answer")
        if not self.running:
            raise RuntimeError(f"snmpsimd exited:\n{self.log()[-4000:]}")

    def _answers(self) -> bool:
        from agent import snmp

        probe = self.target(self.communities[0], timeout_seconds=0.3, retries=0)
        uptime = "1.3.6.1.2.1.1.3.0"
        try:
            snmp.get(probe, [uptime], optional=[uptime])
        except snmp.SnmpError:
            return False
        return True

    def __enter__(self) -> SnmpSim:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
