"""A small synchronous SNMP client (v2c and v3 USM) over pysnmp 7's asyncio API.

The agent's probes are synchronous and run one after the other in the scheduler thread, so
this façade hides asyncio: each call runs on a private event loop owned by the calling
thread. Everything that goes wrong raises ``SnmpError`` with a reason an operator can act
on (which host:port did not answer, which OID is missing or of the wrong type).

Cost: creating a pysnmp ``SnmpEngine`` takes ~90-110 ms of CPU (pysnmp compiles its own
MIB modules from source every time; a GET on a fresh engine and loop costs ~140 ms), while
a GET on an existing engine takes ~2 ms (v2c) or ~5 ms (v3 authPriv) on loopback. A probe
polling a few devices every 10 s would spend most of its time building engines, so each
thread keeps one engine (and its private event loop) per credential set and reuses it; a
session that saw a timeout or a protocol error is thrown away, so the next call starts
from a clean engine (fresh SNMPv3 discovery after a device was swapped).

SNMPv3 needs the ``cryptography`` package for privacy (DES/AES); without it pysnmp fails
every authPriv request with "Ciphering services not available".
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections import OrderedDict
from collections.abc import Collection, Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from pyasn1.type import univ
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    bulk_cmd,
    get_cmd,
    usmAesCfb128Protocol,
    usmAesCfb192Protocol,
    usmAesCfb256Protocol,
    usmDESPrivProtocol,
    usmHMAC128SHA224AuthProtocol,
    usmHMAC192SHA256AuthProtocol,
    usmHMAC256SHA384AuthProtocol,
    usmHMAC384SHA512AuthProtocol,
    usmHMACMD5AuthProtocol,
    usmHMACSHAAuthProtocol,
)
from pysnmp.proto import rfc1902, rfc1905

from agent.config import SnmpTarget

T = TypeVar("T")

# Rows one walk may return: a 52-port switch's whole ifTable is ~1,200; more than this is
# a runaway agent (or a walk of the wrong subtree), not something to keep reading.
MAX_WALK_ROWS = 10_000
# Variable bindings per GET / repetitions per GETBULK: small enough that a response stays
# well under a 1500-byte MTU on most devices (fragmented UDP is often dropped).
GET_CHUNK = 24
BULK_REPETITIONS = 25
# Engines kept per thread (one per credential set); a site has a handful of devices.
MAX_SESSIONS_PER_THREAD = 8

_AUTH_PROTOCOLS = {
    "md5": usmHMACMD5AuthProtocol,
    "sha": usmHMACSHAAuthProtocol,
    "sha224": usmHMAC128SHA224AuthProtocol,
    "sha256": usmHMAC192SHA256AuthProtocol,
    "sha384": usmHMAC256SHA384AuthProtocol,
    "sha512": usmHMAC384SHA512AuthProtocol,
}
# aes192/aes256 use pysnmp's default key extension (the "Reeder"/Cisco draft, which most
# network gear implements); net-snmp's Blumenthal variant would need its own name.
_PRIV_PROTOCOLS = {
    "des": usmDESPrivProtocol,
    "aes": usmAesCfb128Protocol,
    "aes192": usmAesCfb192Protocol,
    "aes256": usmAesCfb256Protocol,
}

# Counters of this engine's own USM (RFC 3414): they say why a v3 response was dropped.
_USM_STATS = {
    "usmStatsWrongDigests": "authentication failed: wrong auth key or auth protocol",
    "usmStatsDecryptionErrors": "decryption failed: wrong priv key or priv protocol",
    "usmStatsUnknownUserNames": "the agent does not know this user",
    "usmStatsUnsupportedSecLevels": "the agent refuses this security level",
    "usmStatsNotInTimeWindows": "engine time out of window",
}

_NAMES: dict[str, str] = {}


class SnmpError(Exception):
    """An SNMP request failed, or its answer is unusable; the message says which and why."""


def register_names(names: Mapping[str, str]) -> None:
    """Teach ``describe`` symbolic names: {numeric OID (with or without instance): name}."""
    _NAMES.update({_norm(oid): name for oid, name in names.items()})


def describe(oid: str) -> str:
    """``upsBatteryStatus.0 (1.3.6.1.2.1.33.1.2.1.0)`` when the OID (or its column) is known."""
    oid = _norm(oid)
    parts = oid.split(".")
    for cut in range(len(parts), 0, -1):
        name = _NAMES.get(".".join(parts[:cut]))
        if name is not None:
            suffix = ".".join(parts[cut:])
            return f"{name}{'.' + suffix if suffix else ''} ({oid})"
    return oid


def get(target: SnmpTarget, oids: Sequence[str],
        optional: Collection[str] = ()) -> dict[str, Any]:
    """GET each OID; returns {oid: value} with pyasn1 values (see ``as_int`` and friends).

    An OID the agent does not have (noSuchObject / noSuchInstance) raises ``SnmpError``
    naming it, unless it is in ``optional``: then its value is None.
    """
    wanted = [_norm(o) for o in oids]
    maybe = {_norm(o) for o in optional}
    session = _session(target)
    values: dict[str, Any] = {}
    absent: list[str] = []
    for start in range(0, len(wanted), GET_CHUNK):
        chunk = wanted[start:start + GET_CHUNK]
        var_binds = session.run(target, _get(session, target, chunk))
        if len(var_binds) != len(chunk):
            raise SnmpError(f"{_where(target)} answered {len(var_binds)} values for "
                            f"{len(chunk)} OIDs")
        for asked, (name, value) in zip(chunk, var_binds, strict=True):
            oid = str(name)
            if oid != asked:
                raise SnmpError(f"{_where(target)} answered {oid} when asked for "
                                f"{describe(asked)}")
            if _missing(value):
                if asked not in maybe:
                    absent.append(f"{describe(asked)}: {_missing_text(value)}")
                values[asked] = None
            else:
                values[asked] = value
    if absent:
        raise SnmpError(f"{_where(target)} has no " + ", no ".join(absent))
    return values


def walk(target: SnmpTarget, base_oid: str,
         max_rows: int = MAX_WALK_ROWS) -> list[tuple[str, Any]]:
    """Every (oid, value) under ``base_oid``, in OID order, read with GETBULK.

    An empty subtree gives ``[]``. More than ``max_rows`` rows raises ``SnmpError``, as does
    an agent whose OIDs stop increasing (a broken agent would otherwise loop forever).
    """
    base = _norm(base_oid)
    prefix = tuple(int(p) for p in base.split("."))
    session = _session(target)
    rows: list[tuple[str, Any]] = []
    current = prefix
    while True:
        var_binds = session.run(target, _bulk(session, target, ".".join(map(str, current))))
        if not var_binds:
            return rows
        for name, value in var_binds:
            oid = tuple(name.asTuple())
            if isinstance(value, rfc1905.EndOfMibView) or oid[:len(prefix)] != prefix:
                return rows
            if oid <= current:
                raise SnmpError(f"{_where(target)} returned non-increasing OID "
                                f"{'.'.join(map(str, oid))} after "
                                f"{'.'.join(map(str, current))} walking {describe(base)}")
            if _missing(value):  # not legal in a GETBULK answer, but seen in the wild
                current = oid
                continue
            rows.append((".".join(map(str, oid)), value))
            if len(rows) > max_rows:
                raise SnmpError(f"{_where(target)}: more than {max_rows} rows under "
                                f"{describe(base)}; refusing to read further")
            current = oid


def as_int(oid: str, value: Any) -> int:
    """An INTEGER-like value (Integer32, Gauge32, Counter32/64, TimeTicks, Unsigned32)."""
    if isinstance(value, univ.Integer):
        return int(value)
    raise SnmpError(f"{describe(oid)}: expected a number, got {_show(value)}")


def as_float(oid: str, value: Any) -> float:
    """``as_int`` as a float, for values that are scaled afterwards."""
    return float(as_int(oid, value))


def as_text(oid: str, value: Any) -> str:
    """An OCTET STRING (DisplayString) decoded as UTF-8, trailing NULs and blanks dropped."""
    if (isinstance(value, univ.OctetString)
            and not isinstance(value, (rfc1902.IpAddress, rfc1902.Opaque))):
        return bytes(value).decode("utf-8", "replace").rstrip("\x00 \t\r\n")
    raise SnmpError(f"{describe(oid)}: expected a string, got {_show(value)}")


def close_sessions() -> None:
    """Close every cached engine and event loop (at exit; tests may call it too)."""
    with _ALL_LOCK:
        sessions = list(_ALL)
        _ALL.clear()
    for session in sessions:
        session.close()
    # Other threads find their closed sessions on next use and replace them.
    getattr(_LOCAL, "sessions", {}).clear()


# --- internals ---------------------------------------------------------------------------

def _norm(oid: str) -> str:
    oid = oid.strip().lstrip(".")
    if not oid or not all(p.isdigit() for p in oid.split(".")):
        raise ValueError(f"not a numeric OID: {oid!r}")
    return oid


def _where(target: SnmpTarget) -> str:
    return f"{target.host}:{target.port}"


def _missing(value: Any) -> bool:
    return isinstance(value, (rfc1905.NoSuchObject, rfc1905.NoSuchInstance,
                              rfc1905.EndOfMibView))


def _missing_text(value: Any) -> str:
    if isinstance(value, rfc1905.NoSuchObject):
        return "noSuchObject"
    if isinstance(value, rfc1905.NoSuchInstance):
        return "noSuchInstance"
    return "endOfMibView"


def _show(value: Any) -> str:
    kind = type(value).__name__
    try:
        text = value.prettyPrint()
    except Exception:  # a pyasn1 schema object without a value
        text = "?"
    return f"{kind} {text[:40]!r}"


def _auth(target: SnmpTarget) -> CommunityData | UsmUserData:
    if target.version == "2c":
        if target.community is None:
            raise SnmpError(f"{_where(target)}: SNMP v2c needs a community")
        return CommunityData(target.community, mpModel=1)
    if target.user is None:
        raise SnmpError(f"{_where(target)}: SNMP v3 needs a user")
    kwargs: dict[str, Any] = {}
    if target.auth_protocol is not None:
        kwargs["authKey"] = target.auth_key
        kwargs["authProtocol"] = _AUTH_PROTOCOLS[target.auth_protocol]
    if target.priv_protocol is not None:
        kwargs["privKey"] = target.priv_key
        kwargs["privProtocol"] = _PRIV_PROTOCOLS[target.priv_protocol]
    return UsmUserData(target.user, **kwargs)


def _credentials(target: SnmpTarget) -> tuple[Any, ...]:
    return (target.version, target.community, target.user, target.auth_protocol,
            target.auth_key, target.priv_protocol, target.priv_key)


class _Session:
    """One pysnmp engine on a private event loop, used by one thread only."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.engine = SnmpEngine()
        self.peer: tuple[str, int] | None = None
        self.answers = 0  # datagrams from ``peer`` during the current call
        dispatcher = self.engine.message_dispatcher
        receive = dispatcher.receive_message

        def counting(engine: Any, domain: Any, address: Any, message: Any) -> Any:
            if self.peer is not None and tuple(address)[:2] == self.peer:
                self.answers += 1
            return receive(engine, domain, address, message)

        # Counting datagrams tells "nothing answered" from "answered, but not to us".
        dispatcher.receive_message = counting

    def run(self, target: SnmpTarget, call: Coroutine[Any, Any, T]) -> T:
        self.answers = 0
        before = self._usm_stats()
        tries = target.retries + 1
        # pysnmp enforces the per-request timeout; this guard only stops a wedged engine.
        guard = target.timeout_seconds * tries + 5.0
        if self.loop.is_closed():  # closed by close_sessions() from elsewhere
            call.close()
            raise SnmpError(f"SNMP session for {_where(target)} was closed")
        try:
            return self.loop.run_until_complete(asyncio.wait_for(call, guard))
        except SnmpError as err:
            self._discard()
            if isinstance(err, _Timeout):
                raise SnmpError(self._timeout_text(target, before)) from None
            raise
        except asyncio.TimeoutError:
            self._discard()
            raise SnmpError(f"no answer from {_where(target)}: request did not finish "
                            f"within {guard:g}s") from None
        except Exception as err:
            self._discard()
            raise SnmpError(f"SNMP request to {_where(target)} failed: "
                            f"{type(err).__name__}: {err}") from None

    def _timeout_text(self, target: SnmpTarget, before: dict[str, int]) -> str:
        tries = target.retries + 1
        text = (f"no response from {_where(target)} (timeout {target.timeout_seconds:g}s, "
                f"{tries} {'try' if tries == 1 else 'tries'})")
        if target.version == "2c":
            return text + ": host down, wrong port, or community not accepted (agents " \
                          "drop a wrong community silently)"
        after = self._usm_stats()
        reasons = [why for name, why in _USM_STATS.items()
                   if after.get(name, 0) > before.get(name, 0)]
        if reasons:
            return text + f": SNMPv3 user {target.user!r} rejected: " + "; ".join(reasons)
        if self.answers:
            return text + f": the agent answered SNMPv3 discovery but not the request: " \
                          f"check user {target.user!r}, its protocols and keys"
        return text + ": host down or wrong port"

    def _usm_stats(self) -> dict[str, int]:
        try:
            builder = self.engine.get_mib_builder()
            symbols = builder.import_symbols("__SNMP-USER-BASED-SM-MIB", *_USM_STATS)
            return {name: int(s.syntax) for name, s in zip(_USM_STATS, symbols, strict=True)}
        except Exception:  # counters are a diagnostic nicety, never a failure
            return {}

    def _discard(self) -> None:
        """Forget this session: the next call builds a fresh engine."""
        cache = getattr(_LOCAL, "sessions", None)
        if cache is not None:
            for key, session in list(cache.items()):
                if session is self:
                    del cache[key]
        with _ALL_LOCK:
            if self in _ALL:
                _ALL.remove(self)
        self.close()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        try:
            self.engine.close_dispatcher()
            # Let the transport's close callbacks and task cancellations run.
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(
                asyncio.gather(*pending, asyncio.sleep(0), return_exceptions=True))
        except Exception:  # closing must never mask the error that led here
            pass
        finally:
            self.loop.close()


