"""The readiness service inside the collector: store results, order tests, draw verdicts.

Three things feed it: test results from the intake (``on_test``, via ``FleetState``), a
timer (``tick``: plan and send the orders the windows call for, redraw the verdicts),
and the HTTP API (import a schedule, confirm a bridge, order a test for the NOC). The
verdicts are drawn at each tick into one snapshot, so a scrape of ``/metrics`` only
reads it and every family of one scrape agrees with the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from agent import wire
from agent.wire import Reason
from collector.commands import CommandSender
from collector.inventory import Inventory
from collector.report import ReportData, select_tests
from collector.state import FleetState

from . import engine, planner
from .config import ReadinessConfig
from .metrics import ReadinessSnapshot
from .model import TRIGGERS, VIETNAM, Confirmation, Session, TestRecord, Verdict
from .store import Store

log = logging.getLogger("bridgewatch.collector.readiness")

RUN_TEST = "run-test"  # the command an agent answers with a test result
# Sessions stay in view this long after their end (the report, the last verdicts).
GRACE = timedelta(days=1)
# Sessions further ahead than this are stored but not yet judged or exposed: a year's
# schedule would otherwise put every future session's series in every scrape.
HORIZON = timedelta(days=8)


def session_of(test_id: str) -> str | None:
    """The session a test id names: ``<session>/<checkpoint|local|noc>/<nonce>``."""
    parts = test_id.split("/")
    return parts[0] if len(parts) == 3 and wire.is_slug(parts[0]) else None


class ReadinessService:
    def __init__(self, store: Store, config: ReadinessConfig, inventory: Inventory,
                 fleet: FleetState, sender: CommandSender | None,
                 clock: Callable[[], float] = time.time,
                 known: Inventory | None = None) -> None:
        self.store = store
        self.config = config
        self.inventory = inventory  # the bridges this collector (shard) owns
        # Every bridge of the province: a schedule names bridges of every shard.
        self.known = known or inventory
        self.fleet = fleet
        self.sender = sender
        self.clock = clock
        self._lock = threading.Lock()  # one tick or API change at a time
        self._snapshot = ReadinessSnapshot(self.now(), (), config.checkpoints, (),
                                           inventory.sites)
        self._stopping = threading.Event()
        # How long before its start a session's first test window opens.
        self._lead = min(c.offset - c.window for c in config.checkpoints)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), VIETNAM)

    # -- results from the intake ------------------------------------------------------

    def on_test(self, message: wire.TestResult) -> None:
        """Store one new test result; refuse (and count) what names a wrong session."""
        topic = f"{message.province}/{message.site}/test {message.test_id}"
        if message.trigger not in TRIGGERS:
            self.fleet.reject(Reason.UNKNOWN_TRIGGER, topic, f"trigger {message.trigger!r}")
            return
        session_id = session_of(message.test_id)
        if session_id is not None:
            session = self.store.session(session_id)
            if session is None:
                self.fleet.reject(Reason.UNKNOWN_SESSION, topic, f"no session {session_id}")
                return
            if message.site not in session.bridges:
                self.fleet.reject(Reason.NOT_IN_SESSION, topic,
                                  f"{message.site} is not a bridge of {session_id}")
                return
        order = self.store.order(message.test_id)
        requested_by = order.requested_by if order is not None else (
            "technician" if message.trigger == "technician" else "collector")
        record = TestRecord(message.test_id, message.site,
                            datetime.fromtimestamp(message.ts, VIETNAM), message.passed,
                            message.criteria, message.trigger, requested_by, session_id)
        if self.store.add_test(record):
            log.info("test %s of %s: %s", record.test_id, record.site,
                     "passed" if record.passed else "failed")

    # -- the timer --------------------------------------------------------------------

    def run(self) -> None:
        """Tick until ``stop``; a failing tick is logged and the next one tried."""
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("readiness tick failed")
            self._stopping.wait(self.config.tick_seconds)

    def stop(self) -> None:
        self._stopping.set()

    def tick(self) -> None:
        """Send the orders the open windows call for, then redraw the verdicts."""
        with self._lock:
            now = self.now()
            sessions = self._sessions(now)
            index = engine.TestIndex(self._tests(sessions, now), now)
            if self.sender is not None:
                online = {sid for sid, state in self.fleet.sites.items() if state.up}
                orders = planner.plan(sessions, self.config.checkpoints, index,
                                      self.store.orders(since=now - timedelta(days=2)),
                                      online, now, self.config.retry_after,
                                      self.config.max_attempts)
                for order in orders:
                    self._send(order, sessions, "collector")
            # A shard judges only its own bridges: the others' results never reach it, and
            # their verdicts come from the shard that owns them.
            owned = self.inventory.sites
            verdicts = [v for s in sessions for v in engine.verdicts(
                s, self.config.checkpoints, index, self.store.confirmations(s.id), now)
                if v.site in owned]
            self._snapshot = ReadinessSnapshot(now, sessions, self.config.checkpoints,
                                               verdicts, self.inventory.sites,
                                               index.last_per_site())

    def snapshot(self) -> ReadinessSnapshot:
        return self._snapshot

    def _sessions(self, now: datetime) -> list[Session]:
        """Sessions not over for long, and not so far ahead that no checkpoint is near."""
        return self.store.sessions(since=now - GRACE, until=now + HORIZON)

    def _tests(self, sessions: list[Session], now: datetime) -> list[TestRecord]:
        if not sessions:
            return []
        earliest = min(s.start + self._lead for s in sessions)
        return self.store.tests(since=min(earliest, now - GRACE))

    def _send(self, order: planner.Order, sessions: list[Session], requested_by: str) -> None:
        site = self.inventory.sites.get(order.site)
        if site is None or self.sender is None:
            return
        session = next((s for s in sessions if s.id == order.session_id), None)
        args: dict[str, object] = {"test_id": order.test_id, "trigger": order.trigger}
        if session is not None:
            args["session_seconds"] = session.duration.total_seconds()
        self.store.add_order(order, requested_by)
        self.sender.send(site, RUN_TEST, args)

    # -- the API ----------------------------------------------------------------------

    def order_test(self, site_id: str, session_id: str | None, requested_by: str) -> str:
        """A test the NOC asks for now; returns its test id. Raises ValueError if it cannot."""
        if site_id not in self.inventory.sites:
            raise ValueError(f"unknown bridge {site_id!r}")
        if self.sender is None:
            raise ValueError("this collector does not send commands")
        with self._lock:
            now = self.now()
            sessions = self._sessions(now)
            if session_id is not None:
                session = self.store.session(session_id)
                if session is None:
                    raise ValueError(f"unknown session {session_id!r}")
                if site_id not in session.bridges:
                    raise ValueError(f"{site_id} is not a bridge of {session_id}")
            nonce = planner.new_nonce()
            test_id = f"{session_id}/noc/{nonce}" if session_id else f"noc/{nonce}"
            order = planner.Order(site_id, session_id or "", "noc", "noc", test_id, now)
            self._send(order, sessions, requested_by)
        return test_id

    def _session_tests(self, session: Session) -> list[TestRecord]:
        """Every stored test from the session's first window to its end."""
        return self.store.tests(since=session.start + self._lead, until=session.end)

    def verdicts(self, session: Session,
                 tests: list[TestRecord] | None = None) -> list[Verdict]:
        """Where every bridge of one session stands right now (any session, even far off)."""
        return engine.verdicts(session, self.config.checkpoints,
                               self._session_tests(session) if tests is None else tests,
                               self.store.confirmations(session.id), self.now())

    def report(self, session_id: str) -> ReportData | None:
        """Everything the biên bản of one session shows, or None for an unknown session."""
        session = self.store.session(session_id)
        if session is None:
            return None
        checkpoints = self.config.checkpoints
        tests = self._session_tests(session)
        return ReportData(session, checkpoints, self.verdicts(session, tests),
                          select_tests(session, checkpoints, tests),
                          self.store.confirmations(session_id), self.known.sites,
                          self.now(), self.known.provinces)

    def confirm(self, session_id: str, site_id: str, by: str) -> Confirmation:
        session = self.store.session(session_id)
        if session is None:
            raise ValueError(f"unknown session {session_id!r}")
        if site_id not in session.bridges:
            raise ValueError(f"{site_id} is not a bridge of {session_id}")
        confirmation = Confirmation(session_id, site_id, self.now(), by)
        self.store.add_confirmation(confirmation)
        return confirmation
