"""Property-based tests of the wire contract and the collector's intake (hypothesis).

Valid messages are generated from the catalogue (every kind, every metric family, label
values in any script, counters and gauges over the whole float range); they must survive
encode -> decode unchanged, match the published JSON Schema and be taken in by a real
``FleetState``. Invalid ones are made by one known mutation of a valid message (a key
removed, a wrong JSON type, a huge or non-finite number, a lone surrogate, bytes that are
not UTF-8, a cut payload, deep nesting, 64 KiB + 1, a wrong topic, site or province, a bad
seq, floor or epoch); each must be refused with its own reason, counted exactly once, and
change nothing: the state fed valid and invalid messages interleaved renders exactly as the
state fed the valid ones alone. Arbitrary bytes and arbitrary JSON must make the decoder
raise nothing but ``WireError``.

Derandomized and without an example database, so CI runs the same cases every time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from agent import wire
from agent.wire import CATALOGUE, Kind, Reason
from collector.dedup import MAX_FLOOR_JUMP
from tests.fuzz.wire_oracle import NOW, SITES, Intake, Outcome, decoded, topic_of

SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "wire-v1.schema.json")
                    .read_text(encoding="utf-8"))


@pytest.fixture(autouse=True, scope="module")
def quiet_refusal_log() -> Iterator[None]:
    """Refusals are logged once per (reason, topic) and per FleetState, and every example
    builds new ones: thousands of warnings that say nothing here (the counters are read)."""
    logger = logging.getLogger("bridgewatch.collector")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def many(examples: int) -> settings:
    """Reproducible (derandomized, no database) and without a per-example deadline."""
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------------------
# Valid messages

slugs = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,14}[a-z0-9])?\Z")
# Any printable text (Vietnamese, CJK, emoji...): no control characters, no lone surrogates.
printable = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"))


def text(low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(printable, min_size=low, max_size=high)


def finite(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


def value_of(spec: wire.MetricSpec) -> st.SearchStrategy[float]:
    low = 0.0 if spec.type == "counter" else -1e308
    return st.integers(int(low), 2**53) | finite(low, 1.7e308)


@st.composite
def rows(draw: st.DrawFn, spec: wire.MetricSpec, most: int) -> list[wire.Row]:
    values = value_of(spec)
    if not spec.labels:
        return [((), draw(values))]
    label = text(1, wire.MAX_LABEL_VALUE_CHARS) if most > 2 else text(1, 12)
    labels = st.tuples(*[label] * len(spec.labels))
    return [(ls, draw(values)) for ls in draw(st.lists(labels, min_size=1, max_size=most,
                                                      unique=True))]


@st.composite
def probe_reports(draw: st.DrawFn, most: int) -> wire.ProbeReport:
    """A probe's report with up to ``most`` metric families of up to ``most`` rows."""
    names = draw(st.lists(st.sampled_from(sorted(CATALOGUE)), max_size=most, unique=True))
    return wire.ProbeReport(
        ok=draw(st.booleans()),
        duration_seconds=draw(st.integers(0, 3600 * 10**6)) / 10**6,  # survives round(_, 6)
        interval_seconds=draw(st.sampled_from([0.001, 1, 2.5, 10, 60, 86400])),
        error=draw(st.none() | text(0, wire.MAX_TEXT_CHARS)),
        metrics={name: draw(rows(CATALOGUE[name], most)) for name in names})


def timestamps(spread: int = 86400) -> st.SearchStrategy[float]:
    """Collector-acceptable sample times with at most 3 decimals (encode rounds to 3)."""
    return st.integers(-spread * 1000, spread * 1000).map(lambda ms: (NOW * 1000 + ms) / 1000)


sites = st.sampled_from(sorted(SITES))
counts = st.integers(1, 2**63 - 1)
json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
                | finite(-1e308, 1e308) | text(0, 30))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(text(0, 10), inner, max_size=4), max_leaves=12)


