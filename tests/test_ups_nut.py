"""The NUT reader against a real upsd (dummy-ups drivers), and against servers that break
the protocol in ways upsd never would (a tiny scripted TCP server on loopback)."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.config import NutTarget, UpsConfig
from agent.ups import nut
from agent.ups.model import UpsReading, runtime_sufficient
from deploy.localstack import free_port
from deploy.nut import LOW_BATTERY, ON_BATTERY, ONLINE, Upsd
from tests.conftest import require_binary

USER, PASSWORD = "monitor", "s3cret pass"  # a space: the password travels quoted


@pytest.fixture(scope="module")
def upsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upsd]:
    # Debian's real daemons; /usr/sbin/upsd is only a wrapper reading /etc/nut/nut.conf.
    require_binary("upsd", "/lib/nut")
    require_binary("dummy-ups", "/lib/nut")
    server = Upsd(tmp_path_factory.mktemp("nut"),
                  {"ups1": ONLINE, "rack-a": ONLINE, "rack-b": ON_BATTERY, "lab": ONLINE},
                  users={USER: PASSWORD})
    server.start()
    yield server
    server.stop()


def read(upsd: Upsd, ups: str, label: str = "room", **credentials: str) -> UpsReading:
    return nut.read(UpsConfig(label, nut=upsd.target(ups, **credentials)))


# -- against the real upsd ----------------------------------------------------------------


def test_online_then_battery_then_low_battery_then_back(upsd: Upsd) -> None:
    """The UPS of a session's room loses mains, runs low, gets mains back: each state as
    upsd serves it after dummy-ups re-read the changed .dev file."""
    online = read(upsd, "ups1")
    assert online.source == "nut" and online.name == "room"
    assert online.flags == {"OL", "CHRG"} and online.power_state == "mains"
    assert online.charge_ratio == pytest.approx(0.98)
    assert online.runtime_seconds == 2580
    assert online.load_ratio == pytest.approx(0.23)
    assert online.input_voltage == pytest.approx(230.4)
    assert online.input_frequency == pytest.approx(50.0)
    assert online.output_voltage == pytest.approx(230.4)
    assert online.self_test_passed is True
    assert online.alarms == 0
    assert online.model == "APC Smart-UPS 1500"

    upsd.set_state("ups1", ON_BATTERY)
    battery = read(upsd, "ups1")
    assert battery.flags == {"OB", "DISCHRG"} and battery.power_state == "battery"
    assert battery.charge_ratio == pytest.approx(0.71)
    assert battery.runtime_seconds == 1740
    assert battery.input_voltage == 0.0 and battery.input_frequency == 0.0
    assert battery.output_voltage == pytest.approx(229.8)
    assert runtime_sufficient(battery, 1500) and not runtime_sufficient(battery, 1800)

    upsd.set_state("ups1", LOW_BATTERY)
    low = read(upsd, "ups1")
    assert low.flags == {"OB", "DISCHRG", "LB"} and low.power_state == "low_battery"
    assert low.charge_ratio == pytest.approx(0.09)
    assert low.runtime_seconds == 150
    assert not runtime_sufficient(low, 60)  # low battery never passes, whatever the runtime

    upsd.set_state("ups1", ONLINE)
    back = read(upsd, "ups1")
    assert back == online


def test_several_upses_on_one_upsd_each_labelled(upsd: Upsd) -> None:
    """Two UPSes of one room on the same upsd, read under their own labels, do not mix."""
    a = read(upsd, "rack-a", label="rack-a")
    b = read(upsd, "rack-b", label="rack-b")
    assert (a.name, a.power_state, a.runtime_seconds) == ("rack-a", "mains", 2580)
    assert (b.name, b.power_state, b.runtime_seconds) == ("rack-b", "battery", 1740)


def test_alarms_failed_self_test_unknown_flags_and_bad_numbers(upsd: Upsd) -> None:
    """What real drivers send besides the happy values: bracketed alarm sentences with the
    ALARM flag, a failed self-test, a status flag outside our vocabulary, a charge that is
    not a number; then the alarm clears (the variable disappears from upsd)."""
    upsd.set_state("lab", {**ONLINE, "ups.status": "ALARM OL RB WAIT",
                           "ups.alarm": "[Replace battery!] [Internal fault]",
                           "ups.test.result": "Done and error",
                           "battery.charge": "n/a"})
    r = read(upsd, "lab")
    assert r.flags == {"ALARM", "OL", "RB"}  # WAIT is not one of ours: ignored
    assert r.alarms == 2
    assert r.self_test_passed is False
    assert r.charge_ratio is None  # unreadable: left out, the rest still read
    assert r.runtime_seconds == 2580

    upsd.set_state("lab", {**ONLINE, "ups.test.result": "No test initiated"})
    assert "ups.alarm" not in upsd.served("lab")
    r = read(upsd, "lab")
    assert r.alarms == 0 and r.self_test_passed is None and r.charge_ratio == 0.98
    upsd.set_state("lab", ONLINE)


def test_login_with_username_and_password(upsd: Upsd) -> None:
    """Configured credentials are sent and checked by upsd (LOGIN), which logs the login."""
    r = read(upsd, "ups1", username=USER, password=PASSWORD)
    assert r.power_state == "mains"
    assert f"User {USER}@127.0.0.1 logged into UPS [ups1]" in (upsd.workdir / "upsd.log"
                                                               ).read_text()


def test_wrong_password_is_a_clear_error(upsd: Upsd) -> None:
    """upsd accepts any PASSWORD line; the LOGIN that follows is refused."""
    with pytest.raises(nut.NutError) as caught:
        read(upsd, "ups1", username=USER, password="not-it")
    assert caught.value.code == "ACCESS-DENIED"
    message = str(caught.value)
    assert "'monitor'" in message and "wrong password" in message and "'ups1'" in message
    assert f"127.0.0.1:{upsd.port}" in message


@pytest.mark.parametrize("credentials", [{}, {"username": USER, "password": PASSWORD}])
def test_unknown_ups_names_the_ups(upsd: Upsd, credentials: dict[str, str]) -> None:
    """A UPS name upsd does not know: its own ERR UNKNOWN-UPS, named in the error, both for
    an anonymous LIST VAR and for a LOGIN."""
    with pytest.raises(nut.NutError) as caught:
        read(upsd, "no-such-ups", **credentials)
    assert caught.value.code == "UNKNOWN-UPS"
    assert "'no-such-ups'" in str(caught.value) and "ERR UNKNOWN-UPS" in str(caught.value)


def test_connection_refused_names_host_and_port() -> None:
    """Nothing listens on the port: NutError with where it tried."""
    port = free_port()
    with pytest.raises(nut.NutError, match=f"127.0.0.1:{port}.*cannot connect"):
        nut.read(UpsConfig("room", nut=NutTarget("127.0.0.1", "ups1", port=port)))


# -- against scripted servers that break the protocol -----------------------------------

Script = Callable[[socket.socket, threading.Event], None]


def _command(conn: socket.socket) -> bytes:
    """One line the client sent."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            break
        line += chunk
    return line


