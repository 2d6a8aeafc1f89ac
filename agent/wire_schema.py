"""JSON Schema (2020-12) of wire v1, generated from ``agent.wire`` for other implementations.

``python -m agent.wire_schema > docs/wire-v1.schema.json``; a test keeps the committed file
equal to what this prints, so the document can never drift from the code.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from . import wire

_NUMBER = {"type": "number"}
_SLUG = {"type": "string", "pattern": wire.SLUG_PATTERN}
_COUNT = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}


def _text(limit: int) -> dict[str, Any]:
    return {"type": "string", "maxLength": limit, "pattern": "^[^\\u0000-\\u001f\\u007f]*$"}


def _rows(spec: wire.MetricSpec) -> dict[str, Any]:
    label = {"type": "string", "minLength": 1, "maxLength": wire.MAX_LABEL_VALUE_CHARS,
             "pattern": "^[^\\u0000-\\u001f\\u007f]*$"}
    value = {"type": "number", "minimum": 0} if spec.type == "counter" else _NUMBER
    row = {"type": "array", "prefixItems": [label] * len(spec.labels) + [value],
           "minItems": len(spec.labels) + 1, "maxItems": len(spec.labels) + 1}
    return {"description": f"{spec.type}: {spec.help} Row: [{', '.join(spec.labels)}"
                           f"{', ' if spec.labels else ''}value]",
            "type": "array", "items": row, "maxItems": wire.MAX_ROWS_PER_METRIC}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "object", "required": sorted(required),
            "properties": {**required, **(optional or {})}}


def _header(kind: wire.Kind) -> dict[str, Any]:
    return {"v": {"const": wire.WIRE_VERSION}, "kind": {"const": kind.value},
            "province": _SLUG, "site": _SLUG, "ts": {"type": "number", "minimum": 0}}


def schema() -> dict[str, Any]:
    data = {"epoch": _COUNT, "seq": _COUNT, "floor": _COUNT}
    probe = _object(
        {"ok": {"type": "boolean"},
         "duration_seconds": {"type": "number", "minimum": 0, "maximum": 3600},
         "interval_seconds": {"type": "number", "minimum": 0.001, "maximum": 86400},
         "metrics": {"type": "object", "additionalProperties": False,
                     "properties": {n: _rows(s) for n, s in wire.CATALOGUE.items()}}},
        {"error": {"anyOf": [{"type": "null"}, _text(wire.MAX_TEXT_CHARS)]}})
    criterion = _object({"name": _SLUG, "ok": {"type": "boolean"},
                         "value": {"type": ["number", "null"]},
                         "limit": {"type": ["number", "null"]}, "unit": _text(32)})
    kinds = {
        wire.Kind.TELEMETRY: _object({**_header(wire.Kind.TELEMETRY), **data, "probes": {
            "type": "object", "maxProperties": wire.MAX_PROBES,
            "propertyNames": {"pattern": wire.SLUG_PATTERN}, "additionalProperties": probe}}),
        wire.Kind.TEST: _object({**_header(wire.Kind.TEST), **data, "test_id": _text(64),
                                 "trigger": _text(64), "passed": {"type": "boolean"},
                                 "criteria": {"type": "array", "items": criterion,
                                              "maxItems": wire.MAX_PROBES}}),
        wire.Kind.STATE: _object({**_header(wire.Kind.STATE),
                                  "seq": {"type": "integer", "minimum": 0}, "conn": _COUNT,
                                  "state": {"enum": list(wire.STATE_VALUES)},
                                  "agent_version": _text(64), "hostname": _text(128),
                                  "os": _text(128)}),
        wire.Kind.CMD: _object({**_header(wire.Kind.CMD),
                                "seq": {"type": "integer", "minimum": 0},
                                "command": _SLUG, "args": {"type": "object"}}),
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"bridgewatch-wire-v{wire.WIRE_VERSION}",
        "title": f"BridgeWatch wire contract v{wire.WIRE_VERSION}",
        "description": (
            f"One JSON object per MQTT message on <prefix>/v{wire.WIRE_VERSION}/<province>/"
            f"<site>/<kind>, at most {wire.MAX_PAYLOAD_BYTES} bytes. The topic's province, site "
            "and kind must equal the payload's. Data messages (telemetry, test) are "
            "deduplicated by (site, epoch, seq); floor <= seq is the oldest seq the agent "
            "still held unacknowledged. State messages are ordered by (conn, offline > online)."),
        "oneOf": [{"$ref": f"#/$defs/{k.value}"} for k in kinds],
        "$defs": {k.value: v for k, v in kinds.items()},
    }


def main() -> None:
    json.dump(schema(), sys.stdout, indent=1, ensure_ascii=False, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