def floors(seq: int) -> st.SearchStrategy[int]:
    """A floor an agent could send: no spool holds more than MAX_FLOOR_JUMP unacknowledged
    (the collector refuses a larger jump as out_of_range, tested in test_dedup)."""
    return st.integers(max(1, seq - MAX_FLOOR_JUMP), seq)


@st.composite
def telemetry(draw: st.DrawFn, site: str, seq: int, epoch: int, most: int = 4) -> wire.Telemetry:
    probes = draw(st.dictionaries(slugs, probe_reports(most), max_size=most))
    return wire.Telemetry(SITES[site], site, epoch, seq, draw(floors(seq)),
                          draw(timestamps()), probes)


@st.composite
def results(draw: st.DrawFn, site: str, seq: int, epoch: int) -> wire.TestResult:
    number = st.none() | finite(-1e308, 1e308)
    criteria = st.builds(wire.Criterion, name=slugs, ok=st.booleans(), value=number,
                         limit=number, unit=text(0, 32))
    return wire.TestResult(SITES[site], site, epoch, seq, draw(floors(seq)),
                           draw(timestamps()), draw(text(0, 64)), draw(text(0, 64)),
                           draw(st.booleans()), tuple(draw(st.lists(criteria, max_size=6))))


@st.composite
def states(draw: st.DrawFn, site: str, seq: int, conn: int) -> wire.State:
    return wire.State(SITES[site], site, seq, conn, draw(timestamps()),
                      draw(st.sampled_from(wire.STATE_VALUES)), draw(text(0, 64)),
                      draw(text(0, 128)), draw(text(0, 128)))


@st.composite
def commands(draw: st.DrawFn) -> wire.Command:
    site = draw(sites)
    args = draw(st.dictionaries(text(0, 10), json_values, max_size=5))
    return wire.Command(SITES[site], site, draw(st.integers(0, 2**63 - 1)), draw(timestamps()),
                        draw(slugs), args)


@st.composite
def site_messages(draw: st.DrawFn) -> wire.Message:
    """A valid telemetry, test result or state of a site of the inventory."""
    make = draw(st.sampled_from([telemetry, results, states]))
    return draw(make(draw(sites), draw(counts), draw(counts)))


def messages() -> st.SearchStrategy[wire.Message]:
    """Any valid message of any kind."""
    return site_messages() | commands()


KIND_OF = {wire.Telemetry: Kind.TELEMETRY, wire.TestResult: Kind.TEST, wire.State: Kind.STATE,
           wire.Command: Kind.CMD}


@many(800)
@given(messages())
def test_valid_messages_round_trip_and_match_the_schema(message: wire.Message) -> None:
    """encode -> decode gives the same message back, and the bytes match the JSON Schema
    that other implementations are given."""
    data = wire.encode(message)
    kind = KIND_OF[type(message)]
    assert wire.decode(data, kind, now=NOW) == message
    errors = [e.message for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(
        json.loads(data))]
    assert errors == []


# --------------------------------------------------------------------------------------
# Arbitrary input: nothing but WireError

FIELDS = ["v", "kind", "province", "site", "seq", "ts", "epoch", "floor", "probes", "test_id",
          "trigger", "passed", "criteria", "conn", "state", "agent_version", "hostname", "os",
          "command", "args"]
surrogates = st.characters(categories=["Cs"])
wild_text = st.text(st.characters() | surrogates, max_size=8) | st.sampled_from(FIELDS)
huge = st.sampled_from([10**400, -(10**400), 2**63, 2**64, -(2**63) - 1, 2**1024])
wild_scalars = st.none() | st.booleans() | st.integers() | huge | st.floats() | wild_text
wild_values = st.recursive(wild_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(wild_text, inner, max_size=3), max_leaves=8)


def dumps(obj: Any) -> bytes:
    """JSON as a careless sender writes it: NaN/Infinity tokens, \\ud800 escapes."""
    return json.dumps(obj, allow_nan=True).encode()


