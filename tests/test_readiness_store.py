"""The readiness store keeps everything across restarts, crashes and threads.

Round trips are checked for exact equality (times to the microsecond, criteria floats to
the last bit); durability by closing and reopening, and by SIGKILL of a writer process.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.wire import Criterion
from collector.readiness.model import VIETNAM, Confirmation, Session
from collector.readiness.model import TestRecord as Record  # pytest collects Test* names
from collector.readiness.store import SCHEMA_VERSION, Order, Store, StoreError

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=VIETNAM)
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PlannerOrder:
    """The shape of collector.readiness.planner.Order (not imported: another module)."""

    site: str
    session_id: str
    checkpoint: str
    trigger: str
    test_id: str
    at: datetime


def session(sid: str = "tcd-2026-12-05", **changes: object) -> Session:
    base = dict(id=sid, title="Tiếp công dân định kỳ tháng 12/2026",
                start=datetime(2026, 12, 5, 8, 0, tzinfo=VIETNAM), duration=timedelta(hours=3),
                host="dt-trung-tam", members=("dt-sa-dec", "dt-hong-ngu"),
                national=("tw-tiep-cong-dan",), source="lich.yaml:4")
    base.update(changes)
    return Session(**base)  # type: ignore[arg-type]


def record(test_id: str = "tcd-2026-12-05/test-1/a1", **changes: object) -> Record:
    base = dict(
        test_id=test_id, site="dt-sa-dec", finished=T0 + timedelta(microseconds=123457),
        passed=False,
        criteria=(Criterion("link_bandwidth", False, 4.2e6, 5e6, "bit/s"),
                  Criterion("link_loss", True, 0.1 + 0.2, 0.01, "ratio"),
                  Criterion("ups_runtime", True, 5400, 3 * 3600 * 1.2, "s"),
                  Criterion("clock_offset", True, -0.000123456789, 0.5, "s"),
                  Criterion("storage_hours", True, None, None, "giờ")),
        trigger="schedule", requested_by="collector", session_id="tcd-2026-12-05")
    base.update(changes)
    return Record(**base)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "readiness.sqlite")
    yield s
    s.close()


def test_a_new_file_gets_the_schema_in_wal_mode(tmp_path: Path) -> None:
    """Open creates the tables, sets user_version and WAL; reopening keeps the version."""
    path = tmp_path / "r.sqlite"
    Store(path).close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"sessions", "tests", "orders", "confirmations"} <= tables
    raw.close()
    with Store(path) as again:
        assert again.schema_version == SCHEMA_VERSION


def test_a_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    """user_version set beyond what this program knows: refused, not misread."""
    path = tmp_path / "r.sqlite"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    """The schedule YAML passed as --db by mistake: a StoreError, the file untouched."""
    path = tmp_path / "schedule.yaml"
    path.write_text("sessions: []\n" * 200, encoding="utf-8")
    with pytest.raises(StoreError, match="not a usable database"):
        Store(path)
    assert path.read_text(encoding="utf-8") == "sessions: []\n" * 200


def test_sessions_round_trip_and_come_back_in_vietnam_time(store: Store) -> None:
    """A session given in UTC comes back equal, in VIETNAM tz; upsert replaces by id."""
    utc = session(start=datetime(2026, 12, 5, 1, 0, tzinfo=timezone.utc))
    assert store.upsert_sessions([utc, session("tcd-b", members=())]) == 2
    back = store.session("tcd-2026-12-05")
    assert back == utc and back is not None and back.start.tzinfo == VIETNAM
    assert back.start.hour == 8
    store.upsert_sessions([session(title="Đã đổi")])
    assert [s.title for s in store.sessions()] == ["Đã đổi", "Tiếp công dân định kỳ tháng 12/2026"]
    assert store.session("none") is None


def test_session_windows_include_sessions_still_running(store: Store) -> None:
    """Sessions 08:00-11:00 on the 5th and 6th: 'since' 10:00 on the 5th still includes the
    first (running), 'until' excludes sessions starting at or after it."""
    first, second = session("a"), session("b", start=session().start + timedelta(days=1))
    store.upsert_sessions([second, first])
    day = session().start
    assert [s.id for s in store.sessions()] == ["a", "b"]
    assert [s.id for s in store.sessions(since=day + timedelta(hours=2))] == ["a", "b"]
    assert [s.id for s in store.sessions(since=day + timedelta(hours=3))] == ["b"]
    assert [s.id for s in store.sessions(until=day + timedelta(days=1))] == ["a"]


def test_replace_and_delete_sessions(store: Store) -> None:
    """replace_sessions leaves exactly the given set; delete says whether it removed one."""
    store.upsert_sessions([session("a"), session("b")])
    store.replace_sessions([session("c")])
    assert [s.id for s in store.sessions()] == ["c"]
    assert store.delete_session("c") and not store.delete_session("c")
    assert store.sessions() == []


def test_a_naive_time_is_refused_and_nothing_is_written(store: Store) -> None:
    """One good session and one with a naive start in the same call: ValueError, none
    stored (the batch is one transaction)."""
    bad = session("naive", start=datetime(2026, 12, 5, 8, 0))
    with pytest.raises(ValueError, match="naive"):
        store.upsert_sessions([session("good"), bad])
    assert store.sessions() == []
    with pytest.raises(ValueError):
        store.add_test(record(finished=datetime(2026, 12, 4, 8)))


def test_a_failing_transaction_is_rolled_back(store: Store) -> None:
    """Two writes inside store.transaction(), then an exception: neither is kept."""
    with pytest.raises(RuntimeError), store.transaction():
        store.upsert_sessions([session("a")])
        assert store.add_test(record())
        raise RuntimeError("import check failed")
    assert store.sessions() == [] and store.tests() == []
    with store.transaction():  # the store is usable afterwards
        store.upsert_sessions([session("a")])
    assert len(store.sessions()) == 1


def test_tests_round_trip_exactly_and_redelivery_is_ignored(store: Store) -> None:
    """Microseconds, 0.1+0.2, a tiny negative offset, None values, a Vietnamese unit; the same
    test_id again (MQTT QoS1 redelivery) returns False and keeps the first."""
    first = record()
    assert store.add_test(first) is True
    assert store.add_test(record(passed=True)) is False
    back = store.test(first.test_id)
    assert back == first and back is not None
    assert back.criteria[1].value == 0.1 + 0.2
    assert back.finished.tzinfo == VIETNAM and back.finished.microsecond == 123457
    assert store.tests() == [first]


def test_tests_are_found_by_site_session_and_time(store: Store) -> None:
    """Three tests of two sites, one outside any session: each filter, oldest first."""
    a = record("s/test-1/a", finished=T0)
    b = record("s/test-1/b", site="dt-hong-ngu", finished=T0 + timedelta(minutes=5))
    c = record("noc-1", finished=T0 + timedelta(hours=1), session_id=None, trigger="noc",
               requested_by="Nguyễn Văn An", passed=True)
    for r in (c, b, a):
        store.add_test(r)
    assert store.tests() == [a, b, c]
    assert store.tests(site="dt-sa-dec") == [a, c]
    assert store.tests(session_id="tcd-2026-12-05") == [a, b]
    assert store.tests(since=T0 + timedelta(minutes=5)) == [b, c]
    assert store.tests(until=T0 + timedelta(minutes=5)) == [a]
    assert store.tests(site="dt-sa-dec", since=T0 + timedelta(seconds=1)) == [c]


def test_orders_match_a_result_to_who_asked(store: Store) -> None:
    """An order from the schedule and one from the NOC; the same test_id again is False;
    an unknown trigger is refused."""
    assert store.add_order("s/test-1/a", "dt-sa-dec", "tcd-2026-12-05", "test-1", "schedule",
                           "collector", T0)
    assert store.add_order("noc-1", "dt-hong-ngu", None, None, "noc", "Trần Thị Bích",
                           T0 + timedelta(hours=1))
    assert not store.add_order("noc-1", "dt-sa-dec", None, None, "noc", "x", T0)
    assert store.order("noc-1") == Order("noc-1", "dt-hong-ngu", None, None, "noc",
                                         "Trần Thị Bích", T0 + timedelta(hours=1))
    assert store.order("missing") is None
    assert [o.test_id for o in store.orders()] == ["s/test-1/a", "noc-1"]
    assert [o.test_id for o in store.orders(since=T0 + timedelta(minutes=1))] == ["noc-1"]
    assert [o.test_id for o in store.orders(session_id="tcd-2026-12-05")] == ["s/test-1/a"]
    assert [o.test_id for o in store.orders(site="dt-hong-ngu")] == ["noc-1"]
    with pytest.raises(ValueError, match="trigger"):
        store.add_order("x", "dt-sa-dec", None, None, "cron", "x", T0)


def test_orders_of_the_planner_are_stored_too(store: Store) -> None:
    """The readiness service passes the planner's order object and who asked; the stored
    order reads back with the same ``at`` the planner uses for its retry timing."""
    planned = PlannerOrder("dt-sa-dec", "tcd-2026-12-05", "test-2", "retry",
                           "tcd-2026-12-05/test-2/0a1b2c3d", T0)
    noc = PlannerOrder("dt-hong-ngu", "", "noc", "noc", "noc/0a1b2c3d", T0)
    assert store.add_order(planned, "collector") and not store.add_order(planned, "collector")
    assert store.add_order(noc, "Trần Thị Bích")
    back = store.order("tcd-2026-12-05/test-2/0a1b2c3d")
    assert back == Order("tcd-2026-12-05/test-2/0a1b2c3d", "dt-sa-dec", "tcd-2026-12-05",
                         "test-2", "retry", "collector", T0)
    assert back is not None and back.at == T0
    assert store.order("noc/0a1b2c3d") == Order("noc/0a1b2c3d", "dt-hong-ngu", None, "noc",
                                                "noc", "Trần Thị Bích", T0)


def test_confirmations_are_all_kept_in_time_order(store: Store) -> None:
    """Two sites confirm, one twice (both kept); the very same confirmation again is False."""
    late = Confirmation("tcd-2026-12-05", "dt-sa-dec", T0, "Lê Minh Tuấn")
    early = Confirmation("tcd-2026-12-05", "dt-hong-ngu", T0 - timedelta(days=1), "kỹ thuật")
    again = Confirmation("tcd-2026-12-05", "dt-sa-dec", T0 + timedelta(hours=1), "Lê Minh Tuấn")
    assert store.add_confirmation(late) and store.add_confirmation(early)
    assert store.add_confirmation(again)
    assert not store.add_confirmation(late)
    assert store.confirmations("tcd-2026-12-05") == [early, late, again]
    assert store.confirmations("other") == []


def test_everything_is_back_after_close_and_reopen(tmp_path: Path) -> None:
    """A restart of the collector: sessions, tests, orders, confirmations all come back."""
    path = tmp_path / "r.sqlite"
    conf = Confirmation("tcd-2026-12-05", "dt-sa-dec", T0, "x")
    with Store(path) as first:
        first.upsert_sessions([session()])
        first.add_test(record())
        first.add_order("o", "dt-sa-dec", "tcd-2026-12-05", "test-2", "retry", "collector", T0)
        first.add_confirmation(conf)
    with Store(path) as second:
        assert second.sessions() == [session()]
        assert second.tests() == [record()]
        assert second.order("o") is not None
        assert second.confirmations("tcd-2026-12-05") == [conf]


def test_two_threads_write_while_a_third_reads(store: Store) -> None:
    """The intake thread and the HTTP thread share one Store: 2 x 200 tests written
    concurrently (and each redelivered once), reads in between; all 400 stored once."""
    errors: list[BaseException] = []

    def write(prefix: str) -> None:
        try:
            for i in range(200):
                r = record(f"{prefix}-{i}", finished=T0 + timedelta(seconds=i))
                assert store.add_test(r)
                assert not store.add_test(r)
        except BaseException as err:  # reported below
            errors.append(err)

    def read(done: threading.Event) -> None:
        try:
            while not done.is_set():
                store.tests(site="dt-sa-dec")
                store.sessions()
        except BaseException as err:
            errors.append(err)

    done = threading.Event()
    writers = [threading.Thread(target=write, args=(p,)) for p in ("intake", "http")]
    reader = threading.Thread(target=read, args=(done,))
    reader.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    done.set()
    reader.join()
    assert errors == []
    assert len(store.tests()) == 400


def test_a_second_connection_sees_the_writes(tmp_path: Path) -> None:
    """The 'schedule import' command and the running collector open the same file."""
    path = tmp_path / "r.sqlite"
    with Store(path) as collector, Store(path) as command:
        command.upsert_sessions([session()])
        assert collector.session("tcd-2026-12-05") == session()
        collector.add_test(record())
        assert command.tests() == [record()]


WRITER = """
import sys
from datetime import datetime, timedelta
from collector.readiness.model import VIETNAM, TestRecord
from agent.wire import Criterion
from collector.readiness.store import Store

