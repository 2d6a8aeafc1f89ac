"""Bearer tokens for the collector's HTTP API: who may change the schedule or order tests.

The file holds one ``<name> <token>`` per line (``#`` comments allowed); the name is who
the token belongs to and is recorded with what it did ("requested by noc-tran"). Tokens
are compared in constant time, every one of them, so the answer's timing says nothing
about how close a guess was; what is compared is each side's SHA-256, so not even a
token's length shows. No file configured means no token is valid: the API is read-only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

MIN_TOKEN_CHARS = 24
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class ApiTokens:
    def __init__(self, tokens: dict[str, str]) -> None:
        self._tokens = [(name, _digest(token.encode())) for name, token in tokens.items()]

    @classmethod
    def load(cls, path: Path | None) -> ApiTokens:
        """Read the tokens file; no file configured means no token is valid (read-only)."""
        if path is None:
            return cls({})
        tokens: dict[str, str] = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2 or not _NAME.match(parts[0]):
                raise ValueError(f"{path}:{number}: expected '<name> <token>'")
            if len(parts[1]) < MIN_TOKEN_CHARS:
                raise ValueError(f"{path}:{number}: token shorter than {MIN_TOKEN_CHARS} "
                                 "characters")
            if parts[0] in tokens:
                raise ValueError(f"{path}:{number}: name {parts[0]!r} given twice")
            tokens[parts[0]] = parts[1]
        return cls(tokens)

    def who(self, authorization: str | None) -> str | None:
        """The token's owner for an ``Authorization: Bearer <token>`` header, else None."""
        scheme, _, credentials = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":  # the scheme is case-insensitive (RFC 9110 11.1)
            return None
        offered = _digest(credentials.strip().encode("utf-8", "surrogateescape"))
        owner = None
        for name, token in self._tokens:  # no early exit: every token is compared
            if hmac.compare_digest(offered, token):
                owner = name
        return owner


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()