@many(3000)
@given(st.binary(max_size=400), st.sampled_from(Kind))
def test_arbitrary_bytes_only_ever_raise_wire_errors(payload: bytes, kind: Kind) -> None:
    """Random bytes of every kind: refused with a reason, never another exception."""
    decoded(payload, kind)


@many(1000)
@given(st.dictionaries(wild_text, wild_values, max_size=8),
       st.sampled_from(Kind))
def test_arbitrary_json_objects_only_ever_raise_wire_errors(obj: dict[str, Any],
                                                            kind: Kind) -> None:
    """Objects with the contract's keys and any values (ints beyond float range, NaN,
    lone surrogates, nesting): refused with a reason or re-encodable."""
    decoded(dumps(obj), kind)


@st.composite
def grafted(draw: st.DrawFn) -> tuple[bytes, Kind]:
    """A valid message with one node anywhere in its JSON tree replaced by a wild value."""
    message = draw(messages())
    obj = json.loads(wire.encode(message))
    parent: Any = obj
    key: Any = draw(st.sampled_from(sorted(obj)))
    for _ in range(draw(st.integers(0, 5))):  # walk down a few levels, where there are any
        child = parent[key]
        children = (sorted(child) if isinstance(child, dict)
                    else list(range(len(child))) if isinstance(child, list) else [])
        if not children:
            break
        parent, key = child, draw(st.sampled_from(children))
    parent[key] = draw(wild_values)
    return dumps(obj), KIND_OF[type(message)]


@many(1000)
@given(grafted())
def test_grafted_messages_only_ever_raise_wire_errors(case: tuple[bytes, Kind]) -> None:
    """Deep inside a valid message (a label, a row, a criterion), any value: no crash."""
    decoded(*case)


# --------------------------------------------------------------------------------------
# Known mutations and their reasons

Raw = dict[str, Any]
REQUIRED = {
    Kind.TELEMETRY: ["province", "site", "seq", "ts", "epoch", "floor", "probes"],
    Kind.TEST: ["province", "site", "seq", "ts", "epoch", "floor", "test_id", "trigger",
                "passed", "criteria"],
    Kind.STATE: ["province", "site", "seq", "ts", "conn", "state", "agent_version",
                 "hostname", "os"],
}
# What a field must be, and values of every other JSON type.
SHAPES = {"province": "str", "site": "str", "seq": "int", "ts": "num", "epoch": "int",
          "floor": "int", "probes": "dict", "test_id": "str", "trigger": "str",
          "passed": "bool", "criteria": "list", "conn": "int", "state": "str",
          "agent_version": "str", "hostname": "str", "os": "str"}
WRONG = {
    "str": st.none() | st.booleans() | st.integers() | finite(-1e9, 1e9) | st.just([]),
    "int": st.none() | st.booleans() | finite(-1e9, 1e9) | text(0, 5) | st.just({}),
    "num": st.none() | st.booleans() | text(0, 5) | st.just([1]),
    "dict": st.none() | st.booleans() | st.integers() | text(0, 5) | st.just([]),
    "list": st.none() | st.booleans() | st.integers() | text(0, 5) | st.just({}),
    "bool": st.none() | st.integers() | finite(-1e9, 1e9) | text(0, 5) | st.just([]),
}
TEXT_LIMITS = {"test_id": 64, "trigger": 64, "agent_version": 64, "hostname": 128, "os": 128}
BAD_NUMBERS = {
    "seq": [-1, 2**63, 10**30], "epoch": [0, -5, 2**63], "conn": [0, 2**64],
    "ts": [-1, -0.5, 10**400, 1e308, NOW + 2 * wire.MAX_CLOCK_SKEW_SECONDS],
}


@st.composite
def site_message(draw: st.DrawFn, site: str, seq: int, epoch: int, conn: int) -> wire.Message:
    """A small valid message of the site: telemetry, test result or state."""
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return draw(telemetry(site, seq, epoch, most=2))
    return draw(results(site, seq, epoch) if choice == 1 else states(site, seq, conn))


