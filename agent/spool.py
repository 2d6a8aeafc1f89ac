"""The disk spool: every message is stored before it is sent, and kept a while after.

SQLite in WAL mode with ``synchronous=FULL``: a sample nobody has acknowledged yet must
survive a power cut, and at one message every few seconds the fsync costs nothing.
Sequence numbers are allocated and the payload built in the same transaction, so a
``seq`` is never reused within an ``epoch`` (the collector deduplicates by the pair).
A spool that cannot be read is moved aside and replaced by a new one with a new epoch:
the agent keeps measuring rather than dying on a bad file.

A broker's PUBACK does not make a message safe: Mosquitto acknowledges a QoS 1 publish
from memory and writes it to disk only in its next snapshot (``autosave_interval``), so
a broker killed meanwhile loses what it held for the collector (measured 20 kills under
50 agents: ``tests/test_fault_broker.py``). So an acknowledged row is only *marked*
(``acked``: this process's monotonic time of the PUBACK) and deleted ("purged") once it
has been acknowledged for ``keep_acked_seconds`` (longer than the broker's snapshot
interval) on a connection that stayed up; the publisher calls ``unack()`` on every
(re)connect, so rows kept when a connection dropped, or when the agent stopped, are sent
again, in seq order, before newer ones (the collector drops the duplicates). Rows
acknowledged by an earlier process are never purged by time (their monotonic stamps mean
nothing here) until they are sent and acknowledged again. ``floor`` is the oldest row kept,
acknowledged or not: only purged rows, which sat on the broker across a snapshot, and
rows dropped by a bound are below it.

Kept rows count against every bound; they are purged first, oldest first, when room is
short, and such purges are not drops. A full disk is one more bound: the spool grows only
into its own free pages and the disk's free space above ``min_free_bytes``, dropping and
counting the oldest messages beyond it, as for the other bounds. The reserve and a small
write-ahead log are what keep a full disk recoverable: SQLite needs a little room even to
delete rows, and a log that had filled the disk could never be checkpointed (measured:
every append and every acknowledgement then failed, and each sample was lost uncounted).
Should another program take the reserve too, an append that fails for a full disk frees
the oldest ``ROOM_ON_FULL_BYTES`` and tries once more.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL,
    acked REAL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# Kept rows are few (a couple of minutes' worth) among up to a day of backlog: a partial
# index finds them without reading the backlog.
ACKED_INDEX = ("CREATE INDEX IF NOT EXISTS messages_acked ON messages (acked) "
               "WHERE acked IS NOT NULL")
META_KEYS = ("epoch", "next_seq", "conn", "dropped_total")
DEFAULT_MAX_MESSAGES = 200_000
DEFAULT_MAX_AGE_SECONDS = 8 * 86400.0  # a long weekend's outage, plus margin
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# Longer than the broker's autosave_interval (60 s shipped) plus its keepalive's detection
# time (1.5 x 30 s): a broker that dies unseen for that long still drops the connection.
DEFAULT_KEEP_ACKED_SECONDS = 120.0
DEFAULT_MIN_FREE_BYTES = 1024 * 1024  # room left on the disk for the log and SQLite's own needs
WAL_CHECKPOINT_PAGES = 128  # the write-ahead log stays near 512 KiB (SQLite's default: 4 MiB)
ROOM_ON_FULL_BYTES = 256 * 1024  # dropped at once when the disk filled up anyway
ACKS_ON_FULL = 8  # acknowledgements per transaction when the disk is full
IN_MEMORY = ":memory:"
T = TypeVar("T")


class CorruptSpool(Exception):
    """The spool file exists but is not a spool we can trust."""


def disk_free_bytes(path: str) -> int:
    """Free bytes an unprivileged writer may use on the filesystem holding ``path``."""
    return shutil.disk_usage(path).free


class Spool:
    """A bounded, durable FIFO of (seq, topic, payload); safe to use from several threads."""

    def __init__(self, path: str | Path, max_messages: int = DEFAULT_MAX_MESSAGES,
                 max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
                 max_bytes: int = DEFAULT_MAX_BYTES,
                 clock: Callable[[], float] = time.time,
                 min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
                 free_space: Callable[[str], int] = disk_free_bytes,
                 ack_clock: Callable[[], float] = time.monotonic) -> None:
        self.path = str(path)
        self.max_messages = max_messages
        self.max_age_seconds = max_age_seconds
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self._free_space = free_space
        self._clock = clock
        self._ack_clock = ack_clock
        # Stamps below this were made by an earlier process: never purged by time.
        self._opened = ack_clock()
        self._lock = threading.Lock()
        self._warned_drop = False
        self.disk_full = False  # True while the disk, not a configured bound, limits the spool
        self._db = self._open()
        self._on_disk = self._db.execute("PRAGMA database_list").fetchone()[2] != ""
        self._page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
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
            if _disk_trouble(err):  # a full or failing disk, not a bad file: keep it as it is
                log.critical("Không mở được hàng đợi %s (%s): ổ đĩa đầy hoặc lỗi; giữ nguyên tệp, "
                             "tin trong đó được gửi khi agent khởi động lại. / Spool %s cannot "
                             "be opened (%s): disk full or failing; the file is kept as it is "
                             "and its messages are sent after the next restart.",
                             self.path, err, self.path, err)
                return self._in_memory()
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
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        # Only a log that grew far (a big transaction) is cut back after a checkpoint: cut
        # at every checkpoint, it would need fresh disk space again each round.
        db.execute(f"PRAGMA journal_size_limit={8 * WAL_CHECKPOINT_PAGES * 4096}")
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
            _migrate(db)
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

        ``floor`` is the oldest seq the spool still keeps, acknowledged or not (this seq
        when it keeps none). Past a bound (count, age, bytes, or the disk's free space)
        the oldest acknowledged rows are purged, then the oldest unacknowledged ones
        dropped and counted in ``dropped_total``. A disk that filled up anyway gets one
        more try after freeing the oldest ``ROOM_ON_FULL_BYTES``.
        """
        with self._lock:
            seq, dropped = self._again_if_full(
                lambda: self._append(topic, build), self._drop_for_room)
        if dropped:
            self._log_drop(dropped)
        return seq

    def _append(self, topic: str, build: Callable[[int, int], bytes]) -> tuple[int, int]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            self._sync()
            seq = self._meta("next_seq")
            oldest = db.execute("SELECT min(seq) FROM messages").fetchone()[0]
            payload = build(seq, seq if oldest is None else oldest)
            # Drops first: the new row then takes the pages they freed instead of growing
            # the file, which a full disk could not give (not even to a checkpoint).
            dropped = self._enforce_bounds(len(payload))
            db.execute("INSERT INTO messages VALUES (?, ?, ?, ?, NULL)",
                       (seq, topic, payload, self._clock()))
            db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
            db.execute("COMMIT")
        except BaseException:
            self._abort()
            raise
        self._messages += 1
        self._bytes += len(payload)
        return seq, dropped

    def _enforce_bounds(self, added: int) -> int:
        """Make room for a new row of ``added`` bytes: purge the oldest acknowledged rows,
        then drop the oldest unacknowledged ones, while a bound is exceeded (count, bytes,
        room on disk) or the row is too old. Returns the rows dropped."""
        count, size = self._messages + 1, self._bytes + added
        max_bytes = min(self.max_bytes, self._bytes + self._room())
        cutoff = self._clock() - self.max_age_seconds

        def over(rows: int, freed: int, created: float) -> bool:
            return (count - rows > self.max_messages or size - freed > max_bytes
                    or created < cutoff)

        return self._evict(over)[1]

    def _evict(self, over: Callable[[int, int, float], bool]) -> tuple[int, int]:
        """Delete oldest rows while ``over(rows, bytes so far, row's created)``: the
        acknowledged ones first (purged), then unacknowledged ones (dropped, counted).
        Inside the caller's transaction; returns (rows purged, rows dropped)."""
        removed = [0, 0]
        freed = 0
        # Kept rows through their small index (a plain scan would read the whole backlog
        # at each append); unacknowledged ones from the oldest, a prefix of the file.
        for i, rows_of in enumerate(("INDEXED BY messages_acked WHERE acked IS NOT NULL",
                                     "WHERE acked IS NULL")):
            gone: list[tuple[int]] = []
            rows = self._db.execute(f"SELECT seq, length(payload), created FROM messages "
                                    f"{rows_of} ORDER BY seq")
            for seq, length, created in rows:
                if not over(sum(removed), freed, created):
                    break
                removed[i] += 1
                freed += length
                gone.append((seq,))
                if i == 0:
                    self._kept_bytes -= length
            rows.close()
            if i == 0:
                self._db.executemany("DELETE FROM messages WHERE seq = ?", gone)
            elif gone:
                self._db.execute("DELETE FROM messages WHERE seq <= ? AND acked IS NULL",
                                 gone[-1])
        self._kept -= removed[0]
        self._messages -= sum(removed)
        self._bytes -= freed
        if removed[1]:
            self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped_total'",
                             (removed[1],))
        return removed[0], removed[1]

    def _abort(self) -> None:
        """Roll back, and recount: the cached counts may have moved with the rows."""
        _rollback(self._db)
        self._recount()

    def _room(self) -> int:
        """Bytes the spool may still grow by: the pages its file holds free (acknowledged
        or dropped rows; they are reused) plus the disk's free space above the reserve.
        Says so once when the disk starts, and stops, limiting the spool."""
        if not self._on_disk:
            return self.max_bytes
        try:
            free = self._free_space(os.path.dirname(os.path.abspath(self.path)))
        except OSError:
            return self.max_bytes  # cannot tell: the configured bounds still hold
        pages = self._db.execute("PRAGMA freelist_count").fetchone()[0] * self._page_size
        room = pages + max(0, free - self.min_free_bytes)
        # Hysteresis: under pressure the room hovers around one message, in and out.
        full = room < ROOM_ON_FULL_BYTES // 4 if not self.disk_full else room < ROOM_ON_FULL_BYTES
        if full != self.disk_full:
            self.disk_full = full
            if full:
                log.critical(
                    "Ổ đĩa chứa hàng đợi %s sắp đầy (còn %.1f MiB trống): bỏ các tin cũ nhất "
                    "để đo tiếp, số tin bỏ đếm trong agent_spool_dropped_total. / Spool disk "
                    "almost full (%.1f MiB free): dropping the oldest messages to keep "
                    "measuring; drops are counted in agent_spool_dropped_total.",
                    self.path, free / 2**20, free / 2**20)
            else:
                log.warning("Ổ đĩa chứa hàng đợi %s đã có chỗ trống. / Spool disk has room "
                            "again.", self.path)
        return room

    @staticmethod
    def _again_if_full(action: Callable[[], T], relieve: Callable[[], bool]) -> T:
        """``action()``; when the disk was full, ``relieve()`` it and, if that freed
        anything, try once more."""
        try:
            return action()
        except sqlite3.OperationalError as err:
            if not _disk_full(err) or not relieve():
                raise
            return action()

    def _checkpoint(self) -> bool:
        """Copy the log into the file and have the next write start the log over: it
        then reuses the log's disk space instead of asking a full disk for more."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(RESTART)")
        return True

    def _drop_for_room(self) -> bool:
        """The disk filled up despite the reserve (another program wrote to it): move the
        log into the file and free the oldest ``ROOM_ON_FULL_BYTES``, acknowledged rows
        first (purged), then unacknowledged ones (dropped, counted). False when nothing
        could be freed."""
        db = self._db
        self._checkpoint()
        try:
            db.execute("BEGIN IMMEDIATE")
            purged, dropped = self._evict(lambda rows, freed, created:
                                          freed < ROOM_ON_FULL_BYTES)
            db.execute("COMMIT")
        except sqlite3.Error as err:
            self._abort()
            log.critical("spool %s: disk full, and dropping old messages failed too (%s); "
                         "this sample is lost", self.path, err)
            return False
        self._checkpoint()
        if dropped:
            self.disk_full = True
            log.critical("Ổ đĩa chứa hàng đợi %s đã đầy: bỏ %d tin cũ nhất. / Spool disk full: "
                         "dropped the %d oldest message(s).", self.path, dropped, dropped)
        return purged + dropped > 0

    def _log_drop(self, dropped: int) -> None:
        if not self._warned_drop:
            self._warned_drop = True
            log.warning("spool full or too old: dropped %d oldest message(s); further drops are "
                        "counted in agent_spool_dropped_total", dropped)

    def pending(self, after_seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Up to ``limit`` unacknowledged messages with seq > ``after_seq``, oldest first."""
        with self._lock:
            return self._db.execute(
                "SELECT seq, topic, payload FROM messages WHERE seq > ? AND acked IS NULL "
                "ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()

    def ack(self, *seqs: int, keep: bool = True) -> None:
        """The broker acknowledged these: mark them (``keep``; ``purge`` deletes them
        later) or delete them at once. Acknowledging twice is harmless. When room is short
        (the disk is full) they are deleted at once, a few at a time, each after a
        checkpoint: the log's disk space then holds them (measured: 300 at once did not
        fit)."""
        with self._lock:
            try:
                self._ack(seqs, keep and not self.disk_full)
            except sqlite3.OperationalError as err:
                if not _disk_full(err):
                    raise
                for start in range(0, len(seqs), ACKS_ON_FULL):
                    self._checkpoint()
                    self._ack(seqs[start:start + ACKS_ON_FULL], False)

    def _ack(self, seqs: tuple[int, ...], keep: bool) -> None:
        db = self._db
        now = self._ack_clock()
        db.execute("BEGIN IMMEDIATE")
        try:
            self._sync()
            for seq in seqs:
                row = db.execute("SELECT length(payload), acked IS NOT NULL FROM messages "
                                 "WHERE seq = ?", (seq,)).fetchone()
                if row is None or (keep and row[1]):
                    continue  # gone, or already kept since its first acknowledgement
                if keep:
                    db.execute("UPDATE messages SET acked = ? WHERE seq = ?", (now, seq))
                    self._kept += 1
                    self._kept_bytes += row[0]
                    continue
                db.execute("DELETE FROM messages WHERE seq = ?", (seq,))
                self._messages -= 1
                self._bytes -= row[0]
                if row[1]:
                    self._kept -= 1
                    self._kept_bytes -= row[0]
            db.execute("COMMIT")
        except BaseException:
            self._abort()
            raise

    def unack(self) -> int:
        """Every kept row is unacknowledged again (a connection came up: what the last one
        acknowledged may have died with the broker); returns how many. ``pending`` then
        gives them, in seq order, before the newer rows."""
        with self._lock:
            self._sync()
            if not self._kept:
                return 0
            return self._again_if_full(self._unack, self._checkpoint)

    def _unack(self) -> int:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            count = db.execute("UPDATE messages SET acked = NULL WHERE acked IS NOT NULL"
                               ).rowcount
            db.execute("COMMIT")
        except BaseException:
            self._abort()
            raise
        self._kept = self._kept_bytes = 0
        return count

    def purge(self, keep_seconds: float) -> int:
        """Delete rows this process marked acknowledged at least ``keep_seconds`` ago;
        returns how many. The caller (the publisher) purges only while the connection that
        acknowledged them is up. Rows stamped by an earlier process are left for
        ``unack``."""
        with self._lock:
            if not self._kept:
                return 0
            return self._again_if_full(lambda: self._purge(keep_seconds), self._checkpoint)

    def _purge(self, keep_seconds: float) -> int:
        db = self._db
        where = "acked IS NOT NULL AND acked >= ? AND acked <= ?"
        bounds = (self._opened, self._ack_clock() - keep_seconds)
        db.execute("BEGIN IMMEDIATE")
        try:
            count, size = db.execute(
                f"SELECT count(*), coalesce(sum(length(payload)), 0) FROM messages "
                f"WHERE {where}", bounds).fetchone()
            if count:
                db.execute(f"DELETE FROM messages WHERE {where}", bounds)
            db.execute("COMMIT")
        except BaseException:
            self._abort()
            raise
        self._messages -= count
        self._bytes -= size
        self._kept -= count
        self._kept_bytes -= size
        return count

    def _recount(self) -> None:
        self._messages, self._bytes, self._kept, self._kept_bytes = self._db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0), count(acked), "
            "coalesce(sum(CASE WHEN acked IS NULL THEN 0 ELSE length(payload) END), 0) "
            "FROM messages").fetchone()

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
            self._again_if_full(
                lambda: self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'conn'"),
                self._checkpoint)
            return self._meta("conn")

    def stats(self) -> tuple[int, int, int]:
        """(messages, payload bytes, dropped_total) right now; messages and bytes count
        what the broker has not acknowledged (the backlog ``agent_spool_messages`` and
        ``agent_spool_bytes`` report), not the acknowledged rows kept for safety."""
        with self._lock:
            self._sync()
            return (self._messages - self._kept, self._bytes - self._kept_bytes,
                    self._meta("dropped_total"))

    def kept(self) -> tuple[int, int]:
        """(rows, payload bytes) acknowledged but kept until safe on the broker."""
        with self._lock:
            self._sync()
            return self._kept, self._kept_bytes

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _migrate(db: sqlite3.Connection) -> None:
    """A spool written before acknowledged rows were kept has no ``acked`` column: add it
    (every row it holds was then unacknowledged, which NULL says)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
    if "acked" not in columns:
        db.execute("ALTER TABLE messages ADD COLUMN acked REAL")
        log.info("spool migrated: acknowledged messages are now kept until safe")
    db.execute(ACKED_INDEX)


def _disk_trouble(err: Exception) -> bool:
    """SQLITE_FULL or an I/O error (measured on a full disk: the shared-memory file
    cannot be made): what the disk did, not what the file holds."""
    code = getattr(err, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)


def _disk_full(err: sqlite3.Error) -> bool:
    return getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")
