"""Talking to a running collector the way an operator's script does: YAML files written
for it, and its HTTP API called with a bearer token. Shared by the end-to-end tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def call_api(port: int, token: str, method: str, path: str, body: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, Any]:
    """(status, decoded JSON) of one API call; an HTTP error is an answer, not a raise."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")