store = Store(sys.argv[1])
t0 = datetime(2026, 12, 4, 8, tzinfo=VIETNAM)
i = 0
while True:
    store.add_test(TestRecord(f"t-{i}", "dt-sa-dec", t0 + timedelta(seconds=i), i % 2 == 0,
                              (Criterion("link_loss", True, i / 7, 0.01, "ratio"),),
                              "schedule", "collector", "tcd"))
    print(i, flush=True)
    i += 1
"""


def test_a_writer_killed_with_sigkill_leaves_a_sound_file(tmp_path: Path) -> None:
    """A process adds tests as fast as it can; after it reported 300 commits it is killed
    with SIGKILL (most likely inside a transaction). The file opens, passes SQLite's
    integrity check, and every reported commit is there, intact."""
    path = tmp_path / "r.sqlite"
    Store(path).close()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    committed = -1
    deadline = time.monotonic() + 60  # a bound on waiting, not a timing assertion
    assert proc.stdout is not None
    while committed < 300 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        committed = int(line)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert committed >= 300, proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == -signal.SIGKILL
    with Store(path) as store:
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {r.test_id: r for r in store.tests()}
        for i in range(committed + 1):
            assert stored[f"t-{i}"].criteria[0].value == i / 7
            assert stored[f"t-{i}"].passed == (i % 2 == 0)
        store.add_test(record("after-the-crash"))
        assert store.test("after-the-crash") is not None