class _Timeout(SnmpError):
    """Internal: pysnmp reported RequestTimedOut; ``_Session.run`` explains it."""


_LOCAL = threading.local()
_ALL: list[_Session] = []
_ALL_LOCK = threading.Lock()


def _session(target: SnmpTarget) -> _Session:
    cache: OrderedDict[tuple[Any, ...], _Session] | None = getattr(_LOCAL, "sessions", None)
    if cache is None:
        cache = _LOCAL.sessions = OrderedDict()
    key = _credentials(target)
    session = cache.get(key)
    if session is not None and not session.loop.is_closed():
        cache.move_to_end(key)
        return session
    session = cache[key] = _Session()
    with _ALL_LOCK:
        _ALL.append(session)
    while len(cache) > MAX_SESSIONS_PER_THREAD:
        _, oldest = cache.popitem(last=False)
        with _ALL_LOCK:
            if oldest in _ALL:
                _ALL.remove(oldest)
        oldest.close()
    return session


atexit.register(close_sessions)


async def _transport(session: _Session, target: SnmpTarget) -> UdpTransportTarget:
    try:
        transport = await UdpTransportTarget.create(
            (target.host, target.port), timeout=target.timeout_seconds,
            retries=target.retries)
    except Exception as err:
        reason = str(err).split(" caused by ")[0]
        raise SnmpError(f"cannot resolve {target.host!r}: {reason}") from None
    address = transport.transport_address
    session.peer = (str(address[0]), int(address[1]))
    return transport


