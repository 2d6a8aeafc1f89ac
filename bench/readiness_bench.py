"""What readiness costs a scrape at province size: verdicts, collect() and the rendering,
and the built-in board (``/board``) drawn from the same snapshot.

A province of 200 bridges with 20 sessions not yet over (every bridge in every session,
the worst case), the four default checkpoints, and a realistic record: a few tests per
bridge per session (some failing), confirmations for most bridges. ``now`` sits in the
first sessions' windows, so every verdict state occurs and all 20 sessions are exposed.

    .venv/bin/python -m bench.readiness_bench [--sites 200] [--sessions 20] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
from dataclasses import replace
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest

from agent.wire import Criterion
from bench.fleetdata import PROVINCE, inventory
from bench.render_bench import timed
from collector.board import BoardView, render_board
from collector.readiness.engine import TestIndex, verdicts
from collector.readiness.metrics import ReadinessCollector, ReadinessSnapshot
from collector.readiness.model import (
    DEFAULT_CHECKPOINTS,
    VIETNAM,
    Confirmation,
    Session,
    TestRecord,
)
from collector.readiness.planner import plan

H = timedelta(hours=1)
FAILS = (Criterion("link-loss", False, 0.03, 0.01, "ratio"),
         Criterion("ups-runtime", False, 900.0, 12600.0, "s"))
OK = (Criterion("link-rtt", True, 0.04, 0.15, "s"), Criterion("camera", True, 1.0, 1.0, "count"))


def fleet(n_sites: int, n_sessions: int, seed: int = 1) -> tuple[
        list[Session], list[TestRecord], list[Confirmation], datetime, dict]:
    rng = random.Random(seed)
    sites = inventory(n_sites).sites
    ids = list(sites)
    first = datetime(2026, 3, 2, 8, 0, tzinfo=VIETNAM)
    sessions = [Session(f"dt-2026-phien-{i:02d}", f"Tiếp công dân phiên {i}",
                        first + i * 6 * H, 3 * H, ids[0], tuple(ids[1:]))
                for i in range(n_sessions)]
    tests: list[TestRecord] = []
    confirmations: list[Confirmation] = []
    for s in sessions:
        for site in ids:
            if rng.random() < 0.9:
                confirmations.append(Confirmation(s.id, site, s.start - 4 * 24 * H, "bench"))
            for spec in DEFAULT_CHECKPOINTS[1:]:
                for _ in range(rng.randint(1, 2)):
                    at = spec.window_start(s) + rng.random() * spec.window
                    ok = rng.random() < 0.8
                    tests.append(TestRecord(f"{s.id}/{spec.name}/{rng.getrandbits(32):08x}",
                                            site, at, ok, OK if ok else OK + FAILS, "schedule",
                                            "collector", s.id))
    # The first session ended 12 h ago (still exposed: grace 1 day), the others are under
    # way or ahead: all of them are exposed, with every verdict state.
    now = sessions[0].end + 12 * H
    return sessions, tests, confirmations, now, sites


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    sessions, tests, confirmations, now, sites = fleet(args.sites, args.sessions)

    def take() -> ReadinessSnapshot:
        index = TestIndex(tests, now)
        vs = [v for s in sessions
              for v in verdicts(s, DEFAULT_CHECKPOINTS, index, confirmations, now)]
        return ReadinessSnapshot(now, sessions, DEFAULT_CHECKPOINTS, vs, sites,
                                 index.last_per_site())

    snap = take()
    current = [snap]
    collector = ReadinessCollector(lambda: current[-1])
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry)
    n_samples = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))

    def fresh() -> None:  # a new snapshot object: the collector must rebuild its families
        current.append(replace(snap))
        del current[:-1]

    t_snapshot = timed(take, args.repeat)
    t_collect = timed(lambda: (fresh(), list(collector.collect())), args.repeat)
    t_render_cold = timed(lambda: (fresh(), generate_latest(registry)), args.repeat)
    t_render_warm = timed(lambda: generate_latest(registry), args.repeat)
    t_plan = timed(lambda: plan(sessions, DEFAULT_CHECKPOINTS, tests, [], set(sites), now,
                                timedelta(minutes=15), 3), args.repeat)
    view = BoardView(snap, sites, {PROVINCE: "Đồng Tháp"}, {site: True for site in sites})
    page = render_board(view)
    t_board = timed(lambda: render_board(view), args.repeat)
    print(f"{args.sites} bridges x {args.sessions} sessions x {len(DEFAULT_CHECKPOINTS)} "
          f"checkpoints: {len(snap.verdicts)} verdicts from {len(tests)} tests, "
          f"{n_samples} samples, {len(text) / 1e6:.1f} MB")
    print(f"  verdicts (snapshot)       {t_snapshot * 1e3:8.1f} ms")
    print(f"  collect(), new snapshot   {t_collect * 1e3:8.1f} ms")
    print(f"  generate_latest, new one  {t_render_cold * 1e3:8.1f} ms  (collect + formatting)")
    print(f"  generate_latest, same one {t_render_warm * 1e3:8.1f} ms  (families reused)")
    print(f"  plan()                    {t_plan * 1e3:8.1f} ms")
    print(f"  /board page               {t_board * 1e3:8.1f} ms  ({len(page) / 1e3:.0f} KB; "
          "drawn at most every 2 s, whatever the number of screens)")


if __name__ == "__main__":
    main()