@contextmanager
def scripted_server(script: Script, timeout_seconds: float = 2.0) -> Iterator[NutTarget]:
    """A one-connection TCP server on loopback running ``script``; yields the target."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stop = threading.Event()

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        # OSError: the client hung up, as it should in most scripts.
        with conn, contextlib.suppress(OSError):
            script(conn, stop)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield NutTarget("127.0.0.1", "ups1", port=listener.getsockname()[1],
                        timeout_seconds=timeout_seconds)
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def _read_from(target: NutTarget) -> UpsReading:
    return nut.read(UpsConfig("room", nut=target))


def test_quoting_and_escapes_as_upsd_sends_them() -> None:
    """upsd escapes '"' and '\\' in values; dummy-ups cannot carry them, so a script sends
    them (and a CRLF line end, and extra spaces inside the quotes)."""
    def script(conn: socket.socket, stop: threading.Event) -> None:
        assert _command(conn) == b"LIST VAR ups1\n"
        conn.sendall(b'BEGIN LIST VAR ups1\n'
                     b'VAR ups1 ups.status "OL"\r\n'
                     b'VAR ups1 device.mfr "Eaton"\n'
                     b'VAR ups1 device.model "5E \\"Gen2\\" 1100i \\\\ rack"\n'
                     b'VAR ups1 battery.charge "  87  "\n'
                     b'VAR ups1 ups.alarm ""\n'
                     b'END LIST VAR ups1\n')
        _command(conn)  # LOGOUT
        conn.sendall(b"OK Goodbye\n")

    with scripted_server(script) as target:
        r = _read_from(target)
    assert r.model == 'Eaton 5E "Gen2" 1100i \\ rack'
    assert r.charge_ratio == pytest.approx(0.87)
    assert r.flags == {"OL"} and r.alarms == 0


def test_server_closes_mid_list() -> None:
    """The server sends the start of the list and hangs up."""
    def script(conn: socket.socket, stop: threading.Event) -> None:
        _command(conn)
        conn.sendall(b'BEGIN LIST VAR ups1\nVAR ups1 ups.status "OL"\n')

    with scripted_server(script) as target, pytest.raises(
            nut.NutError, match="connection closed while listing its variables"):
        _read_from(target)


def test_garbage_line_in_the_list() -> None:
    """A line that is not VAR/END in the middle of the list (and the quoted excerpt)."""
    def script(conn: socket.socket, stop: threading.Event) -> None:
        _command(conn)
        conn.sendall(b'BEGIN LIST VAR ups1\nVAR ups1 ups.status "OL"\nHELLO there\n')
        stop.wait(5)

    with scripted_server(script) as target, pytest.raises(
            nut.NutError, match="unexpected line while listing its variables: 'HELLO there'"):
        _read_from(target)


@pytest.mark.parametrize("line", [b'VAR ups1 ups.status "OL', b'VAR other ups.status "OL"',
                                  b'VAR ups1 ups.status OL extra', b"BEGIN LIST VAR ups1"])
def test_malformed_var_lines(line: bytes) -> None:
    """An unterminated quote, another UPS's variable, too many words, a second BEGIN."""
    def script(conn: socket.socket, stop: threading.Event) -> None:
        _command(conn)
        conn.sendall(b"BEGIN LIST VAR ups1\n" + line + b"\nEND LIST VAR ups1\n")
        stop.wait(5)

    with scripted_server(script) as target, pytest.raises(nut.NutError,
                                                          match="unexpected line"):
        _read_from(target)


