"""Command -> test -> result: the collector's ``run-test`` order, and recording any result.

The ``run-test`` command (``wire.Command``, kind ``cmd``) carries::

    {"test_id": "<= 64 printable chars", "trigger": "schedule" | "retry" | "noc",
     "session_seconds": 60..86400}          # optional: the session's length

The running agent answers with one ``TestResult`` on its ``test`` topic carrying the same
``test_id`` and ``trigger``. Like every data message the result goes through the spool
(``record``), so it survives an outage and is sent exactly like telemetry.

``Runner`` runs orders on a thread of its own, one at a time, so the MQTT callback that
hands it an order returns at once. A test takes ~20 s (link burst, both bandwidth
directions), so at most one more order waits; a further one is refused (logged and
counted: the collector orders again when it retries). QoS 1 may deliver the same order
twice: a ``test_id`` already queued, running or recently done is not run again.
"""

from __future__ import annotations

import collections
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent import wire
from agent.config import AgentConfig
from agent.readiness.fulltest import FullTest, run_full_test
from agent.spool import Spool

log = logging.getLogger(__name__)

COMMAND = "run-test"  # wire command names are slugs
ORDER_TRIGGERS = ("schedule", "retry", "noc")  # who orders over MQTT ("technician" is local)
LOCAL_TRIGGER = "technician"
MAX_TEST_ID_CHARS = 64
MIN_SESSION_SECONDS = 60.0
MAX_SESSION_SECONDS = 86400.0
MAX_WAITING = 1  # orders queued behind the running one
RECENT_IDS = 64  # test_ids remembered to drop a redelivered order


@dataclass(frozen=True)
class Order:
    test_id: str
    trigger: str
    session_seconds: float | None = None


def parse_order(args: dict[str, Any]) -> Order:
    """Validate a ``run-test`` command's args; ValueError says what is wrong."""
    unknown = sorted(set(args) - {"test_id", "trigger", "session_seconds"})
    if unknown:
        raise ValueError(f"unknown argument {unknown[0]!r}")
    test_id = args.get("test_id")
    if (not isinstance(test_id, str) or not test_id or len(test_id) > MAX_TEST_ID_CHARS
            or not test_id.isprintable()):
        raise ValueError(f"test_id must be 1-{MAX_TEST_ID_CHARS} printable characters")
    trigger = args.get("trigger")
    if trigger not in ORDER_TRIGGERS:
        raise ValueError(f"trigger must be one of {', '.join(ORDER_TRIGGERS)}")
    seconds = args.get("session_seconds")
    if seconds is not None:
        if (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                or not math.isfinite(seconds)
                or not MIN_SESSION_SECONDS <= seconds <= MAX_SESSION_SECONDS):
            raise ValueError(f"session_seconds must be a number from {MIN_SESSION_SECONDS:g} "
                             f"to {MAX_SESSION_SECONDS:g}")
        seconds = float(seconds)
    return Order(test_id, trigger, seconds)


def local_test_id(session: str | None = None) -> str:
    """``<session>/local/<nonce>`` for a technician's check, ``local/<nonce>`` without one."""
    nonce = secrets.token_hex(4)
    return f"{session}/local/{nonce}" if session else f"local/{nonce}"


def result_message(config: AgentConfig, test: FullTest, test_id: str, trigger: str,
                   epoch: int, seq: int, floor: int) -> wire.TestResult:
    return wire.TestResult(config.province, config.site, epoch, seq, floor, test.ts, test_id,
                           trigger, test.passed, test.criteria)


def record(config: AgentConfig, spool: Spool, test: FullTest, test_id: str,
           trigger: str) -> int:
    """Append the result to the spool (seq allocated there); returns its seq."""
    topic = wire.topic(config.prefix, config.province, config.site, wire.Kind.TEST)

    def build(seq: int, floor: int) -> bytes:
        return wire.encode(result_message(config, test, test_id, trigger, spool.epoch, seq,
                                          floor))

    return spool.append(topic, build)


class Runner:
    """Runs ordered tests one at a time on its own thread and spools their results.

    ``wake`` tells the publisher a new row is in the spool. ``run`` is the test itself
    (``run_full_test``; injectable for tests of the queueing).
    """

    def __init__(self, config: AgentConfig, spool: Spool, wake: Callable[[], None],
                 run: Callable[..., FullTest] = run_full_test) -> None:
        self.config = config
        self.spool = spool
        self.wake = wake
        self.run = run
        self.counters: collections.Counter[str] = collections.Counter()
        self._cond = threading.Condition()
        self._waiting: collections.deque[Order] = collections.deque()
        self._running: Order | None = None
        self._recent: collections.deque[str] = collections.deque(maxlen=RECENT_IDS)
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="readiness-test", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Drop waiting orders; a test in progress is abandoned (its thread is a daemon)."""
        with self._cond:
            self._stopping = True
            dropped = [o.test_id for o in self._waiting]
            self._waiting.clear()
            running = self._running
            self._cond.notify_all()
        if dropped:
            log.warning("stopping: test(s) %s not run", ", ".join(dropped))
        if running is not None:
            log.warning("stopping during test %s: no result will be sent", running.test_id)
        self._thread.join(timeout)
        log.info("readiness tests stopped; counters: %s", dict(self.counters) or "none")

    def submit(self, command: wire.Command) -> None:
        """Take a ``run-test`` order (from the MQTT thread: never blocks on a test).

        Raises ValueError for bad args; a full queue or a repeated test_id is logged and
        counted, not raised.
        """
        order = parse_order(command.args)
        with self._cond:
            busy = [o.test_id for o in self._waiting]
            if self._running is not None:
                busy.append(self._running.test_id)
            if order.test_id in busy or order.test_id in self._recent:
                self.counters["run_test_duplicate"] += 1
                log.info("run-test %s: already ordered, ignored", order.test_id)
                return
            if self._stopping or len(busy) > MAX_WAITING:  # one running + MAX_WAITING
                self.counters["run_test_refused_busy"] += 1
                log.warning("run-test %s refused: busy with %s", order.test_id, ", ".join(busy))
                return
            self._waiting.append(order)
            self.counters["run_test_accepted"] += 1
            self._cond.notify_all()
        log.info("run-test %s (%s) accepted", order.test_id, order.trigger)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._waiting or self._stopping)
                if self._stopping:
                    return
                order = self._running = self._waiting.popleft()
            try:
                self._execute(order)
            except Exception:  # one broken test must not end the thread
                self.counters["run_test_errors"] += 1
                log.exception("run-test %s failed", order.test_id)
            finally:
                with self._cond:
                    self._running = None
                    self._recent.append(order.test_id)

    def _execute(self, order: Order) -> None:
        started = time.monotonic()
        test = self.run(self.config, session_seconds=order.session_seconds)
        with self._cond:
            if self._stopping:
                return
        seq = record(self.config, self.spool, test, order.test_id, order.trigger)
        self.counters["run_test_done"] += 1
        self.wake()
        log.info("run-test %s (%s): %s in %.1f s, seq %d%s", order.test_id, order.trigger,
                 "READY" if test.passed else "NOT READY", time.monotonic() - started, seq,
                 "" if test.passed else f"; failing: {', '.join(test.failing)}")
