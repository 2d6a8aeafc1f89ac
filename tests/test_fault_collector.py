"""The collector restarted (SIGTERM and SIGKILL) while agents publish and a test window is
open: its state comes back, and no false "not ready" appears in the gap.

Real Mosquitto (persistence on), the reflector, three real agents (1 s interval) and the
collector as an operator runs it (``python -m collector.main`` with a collector.yaml, its
accepted-message trail at DEBUG). A session starts in 2 h 30 min; its T-2h test window is
open, so the collector orders a test from every bridge and all three pass. Then the
collector is stopped four times, twice with SIGTERM and twice with SIGKILL, left down for
two seconds each time (the agents keep publishing; the broker keeps it for the
collector's persistent session) and started again, while a poller reads ``/metrics`` and
``GET /api/sessions/<id>`` every 50 ms throughout, gaps included, and the test itself
scrapes the instant each new run's port opens.

What would fail:

- every answer must show the very verdicts drawn before the first restart (test-2
  passed, start pending) for every bridge, with every ``bridge_readiness`` state series
  present: a verdict that flips, or a scrape without them, is a false "not ready" or a
  glitch an alert would see. (A scrape that lands between the HTTP port opening and the
  readiness service's first tick has none: ``collector/main.py`` must draw the verdicts
  once before it serves; until then this fails now and then.)
- no answer matches ``BridgeWatchAgentDown`` (connected 0) or ``BridgeWatchAgentStale``
  (up 0 while connected 1): the retained state brings connected and up back together;
- ``bridge_messages_lost_total`` always 0 (before the fix in ``collector.dedup``, each
  restart made every site report its whole history as lost, and
  ``BridgeWatchSpoolDropping`` would have fired for the whole province);
- after each restart, every bridge is up again from the retained state, the session comes
  back from SQLite, and the stored test history is the same test ids (none lost, none
  twice);
- counting ``(site, epoch, seq)`` over the collector's runs: every seq of every agent's
  epoch accepted (nothing that arrived while it was down is lost), none twice within a
  run, and a seq accepted by two runs only if it was among the last messages the stopped
  run took in (a QoS 1 delivery it handled but had not acknowledged: the broker sends it
  again; see ``collector.dedup``).
"""

from __future__ import annotations

import collections
import itertools
import signal
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.drain_bench import Spooled, spooled
from collector.dedup import SeqTracker, Verdict
from collector.readiness.model import VIETNAM
from collector.reflector import Reflector, ReflectorSettings
from collector.state import TrailEntry, read_trail
from deploy.localstack import Mosquitto, Process, free_port, port_open, wait_until
from tests.collector_client import call_api, write_yaml
from tests.conftest import require_binary

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parent.parent
HOST, MEMBERS = "dt-trung-tam", ("dt-sa-dec", "dt-hong-ngu")
SITES = (HOST, *MEMBERS)
SESSION = "tcd-restart"
TOKEN = "noc-restart " + "r" * 32
KEY = b"restart-test-reflector-key-012345"
CHECKPOINTS = [  # the regulations' T-2h test (open now) and the start check (not yet)
    {"name": "test-2", "kind": "test", "offset_seconds": -7200, "window_seconds": 7200},
    {"name": "start", "kind": "start", "offset_seconds": 0, "window_seconds": 7200},
]
RESTARTS = (signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL)
DOWN_SECONDS, UP_SECONDS = 2.0, 3.0
POLL_SECONDS = 0.05

Verdicts = dict[tuple[str, str], str]  # (site, checkpoint) -> state


def readiness(families: dict[str, Any]) -> Verdicts:
    """(site, checkpoint) -> the one state at 1 in ``bridge_readiness``, from a scrape."""
    states: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for sample in families.get("bridge_readiness", []):
        if sample.labels["session"] == SESSION and sample.value == 1:
            states[(sample.labels["site"], sample.labels["checkpoint"])].append(
                sample.labels["state"])
    return {key: ",".join(sorted(found)) for key, found in states.items()}


def scrape(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    out: dict[str, Any] = collections.defaultdict(list)  # by sample name
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name].append(sample)
    return out


def per_site(families: dict[str, Any], name: str) -> dict[str, float]:
    return {s.labels["site"]: s.value for s in families.get(name, [])
            if s.labels.get("site") in SITES}


def api_verdicts(port: int) -> Verdicts | None:
    status, body = call_api(port, TOKEN.split()[1], "GET", f"/api/sessions/{SESSION}")
    if status != 200:
        return None
    return {(v["site"], v["checkpoint"]): v["state"] for v in body["verdicts"]}


@dataclass
class Poller:
    """Reads /metrics and the session's verdicts every 50 ms and keeps every answer."""

    port: int
    scrapes: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    answers: list[tuple[float, Verdicts | None]] = field(default_factory=list)
    refused: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.wait(POLL_SECONDS):
            try:
                self.scrapes.append((time.time(), scrape(self.port)))
                self.answers.append((time.time(), api_verdicts(self.port)))
            except OSError:  # the collector is down, or its HTTP port not yet open
                self.refused += 1


