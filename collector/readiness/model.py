"""The readiness vocabulary shared by the schedule, the store, the engine and the report.

A *session* (phiên tiếp công dân) links a host bridge to member bridges at a start time.
The regulations hang *checkpoints* on it: confirmation at T-3 d, test 1 at T-24 h, test 2
at T-2 h, the start at T. A bridge is ready for a test checkpoint when a passing *test*
of that bridge was recorded inside the checkpoint's window (``deadline - window`` to the
deadline). Every time is an aware datetime; Vietnam is UTC+7 (``VIETNAM``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from agent.wire import Criterion

VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")

CHECKPOINT_KINDS = ("confirm", "test", "start")
VERDICT_STATES = ("passed", "failed", "pending", "missed")
# Who or what asked for a test (the ``trigger`` of a test result).
TRIGGERS = ("schedule", "retry", "noc", "technician")


@dataclass(frozen=True)
class Session:
    id: str  # slug: lowercase letters, digits, '-'; at most 40 characters
    title: str  # Vietnamese, as the invitation says it
    start: datetime  # aware
    duration: timedelta
    host: str  # the central bridge's site id
    members: tuple[str, ...]  # member bridges' site ids
    national: tuple[str, ...] = ()  # national bridges that join when asked
    source: str = ""  # where it came from: "schedule.yaml:12", "calendar.ics UID x", "api"

    @property
    def end(self) -> datetime:
        return self.start + self.duration

    @property
    def bridges(self) -> tuple[str, ...]:
        """Every bridge that must be ready: host first, then members, then national."""
        return (self.host, *self.members, *self.national)


@dataclass(frozen=True)
class CheckpointSpec:
    """One checkpoint of every session: its deadline is ``start + offset``."""

    name: str  # slug: "confirm", "test-1", "test-2", "start"
    kind: str  # one of CHECKPOINT_KINDS
    offset: timedelta  # negative: before the start
    window: timedelta = timedelta(0)  # test/start: how long before the deadline a pass counts

    def deadline(self, session: Session) -> datetime:
        return session.start + self.offset

    def window_start(self, session: Session) -> datetime:
        return self.deadline(session) - self.window


# The regulations (Đồng Tháp, Gia Lai): confirm at T-3 d, test at T-24 h and at T-2 h.
DEFAULT_CHECKPOINTS = (
    CheckpointSpec("confirm", "confirm", timedelta(days=-3)),
    CheckpointSpec("test-1", "test", timedelta(hours=-24), timedelta(hours=12)),
    CheckpointSpec("test-2", "test", timedelta(hours=-2), timedelta(hours=2)),
    CheckpointSpec("start", "start", timedelta(0), timedelta(hours=2)),
)


@dataclass(frozen=True)
class TestRecord:
    """One finished test of one bridge, as stored."""

    test_id: str  # "<session>/<checkpoint>/<nonce>" when ordered for a session
    site: str
    finished: datetime  # aware
    passed: bool
    criteria: tuple[Criterion, ...]
    trigger: str  # one of TRIGGERS
    requested_by: str  # "collector", the NOC user's name, "technician"
    session_id: str | None = None


@dataclass(frozen=True)
class Confirmation:
    """A bridge confirmed it will join (the T-3 d checkpoint), and who said so."""

    session_id: str
    site: str
    at: datetime
    by: str


@dataclass(frozen=True)
class Verdict:
    """Where one bridge stands for one checkpoint of one session."""

    session_id: str
    site: str
    checkpoint: str
    state: str  # one of VERDICT_STATES
    deadline: datetime
    window_start: datetime
    test_id: str | None = None  # the test the state rests on, if any
    failing: tuple[str, ...] = ()  # names of the failing criteria (failed / missed)
