"""What must hold for any wire payload, whoever made it up (hypothesis or the fuzzer).

``decoded``: the decoder raises nothing but ``WireError`` (with a ``Reason``), and what it
accepts re-encodes to a fixed point. ``Intake``: a real ``FleetState`` fed through
``apply``, checking that each message was either taken in or refused with exactly one
reason counted once, and that the exposition still renders afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent import wire
from agent.wire import Kind, Reason, WireError
from collector.inventory import parse_inventory
from collector.state import FleetState

NOW = 1_795_300_000.0  # the golden payloads' time
PREFIX = wire.DEFAULT_PREFIX
SITES = {"dt-trung-tam": "dong-thap", "dt-xa-my-an": "dong-thap", "gl-pleiku": "gia-lai"}
INVENTORY = parse_inventory({
    "provinces": {"dong-thap": {"name": "Đồng Tháp"}, "gia-lai": {"name": "Gia Lai"}},
    "sites": [{"id": site, "province": province, "name": site,
               "level": "central" if site == "dt-trung-tam" else "member"}
              for site, province in SITES.items()],
})


def topic_of(site: str, kind: Kind) -> str:
    return wire.topic(PREFIX, SITES[site], site, kind)


def decoded(payload: bytes, kind: Kind, now: float | None = None) -> wire.Message | None:
    """The message, or None when refused; any other exception is a bug and propagates."""
    try:
        message = wire.decode(payload, kind, now)
    except WireError as err:
        assert isinstance(err.reason, Reason), err
        return None
    data = wire.encode(message)  # what was accepted can always be sent on
    if len(data) <= wire.MAX_PAYLOAD_BYTES:  # '1E5' re-encodes as '100000.0': may grow
        again = wire.decode(data, kind)
        assert wire.encode(again) == data, f"encode(decode(x)) is no fixed point: {data!r}"
    return message


@dataclass(frozen=True)
class Outcome:
    changed: bool  # apply() said the message changed state
    reason: Reason | None  # the one reason counted for it, if refused


class Intake:
    """One collector intake (``FleetState.apply``), with its refusal counters read back."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.fleet = FleetState(INVENTORY, PREFIX, clock=lambda: self.now, render_delay=0)

    def rejected(self) -> dict[str, float]:
        family = self.fleet.metrics.rejected.collect()[0]
        return {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}

    def apply(self, topic: str, payload: bytes) -> Outcome:
        """Apply one message; fail unless it was counted exactly once, as taken or refused."""
        before = self.rejected()
        changed = self.fleet.apply(topic, payload)  # "never raises on bad input"
        after = self.rejected()
        moved = {r: after[r] - before.get(r, 0.0) for r in after if after[r] != before.get(r)}
        assert len(moved) <= 1 and set(moved.values()) <= {1.0}, f"counted {moved}"
        reason = Reason(next(iter(moved))) if moved else None
        assert not (changed and reason), f"taken in and refused ({reason}) at once"
        self.fleet.flush(everything=True)  # rendering what was taken in must not fail
        return Outcome(changed, reason)