def agent_config(work: Path, site: str, broker_port: int, reflector: Reflector) -> Path:
    (work / "reflector.key").write_bytes(KEY)
    return write_yaml(work / f"{site}.yaml", {
        "site": site, "province": "dong-thap", "interval_seconds": 1,
        "broker": {"host": "127.0.0.1", "port": broker_port, "keepalive": 5,
                   "reconnect_max_seconds": 1},
        "spool": {"path": str(work / f"{site}.sqlite")},
        "link": {"reflector": {"host": "127.0.0.1", "udp_port": reflector.udp_port,
                               "tcp_port": reflector.tcp_port,
                               "key_file": str(work / "reflector.key")},
                 "required_bandwidth_mbps": 1},
        "readiness": {"link_seconds": 1, "bandwidth_seconds": 1},
    })


def collector_run(work: Path, run: int, broker_port: int, http_port: int) -> Process:
    config = write_yaml(work / "collector.yaml", {
        "inventory": str(ROOT / "deploy" / "demo-inventory.yaml"),
        "listen": f"127.0.0.1:{http_port}",
        "broker": {"host": "127.0.0.1", "port": broker_port, "keepalive": 5,
                   "reconnect_max_seconds": 1},
        "readiness": {"database": "readiness.sqlite", "api_tokens_file": "tokens",
                      "tick_seconds": 1, "retry_after_seconds": 30, "max_attempts": 5,
                      "checkpoints": CHECKPOINTS}})
    process = Process([sys.executable, "-m", "collector.main", "--config", str(config),
                       "--log-level", "DEBUG"], work / f"collector-{run}.log")
    process.start()
    return process


def all_up(port: int) -> bool:
    families = scrape(port)
    return all(v == 1 for v in (per_site(families, "bridge_up").get(s) for s in SITES))


def stored_tests(port: int) -> dict[str, list[str]]:
    out = {}
    for site in SITES:
        status, body = call_api(port, TOKEN.split()[1], "GET", f"/api/tests?site={site}")
        assert status == 200, body
        out[site] = sorted(t["test_id"] for t in body)
    return out


def test_collector_restarts_bring_state_back_without_a_false_not_ready(tmp_path: Path) -> None:
    require_binary("mosquitto")
    (tmp_path / "tokens").write_text(TOKEN + "\n")
    http_port = free_port()
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    runs: list[Process] = []
    agents: list[Process] = []
    poller = Poller(http_port)
    polling = threading.Thread(target=poller.run, daemon=True)
    figures: list[str] = []
    with Reflector(ReflectorSettings(key=KEY, host="127.0.0.1", udp_port=0,
                                     tcp_port=0)) as reflector:
        try:
            runs.append(collector_run(tmp_path, 0, broker.port, http_port))
            wait_until(lambda: port_open(http_port) or not runs[-1].running, 30,
                       "the collector's HTTP port")
            for site in SITES:
                agents.append(Process(
                    [sys.executable, "-m", "agent.main", "run", "--config",
                     str(agent_config(tmp_path, site, broker.port, reflector))],
                    tmp_path / f"agent-{site}.log"))
                agents[-1].start()
            start = (datetime.now(VIETNAM) + timedelta(hours=2, minutes=30)).replace(
                microsecond=0)
            status, body = call_api(http_port, TOKEN.split()[1], "POST", "/api/sessions",
                                    yaml.safe_dump({"sessions": [{
                                        "id": SESSION, "title": "Kiểm thử khởi động lại",
                                        "start": start.isoformat(), "duration": "30m",
                                        "host": HOST, "members": list(MEMBERS)}]},
                                        allow_unicode=True).encode(), "application/yaml")
            assert status == 200, body
            before = wait_until(lambda: _all_passed(http_port), 120,
                                "every bridge to pass its T-2h test", interval=0.5)
            history = stored_tests(http_port)
            polling.start()
            time.sleep(UP_SECONDS)
            for run, sig in enumerate(RESTARTS, start=1):
                runs[-1].stop(sig)
                time.sleep(DOWN_SECONDS)
                started = time.time()
                runs.append(collector_run(tmp_path, run, broker.port, http_port))
                # The worst moment for a scrape: the instant the port opens.
                wait_until(lambda: port_open(http_port), 30, "the HTTP port", interval=0.001)
                poller.scrapes.append((time.time(), scrape(http_port)))
                wait_until(lambda: all_up(http_port), 30, "every bridge up after the restart")
                figures.append(f"{sig.name}: every bridge up {time.time() - started:.2f} s "
                               "after the start")
                assert api_verdicts(http_port) == before
                after = stored_tests(http_port)
                assert all(set(history[s]) <= set(after[s]) for s in SITES), (history, after)
                history = after
                time.sleep(UP_SECONDS)
            poller.stop.set()
            for agent in agents:
                agent.stop()  # SIGTERM: each drains its spool before it exits
            spools = {site: spooled(tmp_path / f"{site}.sqlite") for site in SITES}
            wait_until(lambda: all(_accepted(runs[-1], site, spools[site].epoch,
                                             spools[site].last_seq) for site in SITES),
                       30, "the agents' last samples")
            time.sleep(1.5)  # the last counters rendered (render delay 1 s)
            final = scrape(http_port)
        finally:
            poller.stop.set()
            for part in (*agents, *reversed(runs)):
                part.stop()
            broker.stop()
    trails = [read_trail(run.log()) for run in runs]
    accepted = [{(e.site, e.epoch, e.seq) for e in t if e.verdict == "accepted"} for t in trails]
    print("\ncollector restarts: " + "; ".join(figures)
          + f"; {len(poller.scrapes)} scrapes, {poller.refused} refused while down; "
          f"{sum(len(a) for a in accepted)} messages accepted over {len(runs)} runs, "
          f"{sum(len(a & b) for a, b in itertools.pairwise(accepted))} by two runs")

    # No answer in the gaps said anything but the verdicts of before.
    assert poller.scrapes and poller.answers
    glitches = [(t, readiness(f)) for t, f in poller.scrapes if readiness(f) != before]
    assert glitches == [], glitches[:3]
    assert [(t, v) for t, v in poller.answers if v != before] == []
    for t, families in poller.scrapes:
        connected = per_site(families, "bridge_agent_connected")
        assert 0 not in connected.values(), t  # BridgeWatchAgentDown's expression
        stale = [s for s, up in per_site(families, "bridge_up").items()
                 if up == 0 and connected.get(s) == 1]
        assert stale == [], t  # BridgeWatchAgentStale's expression
        assert set(per_site(families, "bridge_messages_lost_total").values()) <= {0.0}, t
    assert set(per_site(final, "bridge_messages_lost_total").values()) == {0.0}

    # The test history: every test result the agents sent is stored, once.
    tests_sent = {(e.site, e.epoch, e.seq) for trail in trails for e in trail
                  if e.kind == "test" and e.verdict == "accepted"}
    assert sum(len(history[s]) for s in SITES) == len(tests_sent) >= len(SITES)
    assert all(len(set(ids)) == len(ids) for ids in history.values())

    problems = _count_problems(trails, spools)
    assert problems == [], problems