def _check(target: SnmpTarget, indication: Any, status: Any, index: Any,
           var_binds: Sequence[Any], asked: Sequence[str]) -> None:
    if indication:
        if type(indication).__name__ == "RequestTimedOut":
            raise _Timeout(str(indication))
        hint = ""
        if "Ciphering services not available" in str(indication):
            hint = " (SNMPv3 privacy needs the 'cryptography' Python package)"
        raise SnmpError(f"SNMP error talking to {_where(target)}: {indication}{hint}")
    if status:
        position = int(index)
        culprit = ""
        if 0 < position <= len(asked):
            culprit = f" at {describe(asked[position - 1])}"
        elif 0 < position <= len(var_binds):
            culprit = f" at {describe(str(var_binds[position - 1][0]))}"
        text = status.prettyPrint() if hasattr(status, "prettyPrint") else str(status)
        raise SnmpError(f"{_where(target)} answered {text}{culprit}")


async def _get(session: _Session, target: SnmpTarget,
               oids: Sequence[str]) -> list[tuple[Any, Any]]:
    transport = await _transport(session, target)
    indication, status, index, var_binds = await get_cmd(
        session.engine, _auth(target), transport, ContextData(),
        *(ObjectType(ObjectIdentity(oid)) for oid in oids), lookupMib=False)
    _check(target, indication, status, index, var_binds, oids)
    return [(vb[0], vb[1]) for vb in var_binds]


async def _bulk(session: _Session, target: SnmpTarget,
                start: str) -> list[tuple[Any, Any]]:
    transport = await _transport(session, target)
    indication, status, index, var_binds = await bulk_cmd(
        session.engine, _auth(target), transport, ContextData(), 0, BULK_REPETITIONS,
        ObjectType(ObjectIdentity(start)), lookupMib=False)
    _check(target, indication, status, index, var_binds, [start])
    return list(_flatten(var_binds))


def _flatten(var_binds: Iterable[Any]) -> Iterable[tuple[Any, Any]]:
    """GETBULK answers come flat in pysnmp 7 (a table of rows in older releases)."""
    for item in var_binds:
        if isinstance(item, (list, tuple)) and item and isinstance(item[0], (list, tuple)):
            for inner in item:
                yield inner[0], inner[1]
        else:
            yield item[0], item[1]
