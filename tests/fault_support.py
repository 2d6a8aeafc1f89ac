"""What the fault tests share: real agents started as an operator would, an in-process
collector whose intake is tallied by ``(site, epoch, seq)``, and the agent's own spool
read back as the truth of what it ever numbered.

The tally sits at the collector's accept point: every message that reaches the intake is
counted raw, and counted as accepted only when ``FleetState.apply`` took it as new. A
seq accepted twice is double counting; a raw count above one is a re-delivery, which is
fine as long as it was dropped.
"""

from __future__ import annotations

import collections
import mmap
import sqlite3
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agent import wire
from agent.broker import BrokerSettings
from agent.spool import Spool
from collector.ingest import Ingest
from collector.inventory import parse_inventory
from collector.state import FleetState
from deploy.localstack import Process
from tests.collector_client import write_yaml

PROVINCE = "dong-thap"
Key = tuple[str, int, int]  # (site, epoch, seq)


# Acknowledged rows are kept this long: the test broker saves every second
# (``deploy.localstack.Mosquitto``), and a SIGKILL on loopback drops connections at once.
KEEP_ACKED_SECONDS = 3.0


def agent_process(workdir: Path, site: str, port: int, spool: Path, interval: float,
                  **extra: Any) -> Process:
    """A real ``bridgewatch-agent run`` (not started) with a minimal configuration."""
    config = {"site": site, "province": PROVINCE, "interval_seconds": interval,
              "broker": {"host": "127.0.0.1", "port": port, "keepalive": 5,
                         "reconnect_max_seconds": 1},
              "spool": {"path": str(spool), "keep_acked_seconds": KEEP_ACKED_SECONDS},
              **extra}
    path = write_yaml(workdir / f"agent-{site}.yaml", config)
    return Process([sys.executable, "-m", "agent.main", "run", "--config", str(path)],
                   workdir / f"agent-{site}.log")


@dataclass
class Tally:
    """Raw arrivals and accepted messages, by (site, epoch, seq), in arrival order."""

    raw: collections.Counter[Key] = field(default_factory=collections.Counter)
    accepted: collections.Counter[Key] = field(default_factory=collections.Counter)
    order: list[Key] = field(default_factory=list)  # accepted, in the order they came
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, fleet: FleetState, topic: str, payload: bytes) -> None:
        """The intake's handler: the collector's own ``apply``, with the count beside it."""
        key = _key(payload)
        new = fleet.apply(topic, payload)
        if key is None:
            return
        with self.lock:
            self.raw[key] += 1
            if new:
                self.accepted[key] += 1
                self.order.append(key)

    def seqs(self, site: str) -> dict[int, list[int]]:
        """epoch -> accepted seqs of one site, in arrival order."""
        with self.lock:
            out: dict[int, list[int]] = collections.defaultdict(list)
            for s, epoch, seq in self.order:
                if s == site:
                    out[epoch].append(seq)
            return dict(out)

    def count(self, site: str) -> int:
        with self.lock:
            return sum(1 for s, _, _ in self.order if s == site)

    def duplicates_delivered(self) -> int:
        with self.lock:
            return sum(self.raw.values()) - sum(self.accepted.values())

    def double_counted(self) -> list[Key]:
        with self.lock:
            return [key for key, n in self.accepted.items() if n > 1]


def _key(payload: bytes) -> Key | None:
    """(site, epoch, seq) of a spooled message (telemetry or test result), else None."""
    try:
        obj = wire.loads(payload)
        return (obj["site"], int(obj["epoch"]), int(obj["seq"])) if "epoch" in obj else None
    except (wire.WireError, KeyError, TypeError, ValueError):
        return None


@dataclass
class Collector:
    fleet: FleetState
    tally: Tally
    port: int
    ingest: Ingest | None = None

    def start(self) -> None:
        """Connect the intake (again): same client id, so the same persistent session."""
        self.ingest = Ingest(self.fleet, BrokerSettings(port=self.port, keepalive=5,
                                                        reconnect_max_seconds=1))
        fleet, tally = self.fleet, self.tally
        self.ingest.intake.handler = lambda topic, payload: tally.take(fleet, topic, payload)
        self.ingest.start()

    def stop(self) -> None:
        if self.ingest is not None:
            self.ingest.stop()
            self.ingest = None

    @property
    def connected(self) -> bool:
        return self.ingest is not None and self.ingest.intake.connected

    def exposed(self, family: str) -> dict[str, float]:
        """site -> value of one of the collector's per-site families, from its exposition."""
        text = self.fleet.render().decode()
        return {sample.labels["site"]: sample.value
                for parsed in text_string_to_metric_families(text) if parsed.name == family
                for sample in parsed.samples if "site" in sample.labels}

    def lost(self) -> dict[str, float]:
        """site -> ``bridge_messages_lost_total`` as the collector exposes it."""
        return self.exposed("bridge_messages_lost")


def start_collector(sites: list[str], port: int) -> Collector:
    """The collector's real intake (persistent session) and state, in this process."""
    inventory = parse_inventory({"provinces": {PROVINCE: {}}, "sites": [
        {"id": site, "province": PROVINCE} for site in sites]})
    collector = Collector(FleetState(inventory, render_delay=0), Tally(), port)
    collector.start()
    return collector


