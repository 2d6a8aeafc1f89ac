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
    spool.ack(1)
    spool.ack(3)
    spool.ack(3)  # idempotent
    assert seqs(spool) == [2, 4, 5]
    # floor = the oldest pending seq when the message was built
    assert spool.append("t/a", payload) == 6
    assert spool.pending(5, 1) == [(6, "t/a", b"6:2")]
    assert spool.stats() == (4, len(b"2:1") + len(b"4:1") + len(b"5:1") + len(b"6:2"), 0)


def test_floor_is_own_seq_when_nothing_pending(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")
    spool.append("t", payload)
    spool.ack(1)
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