def test_endless_line_is_cut_off() -> None:
    """The server streams one line that never ends: bounded at MAX_LINE_BYTES."""
    def script(conn: socket.socket, stop: threading.Event) -> None:
        _command(conn)
        conn.sendall(b'BEGIN LIST VAR ups1\nVAR ups1 ups.mfr "')
        while not stop.is_set():
            conn.sendall(b"x" * 4096)

    with scripted_server(script) as target, pytest.raises(
            nut.NutError, match=f"line longer than {nut.MAX_LINE_BYTES} bytes"):
        _read_from(target)


def test_too_many_variables() -> None:
    """The server lists variables without end: bounded at MAX_VARS."""
    def script(conn: socket.socket, stop: threading.Event) -> None:
        _command(conn)
        conn.sendall(b"BEGIN LIST VAR ups1\n")
        i = 0
        while not stop.is_set():
            conn.sendall(b"".join(b'VAR ups1 x.%d "1"\n' % (i + k) for k in range(100)))
            i += 100

    with scripted_server(script) as target, pytest.raises(
            nut.NutError, match=f"more than {nut.MAX_VARS} variables"):
        _read_from(target)


def test_silent_server_times_out() -> None:
    """The server accepts the connection and never answers."""
    def script(conn: socket.socket, stop: threading.Event) -> None:
        stop.wait(10)

    with scripted_server(script, timeout_seconds=0.3) as target, pytest.raises(
            nut.NutError,
            match=re.escape("no complete answer within 0.3 s while listing its variables")):
        _read_from(target)


def test_trickling_server_is_bounded_by_one_deadline() -> None:
    """The server answers a byte at a time, each well inside the timeout: the timeout bounds
    the whole conversation, so the read still ends."""
    def script(conn: socket.socket, stop: threading.Event) -> None:
        _command(conn)
        body = b"BEGIN LIST VAR ups1\n" + b'VAR ups1 ups.status "OL"\n' * 1000
        for byte in body:
            if stop.wait(0.02):
                return
            conn.sendall(bytes([byte]))

    with scripted_server(script, timeout_seconds=0.3) as target, pytest.raises(
            nut.NutError, match=re.escape("no complete answer within 0.3 s")):
        _read_from(target)