@st.composite
def mutant(draw: st.DrawFn, site: str, seq: int, epoch: int,
           conn: int) -> tuple[str, bytes, set[Reason]]:
    """One message made invalid in one known way: (topic, payload, the reasons it may get)."""
    message = draw(site_message(site, seq, epoch, conn))
    kind = KIND_OF[type(message)]
    raw: Raw = json.loads(wire.encode(message))
    topic = topic_of(site, kind)
    how = draw(st.sampled_from(sorted(MUTATIONS)))
    return MUTATIONS[how](draw, raw, kind, topic)


Mutation = Callable[[st.DrawFn, Raw, Kind, str], tuple[str, bytes, set[Reason]]]


def _missing(draw: st.DrawFn, raw: Raw, kind: Kind, topic: str) -> tuple[str, bytes, set[Reason]]:
    key = draw(st.sampled_from(["v", "kind", *REQUIRED[kind]]))
    del raw[key]
    reason = {"v": Reason.SCHEMA_VERSION, "kind": Reason.WRONG_TYPE}.get(key,
                                                                         Reason.MISSING_FIELD)
    return topic, dumps(raw), {reason}


def _wrong_type(draw: st.DrawFn, raw: Raw, kind: Kind,
                topic: str) -> tuple[str, bytes, set[Reason]]:
    key = draw(st.sampled_from(REQUIRED[kind]))
    raw[key] = draw(WRONG[SHAPES[key]])
    return topic, dumps(raw), {Reason.WRONG_TYPE}


def _bad_number(draw: st.DrawFn, raw: Raw, kind: Kind,
                topic: str) -> tuple[str, bytes, set[Reason]]:
    key = draw(st.sampled_from([k for k in BAD_NUMBERS if k in REQUIRED[kind]]))
    raw[key] = draw(st.sampled_from(BAD_NUMBERS[key]))
    return topic, dumps(raw), {Reason.OUT_OF_RANGE}


def _non_finite(draw: st.DrawFn, raw: Raw, kind: Kind,
                topic: str) -> tuple[str, bytes, set[Reason]]:
    raw["ts"] = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    data = dumps(raw)
    if draw(st.booleans()):  # a literal too large for a double reads as inf
        data = data.replace(b"Infinity", b"1e400").replace(b"NaN", b"-1e999")
    return topic, data, {Reason.OUT_OF_RANGE}


def _bad_seq(draw: st.DrawFn, raw: Raw, kind: Kind, topic: str) -> tuple[str, bytes, set[Reason]]:
    if kind is Kind.STATE:
        raw["conn"] = 0
    elif draw(st.booleans()):
        raw["seq"] = 0
    else:
        raw["floor"] = raw["seq"] + draw(st.integers(1, 10))
    return topic, dumps(raw), {Reason.OUT_OF_RANGE}


def _bad_text(draw: st.DrawFn, raw: Raw, kind: Kind, topic: str) -> tuple[str, bytes, set[Reason]]:
    key = draw(st.sampled_from([k for k in TEXT_LIMITS if k in raw]
                               or ["province"]))
    if key == "province":  # telemetry has no free text at the top
        raw[key] = draw(st.sampled_from(["Dong-Thap", "dong thap", "-x", "x" * 64, "đồng-tháp",
                                         "dong-thap\n"]))
        return topic, dumps(raw), {Reason.BAD_SLUG}
    raw[key] = draw(st.sampled_from([
        "x" * (TEXT_LIMITS[key] + 1), "pc\x07", "line\nbreak", "tab\there", "del\x7f"]))
    return topic, dumps(raw), {Reason.OUT_OF_RANGE}


def _surrogate(draw: st.DrawFn, raw: Raw, kind: Kind, topic: str) -> tuple[str, bytes, set[Reason]]:
    lone = draw(st.characters(categories=["Cs"]))
    key = draw(st.sampled_from([k for k in TEXT_LIMITS if k in raw] or ["province"]))
    raw[key] = "x" + lone
    return topic, dumps(raw), {Reason.MALFORMED_JSON}


