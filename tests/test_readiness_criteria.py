"""Readiness criteria: every limit at its edge, failed measurements, the checklist's words.

Pure evaluation (``agent.readiness.criteria``), the reading of probe rows into facts
(``agent.readiness.fulltest.build_facts``) and the checklist text, without any network.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from agent import wire
from agent.config import parse_config
from agent.readiness import checklist
from agent.readiness.catalogue import CRITERIA
from agent.readiness.criteria import (
    NO_REFLECTOR,
    DeviceFacts,
    Facts,
    Failed,
    Judged,
    Limits,
    evaluate,
    judge,
    not_checked,
)
from agent.readiness.fulltest import FullTest, LinkFacts, build_facts
from agent.ups.model import UpsReading

LIMITS = Limits()  # 150 ms, 30 ms, 1 %, MOS 3.6, 5 Mbit/s, 3 h session + 15 min margin
ON_MAINS = UpsReading("ups-1", "nut", flags=frozenset({"OL", "CHRG"}), runtime_seconds=12000)


def good(**changes: Any) -> Facts:
    """A bridge that passes everything, with ``changes`` applied."""
    facts = Facts(
        rtt_median=0.020, jitter=0.002, loss_ratio=0.0, mos=4.4,
        bandwidth_up=50e6, bandwidth_down=50e6,
        devices={"camera": DeviceFacts(1, 1), "display": DeviceFacts(2, 2)},
        ups={"ups-1": ON_MAINS},
        recording_seconds_left=20000.0, backup_present=True, clock_offset=0.01,
        software={"vconf": True},
    )
    return dataclasses.replace(facts, **changes)


def by_name(facts: Facts, limits: Limits = LIMITS) -> dict[str, Judged]:
    return {j.criterion.name: j for j in judge(facts, limits)}


def ups(flags: set[str], runtime: float | None, name: str = "ups-1") -> UpsReading:
    return UpsReading(name, "nut", flags=frozenset(flags), runtime_seconds=runtime)


def test_a_good_bridge_passes_every_criterion_in_catalogue_order() -> None:
    """A bridge inside every limit: all pass, in catalogue order, catalogue units; kinds it does
    not configure are not checked."""
    judged = judge(good(), LIMITS)
    assert all(j.criterion.ok for j in judged)
    names = [j.criterion.name for j in judged]
    assert names == [n for n in CRITERIA if n in names]  # catalogue order
    assert set(names) == set(CRITERIA) - {"microphone", "speaker"}
    assert not_checked(judged) == ("microphone", "speaker")
    for j in judged:  # units from the catalogue, limits always given
        assert j.criterion.unit == CRITERIA[j.criterion.name].unit
        assert j.criterion.limit is not None


# (changes to the good bridge, criterion, ok, value): each limit just inside and just out.
EDGES = [
    ({"rtt_median": 0.150}, "link-rtt", True, 0.150),
    ({"rtt_median": 0.1501}, "link-rtt", False, 0.1501),
    ({"jitter": 0.030}, "link-jitter", True, 0.030),
    ({"jitter": 0.0301}, "link-jitter", False, 0.0301),
    ({"loss_ratio": 0.0099}, "link-loss", True, 0.0099),
    ({"loss_ratio": 0.01}, "link-loss", False, 0.01),  # strictly below 1 %
    ({"mos": 3.6}, "link-mos", True, 3.6),
    ({"mos": 3.599}, "link-mos", False, 3.599),
    ({"bandwidth_up": 5e6}, "bandwidth-up", True, 5e6),
    ({"bandwidth_up": 4.999e6}, "bandwidth-up", False, 4.999e6),
    ({"bandwidth_down": 5e6}, "bandwidth-down", True, 5e6),
    ({"bandwidth_down": 4.999e6}, "bandwidth-down", False, 4.999e6),
    ({"devices": {"camera": DeviceFacts(1, 1)}}, "camera", True, 1.0),
    ({"devices": {"camera": DeviceFacts(3, 1)}}, "camera", True, 3.0),  # a spare is fine
    ({"devices": {"camera": DeviceFacts(0, 1)}}, "camera", False, 0.0),
    ({"devices": {"camera": DeviceFacts(0, 0)}}, "camera", True, 0.0),
    ({"devices": {"microphone": DeviceFacts(2, 2, ("Jabra",))}}, "microphone", False, 2.0),
    ({"devices": {"speaker": DeviceFacts(1, 2)}}, "speaker", False, 1.0),
    ({"devices": {"display": DeviceFacts(1, 2)}}, "display", False, 1.0),
    ({"ups": {"ups-1": ups({"OL"}, 11700)}}, "ups-runtime", True, 11700.0),
    ({"ups": {"ups-1": ups({"OL"}, 11699)}}, "ups-runtime", False, 11699.0),
    ({"ups": {"ups-1": ups({"OB", "DISCHRG"}, 12000)}}, "ups-runtime", True, 12000.0),
    ({"ups": {"ups-1": ups({"OB", "DISCHRG"}, 12000)}}, "ups-power", False, 0.0),
    ({"ups": {"ups-1": ups({"OL"}, 12000)}}, "ups-power", True, 1.0),
    ({"ups": {"ups-1": ups(set(), 12000)}}, "ups-power", False, 0.0),  # state unknown
    # Low battery never carries a session, whatever runtime it still estimates.
    ({"ups": {"ups-1": ups({"OB", "LB"}, 20000)}}, "ups-runtime", False, 20000.0),
    ({"recording_seconds_left": 10800.0}, "recording-space", True, 10800.0),
    ({"recording_seconds_left": 10799.0}, "recording-space", False, 10799.0),
    ({"backup_present": True}, "backup-disk", True, 1.0),
    ({"backup_present": False}, "backup-disk", False, 0.0),
    ({"clock_offset": 0.5}, "clock", True, 0.5),
    ({"clock_offset": -0.5}, "clock", True, -0.5),
    ({"clock_offset": 0.5001}, "clock", False, 0.5001),
    ({"clock_offset": -0.51}, "clock", False, -0.51),
    ({"software": {"vconf": True, "zoom": True}}, "software", True, 1.0),
    ({"software": {"vconf": True, "zoom": False}}, "software", False, 0.0),
]


@pytest.mark.parametrize(("changes", "name", "ok", "value"), EDGES)
def test_limit_edges(changes: dict[str, Any], name: str, ok: bool, value: float) -> None:
    """Each limit at its edge and just past it, for every criterion (loss strictly below)."""
    criterion = by_name(good(**changes))[name].criterion
    assert (criterion.ok, criterion.value) == (ok, pytest.approx(value))


@pytest.mark.parametrize(("field", "name"), [
    ("rtt_median", "link-rtt"), ("jitter", "link-jitter"), ("loss_ratio", "link-loss"),
    ("mos", "link-mos"), ("bandwidth_up", "bandwidth-up"), ("bandwidth_down", "bandwidth-down"),
    ("recording_seconds_left", "recording-space"), ("backup_present", "backup-disk"),
    ("clock_offset", "clock"),
])
def test_a_failed_measurement_fails_with_its_reason(field: str, name: str) -> None:
    """A measurement that could not be made fails (value None) and keeps its reason and limit."""
    judged = by_name(good(**{field: Failed("upsd unreachable")}))[name]
    assert (judged.criterion.ok, judged.criterion.value) == (False, None)
    assert judged.criterion.limit is not None  # the limit is still said
    assert judged.note == "upsd unreachable"


def test_failed_devices_ups_and_software_fail_with_reasons() -> None:
    """Unreadable devices, UPS and process table: failing criteria naming what could not be read."""
    judged = by_name(good(devices={"camera": DeviceFacts(Failed("sysfs unreadable"), 1)},
                          ups={"ups-1": Failed("connection refused")},
                          software={"vconf": Failed("process table unreadable")}))
    for name in ("camera", "ups-power", "ups-runtime", "software"):
        assert (judged[name].criterion.ok, judged[name].criterion.value) == (False, None), name
    assert judged["camera"].note == "sysfs unreadable"
    assert judged["ups-runtime"].note == "ups-1: connection refused"
    assert judged["software"].note == "vconf: process table unreadable"


def test_a_ups_without_runtime_cannot_prove_it() -> None:
    """A UPS on mains that reports no runtime: power passes, runtime fails unmeasured."""
    judged = by_name(good(ups={"ups-1": ups({"OL"}, None)}))
    assert (judged["ups-runtime"].criterion.ok, judged["ups-runtime"].criterion.value) == (
        False, None)
    assert judged["ups-runtime"].note == "ups-1: runtime not reported"
    assert judged["ups-power"].criterion.ok


def test_several_upses_are_judged_by_the_worst() -> None:
    """Two UPSes: the worst decides, the note names each; one unreadable makes runtime unknown."""
    judged = by_name(good(ups={"ups-1": ups({"OL"}, 20000, "ups-1"),
                               "ups-2": ups({"OB", "DISCHRG"}, 1500, "ups-2")}))
    power, runtime = judged["ups-power"], judged["ups-runtime"]
    assert (power.criterion.ok, power.criterion.value) == (False, 0.0)
    assert power.note == "ups-2: battery"
    assert (runtime.criterion.ok, runtime.criterion.value) == (False, 1500.0)
    assert runtime.note == "ups-1: 5 h 33 min; ups-2: 25 min"
    # One UPS unreadable: the bridge cannot be said to be covered.
    judged = by_name(good(ups={"ups-1": ups({"OL"}, 20000), "ups-2": Failed("timed out")}))
    assert judged["ups-runtime"].criterion.value is None
    assert judged["ups-runtime"].note == "ups-2: timed out; ups-1: 5 h 33 min"


def test_without_a_reflector_the_link_fails_and_the_room_is_still_judged() -> None:
    """No link.reflector: the six link criteria fail saying so; the room is judged anyway."""
    facts = Facts.link_failed(NO_REFLECTOR, clock_offset=0.01)
    judged = by_name(facts)
    for name in ("link-rtt", "link-jitter", "link-loss", "link-mos", "bandwidth-up",
                 "bandwidth-down"):
        assert (judged[name].criterion.ok, judged[name].note) == (False, NO_REFLECTOR)
    assert judged["clock"].criterion.ok
    assert set(judged) == {"link-rtt", "link-jitter", "link-loss", "link-mos",
                           "bandwidth-up", "bandwidth-down", "clock"}


def test_limits_come_from_the_config_and_the_order() -> None:
    """Defaults, the readiness section, the site's bandwidth and clock limit, the ordered session
    length."""
    base = {"site": "hn-01", "province": "ha-noi", "spool": {"path": "s.db"}}
    default = Limits.from_config(parse_config(base, Path("/tmp")))
    assert default == Limits()
    config = parse_config({
        **base,
        "link": {"reflector": {"host": "r", "key_file": "k"}, "required_bandwidth_mbps": 30},
        "readiness": {"max_rtt_ms": 100, "max_jitter_ms": 20, "max_loss_percent": 0.5,
                      "min_mos": 4},
        "clock": {"server": "ntp", "max_offset_seconds": 0.1},
        "session": {"length_seconds": 7200, "ups_margin_seconds": 600},
    }, Path("/tmp"))
    limits = Limits.from_config(config)
    assert limits == Limits(max_rtt_seconds=0.1, max_jitter_seconds=0.02, max_loss_ratio=0.005,
                            min_mos=4.0, min_bandwidth_bps=30e6, session_seconds=7200,
                            ups_margin_seconds=600, max_clock_offset_seconds=0.1)
    ordered = Limits.from_config(config, session_seconds=3600)  # the collector's order wins
    assert (ordered.session_seconds, ordered.ups_required_seconds) == (3600, 4200)


def test_criteria_travel_on_the_wire_unchanged() -> None:
    """Criteria (a failed one included) survive wire encode/decode as they are."""
    criteria = evaluate(good(ups={"ups-1": Failed("x")}), LIMITS)
    result = wire.TestResult("ha-noi", "hn-01", 1, 1, 1, 1.8e9, "s-1/test-2/ab", "schedule",
                             False, criteria)
    assert wire.decode(wire.encode(result), wire.Kind.TEST) == result


# --- probe rows -> facts ---------------------------------------------------------------


def report(metrics: dict[str, list[wire.Row]], error: str | None = None) -> wire.ProbeReport:
    return wire.ProbeReport(error is None, 0.01, 60.0, error, metrics)


def room_config(**extra: Any) -> Any:
    return parse_config({"site": "hn-01", "province": "ha-noi", "spool": {"path": "s.db"},
                         **extra}, Path("/tmp"))


LINK = LinkFacts(0.02, 0.002, 0.0, 4.4, {"upload": 50e6, "download": 50e6})


def test_probe_rows_become_facts() -> None:
    """Probe rows and errors read into facts: named devices, volumes, one UPS read and one not,
    clock, software."""
    config = room_config(
        devices={"camera": 1, "microphone": ["Jabra", "Jabra"]},
        recording_volume="/srv/rec", backup_volume="/media/backup",
        storage={"backup_device": "/dev/disk/by-label/BW"},
        ups=[{"name": "ups-1", "nut": {"host": "h", "ups": "a"}},
             {"name": "ups-2", "nut": {"host": "h", "ups": "b"}}],
        clock={"server": "ntp"}, software=[{"name": "vconf", "processes": ["vconf"]}])
    flags = [(("ups-1", f), 1.0 if f in ("OL", "CHRG") else 0.0) for f in wire.UPS_FLAGS]
    reports = {
        "devices": report({
            "device_count": [(("camera",), 1.0), (("microphone",), 1.0)],
            "device_present": [(("camera", "C920"), 1.0), (("microphone", "Jabra 410"), 1.0),
                               (("microphone", "Jabra"), 0.0)]},
            "microphone: missing 'Jabra'"),
        "storage": report({"recording_seconds_left": [((), 9000.0)],
                           "volume_mounted": [(("recording",), 1.0), (("backup",), 0.0)],
                           "volume_device_present": [(("backup",), 1.0)]},
                          "backup volume /media/backup not mounted"),
        "ups": report({"ups_info": [(("ups-1", "nut", "Smart-UPS"), 1.0)],
                       "ups_status_flag": flags, "ups_runtime_seconds": [(("ups-1",), 2580.0)]},
                      "ups-2: NutError: cannot connect"),
        "clock": report({}, "SntpError: ntp: timed out"),
        "software": report({"software_running": [(("vconf",), 1.0)]}),
    }
    facts = build_facts(config, LINK, reports)
    assert facts.devices == {"camera": DeviceFacts(1, 1),
                             "microphone": DeviceFacts(1, 2, ("Jabra",))}
    assert facts.recording_seconds_left == 9000.0
    assert facts.backup_present is False
    assert facts.details["backup-disk"] == "backup volume /media/backup not mounted"
    reading = facts.ups["ups-1"]
    assert isinstance(reading, UpsReading)
    assert (reading.power_state, reading.runtime_seconds) == ("mains", 2580.0)
    assert facts.ups["ups-2"] == Failed("NutError: cannot connect")  # named once, not twice
    assert facts.clock_offset == Failed("SntpError: ntp: timed out")
    assert facts.software == {"vconf": True}
    judged = by_name(facts)
    assert judged["microphone"].note == "missing 'Jabra'"
    assert judged["ups-runtime"].note == "ups-2: NutError: cannot connect; ups-1: 43 min"


def test_a_probe_that_did_not_run_fails_its_criteria() -> None:
    """A configured part whose probe gave no report fails rather than disappearing."""
    config = room_config(devices={"camera": 1}, recording_volume="/srv/rec",
                         clock={"server": "ntp"})
    facts = build_facts(config, LINK, {})
    assert isinstance(facts.devices["camera"].found, Failed)
    assert isinstance(facts.recording_seconds_left, Failed)
    assert isinstance(facts.clock_offset, Failed)


# --- the checklist ----------------------------------------------------------------------


def full(facts: Facts, limits: Limits = LIMITS) -> FullTest:
    return FullTest(judge(facts, limits), facts, limits, 1.8e9, 1.8e9 + 20)


def test_checklist_lines_in_vietnamese_and_english() -> None:
    """The checklist lines of the issue, word for word, in both languages, and the verdicts."""
    test = full(good(rtt_median=0.023, ups={"ups-1": ups({"OL"}, 720)}))
    lines = {j.criterion.name: (checklist.line(j), checklist.line(j, "en")) for j in test.judged}
    assert lines["link-rtt"] == ("✓ Độ trễ khứ hồi: 23 ms (giới hạn ≤ 150 ms)",
                                 "✓ Round-trip time: 23 ms (limit ≤ 150 ms)")
    assert lines["ups-runtime"] == (
        "✗ Thời gian lưu điện: 12 phút (cần ≥ 3 giờ 15 phút) → Sạc đầy hoặc thay ắc quy UPS; "
        "giảm tải",
        "✗ UPS runtime: 12 min (needs ≥ 3 h 15 min) → Charge or replace the battery; cut load")
    assert lines["link-loss"][0] == "✓ Tỷ lệ mất gói: 0.0 % (giới hạn < 1 %)"
    assert lines["bandwidth-up"][0] == "✓ Băng thông tải lên: 50.0 Mbit/s (cần ≥ 5 Mbit/s)"
    assert lines["link-mos"][1] == "✓ Estimated MOS: 4.40 (needs ≥ 3.6)"
    assert lines["clock"][1] == "✓ Clock offset: +10 ms (limit ±500 ms)"
    assert lines["ups-power"][0] == "✓ Nguồn điện lưới: có điện lưới"
    assert lines["recording-space"][1] == "✓ Recording time left: 5 h 33 min (needs ≥ 3 h)"
    assert checklist.verdict(test) == "CHƯA SẴN SÀNG: 1 tiêu chí không đạt"
    assert checklist.verdict(test, "en") == "NOT READY: 1 criterion failed"
    assert checklist.verdict(full(good()), "en") == "READY"


def test_checklist_says_what_was_not_measured_and_not_checked() -> None:
    """Header, an unmeasured criterion with reason and advice, a not-configured one, the verdict."""
    test = full(good(clock_offset=Failed("SntpError: ntp: timed out"), software={}))
    text = checklist.render(test, "local/ab12", "ha-noi/hn-01")
    assert text[0] == "Kiểm tra điểm cầu ha-noi/hn-01, phiên 3 giờ, mã local/ab12"
    assert ("✗ Sai lệch đồng hồ: không đo được (giới hạn ±500 ms) — SntpError: ntp: timed out "
            "→ Đồng bộ giờ với máy chủ NTP") in text
    assert "○ Phần mềm hội nghị: không kiểm tra (chưa cấu hình)" in text
    assert text[-1] == "CHƯA SẴN SÀNG: 1 tiêu chí không đạt"


def test_checklist_json_form() -> None:
    """The --json form: ids, verdict, per criterion value, limit, unit, comparator, label,
    advice."""
    test = full(good(backup_present=False))
    body = checklist.to_json(test, test_id="local/ab12", trigger="technician",
                             province="ha-noi", site="hn-01", lang="en", recorded=True)
    assert body["passed"] is False and body["test_id"] == "local/ab12"
    assert body["ts"] == 1.8e9 + 20 and body["session_seconds"] == 10800
    backup = next(c for c in body["criteria"] if c["name"] == "backup-disk")
    assert backup == {"name": "backup-disk", "ok": False, "value": 0.0, "limit": 1.0,
                      "unit": "bool", "op": "=", "label": "Backup disk",
                      "advice": "Plug in and mount the backup disk", "note": None}
    assert body["not_checked"] == ["microphone", "speaker"]
