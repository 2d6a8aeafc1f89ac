"""Agent faults against real processes: SIGKILL mid-spool-write, and a full disk.

Every test counts what the collector accepted by ``(site, epoch, seq)`` (the collector's
real intake and state in this process, ``tests.fault_support``) and compares it with the
agent's own spool, read back with plain SQLite after the fact.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.publisher import DEFAULT_WINDOW
from agent.spool import DEFAULT_MIN_FREE_BYTES, Spool
from deploy.localstack import Mosquitto, Process, wait_until
from tests.conftest import require_root
from tests.fault_support import (
    Collector,
    SpoolFacts,
    agent_process,
    check_stream,
    read_marks,
    spool_facts,
    start_collector,
    writer_process,
)

pytestmark = pytest.mark.real

KILLS = 20


def snapshot_facts(spool: Path, scratch: Path) -> SpoolFacts:
    """Read a killed writer's spool from a copy, so the next agent recovers the original
    itself (the copy's reader runs SQLite's crash recovery, not the agent's)."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{spool}{suffix}").exists():
            shutil.copy(f"{spool}{suffix}", scratch / f"copy{suffix}")
    return spool_facts(scratch / "copy")


def set_aside(spool: Path) -> list[Path]:
    """Files the spool moved aside as unreadable (there must be none)."""
    return list(spool.parent.glob(f"{spool.name}.corrupt-*"))


def drain_and_check(collector: Collector, site: str, spool: Path,
                    dropped: frozenset[int] = frozenset(), other_epochs: bool = False
                    ) -> SpoolFacts:
    """Wait for the collector to hold the spool's stream, then fail on any loss or double
    count. ``other_epochs``: the site also sent from another spool (in memory)."""
    facts = spool_facts(spool)
    expected = facts.last_seq - len(dropped)
    with contextlib.suppress(TimeoutError):  # the check below says what is missing
        wait_until(lambda: len(collector.tally.seqs(site).get(facts.epoch, [])) >= expected,
                   60, "the collector to accept the whole stream")
    check = check_stream(collector.tally, site, facts, collector.lost().get(site), dropped,
                         other_epochs)
    assert not check.problems and not check.broker_lost, "\n".join(check.problems)
    assert not collector.tally.double_counted()
    return facts


def test_agent_sigkilled_20_times_while_writing_loses_nothing(
        broker: Mosquitto, tmp_path: Path) -> None:
    """A real agent measures every 20 ms (each sample one SQLite transaction with fsync,
    each PUBACK another) and is SIGKILLed at a random moment 0.1-1 s after it opened its
    spool, 20 times. After each kill the spool, as the kill left it, must pass
    quick_check and keep its epoch; the agent restarts on it without moving it aside.
    At the end the collector has every seq of that epoch exactly once."""
    rng = random.Random(2020)
    site = "dt-fault-kill"
    spool = tmp_path / "spool.sqlite"
    collector = start_collector([site], broker.port)
    agent = agent_process(tmp_path, site, broker.port, spool, 0.02)
    epoch = None
    last = 0
    try:
        for run in range(KILLS + 1):
            agent.start()
            wait_until(lambda n=run: agent.log().count("spool epoch") > n, 60, "the agent to start")
            if run == KILLS:
                break
            time.sleep(rng.uniform(0.1, 1.0))
            agent.kill()
            facts = snapshot_facts(spool, tmp_path / "snapshot")
            assert facts.check == "ok"
            epoch = epoch or facts.epoch
            assert facts.epoch == epoch, "the killed agent's spool lost its epoch"
            assert facts.last_seq >= last, "a seq was allocated twice"
            last = facts.last_seq
        time.sleep(1)
        agent.stop()
        assert agent.proc and agent.proc.returncode == 0
        assert not set_aside(spool)
        assert "unreadable" not in agent.log()
        assert agent.log().count(f"spool epoch {epoch}") == KILLS + 1
        facts = drain_and_check(collector, site, spool)
        assert facts.epoch == epoch and not facts.pending
        print(f"\nagent SIGKILL x{KILLS}: {facts.last_seq} seqs numbered in one epoch, "
              f"{collector.tally.count(site)} accepted once, "
              f"{collector.tally.duplicates_delivered()} duplicate deliveries dropped, "
              f"lost counted {collector.lost().get(site):.0f}")
    finally:
        agent.kill()
        collector.stop()


def test_spool_writer_sigkilled_20_times_inside_its_transaction_loses_nothing(
        broker: Mosquitto, tmp_path: Path) -> None:
    """A process appends 17 KB telemetry messages with the agent's ``Spool.append`` as
    fast as it can (each a transaction with overflow pages and fsync), and is SIGKILLed
    20 times at random; shared memory tells where each kill landed. After each kill:
    quick_check ok, same epoch, every append that had returned is there, the killed one
    is there whole or not at all, and the seqs are 1..last with no hole. Then a real agent
    opens the spool and the collector accepts every seq exactly once."""
    rng = random.Random(1717)
    site = "dt-fault-writer"
    spool = tmp_path / "spool.sqlite"
    marks = tmp_path / "marks"
    writer = writer_process(tmp_path, spool, marks, site)
    epoch = None
    last = inside = 0
    try:
        for _ in range(KILLS):
            writer.start()
            wait_until(lambda n=last: read_marks(marks)[1] > n, 60, "the writer to commit")
            time.sleep(rng.uniform(0.01, 0.3))
            writer.kill()
            building, committed = read_marks(marks)
            facts = spool_facts(spool)  # the next writer opens what this recovery leaves
            assert facts.check == "ok"
            epoch = epoch or facts.epoch
            assert facts.epoch == epoch
            assert facts.last_seq >= committed, "an append that returned is gone"
            if building > committed:
                inside += 1
                assert facts.last_seq in (building - 1, building), "half a transaction"
            assert facts.pending == tuple(range(1, facts.last_seq + 1)), "a hole in the spool"
            last = facts.last_seq
        assert not set_aside(spool)
        assert inside, "no kill landed inside a transaction: the test proved nothing"
        collector = start_collector([site], broker.port)
        agent = agent_process(tmp_path, site, broker.port, spool, 0.5)
        try:
            agent.start()
            wait_until(lambda: collector.tally.count(site) >= last, 60, "the backlog to drain")
            agent.stop()
            facts = drain_and_check(collector, site, spool)
        finally:
            agent.kill()
            collector.stop()
        assert facts.epoch == epoch
        print(f"\nspool writer SIGKILL x{KILLS}: {inside} inside the transaction, {last} "
              f"messages of 17 KB written, {facts.last_seq} numbered with the agent's, "
              f"{collector.tally.count(site)} accepted once")
    finally:
        writer.kill()


# -- a full disk ----------------------------------------------------------------------

DISK_MIB = 4


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own for the spool (root only); unmounted afterwards."""
    require_root()
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Another program takes every free byte of the disk."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(bytes(64 * 1024))
    with open(filler, "ab", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(bytes(512))
    return filler


def reporting(tmp_path: Path, broker: Mosquitto, site: str, spool: Path, interval: float,
              first: int) -> tuple[Collector, Process]:
    """The collector and a started agent, once the collector has its first reports."""
    collector = start_collector([site], broker.port)
    agent = agent_process(tmp_path, site, broker.port, spool, interval)
    agent.start()
    wait_until(lambda: collector.tally.count(site) >= first, 60, "the agent's first reports")
    return collector, agent


def said(agent: Process) -> str:
    """The agent's log as UTF-8 (its Vietnamese lines whatever this process's locale)."""
    return agent.log_path.read_bytes().decode("utf-8", "replace")


def test_spool_on_a_disk_another_program_filled_keeps_working(small_disk: Path) -> None:
    """The agent's ``Spool`` on a 4 MiB disk: it stores up to its reserve, then another
    program takes every byte left. Appends (the newest kept, the oldest dropped and
    counted), a batch of 300 acknowledgements and a reopen must all still work. Before
    the fix every one of them failed with "database or disk is full"."""
    path = small_disk / "spool.sqlite"
    spool = Spool(path)
    for _ in range(1500):
        spool.append("t", lambda seq, floor: os.urandom(2300))
    assert spool.disk_full
    filler = fill(small_disk)
    assert shutil.disk_usage(small_disk).free == 0
    before = spool.stats()
    for _ in range(200):
        spool.append("t", lambda seq, floor: os.urandom(2300))
    messages, _, dropped = spool.stats()
    assert spool.last_seq() == 1700 and messages + dropped == 1700
    assert dropped >= before[2] + 200  # the disk did not grow: each new one cost an old one
    oldest = [seq for seq, _, _ in spool.pending(0, 300)]
    spool.ack(*oldest)  # the broker came back
    assert spool.stats()[0] == messages - 300
    spool.append("t", lambda seq, floor: os.urandom(2300))
    epoch, last = spool.epoch, spool.last_seq()
    spool.close()
    again = Spool(path)
    assert (again.epoch, again.last_seq(), again.stats()[0]) == (epoch, last, messages - 299)
    again.close()
    filler.unlink()


def told_dropped(collector: Collector, site: str) -> float | None:
    """agent_spool_dropped_total in the site's latest telemetry, as the collector holds it."""
    view = collector.fleet.sites[site].probes.get("agent")
    rows = view.report.metrics.get("agent_spool_dropped_total") if view else None
    return rows[0][1] if rows else None