def test_other_err_codes_name_code_and_ups() -> None:
    """upsd's answer for a UPS whose driver stopped updating: ERR DATA-STALE."""
    def script(conn: socket.socket, stop: threading.Event) -> None:
        _command(conn)
        conn.sendall(b"ERR DATA-STALE\n")
        stop.wait(5)

    with scripted_server(script) as target, pytest.raises(nut.NutError) as caught:
        _read_from(target)
    assert caught.value.code == "DATA-STALE"
    assert "'ups1'" in str(caught.value) and "ERR DATA-STALE" in str(caught.value)


def test_credentials_refused_at_username() -> None:
    """A server that refuses USERNAME itself (not upsd's way, but NUT-speaking servers
    exist): the code and the step are named."""
    def script(conn: socket.socket, stop: threading.Event) -> None:
        assert _command(conn) == b"USERNAME monitor\n"
        conn.sendall(b"ERR INVALID-USERNAME\n")
        stop.wait(5)

    with scripted_server(script) as plain:
        target = NutTarget(plain.host, plain.ups, plain.port, USER, PASSWORD, 2.0)
        with pytest.raises(nut.NutError, match="ERR INVALID-USERNAME while sending USERNAME"):
            nut.list_vars(target)


# -- the mapping, value by value ----------------------------------------------------------


@pytest.mark.parametrize(("text", "verdict"), [
    ("Done and passed", True), ("passed", True), ("Self test passed", True), ("OK", True),
    ("Done and error", False), ("Done and warning", False), ("failed", False),
    ("Battery failed", False), ("No test initiated", None), ("In progress", None),
    ("Aborted", None), ("", None), (None, None), ("Test scheduled", None),
])
def test_self_test_verdicts(text: str | None, verdict: bool | None) -> None:
    """ups.test.result texts of various drivers."""
    assert nut.self_test_passed(text) is verdict


@pytest.mark.parametrize(("alarm", "flag", "count"), [
    (None, False, 0), ("", False, 0), (None, True, 1), ("Replace battery!", False, 1),
    ("[Replace battery!] [Overheat] [Fan failure]", True, 3), ("[N/A]", True, 1),
])
def test_alarm_counts(alarm: str | None, flag: bool, count: int) -> None:
    """Bracketed sentences count one each; plain text is one alarm; the flag alone, one."""
    assert nut.alarm_count(alarm, flag) == count


@pytest.mark.parametrize("raw", ["n/a", "nan", "inf", "-5", "1_000", "12,5", "", "0x10"])
def test_bad_numbers_leave_the_field_out(raw: str) -> None:
    """Whatever is not a plain non-negative decimal number is None, never an exception."""
    r = nut.reading_from_vars("room", {"ups.status": "OL", "battery.runtime": raw,
                                       "battery.charge": "50"})
    assert r.runtime_seconds is None and r.charge_ratio == 0.5


def test_model_from_older_variable_names() -> None:
    """Before NUT 2.7, only ups.mfr/ups.model; a model already naming its maker stays."""
    assert nut.reading_from_vars("r", {"ups.mfr": "APC", "ups.model": "Back-UPS 700"}
                                 ).model == "APC Back-UPS 700"
    assert nut.reading_from_vars("r", {"device.mfr": "APC", "device.model": "APC Back-UPS"}
                                 ).model == "APC Back-UPS"
    assert nut.reading_from_vars("r", {}).model is None


def test_upsd_state_helpers_refuse_what_dummy_ups_would_mangle(tmp_path: Path) -> None:
    """Values with quotes or backslashes would reach upsd changed: refused up front."""
    with pytest.raises(ValueError, match="quotes"):
        Upsd(tmp_path, {"ups1": {**ONLINE, "ups.model": 'say "hi"'}})
    with pytest.raises(ValueError, match=re.escape("driver.name")):
        Upsd(tmp_path, {"ups1": {"driver.name": "x"}})
