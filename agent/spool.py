"""The disk spool: every message is stored before it is sent and deleted once acknowledged.

SQLite in WAL mode with ``synchronous=FULL``: a sample nobody has acknowledged yet must
survive a power cut, and at one message every few seconds the fsync costs nothing.
Sequence numbers are allocated and the payload built in the same transaction, so a
``seq`` is never reused within an ``epoch`` (the collector deduplicates by the pair).
A spool that cannot be read is moved aside and replaced by a new one with a new epoch:
the agent keeps measuring rather than dying on a bad file.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
META_KEYS = ("epoch", "next_seq", "conn", "dropped_total")
DEFAULT_MAX_MESSAGES = 200_000
DEFAULT_MAX_AGE_SECONDS = 8 * 86400.0  # a long weekend's outage, plus margin
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
IN_MEMORY = ":memory:"


class CorruptSpool(Exception):
    """The spool file exists but is not a spool we can trust."""


class Spool:
    """A bounded, durable FIFO of (seq, topic, payload); safe to use from several threads."""

    def __init__(self, path: str | Path, max_messages: int = DEFAULT_MAX_MESSAGES,
                 max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
                 max_bytes: int = DEFAULT_MAX_BYTES,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self.max_messages = max_messages
        self.max_age_seconds = max_age_seconds
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._warned_drop = False
        self._db = self._open()
        self.epoch = self._meta("epoch")
        self._recount()
        self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]

    # -- opening -------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect(self.path)
        except (CorruptSpool, sqlite3.DatabaseError) as err:
            if "locked" in str(err) or "busy" in str(err):
                raise  # another agent holds it: moving it aside would wreck its data
            aside = self._move_aside()
            log.critical("spool %s is unreadable (%s): moved it to %s and started a new spool "
                         "(new epoch); its unsent messages are not sent", self.path, err, aside)
        except OSError as err:
            log.critical("spool %s cannot be created (%s)", self.path, err)
            return self._in_memory()
        try:
            return self._connect(self.path)
        except (CorruptSpool, sqlite3.Error, OSError) as err:
            log.critical("new spool %s cannot be created either (%s)", self.path, err)
            return self._in_memory()

    def _in_memory(self) -> sqlite3.Connection:
        log.critical("spooling IN MEMORY: messages will not survive an agent restart")
        return self._connect(IN_MEMORY)

    def _connect(self, path: str) -> sqlite3.Connection:
        if path != IN_MEMORY:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        try:
            self._prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise CorruptSpool(f"quick_check: {check}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        db.execute("BEGIN IMMEDIATE")
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                if db.execute("SELECT 1 FROM messages LIMIT 1").fetchone():
                    raise CorruptSpool("messages without an epoch")
                meta = {"epoch": int(self._clock() * 1000), "next_seq": 1, "conn": 0,
                        "dropped_total": 0}
                db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
                log.info("new spool %s, epoch %d", self.path, meta["epoch"])
            missing = [k for k in META_KEYS if not isinstance(meta.get(k), int)]
            if missing:
                raise CorruptSpool(f"meta lacks {', '.join(missing)}")
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    def _move_aside(self) -> str:
        aside = f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.replace(self.path + suffix, aside + suffix)
        return aside

    # -- queries ---------------------------------------------------------------------------

    def _meta(self, key: str) -> int:
        return self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def append(self, topic: str, build: Callable[[int, int], bytes]) -> int:
        """Store one message; ``build(seq, floor)`` makes its payload inside the transaction.

        ``floor`` is the oldest seq still pending (this seq when nothing is). Past a bound
        the oldest messages are dropped and counted in ``dropped_total``.
        """
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                self._sync()
                seq = self._meta("next_seq")
                oldest = db.execute("SELECT min(seq) FROM messages").fetchone()[0]
                payload = build(seq, seq if oldest is None else oldest)
                db.execute("INSERT INTO messages VALUES (?, ?, ?, ?)",
                           (seq, topic, payload, self._clock()))
                db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
                dropped, freed = self._enforce_bounds(seq, len(payload))
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            self._messages += 1 - dropped
            self._bytes += len(payload) - freed
        if dropped:
            self._log_drop(dropped)
        return seq

    def _enforce_bounds(self, newest: int, added: int) -> tuple[int, int]:
        """Delete the oldest rows past any bound (never the newest); returns (rows, bytes)."""
        count, size = self._messages + 1, self._bytes + added
        cutoff = self._clock() - self.max_age_seconds
        dropped = freed = 0
        last = None
        rows = self._db.execute(
            "SELECT seq, length(payload), created FROM messages WHERE seq < ? ORDER BY seq",
            (newest,))
        for seq, length, created in rows:
            over = (count - dropped > self.max_messages or size - freed > self.max_bytes
                    or created < cutoff)
            if not over:
                break
            dropped, freed, last = dropped + 1, freed + length, seq
        rows.close()
        if last is not None:
            self._db.execute("DELETE FROM messages WHERE seq <= ?", (last,))
            self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped_total'",
                             (dropped,))
        return dropped, freed

    def _log_drop(self, dropped: int) -> None:
        if not self._warned_drop:
            self._warned_drop = True
            log.warning("spool full or too old: dropped %d oldest message(s); further drops are "
                        "counted in agent_spool_dropped_total", dropped)

    def pending(self, after_seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Up to ``limit`` stored messages with seq > ``after_seq``, oldest first."""
        with self._lock:
            return self._db.execute(
                "SELECT seq, topic, payload FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit)).fetchall()

    def ack(self, *seqs: int) -> None:
        """Forget acknowledged messages (one transaction); acknowledging twice is harmless."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                self._sync()
                for seq in seqs:
                    row = db.execute("SELECT length(payload) FROM messages WHERE seq = ?",
                                     (seq,)).fetchone()
                    if row is not None:
                        db.execute("DELETE FROM messages WHERE seq = ?", (seq,))
                        self._messages -= 1
                        self._bytes -= row[0]
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                self._recount()
                raise

    def _recount(self) -> None:
        self._messages, self._bytes = self._db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM messages").fetchone()

    def _sync(self) -> None:
        """Recount when another process wrote to the spool (``bridgewatch-agent check``
        adds its result beside the running agent): SQLite's data_version moves only for
        commits made by other connections, so the cached counts stay cheap otherwise."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            self._recount()

    def last_seq(self) -> int:
        """The newest seq ever allocated in this epoch (0 before the first message)."""
        with self._lock:
            return self._meta("next_seq") - 1

    def next_conn(self) -> int:
        """A new connection number, persisted so it keeps growing across restarts."""
        with self._lock:
            self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'conn'")
            return self._meta("conn")

    def stats(self) -> tuple[int, int, int]:
        """(messages, payload bytes, dropped_total) right now."""
        with self._lock:
            self._sync()
            return self._messages, self._bytes, self._meta("dropped_total")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")