def _not_utf8(draw: st.DrawFn, raw: Raw, kind: Kind, topic: str) -> tuple[str, bytes, set[Reason]]:
    data = json.dumps(raw, ensure_ascii=False).encode()  # Vietnamese as multi-byte UTF-8
    at = draw(st.integers(0, len(data)))
    junk = draw(st.sampled_from([b"\xff", b"\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80"]))
    return topic, data[:at] + junk + data[at:], {Reason.MALFORMED_JSON}


def _cut(draw: st.DrawFn, raw: Raw, kind: Kind, topic: str) -> tuple[str, bytes, set[Reason]]:
    data = dumps(raw)
    return topic, data[:draw(st.integers(0, len(data) - 1))], {Reason.MALFORMED_JSON}


def _nested(draw: st.DrawFn, raw: Raw, kind: Kind, topic: str) -> tuple[str, bytes, set[Reason]]:
    depth = draw(st.integers(1, 20_000))
    key = draw(st.sampled_from(REQUIRED[kind]))
    raw[key] = "@@"
    data = dumps(raw).replace(b'"@@"', b"[" * depth + b"]" * depth)
    # Deep enough to exhaust the parser: malformed; else a list where a field belongs.
    reasons = {Reason.MALFORMED_JSON, Reason.WRONG_TYPE}
    return topic, data, {Reason.OVERSIZED} if len(data) > wire.MAX_PAYLOAD_BYTES else reasons


def _not_object(draw: st.DrawFn, raw: Raw, kind: Kind,
                topic: str) -> tuple[str, bytes, set[Reason]]:
    other = draw(st.sampled_from([[raw], list(raw), 1, "text", None, True]))
    return topic, dumps(other), {Reason.NOT_OBJECT}


def _oversized(draw: st.DrawFn, raw: Raw, kind: Kind,
               topic: str) -> tuple[str, bytes, set[Reason]]:
    raw["pad"] = "x" * (wire.MAX_PAYLOAD_BYTES - draw(st.integers(0, 100)))
    return topic, dumps(raw), {Reason.OVERSIZED}


def _version(draw: st.DrawFn, raw: Raw, kind: Kind, topic: str) -> tuple[str, bytes, set[Reason]]:
    raw["v"] = draw(st.sampled_from([0, 2, "1", True, 1.5, None, [1]]))
    return topic, dumps(raw), {Reason.SCHEMA_VERSION}


def _kind_mismatch(draw: st.DrawFn, raw: Raw, kind: Kind,
                   topic: str) -> tuple[str, bytes, set[Reason]]:
    other = draw(st.sampled_from([k for k in Kind if k is not kind and k is not Kind.CMD]))
    return topic.rsplit("/", 1)[0] + "/" + other.value, dumps(raw), {Reason.WRONG_TYPE}


def _bad_topic(draw: st.DrawFn, raw: Raw, kind: Kind, topic: str) -> tuple[str, bytes, set[Reason]]:
    prefix, version, province, site, end = topic.split("/")
    bad = draw(st.sampled_from([
        (f"other/{version}/{province}/{site}/{end}", Reason.BAD_TOPIC),
        (f"{prefix}/v2/{province}/{site}/{end}", Reason.BAD_TOPIC),
        (f"{topic}/extra", Reason.BAD_TOPIC),
        (f"{prefix}/{version}/{province}/{site}/selfie", Reason.BAD_TOPIC),
        (f"{prefix}/{version}/{province}/{site}", Reason.BAD_TOPIC),
        (f"{prefix}/{version}/{province}/{site.upper()}/{end}", Reason.BAD_SLUG),
        (f"{prefix}/{version}/{province}/{site}\n/{end}", Reason.BAD_SLUG),
        (f"{prefix}/{version}/{province}/{site}-/{end}", Reason.BAD_SLUG),
        (f"{prefix}/{version}/{province}/+/{end}", Reason.BAD_SLUG),
        (f"{prefix}/{version}/{province}/xx-unknown/{end}", Reason.UNKNOWN_SITE),
    ]))
    return bad[0], dumps(raw), {bad[1]}