@dataclass(frozen=True)
class SpoolFacts:
    """What a spool file says about itself, read without the agent's code."""

    check: str
    epoch: int
    last_seq: int  # the newest seq ever allocated in the epoch
    pending: tuple[int, ...]  # seqs still waiting for a PUBACK
    dropped_total: int
    kept: tuple[int, ...] = ()  # seqs acknowledged, kept until safe on the broker


def spool_facts(path: Path) -> SpoolFacts:
    """Read a spool with plain SQLite (runs WAL recovery if its writer was killed)."""
    db = sqlite3.connect(path, timeout=10)
    try:
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
        acked = "acked IS NOT NULL" if "acked" in columns else "0"  # before the migration
        rows = db.execute(f"SELECT seq, {acked} FROM messages ORDER BY seq").fetchall()
    finally:
        db.close()
    return SpoolFacts(check, meta["epoch"], meta["next_seq"] - 1,
                      tuple(seq for seq, kept in rows if not kept), meta["dropped_total"],
                      tuple(seq for seq, kept in rows if kept))


@dataclass
class StreamCheck:
    """One site's epoch as the collector accepted it, against the agent's spool."""

    problems: list[str]  # double counting, silent gaps, foreign seqs: always a failure
    broker_lost: list[int]  # gone from the spool, never delivered: lost on the way


def check_stream(tally: Tally, site: str, facts: SpoolFacts, lost_counted: float | None,
                 dropped: frozenset[int] = frozenset(), other_epochs: bool = False
                 ) -> StreamCheck:
    """The collector must have accepted exactly 1..last_seq minus what the agent dropped,
    each once. A missing seq still in the spool was not delivered yet (the drain was cut
    short); one gone from it was purged or dropped and lost after, and must at least be
    counted in ``bridge_messages_lost_total`` (``lost_counted``, the site's total).
    ``other_epochs``: the site may also have sent from another spool."""
    got = tally.seqs(site)
    problems = [] if other_epochs else [
        f"{site}: accepted epoch {e} the agent never used" for e in got if e != facts.epoch]
    seqs = got.get(facts.epoch, [])
    expected = set(range(1, facts.last_seq + 1)) - dropped
    missing = expected - set(seqs)
    spooled = set(facts.pending) | set(facts.kept)
    lost = sorted(missing - spooled)
    for what, items in (
            ("missing, still spooled", sorted(missing & spooled)),
            ("never allocated or dropped", sorted(set(seqs) - expected)),
            ("accepted twice", sorted(s for s, n in collections.Counter(seqs).items() if n > 1))):
        if items:
            problems.append(f"{site}: {len(items)} seq(s) {what}: {_ranges(items)}")
    if lost_counted != len(lost) + len(dropped):
        problems.append(f"{site}: bridge_messages_lost_total {lost_counted}, but "
                        f"{len(lost)} seq(s) lost and {len(dropped)} dropped by the agent")
    return StreamCheck(problems, lost)


def _ranges(seqs: list[int], limit: int = 12) -> str:
    """``[1, 2, 3, 7]`` -> ``1-3, 7``: a readable failure message."""
    out: list[str] = []
    for seq in seqs:
        if out and out[-1].split("-")[-1] == str(seq - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{seq}"
        else:
            out.append(str(seq))
    return ", ".join(out[:limit]) + (" ..." if len(out) > limit else "")


# -- a spool writer to kill -------------------------------------------------------------

MARKS_BYTES = 16  # two little-endian int64: seq being built, seq last committed


def big_reports(rows: int = 200) -> dict[str, wire.ProbeReport]:
    """A valid telemetry body of ~25 KB (many filesystems): long transactions to hit."""
    labels = [((f"/srv/volume-{i:03d}", "other"), float(i * 2**30)) for i in range(rows)]
    return {"disk": wire.ProbeReport(True, 0.001, 1.0, None, {
        "filesystem_size_bytes": labels, "filesystem_avail_bytes": labels})}


def read_marks(path: Path) -> tuple[int, int]:
    """(seq whose transaction was last entered, seq last committed) of a writer."""
    building, committed = struct.unpack("<qq", path.read_bytes()[:MARKS_BYTES])
    return building, committed


def write_forever(spool_path: str, marks_path: str, site: str) -> None:
    """Append to a spool as fast as it goes, with the agent's ``Spool.append``, until
    killed. The marks file (shared memory) says where each kill landed: a seq marked
    building but not committed was inside the transaction (between the payload build
    and the commit's return)."""
    spool = Spool(spool_path)
    reports = big_reports()
    topic = wire.topic(wire.DEFAULT_PREFIX, PROVINCE, site, wire.Kind.TELEMETRY)
    with open(marks_path, "r+b") as f:
        marks = mmap.mmap(f.fileno(), MARKS_BYTES)

    def build(seq: int, floor: int) -> bytes:
        marks[0:8] = struct.pack("<q", seq)
        return wire.encode(wire.Telemetry(PROVINCE, site, spool.epoch, seq, floor,
                                          time.time(), reports))

    while True:
        seq = spool.append(topic, build)
        marks[8:16] = struct.pack("<q", seq)


def writer_process(workdir: Path, spool: Path, marks: Path, site: str) -> Process:
    marks.write_bytes(bytes(MARKS_BYTES))
    return Process([sys.executable, "-m", "tests.fault_support", str(spool), str(marks), site],
                   workdir / "writer.log")


if __name__ == "__main__":
    write_forever(*sys.argv[1:4])