def _all_passed(port: int) -> Verdicts | None:
    """The verdicts once every bridge passed, in the API and in /metrics alike (the
    scrape shows the snapshot of the last tick, up to ``tick_seconds`` behind)."""
    verdicts = api_verdicts(port)
    if (verdicts and all(verdicts.get((s, "test-2")) == "passed" for s in SITES)
            and readiness(scrape(port)) == verdicts):
        return verdicts
    return None


def _accepted(run: Process, site: str, epoch: int, seq: int) -> bool:
    return any(e.site == site and e.epoch == epoch and e.seq == seq
               for e in read_trail(run.log()))


def _count_problems(trails: list[list[TrailEntry]], spools: dict[str, Spooled]) -> list[str]:
    """Zero loss over the runs, zero double counting within one, and across two runs only
    the stopped run's unacknowledged tail."""
    problems = []
    accepted = [[(e.site, e.epoch, e.seq) for e in trail if e.verdict == "accepted"]
                for trail in trails]
    union = {key for keys in accepted for key in keys}
    for site, spool in spools.items():
        missing = {(site, spool.epoch, s) for s in range(1, spool.last_seq + 1)} - union
        if missing or spool.rows:
            problems.append(f"{site}: {len(missing)} seqs never accepted, {spool.rows} spooled")
    for run, keys in enumerate(accepted):
        twice = [k for k, n in collections.Counter(keys).items() if n > 1]
        if twice:
            problems.append(f"run {run} accepted {twice[:5]} twice")
    for run in range(len(accepted) - 1):
        both = set(accepted[run]) & set(accepted[run + 1])
        tail = set(accepted[run][len(accepted[run]) - len(both):]) if both else set()
        if both != tail:
            problems.append(f"runs {run} and {run + 1} both counted {sorted(both)[:5]}, "
                            f"not only the last messages run {run} took in")
    return problems


def test_a_stream_met_in_the_middle_counts_only_the_gaps_it_can_judge() -> None:
    """In-process: a restarted collector first hears seq 500 (its floor 480: 480-499 were
    in flight, or went to the previous run). Those are not losses; a gap after 500 is.
    Before the fix the first message alone counted 479 lost."""
    tracker = SeqTracker()
    assert tracker.accept(1, 500, 480) is Verdict.NEW
    assert tracker.lost == 0
    assert tracker.accept(1, 490, 480) is Verdict.NEW  # one still in flight: new, counted once
    assert tracker.accept(1, 510, 510) is Verdict.NEW  # the broker has had all below 510
    assert (tracker.received, tracker.lost) == (3, 9)  # 501-509 were sent after 500: lost
    assert tracker.accept(1, 495, 480) is Verdict.DUPLICATE