def _spoofed(draw: st.DrawFn, raw: Raw, kind: Kind, topic: str) -> tuple[str, bytes, set[Reason]]:
    prefix, version, province, site, end = topic.split("/")
    other = "gia-lai" if province == "dong-thap" else "dong-thap"
    choice = draw(st.integers(0, 2))
    if choice == 0:  # the topic claims another province for the site
        return f"{prefix}/{version}/{other}/{site}/{end}", dumps(raw), {Reason.SPOOFED}
    if choice == 1:  # the payload names another site of the inventory than its topic
        raw["site"] = next(s for s in sorted(SITES) if s != site)
    else:
        raw["province"] = other
    return topic, dumps(raw), {Reason.SPOOFED}


MUTATIONS: dict[str, Mutation] = {
    "missing": _missing, "wrong_type": _wrong_type, "bad_number": _bad_number,
    "non_finite": _non_finite, "bad_seq": _bad_seq, "bad_text": _bad_text,
    "surrogate": _surrogate, "not_utf8": _not_utf8, "cut": _cut, "nested": _nested,
    "not_object": _not_object, "oversized": _oversized, "version": _version,
    "kind_mismatch": _kind_mismatch, "bad_topic": _bad_topic, "spoofed": _spoofed,
}


@st.composite
def traffic(draw: st.DrawFn) -> list[tuple[str, bytes, set[Reason] | None]]:
    """Valid messages of every site (fresh seq and conn each) interleaved with mutants."""
    epochs = {site: draw(counts) for site in SITES}
    seq = dict.fromkeys(SITES, 0)
    out: list[tuple[str, bytes, set[Reason] | None]] = []
    for _ in range(draw(st.integers(1, 12))):
        site = draw(sites)
        seq[site] += 1
        if draw(st.integers(0, 2)) == 0:
            out.append(draw(mutant(site, seq[site], epochs[site], seq[site])))
            continue
        message = draw(site_message(site, seq[site], epochs[site], seq[site]))
        out.append((topic_of(site, KIND_OF[type(message)]), wire.encode(message), None))
    return out


@many(400)
@given(traffic())
def test_intake_counts_every_refusal_once_and_keeps_the_valid_messages(
        messages: list[tuple[str, bytes, set[Reason] | None]]) -> None:
    """Each mutant is refused with its reason and counted once; each valid message is
    taken in; the state fed both renders exactly as the state fed the valid ones alone."""
    mixed, clean = Intake(), Intake()
    expected: dict[str, int] = {}
    for topic, payload, reasons in messages:
        outcome = mixed.apply(topic, payload)
        if reasons is None:
            assert outcome.changed and outcome.reason is None
            assert clean.apply(topic, payload).changed
        else:
            assert not outcome.changed and outcome.reason in reasons, (topic, payload[:300])
            expected[outcome.reason.value] = expected.get(outcome.reason.value, 0) + 1
    assert {r: v for r, v in mixed.rejected().items() if v} == expected
    assert not any(clean.rejected().values())
    assert mixed.fleet.render() == clean.fleet.render()
    # The exposition of what was taken in is still valid Prometheus text.
    assert list(text_string_to_metric_families(mixed.fleet.render().decode()))


@many(150)
@given(st.lists(counts, min_size=6, max_size=10, unique=True), sites)
def test_a_retired_epoch_is_refused_as_old_epoch(epochs: list[int], site: str) -> None:
    """A site's spools come and go (epochs); once more than four newer epochs were seen,
    a late message of the first is refused as old_epoch and counted once."""
    intake = Intake()
    for epoch in epochs:
        message = wire.Telemetry(SITES[site], site, epoch, 1, 1, NOW, {})
        assert intake.apply(topic_of(site, Kind.TELEMETRY), wire.encode(message)).changed
    late = wire.Telemetry(SITES[site], site, epochs[0], 2, 1, NOW, {})
    outcome = intake.apply(topic_of(site, Kind.TELEMETRY), wire.encode(late))
    assert outcome == Outcome(False, Reason.OLD_EPOCH)


