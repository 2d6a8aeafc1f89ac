"""The readiness families as Prometheus renders them: exact samples, one-hot states that
move with the verdicts, sessions aged out after the grace, and promtool's approval."""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest

from agent.readiness.catalogue import CRITERIA
from agent.wire import Criterion
from collector.inventory import load_inventory
from collector.readiness.engine import TestIndex, verdicts
from collector.readiness.metrics import ReadinessCollector, ReadinessSnapshot
from collector.readiness.model import (
    DEFAULT_CHECKPOINTS,
    VERDICT_STATES,
    VIETNAM,
    Confirmation,
    Session,
)
from collector.readiness.model import TestRecord as Record
from tests.conftest import require_binary

H = timedelta(hours=1)
M = timedelta(minutes=1)
T = datetime(2026, 3, 12, 8, 0, tzinfo=VIETNAM)  # 1773277200
SITES = load_inventory("deploy/demo-inventory.yaml").sites
LOSS = Criterion("link-loss", False, 0.03, 0.01, "ratio")
BW = Criterion("bandwidth-up", False, 2.1e6, 5e6, "bit/s")
MORNING = Session("dt-2026-03-12-sang", "Tiếp công dân định kỳ tháng 3/2026", T, 3 * H,
                  "dt-trung-tam", ("dt-sa-dec",))


def snapshot(sessions: list[Session], tests: list[Record], now: datetime,
             confirmations: tuple[Confirmation, ...] = ()) -> ReadinessSnapshot:
    index = TestIndex(tests, now)
    vs = [v for s in sessions
          for v in verdicts(s, DEFAULT_CHECKPOINTS, index, confirmations, now)]
    return ReadinessSnapshot(now, sessions, DEFAULT_CHECKPOINTS, vs, SITES,
                             index.last_per_site())


def render(snap: ReadinessSnapshot) -> str:
    registry = CollectorRegistry()
    registry.register(ReadinessCollector(lambda: snap))
    return generate_latest(registry).decode()


