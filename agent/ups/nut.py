"""Read a UPS from a NUT server (upsd) over the NUT network protocol (RFC 9271).

Most UPSes at the sites hang off a PC or NAS that already runs upsd for its own shutdown;
the agent only asks that upsd, over TCP, for the UPS's variables, the way ``upsc`` does::

    [USERNAME u / PASSWORD p / LOGIN ups]   only when credentials are configured
    LIST VAR ups  ->  BEGIN LIST VAR ups / VAR ups name "value" ... / END LIST VAR ups
    LOGOUT

No third-party client: the exchange is a handful of lines, and owning it lets every way a
server can misbehave end in one ``NutError`` saying what happened, within one deadline.

Choices a reader of the code should know:

- ``timeout_seconds`` bounds the whole conversation (connect included), not each read, so
  a server trickling a byte at a time cannot hold the probe.
- Lines are bounded (``MAX_LINE_BYTES``) and so is the variable count (``MAX_VARS``):
  upsd's own values are at most 256 bytes and a UPS has a few hundred variables at most.
- upsd accepts any USERNAME/PASSWORD and checks them only when they are used. Reading needs
  no credentials, so configured ones are verified with ``LOGIN <ups>``: a wrong password
  is then an error instead of silently unused. ``LOGIN`` needs the ``upsmon secondary``
  role in upsd.users (the usual monitoring account) and upsd logs each login; leave the
  credentials out to read anonymously.
- Every failure, including connection refused and timeouts, raises ``NutError`` naming
  the server and the UPS. A value that should be a number but is not (or is negative or not
  finite) leaves that field ``None``: one bad variable must not hide the others.
- Status flags outside ``wire.UPS_FLAGS`` (``WAIT``, vendor extras) are ignored.
"""

from __future__ import annotations

import math
import re
import socket
import time
from collections.abc import Mapping

from agent import wire
from agent.config import NutTarget, UpsConfig
from agent.ups.model import UpsReading

MAX_LINE_BYTES = 4096
MAX_VARS = 1024

_FLAGS = frozenset(wire.UPS_FLAGS)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_BRACKETED = re.compile(r"\[[^\]]*\]")
# ups.test.result texts vary by driver ("Done and passed", "Done and warning", "Aborted",
# "In progress", "No test initiated", "Battery failed", ...): judge by keyword.
_TEST_BAD = ("fail", "error", "warning")
_TEST_GOOD = ("passed", "pass", "ok")


class NutError(RuntimeError):
    """upsd could not be reached, refused the request, or broke the protocol.

    ``code`` is the protocol's error code (``UNKNOWN-UPS``, ``ACCESS-DENIED``, ...) when
    upsd answered ``ERR <code>``, else None.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


def read(config: UpsConfig) -> UpsReading:
    """Read the configured UPS over NUT, as the normalized reading."""
    if config.nut is None:
        raise ValueError(f"UPS {config.name} is not configured for NUT")
    return reading_from_vars(config.name, list_vars(config.nut))


def list_vars(target: NutTarget) -> dict[str, str]:
    """Every variable upsd serves for ``target.ups`` (``LIST VAR``), name -> value."""
    with _Conversation(target) as conv:
        if target.username is not None:
            conv.login()
        return conv.list_vars()


def reading_from_vars(name: str, values: Mapping[str, str]) -> UpsReading:
    """Map NUT's variables onto the normalized reading (``name`` is the configured label)."""
    flags = frozenset(f for f in values.get("ups.status", "").upper().split() if f in _FLAGS)
    charge = _number(values, "battery.charge")
    load = _number(values, "ups.load")
    return UpsReading(
        name=name,
        source="nut",
        model=_model(values),
        flags=flags,
        charge_ratio=None if charge is None else charge / 100.0,
        runtime_seconds=_number(values, "battery.runtime"),
        load_ratio=None if load is None else load / 100.0,
        input_voltage=_number(values, "input.voltage"),
        input_frequency=_number(values, "input.frequency"),
        output_voltage=_number(values, "output.voltage"),
        self_test_passed=self_test_passed(values.get("ups.test.result")),
        alarms=alarm_count(values.get("ups.alarm"), "ALARM" in flags),
    )


def self_test_passed(result: str | None) -> bool | None:
    """True/False for a finished self-test's verdict; None for none, running or unknown."""
    if result is None:
        return None
    text = result.strip().lower()
    if any(word in text for word in _TEST_BAD):
        return False
    words = re.findall(r"[a-z]+", text)
    if any(word in _TEST_GOOD for word in words):
        return True
    return None


def alarm_count(alarm: str | None, alarm_flag: bool) -> int:
    """How many alarms ``ups.alarm`` holds.

    Drivers join alarm sentences with spaces, newer ones each in brackets
    (``[Replace battery!] [Overheat]``): bracketed groups are counted, unbracketed text is
    one alarm. The ALARM flag without any text still means one.
    """
    text = (alarm or "").strip()
    if not text:
        return 1 if alarm_flag else 0
    return max(1, len(_BRACKETED.findall(text)))


def _number(values: Mapping[str, str], key: str) -> float | None:
    """A non-negative finite number, or None when absent or not one."""
    raw = values.get(key)
    if raw is None or not _NUMBER.fullmatch(raw.strip()):
        return None
    value = float(raw.strip())
    return value if math.isfinite(value) and value >= 0 else None