def test_full_disk_agent_keeps_measuring_drops_oldest_and_counts_them(
        broker: Mosquitto, small_disk: Path, tmp_path: Path) -> None:
    """The agent's spool is on a 4 MiB disk. The agent reports normally, then the broker
    goes away and the agent measures every 20 ms into its spool until the disk is the
    bound; then another program takes the last free byte too. Throughout, the agent
    must stay alive, keep numbering samples, say so in its log (Vietnamese and English),
    drop the oldest and count them (``agent_spool_dropped_total`` in its own telemetry).
    When the broker is back the rest drains in order, and the collector's
    ``bridge_messages_lost_total`` equals the agent's drop count: nothing silently
    missing, nothing twice. Before the fix the log filled the disk: every append and
    every acknowledgement then failed with "database or disk is full", and each sample
    was lost uncounted."""
    site = "dt-fault-disk"
    spool = small_disk / "spool.sqlite"
    collector, agent = reporting(tmp_path, broker, site, spool, 0.02, first=20)
    try:
        broker.stop()
        wait_until(lambda: "Spool disk almost full" in said(agent)
                   or "sample not stored" in said(agent), 120, "the disk to fill")
        assert "sample not stored" not in said(agent), "a sample was lost uncounted"
        at_bound = spool_facts(spool)
        wait_until(lambda: spool_facts(spool).dropped_total > at_bound.dropped_total + 50, 60,
                   "more samples, dropping the oldest")
        filler = fill(small_disk)
        filled = spool_facts(spool)
        wait_until(lambda: spool_facts(spool).last_seq > filled.last_seq + 50, 60,
                   "samples stored on the filled disk")
        assert agent.running
        assert "Ổ đĩa chứa hàng đợi" in said(agent)
        assert "sample not stored" not in said(agent), "a sample was lost uncounted"
        filler.unlink()  # the technician frees space
        outage_last = spool_facts(spool).last_seq
        broker.start()
        wait_until(lambda: all(s > outage_last for s in spool_facts(spool).pending), 120,
                   "the backlog to drain")
        # The agent's own telemetry says how many it dropped.
        wait_until(lambda: told_dropped(collector, site) == spool_facts(spool).dropped_total,
                   30, "agent_spool_dropped_total in the agent's telemetry")
        agent.stop()
        assert agent.proc and agent.proc.returncode == 0
        final = spool_facts(spool)
        with contextlib.suppress(TimeoutError):  # drain_and_check says what is missing
            wait_until(lambda: len(collector.tally.seqs(site).get(final.epoch, []))
                       >= final.last_seq - final.dropped_total, 30, "the last messages")
        accepted = set(collector.tally.seqs(site).get(final.epoch, []))
        dropped = frozenset(set(range(1, final.last_seq + 1)) - accepted)
        drain_and_check(collector, site, spool, dropped)  # lost counted == missing
        assert dropped, "the disk never made the agent drop anything"
        # The oldest went: one run of seqs, up to the spool's oldest survivor.
        assert max(dropped) - min(dropped) + 1 == len(dropped)
        # The agent counts a few more than the collector missed: the messages in flight
        # when the broker went away reached the collector, but their PUBACK never came
        # back, so the agent could not know and counted them when it dropped them.
        in_flight = final.dropped_total - len(dropped)
        assert 0 <= in_flight <= DEFAULT_WINDOW
        assert all(seq in accepted for seq in range(min(dropped) - in_flight, min(dropped)))
        backlog = [s for s in collector.tally.seqs(site)[final.epoch] if s <= outage_last]
        assert backlog == sorted(backlog), "the backlog did not drain in order"
        print(f"\nfull disk ({DISK_MIB} MiB, reserve {DEFAULT_MIN_FREE_BYTES >> 10} KiB): "
              f"{final.last_seq} samples numbered, {final.dropped_total} oldest dropped and "
              f"counted by the agent ({in_flight} of them had reached the collector), "
              f"collector lost {collector.lost().get(site):.0f}, "
              f"{len(accepted)} accepted once, {at_bound.last_seq} numbered when the disk "
              f"became the bound, {shutil.disk_usage(small_disk).free >> 10} KiB free at the end")
    finally:
        agent.kill()
        collector.stop()