def samples(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def morning_records() -> tuple[list[Record], tuple[Confirmation, ...]]:
    tests = [
        Record("dt-2026-03-12-sang/test-2/0000000a", "dt-sa-dec", T - 3 * H, False, (LOSS, BW),
               "schedule", "collector", MORNING.id),
        Record("dt-2026-03-12-sang/test-1/0000000b", "dt-trung-tam",
               T - 30 * H + timedelta(seconds=1.5), True, (), "schedule", "collector",
               MORNING.id),
    ]
    return tests, (Confirmation(MORNING.id, "dt-sa-dec", T - 4 * 24 * H, "UBND phường Sa Đéc"),)


def test_exact_samples() -> None:
    """At T-2h30: the host passed test-1 (at T-30h + 1.5 s), never confirmed and has not
    tested for test-2; Sa Đéc confirmed, missed test-1 and failed test-2 on loss and
    bandwidth. Every family's samples are checked line by line, the zeros of the one-hot
    included."""
    tests, confirmations = morning_records()
    text = render(snapshot([MORNING], tests, T - 2 * H - 30 * M, confirmations))
    lines = samples(text)
    sid = 'session="dt-2026-03-12-sang"'
    assert [x for x in lines if not x.startswith(
        ("bridge_readiness{", "bridge_test", "bridge_readiness_criterion_info"))] == [
        f'bridge_session_info{{host="dt-trung-tam",{sid},'
        f'title="Tiếp công dân định kỳ tháng 3/2026"}} 1.0',
        f"bridge_session_start_timestamp_seconds{{{sid}}} 1.7732772e+09",
        f"bridge_session_end_timestamp_seconds{{{sid}}} 1.773288e+09",
        f'bridge_checkpoint_deadline_timestamp_seconds{{checkpoint="confirm",{sid}}} 1.773018e+09',
        f'bridge_checkpoint_deadline_timestamp_seconds{{checkpoint="test-1",{sid}}} 1.7731908e+09',
        f'bridge_checkpoint_deadline_timestamp_seconds{{checkpoint="test-2",{sid}}} 1.77327e+09',
        f'bridge_checkpoint_deadline_timestamp_seconds{{checkpoint="start",{sid}}} 1.7732772e+09',
        f'bridge_checkpoint_window_start_timestamp_seconds{{checkpoint="confirm",{sid}}} '
        "1.773018e+09",
        f'bridge_checkpoint_window_start_timestamp_seconds{{checkpoint="test-1",{sid}}} '
        "1.7731476e+09",
        f'bridge_checkpoint_window_start_timestamp_seconds{{checkpoint="test-2",{sid}}} '
        "1.7732628e+09",
        f'bridge_checkpoint_window_start_timestamp_seconds{{checkpoint="start",{sid}}} '
        "1.77327e+09",
        f'bridge_readiness_failing_criterion{{checkpoint="test-2",criterion="link-loss",'
        f'province="dong-thap",{sid},site="dt-sa-dec"}} 1.0',
        f'bridge_readiness_failing_criterion{{checkpoint="test-2",criterion="bandwidth-up",'
        f'province="dong-thap",{sid},site="dt-sa-dec"}} 1.0',
    ]
    states = {("confirm", "dt-trung-tam"): "missed", ("confirm", "dt-sa-dec"): "passed",
              ("test-1", "dt-trung-tam"): "passed", ("test-1", "dt-sa-dec"): "missed",
              ("test-2", "dt-trung-tam"): "pending", ("test-2", "dt-sa-dec"): "failed",
              ("start", "dt-trung-tam"): "pending", ("start", "dt-sa-dec"): "pending"}
    assert [x for x in lines if x.startswith("bridge_readiness{")] == [
        f'bridge_readiness{{checkpoint="{cp}",province="dong-thap",{sid},site="{site}",'
        f'state="{state}"}} {1.0 if state == states[cp, site] else 0.0}'
        for cp, site in states for state in VERDICT_STATES]
    assert [x for x in lines if x.startswith("bridge_test")] == [
        'bridge_test_last_timestamp_seconds{province="dong-thap",site="dt-sa-dec"} 1.7732664e+09',
        'bridge_test_last_timestamp_seconds{province="dong-thap",site="dt-trung-tam"} '
        "1.7731692015e+09",
        'bridge_test_last_passed{province="dong-thap",site="dt-sa-dec"} 0.0',
        'bridge_test_last_passed{province="dong-thap",site="dt-trung-tam"} 1.0',
    ]
    info = [x for x in lines if x.startswith("bridge_readiness_criterion_info")]
    assert len(info) == len(CRITERIA)
    assert ('bridge_readiness_criterion_info{advice_en="Check cables, the modem and the line '
            'provider",advice_vi="Kiểm tra cáp, modem và nhà cung cấp đường truyền",'
            'criterion="link-loss",en="Packet loss",vi="Tỷ lệ mất gói"} 1.0') in info
    assert text.count("# TYPE bridge_") == 10 and text.count(" gauge\n") == 10


def test_one_hot_follows_the_verdict() -> None:
    """The same registry scraped as Sa Đéc's test-2 goes pending -> failed -> passed:
    exactly one state is 1 each time, and the failing-criterion series leave with the
    failure (a pass must not keep saying 'link-loss')."""
    snap: list[ReadinessSnapshot] = []
    registry = CollectorRegistry()
    registry.register(ReadinessCollector(lambda: snap[-1]))
    labels = {"session": MORNING.id, "checkpoint": "test-2", "site": "dt-sa-dec",
              "province": "dong-thap"}
    failed = Record("f", "dt-sa-dec", T - 3 * H, False, (LOSS,), "schedule", "collector")
    passed = Record("p", "dt-sa-dec", T - 150 * M, True, (), "retry", "collector")
    for tests, now, expected in (([], T - 5 * H, "pending"),
                                 ([failed], T - 3 * H, "failed"),
                                 ([failed, passed], T - 2 * H, "passed")):
        snap.append(snapshot([MORNING], tests, now))
        got = {state: registry.get_sample_value("bridge_readiness", {**labels, "state": state})
               for state in VERDICT_STATES}
        assert got == {state: float(state == expected) for state in VERDICT_STATES}
        loss = registry.get_sample_value("bridge_readiness_failing_criterion",
                                         {**labels, "criterion": "link-loss"})
        assert loss == (1.0 if expected == "failed" else None)


def test_sessions_over_are_hidden() -> None:
    """A session stays exposed until its end plus the grace (1 day), inclusive, then all
    its series go (session, checkpoints, verdicts); the latest-test series stay."""
    tests, _ = morning_records()
    end = MORNING.end
    shown = render(snapshot([MORNING], tests, end + 24 * H))
    assert 'bridge_session_info{host="dt-trung-tam",session="dt-2026-03-12-sang"' in shown
    hidden = render(snapshot([MORNING], tests, end + 24 * H + timedelta(seconds=1)))
    assert "dt-2026-03-12-sang" not in hidden
    assert 'bridge_test_last_passed{province="dong-thap",site="dt-trung-tam"} 1.0' in hidden


def test_registering_does_not_call_the_provider() -> None:
    """describe() gives the names only: registering before the first schedule is loaded
    must not call the snapshot provider (nor fail because it cannot answer yet)."""
    calls: list[int] = []

    def provider() -> ReadinessSnapshot:
        calls.append(1)
        return ReadinessSnapshot(T, [], DEFAULT_CHECKPOINTS, [], SITES)

    registry = CollectorRegistry()
    registry.register(ReadinessCollector(provider))
    assert calls == []
    shown = samples(generate_latest(registry).decode())
    assert calls == [1]
    # With no sessions only the static catalogue of criteria is shown.
    assert len(shown) == len(CRITERIA)
    assert all(x.startswith("bridge_readiness_criterion_info{") for x in shown)


def test_promtool_accepts_the_exposition() -> None:
    """A busier scrape: two sessions sharing Sa Đéc, a title with quotes and a backslash,
    a bridge missing from the inventory (empty province), a national bridge, failures and
    missed checkpoints, all through ``promtool check metrics``."""
    promtool = require_binary("promtool")
    afternoon = Session("dt-2026-03-12-chieu", 'Tiếp công dân đột xuất "vụ việc phức tạp" \\ 2',
                        T + 6 * H, 2 * H, "dt-trung-tam",
                        ("dt-sa-dec", "dt-lap-vo", "dt-khong-co-trong-danh-sach"),
                        national=("tw-tiep-cong-dan",))
    tests, confirmations = morning_records()
    tests.append(Record("t-lap-vo", "dt-lap-vo", T + 3 * H, False, (BW,), "technician",
                        "technician"))
    text = render(snapshot([MORNING, afternoon], tests, T + 3 * H + M, confirmations))
    assert 'title="Tiếp công dân đột xuất \\"vụ việc phức tạp\\" \\\\ 2"' in text
    assert 'province="",session="dt-2026-03-12-chieu",site="dt-khong-co-trong-danh-sach"' \
        in text
    done = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == b"" and done.stderr.strip() == b""


def test_same_snapshot_reuses_families() -> None:
    """A provider handing out the same snapshot object between ticks gets the families
    built last time (no rebuild per scrape); a new snapshot object is built afresh."""
    tests, confirmations = morning_records()
    snap = [snapshot([MORNING], tests, T - 3 * H, confirmations)]
    collector = ReadinessCollector(lambda: snap[-1])
    first = list(collector.collect())
    assert all(a is b for a, b in zip(first, collector.collect(), strict=True))
    snap.append(snapshot([MORNING], tests, T - 3 * H, confirmations))
    assert not any(a is b for a, b in zip(first, collector.collect(), strict=True))
