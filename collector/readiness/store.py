"""The collector's durable memory: sessions, test results, test orders and confirmations.

One SQLite file (the standard library; nothing to run beside the collector), in WAL mode
with ``synchronous=FULL``: a committed write survives a crash or power cut, and a process
killed mid-write leaves the file consistent (the test kills a writer with SIGKILL). The
schema is versioned with ``PRAGMA user_version`` and created or upgraded on open; a file
from a newer version is refused rather than misread.

The collector writes from its intake thread and reads from its HTTP thread, so there is one
connection guarded by a re-entrant lock; :meth:`Store.transaction` holds it across a
read-check-write sequence (the schedule import checks overlaps against what is stored and
writes in the same transaction, so two imports cannot both pass). Another process (the
``schedule import`` command beside a running collector) waits on SQLite's own lock.

Times go in as aware datetimes (naive ones are refused: a naive time in a readiness record
is a bug), are kept as integer microseconds since the epoch (exact, sortable, zone-free),
and come out in Vietnam time. Criteria are JSON and round-trip exactly.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from agent.wire import Criterion

from .model import TRIGGERS, VIETNAM, Confirmation, Session, TestRecord

SCHEMA_VERSION = 1
# (version, statements): applied in order to a file whose user_version is lower.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, (
        """CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            start_us INTEGER NOT NULL,
            duration_us INTEGER NOT NULL,
            host TEXT NOT NULL,
            members TEXT NOT NULL,       -- JSON list of site ids
            national TEXT NOT NULL,      -- JSON list of site ids
            source TEXT NOT NULL
        )""",
        "CREATE INDEX sessions_by_start ON sessions(start_us)",
        """CREATE TABLE tests (
            test_id TEXT PRIMARY KEY,
            site TEXT NOT NULL,
            finished_us INTEGER NOT NULL,
            passed INTEGER NOT NULL,
            criteria TEXT NOT NULL,      -- JSON list of {name, ok, value, limit, unit}
            trigger_kind TEXT NOT NULL,
            requested_by TEXT NOT NULL,
            session_id TEXT
        )""",
        "CREATE INDEX tests_by_site ON tests(site, finished_us)",
        "CREATE INDEX tests_by_session ON tests(session_id, finished_us)",
        "CREATE INDEX tests_by_finished ON tests(finished_us)",
        """CREATE TABLE orders (
            test_id TEXT PRIMARY KEY,
            site TEXT NOT NULL,
            session_id TEXT,
            checkpoint TEXT,
            trigger_kind TEXT NOT NULL,
            requested_by TEXT NOT NULL,
            ordered_us INTEGER NOT NULL
        )""",
        "CREATE INDEX orders_by_time ON orders(ordered_us)",
        """CREATE TABLE confirmations (
            session_id TEXT NOT NULL,
            site TEXT NOT NULL,
            at_us INTEGER NOT NULL,
            by_whom TEXT NOT NULL,
            UNIQUE (session_id, site, at_us, by_whom)
        )""",
        "CREATE INDEX confirmations_by_session ON confirmations(session_id, at_us)",
    )),
)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


class StoreError(RuntimeError):
    pass


@dataclass(frozen=True)
class Order:
    """A test the collector or a person asked a bridge to run, so its result can be matched."""

    test_id: str
    site: str
    session_id: str | None
    checkpoint: str | None  # "test-1", "test-2", ...; None for a test outside the schedule
    trigger: str  # one of TRIGGERS
    requested_by: str
    ordered_at: datetime

    @property
    def at(self) -> datetime:
        """The name the planner's orders use for the same moment."""
        return self.ordered_at


class PlannedOrder(Protocol):
    """What ``add_order(order, requested_by)`` reads (``planner.Order`` has it)."""

    @property
    def test_id(self) -> str: ...
    @property
    def site(self) -> str: ...
    @property
    def session_id(self) -> str | None: ...
    @property
    def checkpoint(self) -> str | None: ...
    @property
    def trigger(self) -> str: ...
    @property
    def at(self) -> datetime: ...


def _us(moment: datetime) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: need an aware one")
    return (moment - _EPOCH) // _MICROSECOND


