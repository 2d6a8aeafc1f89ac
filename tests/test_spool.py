"""The disk spool: order, persistence across reopen, bounds, corruption and threads."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from agent.spool import Spool

BIG = 10**9


class FakeClock:
    """Wall-clock stand-in so age bounds are tested without waiting."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def payload(seq: int, floor: int) -> bytes:
    return f"{seq}:{floor}".encode()


def open_spool(path: Path, clock: FakeClock | None = None, **bounds: float) -> Spool:
    limits = {"max_messages": BIG, "max_age_seconds": BIG, "max_bytes": BIG, **bounds}
    return Spool(path, clock=clock or FakeClock(), **limits)


def seqs(spool: Spool) -> list[int]:
    return [seq for seq, _, _ in spool.pending(0, BIG)]


def test_append_pending_ack_in_seq_order(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")
    assert [spool.append("t/a", payload) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert spool.pending(0, 2) == [(1, "t/a", b"1:1"), (2, "t/a", b"2:1")]
    assert [s for s, _, _ in spool.pending(2, 10)] == [3, 4, 5]
    spool.ack(1, keep=False)
    spool.ack(3, keep=False)
    spool.ack(3, keep=False)  # idempotent
    assert seqs(spool) == [2, 4, 5]
    # floor = the oldest seq kept when the message was built (nothing acknowledged is kept)
    assert spool.append("t/a", payload) == 6
    assert spool.pending(5, 1) == [(6, "t/a", b"6:2")]
    assert spool.stats() == (4, len(b"2:1") + len(b"4:1") + len(b"5:1") + len(b"6:2"), 0)


def test_floor_is_own_seq_when_nothing_pending(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")
    spool.append("t", payload)
    spool.ack(1, keep=False)
    spool.append("t", payload)
    assert spool.pending(0, 1) == [(2, "t", b"2:2")]


def test_seq_epoch_and_conn_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = open_spool(path)
    epoch = spool.epoch
    for _ in range(3):
        spool.append("t", payload)
    spool.ack(1)
    assert spool.next_conn() == 1
    spool.close()

    again = open_spool(path)
    assert again.epoch == epoch
    assert seqs(again) == [2, 3]
    assert again.last_seq() == 3
    assert again.append("t", payload) == 4
    assert again.next_conn() == 2
    assert again.stats()[0] == 3


def test_new_spool_gets_a_new_epoch(tmp_path: Path) -> None:
    first = open_spool(tmp_path / "a.db", FakeClock(1_800_000_000.0))
    second = open_spool(tmp_path / "b.db", FakeClock(1_800_000_001.0))
    assert (first.epoch, second.epoch) == (1_800_000_000_000, 1_800_000_001_000)


def test_message_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db", max_messages=3)
    for _ in range(5):
        spool.append("t", payload)
    assert seqs(spool) == [3, 4, 5]
    assert spool.stats()[0::2] == (3, 2)


def test_byte_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db", max_bytes=250)
    for _ in range(5):
        spool.append("t", lambda seq, floor: bytes(100))
    assert seqs(spool) == [4, 5]
    assert spool.stats() == (2, 200, 3)


def test_age_bound_drops_old_messages(tmp_path: Path) -> None:
    clock = FakeClock()
    spool = open_spool(tmp_path / "s.db", clock, max_age_seconds=60)
    spool.append("t", payload)
    clock.now += 30
    spool.append("t", payload)
    clock.now += 45  # the first is now 75 s old, the second 45 s
    spool.append("t", payload)
    assert seqs(spool) == [2, 3]
    assert spool.stats()[2] == 1
    clock.now += 1000  # both old, but the newest message is never dropped
    spool.append("t", payload)
    assert seqs(spool) == [4]
    assert spool.stats()[2] == 3


def test_dropped_total_persists(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = open_spool(path, max_messages=1)
    for _ in range(3):
        spool.append("t", payload)
    spool.close()
    assert open_spool(path).stats() == (1, len(b"3:3"), 2)


def test_failed_build_allocates_nothing(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")

    def broken(seq: int, floor: int) -> bytes:
        raise ValueError("cannot encode")

    with pytest.raises(ValueError):
        spool.append("t", broken)
    assert spool.append("t", payload) == 1
    assert spool.stats()[0] == 1


def test_corrupt_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.CRITICAL, logger="agent.spool"):
        spool = open_spool(path)
    aside = list(tmp_path.glob("s.db.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == b"this is not a database" * 100
    assert any("unreadable" in r.message for r in caplog.records)
    assert spool.append("t", payload) == 1
    assert seqs(spool) == [1]
    spool.close()
    with sqlite3.connect(path) as db:  # the replacement is a real, durable spool
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (1,)


def test_spool_with_wrong_schema_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE messages (seq INTEGER PRIMARY KEY, topic TEXT, payload BLOB, "
                   "created REAL)")
        db.execute("INSERT INTO messages VALUES (1, 't', x'00', 0)")
    db.close()
    spool = open_spool(path)
    assert len(list(tmp_path.glob("s.db.corrupt-*"))) == 1
    assert spool.stats() == (0, 0, 0)


def test_uncreatable_path_falls_back_to_memory(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("not a directory")
    with caplog.at_level(logging.CRITICAL, logger="agent.spool"):
        spool = open_spool(tmp_path / "file" / "s.db")
    assert any("IN MEMORY" in r.message for r in caplog.records)
    assert spool.append("t", payload) == 1


def test_acks_from_another_thread_while_appending(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")
    total = 400
    done = threading.Event()
    acked: list[int] = []
    errors: list[BaseException] = []

    def acker() -> None:
        try:
            while not done.is_set() or spool.stats()[0]:
                for seq, _, _ in spool.pending(0, 16):
                    spool.ack(seq)
                    acked.append(seq)
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=acker)
    thread.start()
    appended = [spool.append("t", payload) for _ in range(total)]
    done.set()
    thread.join(timeout=60)
    assert not errors
    assert appended == list(range(1, total + 1))
    assert sorted(set(acked)) == appended
    assert spool.stats() == (0, 0, 0)


def test_counts_follow_rows_another_process_added(tmp_path: Path) -> None:
    """``bridgewatch-agent check`` appends its result to the running agent's spool from
    another process: the agent's counts must include that row and, once acknowledged,
    never go below zero."""
    agent = Spool(tmp_path / "spool.db")
    agent.append("t", lambda seq, floor: b"x" * 10)
    other = Spool(tmp_path / "spool.db")
    seq = other.append("t", lambda seq, floor: b"y" * 20)
    other.close()
    assert agent.stats()[:2] == (2, 30)
    agent.ack(seq)
    assert agent.stats()[:2] == (1, 10)
    agent.ack(seq - 1)
    assert agent.stats()[:2] == (0, 0)


class FakeDisk:
    """Free space on the spool's filesystem, as the test says it is."""

    def __init__(self, free: int) -> None:
        self.free = free

    def __call__(self, path: str) -> int:
        return self.free


def test_a_full_disk_is_a_bound_oldest_dropped_and_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Below the reserve the spool stops growing: each new message drops the oldest ones,
    counted with the other bounds' drops; it says so once, in Vietnamese and English."""
    disk = FakeDisk(10**9)
    spool = open_spool(tmp_path / "s.db", min_free_bytes=10**6, free_space=disk)
    for _ in range(5):
        spool.append("t", lambda seq, floor: bytes(100))
    assert not spool.disk_full
    disk.free = 10**6 + 50  # room for half a message above the reserve
    with caplog.at_level(logging.WARNING, logger="agent.spool"):
        for _ in range(3):
            spool.append("t", lambda seq, floor: bytes(100))
    assert seqs(spool) == [4, 5, 6, 7, 8]
    assert spool.stats() == (5, 500, 3)
    assert spool.disk_full
    said = [r.message for r in caplog.records if "Ổ đĩa" in r.message]
    assert len(said) == 1 and "Spool disk almost full" in said[0]
    disk.free = 10**9
    spool.append("t", lambda seq, floor: bytes(100))
    assert spool.stats() == (6, 600, 3) and not spool.disk_full


def test_pages_freed_inside_the_file_are_room_on_a_full_disk(tmp_path: Path) -> None:
    """Acknowledged rows leave free pages in the file: a spool on a full disk reuses
    them before it drops anything, and drops once they are used up."""
    disk = FakeDisk(10**9)
    spool = open_spool(tmp_path / "s.db", min_free_bytes=10**6, free_space=disk)
    for _ in range(10):
        spool.append("t", lambda seq, floor: bytes(3000))  # a page each
    spool.ack(1, 2, 3, 4, 5)
    disk.free = 0
    for _ in range(3):
        spool.append("t", lambda seq, floor: bytes(3000))
    assert spool.stats() == (8, 24000, 0)
    for _ in range(10):
        spool.append("t", lambda seq, floor: bytes(3000))
    messages, _, dropped = spool.stats()
    assert dropped > 0 and messages + dropped == 18
    assert seqs(spool) == list(range(5 + dropped + 1, 24))


def test_disk_full_error_drops_the_oldest_and_stores_the_sample(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Should SQLite still say "database or disk is full" (another program took the
    reserve), the oldest are dropped and counted and the append tried once more, so the
    newest sample is kept. SQLite's max_page_count makes that error without a full disk."""
    spool = open_spool(tmp_path / "s.db")
    for _ in range(40):
        spool.append("t", lambda seq, floor: bytes(3000))
    pages = spool._db.execute("PRAGMA page_count").fetchone()[0]
    spool._db.execute(f"PRAGMA max_page_count = {pages}")
    with caplog.at_level(logging.CRITICAL, logger="agent.spool"):
        for _ in range(10):
            spool.append("t", lambda seq, floor: bytes(3000))
    assert seqs(spool)[-1] == 50
    messages, _, dropped = spool.stats()
    assert dropped > 0 and messages + dropped == 50
    assert seqs(spool) == list(range(dropped + 1, 51))  # the oldest went
    assert any("Spool disk full" in r.message for r in caplog.records)


def test_a_disk_error_at_open_keeps_the_spool_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A full disk (SQLite cannot make its shared-memory file: "disk I/O error") is not a
    bad file: the spool is kept where it is, not moved aside under a new epoch. The real
    full disk is in tests/test_fault_agent.py."""
    path = tmp_path / "s.db"
    spool = open_spool(path)
    spool.append("t", payload)
    spool.close()

    prepare = Spool._prepare

    def disk_trouble(self: Spool, db: sqlite3.Connection) -> None:
        if db.execute("PRAGMA database_list").fetchone()[2]:  # the file, not memory
            err = sqlite3.OperationalError("disk I/O error")
            err.sqlite_errorcode = sqlite3.SQLITE_IOERR_SHMSIZE  # type: ignore[attr-defined]
            raise err
        prepare(self, db)

    with monkeypatch.context() as patch:
        patch.setattr(Spool, "_prepare", disk_trouble)
        with caplog.at_level(logging.CRITICAL, logger="agent.spool"):
            stand_in = open_spool(path)
    assert not list(tmp_path.glob("s.db.corrupt-*"))
    assert any("disk full or failing" in r.message for r in caplog.records)
    assert stand_in.append("t", payload) == 1  # measuring goes on, in memory
    assert seqs(open_spool(path)) == [1]  # the file, untouched, for the next start


# -- acknowledged rows kept until safe on the broker ------------------------------------

KEEP = 3.0  # keep_acked_seconds in these tests (the test broker saves every second)


def keeping_spool(path: Path, ack_clock: FakeClock, **bounds: float) -> Spool:
    limits = {"max_messages": BIG, "max_age_seconds": BIG, "max_bytes": BIG, **bounds}
    return Spool(path, clock=FakeClock(), ack_clock=ack_clock, **limits)


def in_file(path: Path) -> dict[int, bool]:
    """seq -> acknowledged, for every row the file still holds (read with plain SQLite)."""
    with sqlite3.connect(path) as db:
        rows = dict(db.execute("SELECT seq, acked IS NOT NULL FROM messages ORDER BY seq"))
    db.close()
    return {seq: bool(acked) for seq, acked in rows.items()}


def test_acknowledged_rows_are_kept_then_purged_after_the_grace_period(tmp_path: Path) -> None:
    """A PUBACK hides a row from ``pending`` and the backlog counts, but the row stays in
    the file until it has been acknowledged for ``KEEP`` seconds; only then does
    ``purge`` delete it. Tried: purging a moment too early deletes nothing."""
    now = FakeClock(1000.0)
    spool = keeping_spool(tmp_path / "s.db", now)
    for _ in range(4):
        spool.append("t", payload)
    spool.ack(1, 2)
    now.now += 1
    spool.ack(3)
    assert seqs(spool) == [4]
    assert spool.stats() == (1, len(b"4:1"), 0)
    assert spool.kept() == (3, len(b"1:1") + len(b"2:1") + len(b"3:1"))
    assert in_file(tmp_path / "s.db") == {1: True, 2: True, 3: True, 4: False}
    now.now += KEEP - 1.001
    assert spool.purge(KEEP) == 0
    now.now += 0.001  # 1 and 2 acknowledged KEEP ago, 3 not yet
    assert spool.purge(KEEP) == 2
    assert in_file(tmp_path / "s.db") == {3: True, 4: False}
    now.now += 1
    assert spool.purge(KEEP) == 1
    assert spool.kept() == (0, 0) and seqs(spool) == [4]
    assert spool.stats()[2] == 0  # a purge is not a drop


def test_a_second_ack_does_not_restart_the_grace_period(tmp_path: Path) -> None:
    now = FakeClock(1000.0)
    spool = keeping_spool(tmp_path / "s.db", now)
    spool.append("t", payload)
    spool.ack(1)
    now.now += KEEP
    spool.ack(1)  # a duplicate PUBACK
    assert spool.purge(KEEP) == 1


def test_unack_makes_kept_rows_pending_again_in_seq_order(tmp_path: Path) -> None:
    """A dropped connection: what it acknowledged may have died with the broker, so every
    kept row is sent again, before the rows appended meanwhile, and none is purged on
    the strength of the old acknowledgement."""
    now = FakeClock(1000.0)
    spool = keeping_spool(tmp_path / "s.db", now)
    for _ in range(3):
        spool.append("t", payload)
    spool.ack(1, 3)
    spool.append("t", payload)
    assert seqs(spool) == [2, 4]
    assert spool.unack() == 2
    assert seqs(spool) == [1, 2, 3, 4]
    assert spool.kept() == (0, 0) and spool.stats()[0] == 4
    now.now += 10 * KEEP
    assert spool.purge(KEEP) == 0  # the old stamps are gone with the unack
    assert spool.unack() == 0
    spool.ack(1)  # acknowledged again on the new connection: kept KEEP from now
    now.now += KEEP
    assert spool.purge(KEEP) == 1 and seqs(spool) == [2, 3, 4]


def test_floor_is_the_oldest_row_kept_acknowledged_or_not(tmp_path: Path) -> None:
    """The wire's ``floor`` promises the collector that nothing below it will come again:
    a kept row may, so it holds the floor down until it is purged (or dropped)."""
    now = FakeClock(1000.0)
    spool = keeping_spool(tmp_path / "s.db", now)
    for _ in range(3):
        spool.append("t", payload)
    spool.ack(1, 2)
    spool.append("t", payload)
    assert spool.pending(3, 1) == [(4, "t", b"4:1")]  # 1 is kept: still the floor
    now.now += KEEP
    spool.purge(KEEP)
    spool.append("t", payload)
    assert spool.pending(4, 1) == [(5, "t", b"5:3")]
    spool.ack(3, 4, 5, keep=False)  # forgotten at once: the floor is the new row itself
    spool.append("t", payload)
    assert spool.pending(5, 1) == [(6, "t", b"6:6")]


def test_rows_acknowledged_by_an_earlier_process_wait_for_a_new_ack(tmp_path: Path) -> None:
    """After an agent restart a kept row's stamp (another process's monotonic clock) says
    nothing: it is never purged by time, only sent again (``unack``) and re-acknowledged.
    Tried: stamps far in the past and far in the future of the new clock."""
    path = tmp_path / "s.db"
    first = keeping_spool(path, FakeClock(5000.0))
    for _ in range(2):
        first.append("t", payload)
    first.ack(1)
    first.close()
    for later in (10.0, 10**6):  # a reboot resets the clock; a long uptime does not
        again = keeping_spool(path, FakeClock(later))
        assert again.kept() == (1, len(b"1:1"))
        assert again.purge(KEEP) == 0
        again.close()
    again = keeping_spool(path, FakeClock(10.0))
    assert again.unack() == 1 and seqs(again) == [1, 2]


def test_a_spool_without_the_acked_column_is_migrated(tmp_path: Path) -> None:
    """A spool written by the previous agent (no ``acked`` column) opens with its epoch,
    counters and rows, all unacknowledged; keeping and purging then work on it."""
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE messages (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL,
                                   payload BLOB NOT NULL, created REAL NOT NULL);
            CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
            INSERT INTO meta VALUES ('epoch', 42), ('next_seq', 4), ('conn', 7),
                                    ('dropped_total', 5);
            INSERT INTO messages VALUES (2, 't', x'3232', 1.8e9), (3, 't', x'3333', 1.8e9);
        """)
    db.close()
    now = FakeClock(1000.0)
    spool = keeping_spool(path, now)
    assert not list(tmp_path.glob("s.db.corrupt-*"))
    assert (spool.epoch, spool.last_seq(), spool.stats()) == (42, 3, (2, 4, 5))
    assert seqs(spool) == [2, 3] and spool.next_conn() == 8
    spool.ack(2)
    assert spool.append("t", payload) == 4 and spool.pending(3, 1) == [(4, "t", b"4:2")]
    now.now += KEEP
    assert spool.purge(KEEP) == 1 and seqs(spool) == [3, 4]
    spool.close()
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(messages)")]
    db.close()
    assert columns == ["seq", "topic", "payload", "created", "acked"]
    assert seqs(keeping_spool(path, now)) == [3, 4]  # reopening a migrated spool is a no-op


def test_bounds_purge_acknowledged_rows_before_dropping_unacknowledged(tmp_path: Path) -> None:
    """Kept rows count against the bounds; when one is reached they go first, oldest first,
    and uncounted (they reached the broker); only then are unacknowledged rows dropped and
    counted. Tried: the count bound, the byte bound and the age bound."""
    now = FakeClock(1000.0)
    spool = keeping_spool(tmp_path / "n.db", now, max_messages=4)
    for _ in range(4):
        spool.append("t", payload)
    spool.ack(2, 3)
    spool.append("t", payload)
    assert in_file(tmp_path / "n.db") == {1: False, 3: True, 4: False, 5: False}
    assert spool.stats()[2] == 0
    spool.append("t", payload)
    assert in_file(tmp_path / "n.db") == {1: False, 4: False, 5: False, 6: False}
    spool.append("t", payload)  # nothing kept left: the oldest pending row is dropped
    assert in_file(tmp_path / "n.db") == {4: False, 5: False, 6: False, 7: False}
    assert spool.stats() == (4, 12, 1) and spool.kept() == (0, 0)

    sized = keeping_spool(tmp_path / "b.db", now, max_bytes=350)
    for _ in range(3):
        sized.append("t", lambda seq, floor: bytes(100))
    sized.ack(3)
    sized.append("t", lambda seq, floor: bytes(100))
    assert in_file(tmp_path / "b.db") == {1: False, 2: False, 4: False}
    assert sized.stats() == (3, 300, 0)

    wall = FakeClock()
    aged = Spool(tmp_path / "a.db", max_messages=BIG, max_age_seconds=60, max_bytes=BIG,
                 clock=wall, ack_clock=now)
    for _ in range(3):
        aged.append("t", payload)
    aged.ack(2)
    wall.now += 61
    aged.append("t", payload)
    assert in_file(tmp_path / "a.db") == {4: False}
    assert aged.stats()[2] == 2  # 1 and 3 dropped; 2 purged


def test_a_full_disk_purges_kept_rows_first_and_forgets_acks_at_once(tmp_path: Path) -> None:
    """With the disk full the kept rows make room before anything is dropped, and a new
    acknowledgement deletes its row at once (keeping it would take room a sample needs)."""
    disk = FakeDisk(10**9)
    now = FakeClock(1000.0)
    spool = Spool(tmp_path / "s.db", max_messages=BIG, max_age_seconds=BIG, max_bytes=BIG,
                  clock=FakeClock(), ack_clock=now, min_free_bytes=10**6, free_space=disk)
    for _ in range(6):
        spool.append("t", lambda seq, floor: bytes(3000))  # a page each
    spool.ack(1, 2, 3)
    assert spool.kept()[0] == 3
    disk.free = 0
    spool.append("t", lambda seq, floor: bytes(3000))
    assert spool.disk_full and spool.stats()[2] == 0
    assert 1 not in in_file(tmp_path / "s.db")  # the oldest kept row made the room
    spool.ack(4)
    assert 4 not in in_file(tmp_path / "s.db")
