"""The fuzz targets: one function of the input bytes per target, checked by its oracle.

The atheris harnesses (``fuzz_*.py``) instrument and fuzz them; ``bench.fuzz_bench`` also
runs them plainly over a corpus, for the cost of the instrumentation. Each builder makes
its long-lived state once (an intake, a store, the API).
"""

from __future__ import annotations

from collections.abc import Callable

from agent import wire
from agent.broker import BrokerSettings
from agent.wire import Kind
from collector.commands import CommandSender
from collector.readiness.store import Store

from .api_oracle import ApiWorld, answered, parse_request
from .schedule_oracle import KEPT, imported
from .seeds import FORMATS, KINDS
from .wire_oracle import Intake, decoded, topic_of

Target = Callable[[bytes], None]
SITE = "dt-xa-my-an"  # the golden payloads' site


def wire_target() -> Target:
    """Byte 0: the kind. Decoded (only WireError, re-encodable) and, for the kinds the
    collector subscribes to, applied to one FleetState (taken in, or refused and counted
    once)."""
    intake = Intake()

    def one(data: bytes) -> None:
        if not data:
            return
        kind, payload = KINDS[data[0] % len(KINDS)], data[1:]
        decoded(payload, kind)
        if kind is not Kind.CMD:
            intake.apply(topic_of(SITE, kind), payload)

    return one


def schedule_target() -> Target:
    """Byte 0: the format. Imported into an in-memory store holding one session (never an
    exception, lines inside the document, all or nothing)."""
    store = Store(":memory:")

    def one(data: bytes) -> None:
        if not data:
            return
        store.replace_sessions([KEPT])
        imported(store, data[1:], FORMATS[data[0] % len(FORMATS)])

    return one


def api_target() -> Target:
    """A raw HTTP request, answered by the in-process Api over an in-memory store (no 500,
    no traceback, every refusal with its reason). The command sender is a real paho client
    that is never started: test orders queue in memory."""
    sender = CommandSender(BrokerSettings(port=9), "fuzz-api", wire.DEFAULT_PREFIX)
    world = ApiWorld(":memory:", sender)
    base = world.store.sessions()

    def one(data: bytes) -> None:
        request = parse_request(data)
        if request is None:
            return
        answered(world.api, request)
        if world.store.sessions() != base:
            world.reset()

    return one


TARGETS: dict[str, Callable[[], Target]] = {
    "wire": wire_target, "schedule": schedule_target, "api": api_target}