@many(200)
@given(site_messages())
def test_a_replayed_message_is_a_duplicate_not_a_refusal(message: wire.Message) -> None:
    """QoS 1 re-delivers: the second copy is refused with no reason counted, a data message
    is counted as a duplicate, and the rendered state does not move."""
    intake = Intake()
    topic, data = topic_of(message.site, KIND_OF[type(message)]), wire.encode(message)
    assert intake.apply(topic, data) == Outcome(True, None)
    rendered = intake.fleet.render()
    assert intake.apply(topic, data) == Outcome(False, None)
    duplicates = intake.fleet.metrics.registry.get_sample_value(
        "bridge_collector_messages_duplicate_total")
    assert duplicates == (0 if isinstance(message, wire.State) else 1)
    if isinstance(message, wire.State):
        assert intake.fleet.render() == rendered


# --------------------------------------------------------------------------------------
# What these tests found (each crashed or was misread before agent/wire.py was fixed)

FIXTURES = Path(__file__).parent / "fixtures" / "wire"


def golden(name: str, **changes: Any) -> bytes:
    raw = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return dumps(raw | changes)


FOUND = [
    # A lone surrogate in a host name: FleetState.apply raised UnicodeEncodeError while
    # rendering bridge_agent_info, so the message was neither taken in nor counted.
    ("surrogate in hostname", "state-online", golden("state-online", hostname="PC\ud800"),
     Reason.MALFORMED_JSON),
    # ... and in a label: taken in, then every render of /metrics failed on it.
    ("surrogate in a label", "telemetry", dumps(json.loads(golden("telemetry")) | {
        "probes": {"net": {"ok": True, "duration_seconds": 0, "interval_seconds": 10,
                           "metrics": {"network_up": [["eth\udc00", 1]]}}}}),
     Reason.MALFORMED_JSON),
    # An int no double can hold: OverflowError from float().
    ("ts beyond a double", "telemetry", golden("telemetry", ts=10**400), Reason.OUT_OF_RANGE),
    ("criterion value beyond a double", "test", golden("test", criteria=[{
        "name": "rtt", "ok": True, "value": 10**400, "limit": 1, "unit": "s"}]),
     Reason.OUT_OF_RANGE),
    # 1e400 reads as inf: accepted, then the message could not be encoded again.
    ("criterion limit 1e400", "test", golden("test", criteria=[{
        "name": "rtt", "ok": True, "value": 1, "limit": 1.5, "unit": "s"}]).replace(
        b"1.5", b"1e400"), Reason.OUT_OF_RANGE),
    # A slug followed by a newline passed is_slug ('$' matches before a final newline).
    ("province with a final newline", "state-online",
     golden("state-online", province="dong-thap\n"), Reason.BAD_SLUG),
]


@pytest.mark.parametrize("name,kind,payload,reason", FOUND, ids=[f[0] for f in FOUND])
def test_what_the_properties_found_is_refused(name: str, kind: str, payload: bytes,
                                              reason: Reason) -> None:
    """Each payload that broke the decoder or the intake: now refused with its reason
    (with and without the collector's clock), counted once by the intake."""
    kind_ = Kind(kind.split("-")[0])
    for now in (None, NOW):
        with pytest.raises(wire.WireError) as err:
            wire.decode(payload, kind_, now)
        assert err.value.reason is reason
    outcome = Intake().apply(topic_of("dt-xa-my-an", kind_), payload)
    assert outcome == Outcome(False, reason)


def test_a_topic_site_with_a_final_newline_is_a_bad_slug() -> None:
    """Read as the unknown site 'dt-xa-my-an\\n' before: now a bad slug, as it should."""
    with pytest.raises(wire.WireError) as err:
        wire.parse_topic(wire.DEFAULT_PREFIX, "bridgewatch/v1/dong-thap/dt-xa-my-an\n/state")
    assert err.value.reason is Reason.BAD_SLUG
