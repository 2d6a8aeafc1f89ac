"""A real NUT server (upsd and one dummy-ups driver per UPS) on loopback, for tests and demos.

The UPS reader is judged against the real upsd, so what it parses is what a site's NUT box
sends. Each UPS is a dummy-ups driver reading a ``<name>.dev`` file (``name: "value"``
lines, like ``upsc`` prints); ``set_state`` rewrites that file to make the UPS go on
battery, run low, come back::

    with Upsd(workdir, {"ups1": ONLINE}, users={"monitor": "secret"}) as upsd:
        nut.read(UpsConfig("ups1", nut=upsd.target("ups1")))   # OL CHRG
        upsd.set_state("ups1", ON_BATTERY)                      # returns once upsd serves it

What NUT 2.8.0 (Debian 12) does, and how this copes:

- dummy-ups in ``mode = dummy-once`` reads the file, then re-reads it only when its mtime
  changes, compared in whole seconds, checked every ``pollinterval`` (1 s here). Two
  writes in one second would look like one, so every write gets a strictly increasing
  whole-second mtime (possibly a little in the future), and lands by rename, never half
  written.
- A variable missing from a re-read file keeps its old value: removing one takes an
  explicit ``name: ""``. ``set_state`` replaces the whole state, so it writes that for every
  variable of the previous state the new one lacks (an empty value means "remove" too).
- At start the driver overwrites ``device.mfr``/``device.model``/``ups.mfr``/``ups.model``
  from the file with "Dummy ..." values; ``start`` therefore re-applies each initial state
  and waits until upsd serves it exactly.
- dummy-ups's file parser drops backslashes and mangles embedded double quotes, and an
  unquoted empty value makes it assign the next line's text: values are always quoted, and
  values with ``"`` or ``\\`` or control characters are refused (ValueError).
- Started as root, drivers and upsd switch to the ``nut`` user, which cannot enter a
  private temporary state folder: as root they run with ``-u root``.
- The state folder holds the drivers' Unix sockets, whose paths must stay under ~108
  bytes: when the work folder is deep, it moves to a short temporary folder.
- Until a driver's data arrive upsd serves just ``ups.status "WAIT"``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType

from agent.config import NutTarget
from agent.ups import nut
from deploy.localstack import Process, find_binary, free_port, port_open, wait_until

# Where Debian keeps the real daemons (/usr/sbin/upsd is a wrapper reading /etc/nut).
NUT_DIRS = ("/lib/nut", "/usr/lib/nut")
HOST = "127.0.0.1"

_MODEL = {"device.mfr": "APC", "device.model": "Smart-UPS 1500",
          "ups.mfr": "APC", "ups.model": "Smart-UPS 1500",
          "battery.charge.low": "10", "battery.runtime.low": "180",
          "ups.test.result": "Done and passed"}
# A 1500 VA UPS at a quarter load on 230 V / 50 Hz mains, charging after a short outage.
ONLINE: Mapping[str, str] = MappingProxyType({
    **_MODEL, "ups.status": "OL CHRG", "battery.charge": "98", "battery.runtime": "2580",
    "ups.load": "23", "input.voltage": "230.4", "input.frequency": "50.0",
    "output.voltage": "230.4"})
# Mains gone: the inverter carries the load, the charge and the runtime fall.
ON_BATTERY: Mapping[str, str] = MappingProxyType({
    **_MODEL, "ups.status": "OB DISCHRG", "battery.charge": "71", "battery.runtime": "1740",
    "ups.load": "24", "input.voltage": "0.0", "input.frequency": "0.0",
    "output.voltage": "229.8"})
# Still on battery, below battery.runtime.low: upsmon would shut the PCs down now.
LOW_BATTERY: Mapping[str, str] = MappingProxyType({
    **_MODEL, "ups.status": "OB DISCHRG LB", "battery.charge": "9", "battery.runtime": "150",
    "ups.load": "24", "input.voltage": "0.0", "input.frequency": "0.0",
    "output.voltage": "228.9"})

_UPS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
_VAR_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_USER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_BAD_VALUE = re.compile(r'["\\\x00-\x1f\x7f]')
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin


class Upsd:
    """upsd on 127.0.0.1:<port> serving dummy UPSes whose state the caller sets.

    ``upses`` maps each UPS name to its initial state (variable -> value); ``users`` maps
    user names to passwords, each with the ``upsmon secondary`` role (what a monitoring
    client's ``LOGIN`` needs). ``stop()`` is idempotent; the object is a context manager.
    """

    def __init__(self, workdir: Path, upses: Mapping[str, Mapping[str, str]] | None = None,
                 port: int | None = None, users: Mapping[str, str] | None = None) -> None:
        upses = {"ups1": ONLINE} if upses is None else upses
        if not upses:
            raise ValueError("give at least one UPS")
        for name in upses:
            if not _UPS_NAME.match(name):
                raise ValueError(f"UPS name {name!r}: letters, digits, '_', '.', '-' only")
        self.users = dict(users or {})
        for user, password in self.users.items():
            if not _USER.match(user) or not password or _BAD_VALUE.search(password):
                raise ValueError(f"user {user!r}: a plain name and a password without quotes, "
                                 "backslashes or control characters")
        self.workdir = workdir
        self.port = port or free_port()
        self.host = HOST
        self._states: dict[str, dict[str, str]] = {n: _checked(n, s) for n, s in upses.items()}
        self._mtimes: dict[str, int] = {}
        self._upsd_bin = find_binary("upsd", *NUT_DIRS)
        self._driver_bin = find_binary("dummy-ups", *NUT_DIRS)
        self._drivers: dict[str, Process] = {}
        self._upsd: Process | None = None
        self._own_state_dir = False
        self.state_dir = workdir / "state"

    # -- life cycle ---------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        """Write the configuration, start the drivers and upsd, wait until each UPS serves."""
        if self._upsd is not None:
            raise RuntimeError("upsd already started")
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        longest = max(len(f"/dummy-ups-{n}") for n in self._states)
        if len(str(self.state_dir.resolve())) + longest > _MAX_SOCKET_PATH:
            self.state_dir = Path(tempfile.mkdtemp(prefix="bw-nut-"))
            self._own_state_dir = True
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        self._write_config()
        env = {**os.environ, "NUT_CONFPATH": str(self.workdir),
               "NUT_STATEPATH": str(self.state_dir)}
        as_root = ["-u", "root"] if os.geteuid() == 0 else []
        for name, state in self._states.items():
            self._write_dev(name, state, {})
            driver = Process([self._driver_bin, "-a", name, "-F", *as_root],
                             self.workdir / f"dummy-ups-{name}.log", env)
            self._drivers[name] = driver
            driver.start()
        for name, driver in self._drivers.items():
            socket_path = self.state_dir / f"dummy-ups-{name}"
            wait_until(lambda s=socket_path, d=driver: s.exists() or not d.running, timeout,
                       f"dummy-ups {name} to open its socket")
            if not driver.running:
                raise RuntimeError(f"dummy-ups {name} exited:\n{driver.log()}")
        self._upsd = Process([self._upsd_bin, "-F", *as_root], self.workdir / "upsd.log", env)
        self._upsd.start()
        upsd = self._upsd
        wait_until(lambda: port_open(self.port, self.host) or not upsd.running, timeout,
                   f"upsd to listen on {self.host}:{self.port}")
        if not upsd.running:
            raise RuntimeError(f"upsd exited:\n{upsd.log()}")
        self.set_states(dict(self._states), timeout)

    def stop(self) -> None:
        """Stop upsd and the drivers (idempotent)."""
        if self._upsd is not None:
            self._upsd.stop()
        for driver in self._drivers.values():
            driver.stop()
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self._own_state_dir = False

    def __enter__(self) -> Upsd:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- use ----------------------------------------------------------------------------

    @property
    def upses(self) -> list[str]:
        return list(self._states)

    @property
    def processes(self) -> list[Process]:
        """upsd and its drivers, for whoever watches that they stay alive (the demo)."""
        return [p for p in (self._upsd, *self._drivers.values()) if p is not None]

    def target(self, ups: str, username: str | None = None, password: str | None = None,
               timeout_seconds: float = 3.0) -> NutTarget:
        """How the agent's configuration would name this UPS on this upsd."""
        return NutTarget(host=self.host, ups=ups, port=self.port, username=username,
                         password=password, timeout_seconds=timeout_seconds)

    def served(self, ups: str) -> dict[str, str]:
        """The variables upsd serves for ``ups`` right now."""
        return nut.list_vars(self.target(ups))

    def state(self, ups: str) -> dict[str, str]:
        """The state last set for ``ups``."""
        return dict(self._states[ups])

    def set_state(self, ups: str, values: Mapping[str, str], timeout: float = 15.0) -> None:
        """Make ``ups`` report exactly ``values``, replacing its previous state.

        Returns once upsd serves every value and none of the removed variables; an empty
        value removes the variable. Raises TimeoutError showing what upsd still serves.
        """
        self.set_states({ups: values}, timeout)

    def set_states(self, states: Mapping[str, Mapping[str, str]],
                   timeout: float = 15.0) -> None:
        """``set_state`` for several UPSes at once (they change together, one wait)."""
        for ups in states:
            if ups not in self._states:
                raise KeyError(f"no UPS {ups!r} on this upsd (have {', '.join(self._states)})")
        checked = {ups: _checked(ups, values) for ups, values in states.items()}
        expected = {}
        for ups, new in checked.items():
            previous = self._states[ups]
            self._write_dev(ups, new, previous)
            self._states[ups] = new
            gone = {k for k in previous if k not in new} | {k for k, v in new.items() if not v}
            expected[ups] = ({k: v for k, v in new.items() if v}, gone)
        for ups, (wanted, gone) in expected.items():
            last: dict[str, str] = {}

            def serves_it(ups: str = ups, wanted: dict[str, str] = wanted,
                          gone: set[str] = gone, last: dict[str, str] = last) -> bool:
                last.clear()
                last.update(self.served(ups))
                return (all(last.get(k) == v for k, v in wanted.items())
                        and not any(k in last for k in gone))

            try:
                wait_until(serves_it, timeout, f"upsd to serve the new state of {ups}", 0.1)
            except TimeoutError as err:
                differ = {k: last.get(k) for k, v in wanted.items() if last.get(k) != v}
                differ.update({k: last[k] for k in gone if k in last})
                raise TimeoutError(f"{err}; served differently: {differ}") from None

    # -- files --------------------------------------------------------------------------

    def _write_config(self) -> None:
        ups_conf = []
        for name in self._states:
            ups_conf.append(f"[{name}]\n"
                            "  driver = dummy-ups\n"
                            f'  port = "{self._dev_path(name)}"\n'
                            "  mode = dummy-once\n"
                            "  pollinterval = 1\n"
                            '  desc = "BridgeWatch test UPS"\n')
        _write_private(self.workdir / "ups.conf", "\n".join(ups_conf))
        _write_private(self.workdir / "upsd.conf", f"LISTEN {self.host} {self.port}\n")
        _write_private(self.workdir / "upsd.users", "".join(
            f'[{user}]\n  password = "{password}"\n  upsmon secondary\n\n'
            for user, password in self.users.items()))
        _write_private(self.workdir / "nut.conf", "MODE=standalone\n")

    def _dev_path(self, ups: str) -> Path:
        return self.workdir / f"{ups}.dev"

    def _write_dev(self, ups: str, values: Mapping[str, str],
                   previous: Mapping[str, str]) -> None:
        """Replace the .dev file atomically, with a whole-second mtime newer than the last."""
        lines = [f'{k}: "{v}"' for k, v in values.items()]
        lines += [f'{k}: ""' for k in previous if k not in values]
        path = self._dev_path(ups)
        tmp = path.with_suffix(".dev.tmp")
        tmp.write_text("\n".join(lines) + "\n")
        mtime = max(int(time.time()), self._mtimes.get(ups, 0) + 1)
        os.utime(tmp, (mtime, mtime))
        os.replace(tmp, path)
        self._mtimes[ups] = mtime


def _checked(ups: str, values: Mapping[str, str]) -> dict[str, str]:
    """A state dummy-ups can carry unchanged, or ValueError naming the offending entry."""
    out = {}
    for key, value in values.items():
        if not _VAR_NAME.match(key) or key.startswith(("driver.", "server.")):
            raise ValueError(f"{ups}: {key!r} is not a variable a dummy UPS can set")
        if not isinstance(value, str) or _BAD_VALUE.search(value) or len(value) > 255:
            raise ValueError(f"{ups}: {key} = {value!r}: dummy-ups cannot carry quotes, "
                             "backslashes, control characters or more than 255 characters")
        out[key] = value
    return out


def _write_private(path: Path, text: str) -> None:
    """Private to us: upsd warns about configuration others can read (and passwords)."""
    path.write_text(text)
    path.chmod(0o600)