def _when(us: int) -> datetime:
    return (_EPOCH + us * _MICROSECOND).astimezone(VIETNAM)


def _session_row(s: Session) -> tuple[Any, ...]:
    return (s.id, s.title, _us(s.start), s.duration // _MICROSECOND, s.host,
            json.dumps(list(s.members)), json.dumps(list(s.national)), s.source)


def _session(row: sqlite3.Row) -> Session:
    return Session(id=row["id"], title=row["title"], start=_when(row["start_us"]),
                   duration=row["duration_us"] * _MICROSECOND, host=row["host"],
                   members=tuple(json.loads(row["members"])),
                   national=tuple(json.loads(row["national"])), source=row["source"])


def _test(row: sqlite3.Row) -> TestRecord:
    criteria = tuple(Criterion(**c) for c in json.loads(row["criteria"]))
    return TestRecord(test_id=row["test_id"], site=row["site"],
                      finished=_when(row["finished_us"]), passed=bool(row["passed"]),
                      criteria=criteria, trigger=row["trigger_kind"],
                      requested_by=row["requested_by"], session_id=row["session_id"])


def _order(row: sqlite3.Row) -> Order:
    return Order(test_id=row["test_id"], site=row["site"], session_id=row["session_id"],
                 checkpoint=row["checkpoint"], trigger=row["trigger_kind"],
                 requested_by=row["requested_by"], ordered_at=_when(row["ordered_us"]))


def _window(column: str, since: datetime | None, until: datetime | None,
            where: list[str], args: list[Any]) -> None:
    if since is not None:
        where.append(f"{column} >= ?")
        args.append(_us(since))
    if until is not None:
        where.append(f"{column} < ?")
        args.append(_us(until))