def test_agent_restarted_on_a_full_disk_keeps_its_spool(
        broker: Mosquitto, small_disk: Path, tmp_path: Path) -> None:
    """An agent that starts while its disk is full cannot open its spool (SQLite needs
    room for its shared-memory file): it must not move the spool aside as "unreadable"
    (that abandons its unsent messages under a new epoch, which the collector never
    counts lost). Measured before the fix: moved aside, new epoch, messages gone. Now it
    says so, measures on in memory, and once there is room again the next start sends
    the kept messages: every seq of the original epoch reaches the collector once."""
    site = "dt-fault-full-start"
    spool = small_disk / "spool.sqlite"
    collector, agent = reporting(tmp_path, broker, site, spool, 0.1, first=5)
    try:
        broker.stop()
        time.sleep(2)  # samples wait in the spool
        agent.stop()
        kept = spool_facts(spool)
        assert kept.pending
        filler = fill(small_disk)
        broker.start()
        agent.start()
        wait_until(lambda: "cannot be opened" in agent.log(), 30, "the agent to say so")
        assert "Không mở được hàng đợi" in said(agent)
        wait_until(lambda: any(e != kept.epoch for e in collector.tally.seqs(site)), 30,
                   "samples measured on while the disk is full")
        assert agent.running
        assert not set_aside(spool)
        agent.stop()
        filler.unlink()
        agent.start()
        wait_until(lambda: collector.tally.count(site) and not spool_facts(spool).pending, 60,
                   "the kept messages to go")
        agent.stop()
        assert not set_aside(spool)
        facts = drain_and_check(collector, site, spool, other_epochs=True)
        assert facts.epoch == kept.epoch
        print(f"\nagent started on a full disk: spool kept (epoch {kept.epoch}), "
              f"{len(kept.pending)} waiting messages sent after the space came back, "
              f"{facts.last_seq} seqs of that epoch accepted once")
    finally:
        agent.kill()
        collector.stop()
        with contextlib.suppress(OSError):
            os.remove(small_disk / "filler")
