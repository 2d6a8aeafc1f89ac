"""Readiness as Prometheus series: sessions, checkpoint deadlines, and each bridge's verdict.

A prometheus-client custom collector: every scrape asks a snapshot provider for the
current sessions, verdicts and latest tests and builds the families from it, so the
exposition is never older than the snapshot. Registered in the collector's own registry,
it is rendered after the fleet exposition on ``/metrics``.

Families (all gauges):

* ``bridge_session_info{session, title, host}`` 1
* ``bridge_session_start_timestamp_seconds{session}``, ``..._end_timestamp_seconds``
* ``bridge_checkpoint_deadline_timestamp_seconds{session, checkpoint}`` and
  ``bridge_checkpoint_window_start_timestamp_seconds{session, checkpoint}``
* ``bridge_readiness{session, checkpoint, site, province, state}`` one-hot over
  ``VERDICT_STATES``: every state is present (0 or 1), so an alert can say
  ``bridge_readiness{state!="passed"} == 1 and on(session, checkpoint)
  (bridge_checkpoint_deadline_timestamp_seconds - time()) < 2*3600`` and a state that
  changes never leaves a stale series behind.
* ``bridge_readiness_failing_criterion{session, checkpoint, site, province, criterion}`` 1
* ``bridge_test_last_timestamp_seconds{site, province}``, ``bridge_test_last_passed``
  (the latest test of each bridge, whatever it was ordered for)
* ``bridge_readiness_criterion_info{criterion, vi, en, advice_vi, advice_en}`` 1, static:
  the catalogue's labels and advice, so alert texts and dashboards join a failing
  criterion to words a technician reads instead of repeating the catalogue.

Only sessions not yet over (``end + grace``) are exposed, so the series count follows the
sessions of the coming days, not the whole history: a province with 20 such sessions of
200 bridges and 4 checkpoints is 64,000 ``bridge_readiness`` samples (see
``bench/readiness_bench.py`` for what a scrape of that costs). A site missing from the
inventory (a schedule naming an unknown bridge) is still exposed, with an empty province.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.readiness.catalogue import CRITERIA

from ..inventory import Site
from .model import VERDICT_STATES, CheckpointSpec, Session, TestRecord, Verdict

DEFAULT_GRACE = timedelta(days=1)

_SESSION = ("session",)
_CHECKPOINT = ("session", "checkpoint")
_VERDICT = ("session", "checkpoint", "site", "province")
_SITE = ("site", "province")


@dataclass(frozen=True)
class ReadinessSnapshot:
    """What one scrape shows, taken at one moment so its parts agree with each other.

    ``verdicts`` are those the engine drew at ``now``; ``latest_tests`` maps each bridge
    to its latest test (``TestIndex.last_per_site()``); ``sites`` is the inventory's.
    Never change one after handing it out: make a new one (the collector reuses the
    families it built for a snapshot as long as it gets the same object).
    """

    now: datetime
    sessions: Sequence[Session]
    checkpoints: Sequence[CheckpointSpec]
    verdicts: Sequence[Verdict]
    sites: Mapping[str, Site]
    latest_tests: Mapping[str, TestRecord] = field(default_factory=dict)


def _families() -> dict[str, GaugeMetricFamily]:
    specs = (
        ("bridge_session_info", "A scheduled citizen reception session (1): title, host bridge.",
         ("session", "title", "host")),
        ("bridge_session_start_timestamp_seconds", "When the session starts (T).", _SESSION),
        ("bridge_session_end_timestamp_seconds", "When the session is planned to end.",
         _SESSION),
        ("bridge_checkpoint_deadline_timestamp_seconds",
         "When a checkpoint of the session is due (confirm T-3d, tests T-24h and T-2h, start T).",
         _CHECKPOINT),
        ("bridge_checkpoint_window_start_timestamp_seconds",
         "From when a test counts for the checkpoint (equals the deadline for confirm).",
         _CHECKPOINT),
        ("bridge_readiness",
         "Where a bridge stands for a checkpoint: 1 on its state (passed, failed, pending, "
         "missed), 0 on the others.", (*_VERDICT, "state")),
        ("bridge_readiness_failing_criterion",
         "A criterion the bridge's deciding test failed, for a failed or missed checkpoint (1).",
         (*_VERDICT, "criterion")),
        ("bridge_test_last_timestamp_seconds", "When the bridge's latest test finished.", _SITE),
        ("bridge_test_last_passed", "1 if the bridge's latest test passed, else 0.", _SITE),
        ("bridge_readiness_criterion_info",
         "A readiness criterion's Vietnamese and English label and advice (1).",
         ("criterion", "vi", "en", "advice_vi", "advice_en")),
    )
    return {name: GaugeMetricFamily(name, doc, labels=labels) for name, doc, labels in specs}


class ReadinessCollector(Collector):
    """Builds the readiness families from ``snapshot()`` on every scrape."""

    def __init__(self, snapshot: Callable[[], ReadinessSnapshot],
                 grace: timedelta = DEFAULT_GRACE) -> None:
        self._snapshot = snapshot
        self.grace = grace
        # The families built for the last snapshot object: a provider that hands out the
        # same snapshot until something changes saves rebuilding them on every scrape.
        self._built: tuple[ReadinessSnapshot, list[Metric]] | None = None

    def describe(self) -> Iterator[Metric]:
        # Names only: registering must not call the snapshot provider (not ready yet).
        yield from _families().values()

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        built = self._built  # one read: scrapes may run in parallel threads
        if built is None or built[0] is not snap:
            built = self._built = (snap, self._build(snap))
        yield from built[1]

    def _build(self, snap: ReadinessSnapshot) -> list[Metric]:
        f = _families()
        exposed: set[str] = set()
        for session in sorted(snap.sessions, key=lambda s: (s.start, s.id)):
            if session.end + self.grace < snap.now or session.id in exposed:
                continue
            exposed.add(session.id)
            sid = session.id
            f["bridge_session_info"].add_metric([sid, session.title, session.host], 1.0)
            f["bridge_session_start_timestamp_seconds"].add_metric(
                [sid], session.start.timestamp())
            f["bridge_session_end_timestamp_seconds"].add_metric([sid], session.end.timestamp())
            for spec in snap.checkpoints:
                f["bridge_checkpoint_deadline_timestamp_seconds"].add_metric(
                    [sid, spec.name], spec.deadline(session).timestamp())
                f["bridge_checkpoint_window_start_timestamp_seconds"].add_metric(
                    [sid, spec.name], spec.window_start(session).timestamp())

        readiness = f["bridge_readiness"]
        failing = f["bridge_readiness_failing_criterion"]
        seen: set[tuple[str, str, str]] = set()
        for v in snap.verdicts:
            key = (v.session_id, v.checkpoint, v.site)
            if v.session_id not in exposed or key in seen:
                continue
            seen.add(key)
            site = snap.sites.get(v.site)
            ids = [v.session_id, v.checkpoint, v.site, site.province if site else ""]
            for state in VERDICT_STATES:
                readiness.add_metric([*ids, state], 1.0 if v.state == state else 0.0)
            if v.state in ("failed", "missed"):
                for criterion in dict.fromkeys(v.failing):
                    failing.add_metric([*ids, criterion], 1.0)

        for site_id in sorted(snap.latest_tests):
            test = snap.latest_tests[site_id]
            site = snap.sites.get(site_id)
            ids = [site_id, site.province if site else ""]
            f["bridge_test_last_timestamp_seconds"].add_metric(ids, test.finished.timestamp())
            f["bridge_test_last_passed"].add_metric(ids, 1.0 if test.passed else 0.0)
        for c in CRITERIA.values():
            f["bridge_readiness_criterion_info"].add_metric(
                [c.name, c.vi, c.en, c.advice_vi, c.advice_en], 1.0)
        return list(f.values())