def _model(values: Mapping[str, str]) -> str | None:
    """``<mfr> <model>`` from device.* (NUT 2.7+) or the older ups.* names."""
    model = (values.get("device.model") or values.get("ups.model") or "").strip()
    mfr = (values.get("device.mfr") or values.get("ups.mfr") or "").strip()
    if not model:
        return mfr or None
    if mfr and not model.lower().startswith(mfr.lower()):
        return f"{mfr} {model}"
    return model


def split_line(line: str) -> list[str]:
    """Split one protocol line into words: double quotes group, a backslash escapes.

    Raises ValueError on an unterminated quote or a dangling backslash.
    """
    words: list[str] = []
    word: list[str] = []
    in_word = quoted = escaped = False
    for ch in line:
        if escaped:
            word.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = in_word = True
        elif ch == '"':
            quoted = not quoted
            in_word = True
        elif ch == " " and not quoted:
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        else:
            word.append(ch)
            in_word = True
    if quoted or escaped:
        raise ValueError("unterminated quote or escape")
    if in_word:
        words.append("".join(word))
    return words


def _quote(arg: str) -> str:
    """An argument as upsd parses it: quoted and escaped when it has spaces or quotes."""
    if arg and not any(c in arg for c in ' "\\'):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Conversation:
    """One TCP connection to upsd under one deadline; closed with a best-effort LOGOUT."""

    def __init__(self, target: NutTarget) -> None:
        self.target = target
        self.where = f"UPS {target.ups!r} on upsd at {target.host}:{target.port}"
        self.deadline = time.monotonic() + target.timeout_seconds
        self.buffer = b""
        self.doing = "connecting"
        try:
            self.sock = socket.create_connection((target.host, target.port),
                                                 timeout=target.timeout_seconds)
        except TimeoutError:
            raise self._timeout() from None
        except OSError as err:
            raise NutError(f"{self.where}: cannot connect: {err}") from err

    def __enter__(self) -> _Conversation:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            remaining = self.deadline - time.monotonic()
            if remaining > 0:
                self.sock.settimeout(min(remaining, 0.5))
                self.sock.sendall(b"LOGOUT\n")
                self.sock.recv(MAX_LINE_BYTES)  # "OK Goodbye": a clean close on both sides
        except OSError:
            pass
        finally:
            self.sock.close()

    def login(self) -> None:
        """Send the credentials and have upsd check them (see the module docstring)."""
        t = self.target
        assert t.username is not None and t.password is not None
        self._expect_ok(f"USERNAME {_quote(t.username)}", "sending USERNAME")
        self._expect_ok(f"PASSWORD {_quote(t.password)}", "sending PASSWORD")
        try:
            self._expect_ok(f"LOGIN {_quote(t.ups)}", "logging in")
        except NutError as err:
            if err.code != "ACCESS-DENIED":
                raise
            raise NutError(f"{self.where}: user {t.username!r} refused (ERR ACCESS-DENIED): "
                           "wrong password, or no 'upsmon secondary' in upsd.users",
                           err.code) from None

    def list_vars(self) -> dict[str, str]:
        ups = self.target.ups
        self.doing = "listing its variables"
        self._send(f"LIST VAR {_quote(ups)}")
        begin = self._line()
        if self._words(begin)[:3] != ["BEGIN", "LIST", "VAR"]:
            raise self._garbage(begin)
        values: dict[str, str] = {}
        while True:
            line = self._line()
            words = self._words(line)
            if words[:3] == ["END", "LIST", "VAR"]:
                return values
            if len(words) != 4 or words[0] != "VAR" or words[1].lower() != ups.lower():
                raise self._garbage(line)
            if len(values) >= MAX_VARS and words[2] not in values:
                raise NutError(f"{self.where}: more than {MAX_VARS} variables")
            values[words[2]] = words[3]

    def _expect_ok(self, command: str, doing: str) -> None:
        self.doing = doing
        self._send(command)
        line = self._line()
        if not line.startswith("OK"):
            raise self._garbage(line)

    def _send(self, command: str) -> None:
        if any(c in command for c in "\r\n\0"):
            raise NutError(f"{self.where}: refusing to send a control character")
        self._settimeout()
        try:
            self.sock.sendall(command.encode() + b"\n")
        except TimeoutError:
            raise self._timeout() from None
        except OSError as err:
            raise NutError(f"{self.where}: {err} while {self.doing}") from err

    def _line(self) -> str:
        """The next line (without its end); ERR lines raise NutError with the code."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE_BYTES:
                raise self._too_long()
            self._settimeout()
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise self._timeout() from None
            except OSError as err:
                raise NutError(f"{self.where}: {err} while {self.doing}") from err
            if not chunk:
                raise NutError(f"{self.where}: connection closed while {self.doing}")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\n", 1)
        if len(raw) > MAX_LINE_BYTES:
            raise self._too_long()
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        if line == "ERR" or line.startswith("ERR "):
            code = line[4:].strip().split(" ", 1)[0] or "?"
            raise NutError(f"{self.where}: ERR {code} while {self.doing}", code)
        return line

    def _words(self, line: str) -> list[str]:
        try:
            return split_line(line)
        except ValueError:
            raise self._garbage(line) from None

    def _settimeout(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self._timeout()
        self.sock.settimeout(remaining)

    def _timeout(self) -> NutError:
        return NutError(f"{self.where}: no complete answer within "
                        f"{self.target.timeout_seconds} s while {self.doing}")

    def _too_long(self) -> NutError:
        return NutError(f"{self.where}: a line longer than {MAX_LINE_BYTES} bytes while "
                        f"{self.doing}")

    def _garbage(self, line: str) -> NutError:
        return NutError(f"{self.where}: unexpected line while {self.doing}: {line[:80]!r}")