class Store:
    """The SQLite store; safe to share between threads (see the module docstring)."""

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._depth = 0
        self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.DatabaseError as err:  # e.g. a YAML file given as the database
            self._db.close()
            raise StoreError(f"{self.path}: not a usable database: {err}") from None
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        with self.transaction():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema version {version} is newer than this "
                                 f"program's {SCHEMA_VERSION}; upgrade BridgeWatch")
            for target, statements in MIGRATIONS:
                if target > version:
                    for statement in statements:
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {int(target)}")

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (nested calls join the outer one); rolled back on error."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # -- sessions ------------------------------------------------------------------------

    def upsert_sessions(self, sessions: Iterable[Session]) -> int:
        """Insert or replace these sessions by id, all in one transaction; how many."""
        rows = [_session_row(s) for s in sessions]  # a naive time fails before any write
        with self.transaction():
            self._db.executemany("INSERT OR REPLACE INTO sessions VALUES (?,?,?,?,?,?,?,?)",
                                 rows)
        return len(rows)

    def replace_sessions(self, sessions: Iterable[Session]) -> int:
        """Make these the only stored sessions, in one transaction."""
        rows = [_session_row(s) for s in sessions]
        with self.transaction():
            self._db.execute("DELETE FROM sessions")
            self._db.executemany("INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?)", rows)
        return len(rows)

    def delete_session(self, session_id: str) -> bool:
        """Remove a session (its tests and confirmations stay: they are the record)."""
        with self.transaction():
            cursor = self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        return cursor.rowcount > 0

    def session(self, session_id: str) -> Session | None:
        rows = self._rows("SELECT * FROM sessions WHERE id = ?", (session_id,))
        return _session(rows[0]) if rows else None

    def sessions(self, since: datetime | None = None,
                 until: datetime | None = None) -> list[Session]:
        """Sessions that overlap ``[since, until)`` (still running at ``since`` counts),
        by start."""
        where, args = ["1"], []
        if since is not None:
            where.append("start_us + duration_us > ?")
            args.append(_us(since))
        if until is not None:
            where.append("start_us < ?")
            args.append(_us(until))
        rows = self._rows(f"SELECT * FROM sessions WHERE {' AND '.join(where)} "
                          "ORDER BY start_us, id", args)
        return [_session(row) for row in rows]

    # -- tests ---------------------------------------------------------------------------

    def add_test(self, record: TestRecord) -> bool:
        """Store a finished test; False if its test_id is stored already (a redelivery)."""
        criteria = json.dumps([asdict(c) for c in record.criteria], ensure_ascii=False)
        row = (record.test_id, record.site, _us(record.finished), int(record.passed),
               criteria, record.trigger, record.requested_by, record.session_id)
        with self.transaction():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO tests VALUES (?,?,?,?,?,?,?,?)", row)
        return cursor.rowcount > 0

    def test(self, test_id: str) -> TestRecord | None:
        rows = self._rows("SELECT * FROM tests WHERE test_id = ?", (test_id,))
        return _test(rows[0]) if rows else None

    def tests(self, site: str | None = None, since: datetime | None = None,
              until: datetime | None = None, session_id: str | None = None) -> list[TestRecord]:
        """Tests finished in ``[since, until)``, oldest first, optionally of one site/session."""
        return [_test(row) for row in self._select("tests", "finished_us", site, session_id,
                                                   since, until)]

    def _select(self, table: str, time_column: str, site: str | None,
                session_id: str | None, since: datetime | None,
                until: datetime | None) -> list[sqlite3.Row]:
        """Rows of ``tests`` or ``orders`` in a time window, of one site/session if given."""
        where, args = ["1"], []
        if site is not None:
            where.append("site = ?")
            args.append(site)
        if session_id is not None:
            where.append("session_id = ?")
            args.append(session_id)
        _window(time_column, since, until, where, args)
        return self._rows(f"SELECT * FROM {table} WHERE {' AND '.join(where)} "
                          f"ORDER BY {time_column}, test_id", args)

    # -- orders --------------------------------------------------------------------------

    def add_order(self, test_id: str | PlannedOrder, site: str, session_id: str | None = None,
                  checkpoint: str | None = None, trigger: str = "", requested_by: str = "",
                  ordered_at: datetime | None = None) -> bool:
        """Remember who asked for a test; False if that test_id was ordered already.

        Either every field, or ``add_order(order, requested_by)`` with an order of the
        planner (an empty session_id / checkpoint there is stored as None).
        """
        if not isinstance(test_id, str):
            order, requested_by = test_id, site
            test_id, site, trigger, ordered_at = order.test_id, order.site, order.trigger, order.at
            session_id, checkpoint = order.session_id or None, order.checkpoint or None
        if ordered_at is None:
            raise ValueError("ordered_at is required")
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger {trigger!r} not in {TRIGGERS}")
        row = (test_id, site, session_id, checkpoint, trigger, requested_by, _us(ordered_at))
        with self.transaction():
            cursor = self._db.execute("INSERT OR IGNORE INTO orders VALUES (?,?,?,?,?,?,?)",
                                      row)
        return cursor.rowcount > 0

    def order(self, test_id: str) -> Order | None:
        rows = self._rows("SELECT * FROM orders WHERE test_id = ?", (test_id,))
        return _order(rows[0]) if rows else None

    def orders(self, since: datetime | None = None, until: datetime | None = None,
               site: str | None = None, session_id: str | None = None) -> list[Order]:
        """Orders placed in ``[since, until)``, oldest first."""
        return [_order(row) for row in self._select("orders", "ordered_us", site, session_id,
                                                    since, until)]

    # -- confirmations -------------------------------------------------------------------

    def add_confirmation(self, confirmation: Confirmation) -> bool:
        """Record a confirmation; False if the very same one is stored already.

        Every confirmation is kept (who said so, and when, is the record); the engine
        decides which counts.
        """
        row = (confirmation.session_id, confirmation.site, _us(confirmation.at),
               confirmation.by)
        with self.transaction():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO confirmations VALUES (?,?,?,?)", row)
        return cursor.rowcount > 0

    def confirmations(self, session_id: str) -> list[Confirmation]:
        rows = self._rows("SELECT * FROM confirmations WHERE session_id = ? "
                          "ORDER BY at_us, site, by_whom", (session_id,))
        return [Confirmation(row["session_id"], row["site"], _when(row["at_us"]),
                             row["by_whom"]) for row in rows]
