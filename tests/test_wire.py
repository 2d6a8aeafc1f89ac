"""The wire contract: golden payloads, the generated JSON Schema, and every bad input."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent import wire
from agent.wire import Kind, Reason, WireError

FIXTURES = Path(__file__).parent / "fixtures" / "wire"
SCHEMA_FILE = Path(__file__).parents[1] / "docs" / "wire-v1.schema.json"
GOLDEN = sorted(p.stem for p in FIXTURES.glob("*.json"))


def golden(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


def test_every_kind_has_a_golden_payload() -> None:
    assert {golden(name)["kind"] for name in GOLDEN} == {k.value for k in Kind}


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_payload_round_trips(name: str) -> None:
    raw = golden(name)
    message = wire.decode(json.dumps(raw).encode(), Kind(raw["kind"]))
    assert json.loads(wire.encode(message)) == raw


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_payload_matches_the_published_schema(name: str) -> None:
    assert list(validator().iter_errors(golden(name))) == []


def test_committed_schema_is_what_the_code_generates() -> None:
    out = subprocess.run([sys.executable, "-m", "agent.wire_schema"], capture_output=True,
                         check=True, cwd=SCHEMA_FILE.parents[1]).stdout.decode()
    assert json.loads(out) == json.loads(SCHEMA_FILE.read_text(encoding="utf-8")), (
        "run: python -m agent.wire_schema > docs/wire-v1.schema.json")
    jsonschema.Draft202012Validator.check_schema(json.loads(out))


def test_topics_are_built_and_parsed_symmetrically() -> None:
    name = wire.topic("bridgewatch", "dong-thap", "dt-xa-my-an", Kind.TELEMETRY)
    assert name == "bridgewatch/v1/dong-thap/dt-xa-my-an/telemetry"
    assert wire.parse_topic("bridgewatch", name) == ("dong-thap", "dt-xa-my-an", Kind.TELEMETRY)


@pytest.mark.parametrize("topic,reason", [
    ("other/v1/dong-thap/dt-a/telemetry", Reason.BAD_TOPIC),           # foreign prefix
    ("bridgewatch/v2/dong-thap/dt-a/telemetry", Reason.BAD_TOPIC),     # future version
    ("bridgewatch/v1/dong-thap/dt-a/telemetry/x", Reason.BAD_TOPIC),   # extra level
    ("bridgewatch/v1/dong-thap/dt-a/selfie", Reason.BAD_TOPIC),        # unknown kind
    ('bridgewatch/v1/dong-thap/dt"a/telemetry', Reason.BAD_SLUG),      # quote in site
    ("bridgewatch/v1/dong-thap/dt\na/telemetry", Reason.BAD_SLUG),     # newline in site
    ("bridgewatch/v1/Dong-Thap/dt-a/telemetry", Reason.BAD_SLUG),      # upper case
    ("bridgewatch/v1/dong-thap/-dt/telemetry", Reason.BAD_SLUG),       # leading dash
])
def test_bad_topics_are_refused_with_a_reason(topic: str, reason: Reason) -> None:
    with pytest.raises(WireError) as err:
        wire.parse_topic("bridgewatch", topic)
    assert err.value.reason is reason


def test_building_a_topic_refuses_an_unsafe_site() -> None:
    with pytest.raises(WireError):
        wire.topic("bridgewatch", "dong-thap", 'x",evil="1', Kind.STATE)


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            obj = obj[int(key)] if isinstance(obj, list) else obj[key]
        if isinstance(obj, list):
            obj[int(last)] = value
        else:
            obj[last] = value
    return mutate


def _delete(key: str) -> Mutation:
    return lambda obj: obj.pop(key)


CPU = "probes.cpu.metrics.cpu_seconds_total"
# (what we tried, message kind, mutation, reason, whether the JSON Schema can also tell)
BAD_PAYLOADS: list[tuple[str, str, Mutation, Reason, bool]] = [
    ("unknown schema version", "telemetry", _set("v", 2), Reason.SCHEMA_VERSION, True),
    ("version as a string", "telemetry", _set("v", "1"), Reason.SCHEMA_VERSION, True),
    ("version as a boolean", "telemetry", _set("v", True), Reason.SCHEMA_VERSION, True),
    ("missing seq", "telemetry", _delete("seq"), Reason.MISSING_FIELD, True),
    ("missing epoch", "test", _delete("epoch"), Reason.MISSING_FIELD, True),
    ("missing probes", "telemetry", _delete("probes"), Reason.MISSING_FIELD, True),
    ("missing state", "state-online", _delete("state"), Reason.MISSING_FIELD, True),
    ("seq as a string", "telemetry", _set("seq", "4711"), Reason.WRONG_TYPE, True),
    ("seq as a float", "telemetry", _set("seq", 4711.5), Reason.WRONG_TYPE, True),
    ("seq as a boolean", "telemetry", _set("seq", True), Reason.WRONG_TYPE, True),
    ("negative seq", "telemetry", _set("seq", -1), Reason.OUT_OF_RANGE, True),
    ("seq beyond int64", "telemetry", _set("seq", 2**64), Reason.OUT_OF_RANGE, True),
    ("floor above seq", "telemetry", _set("floor", 5000), Reason.OUT_OF_RANGE, False),
    ("probes as a list", "telemetry", _set("probes", []), Reason.WRONG_TYPE, True),
    ("probe ok as a string", "telemetry", _set("probes.cpu.ok", "yes"), Reason.WRONG_TYPE, True),
    ("value as a string", "telemetry", _set(f"{CPU}.0.1", "18234"), Reason.WRONG_TYPE, True),
    ("value as null", "telemetry", _set(f"{CPU}.0.1", None), Reason.WRONG_TYPE, True),
    ("negative counter", "telemetry", _set(f"{CPU}.0.1", -5), Reason.OUT_OF_RANGE, True),
    ("row without value", "telemetry", _set(f"{CPU}.0", ["user"]), Reason.WRONG_TYPE, True),
    ("label as a number", "telemetry", _set(f"{CPU}.0.0", 7), Reason.BAD_LABEL, True),
    ("label as an object", "telemetry", _set(f"{CPU}.0.0", {"a": 1}), Reason.BAD_LABEL, True),
    ("label with a newline", "telemetry", _set(f"{CPU}.0.0", 'us\ner'), Reason.BAD_LABEL, True),
    ("empty label", "telemetry", _set(f"{CPU}.0.0", ""), Reason.BAD_LABEL, True),
    ("label too long", "telemetry", _set(f"{CPU}.0.0", "x" * 129), Reason.BAD_LABEL, True),
    ("repeated label set", "telemetry", _set(f"{CPU}.1.0", "user"), Reason.BAD_LABEL, False),
    ("unknown metric", "telemetry", _set("probes.cpu.metrics.evil_total", [[1]]),
     Reason.UNKNOWN_METRIC, True),
    ("site with a quote", "telemetry", _set("site", 'dt"x'), Reason.BAD_SLUG, True),
    ("site with a newline", "state-online", _set("site", "dt\nx"), Reason.BAD_SLUG, True),
    ("probe name with spaces", "telemetry", _set("probes.c p u", {}), Reason.BAD_SLUG, True),
    ("state neither online nor offline", "state-online", _set("state", "maybe"),
     Reason.OUT_OF_RANGE, True),
    ("hostname with control characters", "state-online", _set("hostname", "pc\x07"),
     Reason.OUT_OF_RANGE, True),
    ("error text too long", "telemetry", _set("probes.disk.error", "e" * 500),
     Reason.OUT_OF_RANGE, True),
    ("kind not matching the topic", "telemetry", _set("kind", "test"), Reason.WRONG_TYPE, True),
    ("command name not a slug", "cmd", _set("command", "rm -rf"), Reason.BAD_SLUG, True),
]


@pytest.mark.parametrize("what,base,mutate,reason,schema_knows", BAD_PAYLOADS,
                         ids=[case[0] for case in BAD_PAYLOADS])
def test_bad_payloads_are_refused_with_their_reason(
        what: str, base: str, mutate: Mutation, reason: Reason, schema_knows: bool) -> None:
    raw = copy.deepcopy(golden(base))
    kind = Kind(raw["kind"])
    mutate(raw)
    with pytest.raises(WireError) as err:
        wire.decode(json.dumps(raw).encode(), kind)
    assert err.value.reason is reason, err.value
    if schema_knows:
        assert list(validator().iter_errors(raw)), f"schema accepts {what}"


@pytest.mark.parametrize("payload,reason", [
    (b"{not json", Reason.MALFORMED_JSON),
    (b"\xff\xfe\x00garbage", Reason.MALFORMED_JSON),
    (b"[1, 2, 3]", Reason.NOT_OBJECT),
    (b'"just a string"', Reason.NOT_OBJECT),
    (b"", Reason.MALFORMED_JSON),
    (b"[" * 100_000, Reason.OVERSIZED),
    (b"[" * 60_000, Reason.MALFORMED_JSON),  # deep nesting under the size limit
    (b'{"v": NaN}', Reason.OUT_OF_RANGE),
    (b'{"v": Infinity}', Reason.OUT_OF_RANGE),
])
def test_unparseable_payloads_are_refused(payload: bytes, reason: Reason) -> None:
    with pytest.raises(WireError) as err:
        wire.decode(payload, Kind.TELEMETRY)
    assert err.value.reason is reason


def test_huge_float_literal_is_refused() -> None:
    raw = golden("telemetry")
    text = json.dumps(raw).replace("18234.52", "1e400")
    with pytest.raises(WireError) as err:
        wire.decode(text.encode(), Kind.TELEMETRY)
    assert err.value.reason is Reason.OUT_OF_RANGE


def test_sample_time_far_from_the_collector_clock_is_refused() -> None:
    payload = json.dumps(golden("telemetry")).encode()
    ts = golden("telemetry")["ts"]
    wire.decode(payload, Kind.TELEMETRY, now=ts + 3600)
    with pytest.raises(WireError) as err:
        wire.decode(payload, Kind.TELEMETRY, now=ts + 2 * wire.MAX_CLOCK_SKEW_SECONDS)
    assert err.value.reason is Reason.OUT_OF_RANGE


def test_payload_at_the_size_limit_is_accepted_and_one_byte_more_is_not() -> None:
    raw = golden("cmd")
    base = len(json.dumps(raw | {"args": {"pad": ""}}, separators=(",", ":")).encode())
    raw["args"] = {"pad": "x" * (wire.MAX_PAYLOAD_BYTES - base)}
    payload = json.dumps(raw, separators=(",", ":")).encode()
    assert len(payload) == wire.MAX_PAYLOAD_BYTES
    with pytest.raises(WireError) as err:  # accepted by size, refused for its large args
        wire.decode(payload, Kind.CMD)
    assert err.value.reason is Reason.OVERSIZED and "args" in err.value.detail
    with pytest.raises(WireError) as err:
        wire.decode(payload + b" ", Kind.CMD)
    assert err.value.reason is Reason.OVERSIZED and "bytes" in err.value.detail
