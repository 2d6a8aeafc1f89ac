"""The schedule: YAML and iCalendar in, line-precise problems out, all-or-nothing import.

Every case says what input was tried. Time is a fixed ``NOW`` (1 Nov 2026, 08:00 in
Vietnam); sessions are in December 2026, so "past" and "close" are chosen, never measured.
"""

from __future__ import annotations

import json
import random
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from collector.inventory import load_inventory
from collector.readiness.model import VIETNAM, Session
from collector.readiness.store import Store
from collector.schedule import (
    ImportResult,
    check_document,
    check_file,
    detect_kind,
    import_document,
    import_file,
    parse_duration,
    parse_ics,
    uid_slug,
)
from collector.schedule.cli import main
from collector.schedule.durations import format_duration

FIXTURES = Path(__file__).parent / "fixtures" / "schedule"
INVENTORY = load_inventory(FIXTURES / "inventory.yaml")
NOW = datetime(2026, 11, 1, 8, 0, tzinfo=VIETNAM)
NOW_TEXT = "2026-11-01T08:00:00+07:00"


def check_yaml(text: str, *, existing: tuple[Session, ...] = (),
               now: datetime = NOW) -> ImportResult:
    return check_document(textwrap.dedent(text), "yaml", INVENTORY, source="lich.yaml",
                          existing=existing, now=now)


def check_ics(text: str | bytes, *, existing: tuple[Session, ...] = (),
              now: datetime = NOW) -> ImportResult:
    if isinstance(text, str):
        text = textwrap.dedent(text).replace("\n", "\r\n")
    return check_document(text, "ics", INVENTORY, source="lich.ics", existing=existing,
                          now=now)


def found(result: ImportResult) -> list[tuple[int | None, str]]:
    return [(i.line, i.code) for i in result.issues]


def stored_session(**changes: object) -> Session:
    base = dict(id="tcd-stored", title="Phiên đã lưu",
                start=datetime(2026, 12, 5, 8, 0, tzinfo=VIETNAM), duration=timedelta(hours=3),
                host="dt-trung-tam", members=("dt-sa-dec",), national=(), source="old.yaml:4")
    base.update(changes)
    return Session(**base)  # type: ignore[arg-type]


ONE = """\
sessions:
  - id: tcd-a
    title: "Tiếp công dân"
    start: 2026-12-05T08:00:00+07:00
    duration: 3h
    host: dt-trung-tam
    members: [dt-sa-dec, dt-hong-ngu]
"""


# --------------------------------------------------------------------------------------
# YAML: what is read


def test_the_yaml_fixture_reads_every_field_in_vietnam_time() -> None:
    """schedule.yaml: ISO with +07:00, day-first '12/12/2026 14:00', no offset, 2h30m,
    minutes (150), a folded block title, a national bridge: all read, all UTC+7."""
    result = check_file(FIXTURES / "schedule.yaml", INVENTORY, now=NOW)
    assert result.ok and result.issues == ()
    first, second, third = result.sessions
    assert first == Session(
        id="tcd-2026-12-05", title="Tiếp công dân định kỳ tháng 12/2026 – Chủ tịch UBND tỉnh",  # noqa: RUF001 (as exported)
        start=datetime(2026, 12, 5, 8, tzinfo=VIETNAM), duration=timedelta(hours=3),
        host="dt-trung-tam", members=("dt-sa-dec", "dt-hong-ngu", "dt-tram-chim"),
        national=("tw-tiep-cong-dan",), source=f"{FIXTURES / 'schedule.yaml'}:4")
    assert second.start == datetime(2026, 12, 12, 14, tzinfo=VIETNAM)
    assert second.duration == timedelta(hours=2, minutes=30)
    assert second.members == ("dt-thap-muoi", "dt-lai-vung")
    assert third.title == "Đối thoại trực tuyến với công dân xã Lấp Vò và xã Cái Bè"
    assert third.start == datetime(2026, 12, 19, 8, tzinfo=VIETNAM)
    assert third.duration == timedelta(minutes=150)
    for session in result.sessions:
        assert session.start.utcoffset() == timedelta(hours=7)


@pytest.mark.parametrize("text,expected", [
    (180, timedelta(hours=3)), ("3h", timedelta(hours=3)), ("2h30m", timedelta(minutes=150)),
    ("2h 30m", timedelta(minutes=150)), ("90m", timedelta(minutes=90)),
    ("90 min", timedelta(minutes=90)), ("1.5h", timedelta(minutes=90)),
    ("PT3H30M", timedelta(minutes=210)), ("03:00", timedelta(hours=3)),
    ("3 giờ 30 phút", timedelta(minutes=210)), ("180", timedelta(hours=3)),
])
def test_durations_as_people_write_them(text: object, expected: timedelta) -> None:
    """Every documented way to write a length, and the short form read back."""
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["", "3 hours please", "h", "PT", "3x", True, 2.5, None])
def test_durations_that_are_refused(text: object) -> None:
    """Words, bare units, floats without a unit, booleans: not a duration."""
    with pytest.raises(ValueError):
        parse_duration(text)


# --------------------------------------------------------------------------------------
# YAML: bad input, line by line


def test_missing_fields_are_each_reported_at_the_session_line() -> None:
    """A session with only an id (line 3): title, start, duration, host, members missing,
    each reported on line 3; a complete session after it is still read."""
    result = check_yaml("""\
        sessions:
          # chỉ có mã phiên
          - id: tcd-thieu
          - id: tcd-a
            title: "Tiếp công dân"
            start: 2026-12-05T08:00:00+07:00
            duration: 3h
            host: dt-trung-tam
            members: [dt-sa-dec, dt-hong-ngu]
        """)
    assert found(result) == [(3, "missing_field")] * 5
    assert [i.en for i in result.issues] == [
        "missing title", "missing start", "missing duration", "missing host",
        "missing members"]
    assert [s.id for s in result.sessions] == ["tcd-a"]
    assert not result.ok


@pytest.mark.parametrize("line,value,code", [
    (4, "start: ngày mai", "bad_start"),
    (4, "start: 2026-12-05", "date_only"),
    (4, "start: 2026-13-05T08:00", "bad_start"),
    (4, "start: 1764900000", "bad_start"),
    (5, "duration: ba giờ", "bad_duration"),
    (5, "duration: 0", "duration_range"),
    (5, "duration: -30", "duration_range"),
    (5, "duration: 3", "duration_range"),  # bare numbers are minutes: 3 minutes
    (5, "duration: 13h", "duration_range"),
    (2, "id: Tiep_Cong_Dan", "bad_id"),
    (2, "id: tcd-" + "x" * 40, "bad_id"),
    (3, 'title: "   "', "bad_title"),
    (3, "title: [a, b]", "bad_type"),
    (7, "members: dt-sa-dec", "bad_type"),
    (7, "members: []", "no_members"),
    (7, "members:", "no_members"),
    (7, "members: [[dt-sa-dec]]", "bad_type"),
])
def test_one_bad_value_is_reported_on_its_line(line: int, value: str, code: str) -> None:
    """One field of a good session replaced by a bad value: one error, on that field's line."""
    key = value.split(":", 1)[0]
    lines = textwrap.dedent(ONE).splitlines()
    index = next(i for i, text in enumerate(lines) if text.strip().startswith(f"{key}:")
                 or text.strip().startswith(f"- {key}:"))
    prefix = "  - " if lines[index].lstrip().startswith("-") else "    "
    lines[index] = prefix + value
    result = check_yaml("\n".join(lines) + "\n")
    assert found(result) == [(line, code)], result.issues
    assert result.sessions == ()


def test_every_problem_of_a_file_is_collected_not_just_the_first() -> None:
    """One file with an unknown key, a key given twice, an unknown bridge on its own list
    line, a member listed twice, a host that is a member bridge, a national bridge among the
    members, a member bridge as national, and the host repeated among the members."""
    result = check_yaml("""\
        sessions:
          - id: tcd-a
            title: Phiên A
            start: 2026-12-05 08:00
            duration: 3h
            host: dt-trung-tam
            members:
              - dt-sa-dec
              - dt-xyz
              - dt-sa-dec
              - dt-trung-tam
            colour: đỏ
            duration: 2h
          - id: tcd-b
            title: Phiên B
            start: 2026-12-06 08:00
            duration: 3h
            host: dt-hong-ngu
            members: [tw-tiep-cong-dan, dt-tram-chim]
            national: [dt-thap-muoi]
        """)
    assert found(result) == [
        (9, "unknown_bridge"), (10, "listed_twice"), (11, "listed_twice"),
        (12, "unknown_key"), (13, "duplicate_key"),
        (18, "host_not_central"), (19, "member_is_national"), (20, "national_not_national"),
    ]
    unknown = result.issues[0]
    assert unknown.format() == ("lich.yaml:9: lỗi/error: điểm cầu không có trong danh mục "
                                "'dt-xyz' / unknown bridge 'dt-xyz' (not in the inventory)")
    assert unknown.format("en") == \
        "lich.yaml:9: error: unknown bridge 'dt-xyz' (not in the inventory)"
    assert unknown.session_id == "tcd-a"
    assert result.issues[4].en == "key 'duration' given twice (first on line 5)"


def test_a_central_bridge_as_member_is_a_warning_only() -> None:
    """The Inspectorate's room (central level) listed as a member of a session hosted by the
    Citizen Reception Office: allowed, with a warning on its line."""
    result = check_yaml(ONE.replace("[dt-sa-dec, dt-hong-ngu]", "[dt-sa-dec, dt-thanh-tra]"))
    assert result.ok
    assert found(result) == [(7, "member_is_central")]
    assert result.warnings[0].severity == "warning"


def test_a_duplicate_id_points_at_the_first_one() -> None:
    """The same id on lines 2 and 8 (different days, so no overlap): error on line 8."""
    result = check_yaml(ONE + """\
  - id: tcd-a
    title: "Lần hai"
    start: 2026-12-20T08:00:00+07:00
    duration: 3h
    host: dt-trung-tam
    members: [dt-cai-be]
""")
    assert found(result) == [(8, "duplicate_id")]
    assert result.issues[0].en == "session id 'tcd-a' is already used on line 2"


@pytest.mark.parametrize("text,line", [
    ("sessions:\n  - id: a\n    title: [unclosed\n", 4),
    ("sessions:\n  - id: a\n   title: x\n", 3),
    ("sessions:\n  - id: a\n\ttitle: x\n", 3),
    ("sessions: []\n---\nsessions: []\n", 2),
])
def test_yaml_syntax_errors_give_the_line(text: str, line: int) -> None:
    """An unclosed flow list, a bad indent, a tab, two documents: 'not valid YAML' with the
    line PyYAML's mark points at; nothing read."""
    result = check_document(text, "yaml", INVENTORY, source="lich.yaml", now=NOW)
    assert found(result) == [(line, "yaml_syntax")]
    assert result.sessions == ()


@pytest.mark.parametrize("text,expected", [
    ("", [(1, "yaml_shape")]),
    ("- id: a\n", [(1, "yaml_shape")]),
    ("sesions: []\n", [(1, "unknown_key"), (1, "yaml_shape")]),
    ("sessions: 3\n", [(1, "yaml_shape")]),
    ("sessions:\n  - tcd-a\n", [(2, "not_mapping")]),
])
def test_a_file_that_is_not_a_schedule(text: str, expected: list) -> None:
    """Empty file, a bare list, a misspelt top key, a number, a list of strings."""
    assert found(check_document(text, "yaml", INVENTORY, now=NOW)) == expected


def test_an_empty_session_list_is_a_valid_empty_schedule() -> None:
    """'sessions:' with nothing (null) or []: valid, nothing to store."""
    for text in ("sessions:\n", "sessions: []\n"):
        result = check_document(text, "yaml", INVENTORY, now=NOW)
        assert result.ok and result.sessions == ()


def test_a_yaml_file_that_is_not_utf8() -> None:
    """A schedule saved in Windows-1258 (the old Vietnamese code page): line of the first
    byte that is not UTF-8."""
    data = b"sessions:\n  - id: a\n    title: Ti\xea\xecp c\xf4ng d\xe2n\n"
    result = check_document(data, "yaml", INVENTORY, now=NOW)
    assert found(result) == [(3, "read_error")]


# --------------------------------------------------------------------------------------
# Time zone and time policies


@pytest.mark.parametrize("start", ["2026-12-05T08:00:00+07:00", "2026-12-05T08:00+07",
                                   "2026-12-05 08:00", "2026-12-05T08:00:00+0700",
                                   "05/12/2026 08:00", "2026-12-05T08:00:00.000+07:00"])
def test_vietnam_time_in_any_spelling_is_accepted(start: str) -> None:
    """+07:00, +07, +0700, no offset, day first, fractional seconds: all 08:00 in Vietnam."""
    result = check_yaml(ONE.replace("2026-12-05T08:00:00+07:00", start))
    assert result.ok, result.issues
    assert result.sessions[0].start == datetime(2026, 12, 5, 8, tzinfo=VIETNAM)
    assert result.sessions[0].start.tzinfo == VIETNAM


@pytest.mark.parametrize("start,written", [
    ("2026-12-05T01:00:00Z", "2026-12-05T01:00:00Z"),
    ("2026-12-05T01:00:00+00:00", "2026-12-05T01:00:00+00:00"),
    ("2026-12-05T09:00:00+08:00", "2026-12-05T09:00:00+08:00"),
])
def test_an_explicit_offset_other_than_utc7_is_rejected(start: str, written: str) -> None:
    """The same instant (08:00 in Vietnam) written in UTC or UTC+8: rejected on the start
    line, and the message says the Vietnam time it would have been."""
    result = check_yaml(ONE.replace("2026-12-05T08:00:00+07:00", start))
    assert found(result) == [(4, "wrong_tz")]
    assert result.issues[0].en == (
        f"start {written} is not in Vietnam time (UTC+7); it is 05/12/2026 08:00 in Vietnam: "
        "write Vietnam time (+07:00)")
    assert not result.ok


def test_a_start_in_the_past_is_rejected() -> None:
    """A new session on 1 Nov 2026 at 07:59 when it is 08:00: rejected on its start line."""
    result = check_yaml(ONE.replace("2026-12-05T08:00:00+07:00", "2026-11-01T07:59:00+07:00"))
    assert found(result) == [(4, "past_start")]
    assert "01/11/2026 07:59" in result.issues[0].en


def test_a_stored_session_reimported_unchanged_after_it_started_is_accepted() -> None:
    """Import, then time passes beyond the start, then the same file again: no error, the
    session is 'unchanged' (nothing to write); changing it instead is refused."""
    first = check_yaml(ONE)
    assert first.ok
    later = NOW + timedelta(days=40)
    again = check_yaml(ONE, existing=first.sessions, now=later)
    assert again.ok and again.unchanged == {"tcd-a"} and again.changed == ()
    changed = check_yaml(ONE.replace("3h", "2h"), existing=first.sessions, now=later)
    assert found(changed) == [(2, "started_changed")]


def test_skip_past_leaves_old_sessions_out_with_a_warning(tmp_path: Path) -> None:
    """A schedule file imported at every collector start, into a fresh database after its
    first session (5 Dec) was held: with past='skip' the two later ones are stored and the
    first is a warning; then the held session edited in the file: kept as stored, warned."""
    later = datetime(2026, 12, 6, 8, tzinfo=VIETNAM)
    path = FIXTURES / "schedule.yaml"
    assert found(check_file(path, INVENTORY, now=later)) == [(6, "past_start")]
    with Store(tmp_path / "bw.sqlite") as store:
        result = import_file(store, path, INVENTORY, now=later, past="skip")
        assert result.ok and found(result) == [(6, "past_skipped")]
        assert [s.id for s in store.sessions()] == ["tcd-2026-12-12", "tcd-2026-12-19"]
        # the first session had been stored before it was held; now its title is edited
        held = check_file(path, INVENTORY, now=NOW).sessions[0]
        store.upsert_sessions([held])
        edited = path.read_text(encoding="utf-8").replace("Chủ tịch UBND tỉnh", "Chủ tịch (sửa)")
        result = import_document(store, edited, "yaml", INVENTORY, now=later, past="skip")
        assert result.ok and found(result) == [(4, "started_kept")]
        assert store.session("tcd-2026-12-05") == held
    with pytest.raises(ValueError, match="past"):
        check_file(path, INVENTORY, now=NOW, past="ignore")


def test_a_session_close_to_its_start_warns_about_passed_checkpoints() -> None:
    """A session starting 10 h from now: the T-3 d and T-24 h checkpoints have passed (a
    warning, it still imports); T-2 h has not."""
    result = check_yaml(ONE.replace("2026-12-05T08:00:00+07:00", "2026-11-01T18:00:00+07:00"))
    assert result.ok
    assert found(result) == [(4, "late_checkpoint")]
    assert "confirm, test-1" in result.issues[0].en


# --------------------------------------------------------------------------------------
# Overlaps


TWO = ONE + """\
  - id: tcd-b
    title: "Phiên B"
    start: {start}
    duration: {duration}
    host: {host}
    members: [{members}]
"""


@pytest.mark.parametrize("start,duration,host,members,expected", [
    # 10:00-12:00 overlaps 08:00-11:00 and shares Sa Đéc
    ("2026-12-05T10:00:00+07:00", "2h", "dt-thanh-tra", "dt-sa-dec", [(10, "overlap")]),
    # the same host at the same time, different members
    ("2026-12-05T10:00:00+07:00", "2h", "dt-trung-tam", "dt-cai-be", [(10, "host_overlap")]),
    # back to back (11:00) shares everything: fine
    ("2026-12-05T11:00:00+07:00", "2h", "dt-trung-tam", "dt-sa-dec", []),
    # at the same time, no bridge in common: fine
    ("2026-12-05T08:00:00+07:00", "3h", "dt-thanh-tra", "dt-cai-be", []),
    # starts one minute before the end of the other
    ("2026-12-05T10:59:00+07:00", "1h", "dt-thanh-tra", "dt-hong-ngu", [(10, "overlap")]),
])
def test_a_bridge_cannot_be_in_two_sessions_at_once(start: str, duration: str, host: str,
                                                    members: str, expected: list) -> None:
    """Session A is 08:00-11:00 at dt-trung-tam with Sa Đéc and Hồng Ngự; B varies."""
    result = check_yaml(TWO.format(start=start, duration=duration, host=host, members=members))
    assert found(result) == expected
    if expected:
        assert "'tcd-a' on line 4 (05/12/2026 08:00-11:00)" in result.issues[0].en


def test_an_overlap_with_a_stored_session_is_rejected() -> None:
    """A stored session 09:00-10:00 with Hồng Ngự; the new one 08:00-11:00 with Hồng Ngự."""
    stored = stored_session(start=datetime(2026, 12, 5, 9, tzinfo=VIETNAM),
                            duration=timedelta(hours=1), host="dt-thanh-tra",
                            members=("dt-hong-ngu",))
    result = check_yaml(ONE, existing=(stored,))
    assert found(result) == [(4, "overlap")]
    assert result.issues[0].en == (
        "bridge(s) 'dt-hong-ngu' already in session 'tcd-stored' in the store "
        "(05/12/2026 09:00-10:00) at the same time")


def test_moving_a_stored_session_is_not_an_overlap_with_itself() -> None:
    """The stored tcd-a is re-imported one hour later: it replaces itself, no overlap."""
    first = check_yaml(ONE).sessions
    moved = check_yaml(ONE.replace("T08:00", "T09:00"), existing=first)
    assert moved.ok and moved.changed[0].start.hour == 9


def test_overlaps_are_checked_even_when_the_session_has_other_errors() -> None:
    """B overlaps A on Sa Đéc and also names an unknown bridge: both errors are reported."""
    result = check_yaml(TWO.format(start="2026-12-05T10:00:00+07:00", duration="2h",
                                   host="dt-thanh-tra", members="dt-sa-dec, dt-xyz"))
    assert found(result) == [(10, "overlap"), (13, "unknown_bridge")]


# --------------------------------------------------------------------------------------
# iCalendar exports


def test_a_google_calendar_export() -> None:
    """Google: UTC 'Z' times and TZID=Asia/Ho_Chi_Minh, room resources named as in the
    inventory (folded inside the name), a person attendee, LOCATION naming the central room,
    a VALARM with its own DESCRIPTION, a cancelled event (skipped, a warning)."""
    result = check_file(FIXTURES / "google-export.ics", INVENTORY, now=NOW)
    assert result.ok, result.issues
    assert found(result) == [(77, "cancelled_skipped")]
    first, second = result.sessions
    assert first.id == "3k9v0c5f7m2q8r1t6u4w0x9y2z-google-com"
    assert first.title == "Tiếp công dân định kỳ tháng 12/2026 – Chủ tịch UBND tỉnh"  # noqa: RUF001 (as exported)
    assert first.start == datetime(2026, 12, 5, 8, tzinfo=VIETNAM)
    assert first.start.tzinfo == VIETNAM
    assert first.duration == timedelta(hours=3)
    assert (first.host, first.members, first.national) == (
        "dt-trung-tam", ("dt-sa-dec", "dt-hong-ngu"), ())
    assert first.source.endswith("google-export.ics:20 UID 3k9v0c5f7m2q8r1t6u4w0x9y2z@google.com")
    # CN=dt-tram-chim (folded in the middle), a mailbox named after the site, a national
    # room resource named as in the inventory
    assert (second.host, second.members, second.national) == (
        "dt-trung-tam", ("dt-tram-chim", "dt-thap-muoi"), ("tw-tiep-cong-dan",))
    assert second.start == datetime(2026, 12, 12, 14, tzinfo=VIETNAM)
    assert second.duration == timedelta(hours=2, minutes=30)


def test_attendee_lines_are_physical_lines_of_the_export() -> None:
    """Each bridge found among Google's attendees keeps the line its ATTENDEE starts on,
    counted in physical lines of the file (folded lines before it count)."""
    parsed = parse_ics((FIXTURES / "google-export.ics").read_bytes(), "g.ics", INVENTORY)
    first = parsed.drafts[0]
    assert first.line == 20 and first.lines["start"] == 21 and first.lines["title"] == 45
    assert first.members == [("dt-sa-dec", 29), ("dt-hong-ngu", 32)]


def test_an_outlook_export() -> None:
    """Outlook: TZID 'SE Asia Standard Time' defined by its VTIMEZONE (quoted and not),
    quoted CN with the site name, mailto local part = site id, a long hex UID folded over
    two lines, LOCATION naming two central rooms with X-BRIDGEWATCH-HOST choosing one."""
    result = check_file(FIXTURES / "outlook-export.ics", INVENTORY, now=NOW)
    assert result.ok and result.issues == ()
    first, second = result.sessions
    assert first.start == datetime(2026, 12, 10, 8, tzinfo=VIETNAM)
    assert first.duration == timedelta(hours=3)
    assert (first.host, first.members) == ("dt-trung-tam", ("dt-lai-vung", "dt-lap-vo"))
    assert first.title == "Tiếp công dân trực tuyến tháng 12/2026 – xã Lai Vung, xã Lấp Vò"  # noqa: RUF001 (as exported)
    uid = ("040000008200E00074C5B7101A82E00800000000B0E2A1C4F35BDB01000000000000000010000000"
           "A1B2C3D4E5F60718293A4B5C6D7E8F90")
    assert first.id == uid_slug(uid) and len(first.id) <= 40
    assert first.id != second.id
    assert (second.host, second.members) == ("dt-trung-tam", ("dt-cai-be",))
    assert second.start == datetime(2026, 12, 17, 14, tzinfo=VIETNAM)


def test_bridgewatch_properties() -> None:
    """X-BRIDGEWATCH-ID/HOST/MEMBERS/NATIONAL: MEMBERS given on two lines and with an
    escaped comma, TZID=Asia/Saigon with DURATION, a floating time with DTEND."""
    result = check_file(FIXTURES / "bridgewatch.ics", INVENTORY, now=NOW)
    assert result.ok and result.issues == ()
    first, second = result.sessions
    assert first.id == "tcd-2027-01-09"
    assert first.members == ("dt-sa-dec", "dt-hong-ngu", "dt-tram-chim", "dt-thap-muoi")
    assert first.national == ("tw-tiep-cong-dan",)
    assert first.duration == timedelta(hours=3, minutes=30)
    assert first.title.endswith("tiếp tại điểm cầu trung tâm")
    assert second.start == datetime(2027, 1, 16, 14, tzinfo=VIETNAM)
    assert second.members == ("dt-lai-vung", "dt-lap-vo")


def test_every_bad_event_of_a_calendar_is_reported_on_its_line() -> None:
    """bad-mixed.ics (a folded DESCRIPTION shifts the lines): TZID=Europe/London, an unknown
    bridge on a folded MEMBERS line, an overlap with the first event, an RRULE, an all-day
    event without duration, DTEND with DURATION, an unknown TZID, a bad X-BRIDGEWATCH-ID
    without SUMMARY, an unreadable DTSTART."""
    result = check_file(FIXTURES / "bad-mixed.ics", INVENTORY, now=NOW)
    assert found(result) == [
        (18, "wrong_tz"), (21, "unknown_bridge"), (27, "overlap"), (37, "ics_recurring"),
        (41, "missing_field"), (44, "ics_all_day"), (53, "ics_end_and_duration"),
        (60, "ics_unknown_tzid"), (65, "missing_field"), (67, "bad_id"),
        (76, "ics_property")]
    messages = [i.en for i in result.issues]
    assert messages[0].startswith("start 2026-12-06 08:00 TZID=Europe/London is not in "
                                  "Vietnam time (UTC+7); it is 06/12/2026 15:00 in Vietnam")
    assert messages[2] == ("bridge(s) 'dt-sa-dec' already in session 'ok-a-bridgewatch' on "
                           "line 10 (05/12/2026 08:00-11:00) at the same time")
    assert messages[4] == "missing DTEND/DURATION"
    assert messages[8] == "missing SUMMARY"
    assert not result.ok


EVENT = """\
    BEGIN:VCALENDAR
    VERSION:2.0
    PRODID:-//test//EN
    BEGIN:VEVENT
    UID:a@test
    SUMMARY:Phiên thử
    DTSTART;TZID=Asia/Ho_Chi_Minh:20261205T080000
    DURATION:PT3H
    {bridges}
    END:VEVENT
    END:VCALENDAR
    """


@pytest.mark.parametrize("tzid", ["Asia/Ho_Chi_Minh", "Asia/Saigon", "Asia/Bangkok"])
def test_utc7_zones_are_vietnam_time(tzid: str) -> None:
    """The three TZIDs calendars use for UTC+7 without a VTIMEZONE block."""
    result = check_ics(EVENT.format(bridges=BRIDGES).replace("Asia/Ho_Chi_Minh", tzid))
    assert result.ok
    assert result.sessions[0].start == datetime(2026, 12, 5, 8, tzinfo=VIETNAM)
    assert result.sessions[0].start.tzinfo == VIETNAM


BRIDGES = "X-BRIDGEWATCH-HOST:dt-trung-tam\n    X-BRIDGEWATCH-MEMBERS:dt-sa-dec"


@pytest.mark.parametrize("extra,expected", [
    ("DTSTART:20261206T010000Z", [(11, "ics_repeated")]),
    ("SUMMARY:Lần hai", [(11, "ics_repeated")]),
    ("RDATE;TZID=Asia/Ho_Chi_Minh:20261212T080000", [(11, "ics_recurring")]),
    ("RECURRENCE-ID:20261205T010000Z", [(11, "ics_recurring")]),
    ("X-BRIDGEWATCH-HOST:dt-thanh-tra", [(11, "ics_host_list")]),
    ("X-BRIDGEWATCH-ID:", [(4, "missing_field")]),
])
def test_one_bad_property_of_an_event(extra: str, expected: list) -> None:
    """A good event (DTSTART line 7, DURATION line 8, X-BRIDGEWATCH-* lines 9-10) plus one
    line 11: a second DTSTART or SUMMARY, an RDATE, a RECURRENCE-ID override, a second host,
    an empty X-BRIDGEWATCH-ID (the id is then missing)."""
    result = check_ics(EVENT.format(bridges=BRIDGES + "\n    " + extra))
    assert found(result) == expected
    assert result.sessions == ()


@pytest.mark.parametrize("change,expected", [
    (("DURATION:PT3H", "DTEND;TZID=Asia/Ho_Chi_Minh:20261205T070000"), [(8, "duration_range")]),
    (("DURATION:PT3H", "DURATION:PT13H"), [(8, "duration_range")]),
    (("DURATION:PT3H", "DURATION:P1D"), [(8, "duration_range")]),
    (("20261205T080000", "19991205T080000"), [(7, "ics_property")]),
    (("20261205T080000", "20261031T080000"), [(7, "past_start")]),
    (("20261205T080000", "20261205T080000\n    X-FOLDED:a\n     b"), []),
])
def test_one_bad_time_of_an_event(change: tuple[str, str], expected: list) -> None:
    """DTEND before DTSTART, 13 h, one day, a start in 1999, one in the past; a folded
    unknown property after DTSTART changes nothing."""
    result = check_ics(EVENT.format(bridges=BRIDGES).replace(*change))
    assert found(result) == expected


def test_several_central_attendees_without_a_named_host() -> None:
    """Both central rooms invited as attendees and no X-BRIDGEWATCH-HOST: which one hosts
    is unknown; error on the second central attendee's line."""
    result = check_ics(EVENT.format(bridges="ATTENDEE;CN=dt-trung-tam:mailto:a@x.vn\n"
                                            "    ATTENDEE;CN=dt-thanh-tra:mailto:b@x.vn\n"
                                            "    ATTENDEE;CN=dt-sa-dec:mailto:c@x.vn"))
    assert found(result) == [(10, "ics_several_hosts")]


def test_an_event_with_no_bridge_at_all() -> None:
    """Only people invited: no host, no members, said in the calendar's own terms."""
    result = check_ics(EVENT.format(bridges="ATTENDEE;CN=Nguyễn Văn An:mailto:an@x.vn"))
    assert found(result) == [(4, "missing_field"), (4, "missing_field")]
    assert [i.en for i in result.issues] == ["missing X-BRIDGEWATCH-HOST / ATTENDEE",
                                             "missing X-BRIDGEWATCH-MEMBERS / ATTENDEE"]


@pytest.mark.parametrize("text,expected", [
    # END:VEVENT missing: the END:VCALENDAR closes the wrong component
    ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:a\nEND:VCALENDAR\n", [(4, "ics_structure")]),
    # no END:VCALENDAR at all (icalendar alone would read an empty calendar)
    ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:a\nEND:VEVENT\n", [(1, "ics_structure")]),
    ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID a\nEND:VEVENT\nEND:VCALENDAR\n", [(3, "ics_syntax")]),
    ("UID:a\nBEGIN:VCALENDAR\nEND:VCALENDAR\n", [(1, "ics_structure")]),
    (" folded first\nBEGIN:VCALENDAR\nEND:VCALENDAR\n", [(1, "ics_syntax")]),
    ("", [(1, "ics_empty")]),
    ("hello\n", [(1, "ics_syntax")]),
])
def test_a_broken_calendar_is_refused_with_the_line(text: str, expected: list) -> None:
    """Missing END lines, a line without ':', a property outside the calendar, a folded
    first line, an empty file, plain text: structure errors, no session read."""
    result = check_ics(text.replace("\n", "\r\n").encode())
    assert found(result) == expected
    assert result.sessions == ()


def test_a_calendar_that_is_not_utf8_names_the_physical_line() -> None:
    """A SUMMARY folded over lines 6-7 whose second part is Windows-1258: line 7."""
    text = EVENT.format(bridges="X-BRIDGEWATCH-HOST:dt-trung-tam")
    data = textwrap.dedent(text).replace("\n", "\r\n").encode()
    data = data.replace("SUMMARY:Phiên thử".encode(),
                        b"SUMMARY:Phi\xc3\xaan\r\n th\xfd\xd2")
    result = check_ics(data)
    assert found(result) == [(7, "ics_encoding")]


def test_a_fold_inside_a_utf8_character_and_lf_line_ends() -> None:
    """Exporters fold at 75 octets, sometimes inside a character ('ế' split after its first
    byte), and some write LF only: the title is whole and the lines after still count."""
    text = textwrap.dedent(EVENT.format(
        bridges="X-BRIDGEWATCH-HOST:dt-trung-tam\n    X-BRIDGEWATCH-MEMBERS:dt-xyz"))
    data = text.encode().replace("SUMMARY:Phiên thử".encode(),
                                 b"SUMMARY:Ti" + "ế".encode()[:1] + b"\n " +
                                 "ế".encode()[1:] + "p công dân".encode())
    result = check_ics(data)
    assert found(result) == [(11, "unknown_bridge")]
    parsed = parse_ics(data, "x.ics", INVENTORY)
    assert parsed.drafts[0].title == "Tiếp công dân"


def test_uid_slugs_are_stable_and_short() -> None:
    """Google UIDs become readable slugs; long or non-ASCII UIDs a bounded slug with a hash,
    the same every time (so a re-import replaces the session instead of adding one)."""
    assert uid_slug("3k9v0c5f7m2q8r1t6u4w0x9y2z@google.com") == \
        "3k9v0c5f7m2q8r1t6u4w0x9y2z-google-com"
    long_uid = "040000008200E00074C5B7101A82E008" + "0" * 80
    assert uid_slug(long_uid) == uid_slug(long_uid)
    assert len(uid_slug(long_uid)) <= 40 and uid_slug(long_uid) != uid_slug(long_uid + "1")
    assert uid_slug("Phiên tiếp dân #1") == "phien-tiep-dan-1"
    assert uid_slug("@@@").startswith("uid-")


def test_the_kind_of_a_document() -> None:
    """By file name first, else by content (an API body has no name)."""
    assert detect_kind("lich.ics") == "ics" and detect_kind("lich.YML") == "yaml"
    assert detect_kind("", b"\xef\xbb\xbfBEGIN:VCALENDAR\r\n") == "ics"
    assert detect_kind("body", "sessions: []\n") == "yaml"


# --------------------------------------------------------------------------------------
# Import: all or nothing, into the store


def test_three_good_sessions_and_one_bad_store_none(tmp_path: Path) -> None:
    """three-good-one-bad.yaml: the fourth names 'dt-my-hiep' (not in the inventory)."""
    with Store(tmp_path / "bw.sqlite") as store:
        result = import_file(store, FIXTURES / "three-good-one-bad.yaml", INVENTORY, now=NOW)
        assert found(result) == [(27, "unknown_bridge")]
        assert store.sessions() == []


def test_an_import_that_overlaps_a_stored_session_stores_nothing(tmp_path: Path) -> None:
    """schedule.yaml imported, then the Google export whose sessions clash with it (same
    host, same hours): the second import is refused whole; the first stays as it was."""
    with Store(tmp_path / "bw.sqlite") as store:
        assert import_file(store, FIXTURES / "schedule.yaml", INVENTORY, now=NOW).ok
        before = store.sessions()
        result = import_file(store, FIXTURES / "google-export.ics", INVENTORY, now=NOW)
        assert found(result) == [(21, "host_overlap"), (54, "host_overlap"),
                                 (77, "cancelled_skipped")]
        assert store.sessions() == before


def test_a_reimport_writes_only_what_changed_and_a_cancel_removes(tmp_path: Path) -> None:
    """Import the Google export; import it again after the first session started (all
    unchanged, accepted); then an export where the second event is CANCELLED removes it."""
    path = FIXTURES / "google-export.ics"
    with Store(tmp_path / "bw.sqlite") as store:
        first = import_file(store, path, INVENTORY, now=NOW)
        assert first.ok and len(store.sessions()) == 2
        later = datetime(2026, 12, 5, 9, tzinfo=VIETNAM)
        again = import_file(store, path, INVENTORY, now=later)
        assert again.ok and again.changed == () and len(again.unchanged) == 2
        cancelled = path.read_bytes().replace(
            b"SEQUENCE:0\r\nSTATUS:CONFIRMED", b"SEQUENCE:1\r\nSTATUS:CANCELLED")
        result = import_document(store, cancelled, "ics", INVENTORY, source="g.ics", now=later)
        assert result.ok and result.cancelled == ("7p2m4n6b8v0c1x3z5l7k9j1h3g-google-com",)
        assert [s.id for s in store.sessions()] == ["3k9v0c5f7m2q8r1t6u4w0x9y2z-google-com"]


def test_an_api_body_is_checked_like_a_file() -> None:
    """The HTTP API passes the request body (bytes) and 'api' as the source."""
    result = check_document(textwrap.dedent(ONE).encode(), "yaml", INVENTORY, now=NOW)
    assert result.ok and result.sessions[0].source == "api:2"
    problem = check_document(b"sessions: [", "yaml", INVENTORY, now=NOW).issues[0]
    assert problem.as_dict()["source"] == "api" and problem.as_dict()["line"] == 1


def test_the_api_answer_is_plain_json() -> None:
    """ImportResult.as_dict() for the HTTP API: JSON types only, Vietnam times, both
    languages of every message."""
    result = check_yaml(ONE.replace("dt-hong-ngu]", "dt-xyz]"))
    answer = json.loads(json.dumps(result.as_dict()))
    assert answer["ok"] is False and answer["sessions"] == []
    assert answer["issues"] == [{
        "source": "lich.yaml", "line": 7, "code": "unknown_bridge", "severity": "error",
        "session_id": "tcd-a", "message_vi": "điểm cầu không có trong danh mục 'dt-xyz'",
        "message_en": "unknown bridge 'dt-xyz' (not in the inventory)"}]
    good = check_yaml(ONE).as_dict()["sessions"]
    assert good == [{"id": "tcd-a", "title": "Tiếp công dân",
                     "start": "2026-12-05T08:00:00+07:00", "duration_minutes": 180.0,
                     "host": "dt-trung-tam", "members": ["dt-sa-dec", "dt-hong-ngu"],
                     "national": [], "unchanged": False}]


MANGLE_ICS = [
    b"X-BRIDGEWATCH-HOST:", b"X-BRIDGEWATCH-HOST:dt-sa-dec,dt-trung-tam", b"ATTENDEE:",
    b"ATTENDEE;CN=:mailto:", b"LOCATION:;;", b"UID:", b"DTEND;VALUE=DATE:20261205",
    b"DTSTART;TZID=Asia/Ho_Chi_Minh:20261205T080000", b"DURATION:-PT1H", b"STATUS:CANCELLED",
    b"X-BRIDGEWATCH-ID:", b"DTSTART:00010101T000000Z", b"DURATION:P99999999W",
    b"DTSTART;VALUE=PERIOD:20261205T080000Z/PT1H", b"DTSTART;TZID=:20261205T080000",
    b"SUMMARY:\\n", b"X-BRIDGEWATCH-MEMBERS:,,,", b"BEGIN:VALARM", b"END:VALARM",
    b"BEGIN:VEVENT", b"END:VEVENT", b"RECURRENCE-ID:20261205T010000Z", b"\xff\xfe",
    b"DTSTART;TZID=Europe/London:20260329T013000", b'ATTENDEE;CN="a;b:c":mailto:x@y']
MANGLE_YAML = [
    b"    members: *x", b"  - ", b"    start: 2026-02-30 08:00", b"    duration: 99999999999h",
    b"    start: 9999-12-31T23:59+07:00", b"    start: 0001-01-01T00:00-07:00",
    b"    members: &x [dt-sa-dec]", b"    national: {a: b}", b"    host: ~",
    b"    id: !!binary aGVsbG8=", b"    title: !!python/object:os.system x", b"? [a]",
    b"    duration: 99:99", b"sessions:", b"  - id: x", b"\t", b"\xff"]


@pytest.mark.parametrize("name", ["google-export.ics", "outlook-export.ics", "bridgewatch.ics",
                                  "bad-mixed.ics", "schedule.yaml", "three-good-one-bad.yaml"])
def test_mangled_input_is_reported_never_a_crash(name: str) -> None:
    """150 copies of a fixture with lines inserted (empty, repeated, out-of-range, binary,
    unsafe YAML tags) or deleted at random (fixed seed): always an ImportResult, and every
    error points at a line inside the file."""
    rng = random.Random(name)
    kind = detect_kind(name)
    lines = (FIXTURES / name).read_bytes().split(b"\n")
    end = b"\r" if kind == "ics" else b""
    for _ in range(150):
        mangled = list(lines)
        for _ in range(rng.randint(1, 5)):
            at = rng.randrange(len(mangled))
            if rng.random() < 0.7:
                mangled.insert(at, rng.choice(MANGLE_ICS if kind == "ics" else MANGLE_YAML) + end)
            else:
                del mangled[at]
        result = check_document(b"\n".join(mangled), kind, INVENTORY, now=NOW)
        for problem in result.issues:
            assert problem.line is None or 1 <= problem.line <= len(mangled)


def test_now_must_be_aware() -> None:
    """A naive 'now' is a programming error (which zone?); an aware one in UTC is fine."""
    with pytest.raises(ValueError, match="aware"):
        check_document(ONE, "yaml", INVENTORY, now=datetime(2026, 11, 1))
    assert check_document(textwrap.dedent(ONE), "yaml", INVENTORY,
                          now=datetime(2026, 11, 1, tzinfo=timezone.utc)).ok


# --------------------------------------------------------------------------------------
# Command line


INV_ARG = ["--inventory", str(FIXTURES / "inventory.yaml"), "--now", NOW_TEXT]


def test_cli_check_prints_file_line_message_and_fails(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """check of the bad calendar: exit 1, one 'file:line: ...' per problem, a summary."""
    path = FIXTURES / "bad-mixed.ics"
    assert main(["check", str(path), *INV_ARG, "--lang", "en"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"{path}:21: error: unknown bridge 'dt-xyz' (not in the inventory)"
    assert out[-1] == "Invalid: 11 error(s), 0 warning(s)"
    assert main(["check", str(path), *INV_ARG, "--lang", "vi"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"{path}:21: lỗi: điểm cầu không có trong danh mục 'dt-xyz'"


def test_cli_import_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """import schedule.yaml (exit 0), import the bad YAML (exit 1, nothing added), list with
    Vietnamese and English headings, then delete one session."""
    db = str(tmp_path / "bw.sqlite")
    assert main(["import", str(FIXTURES / "schedule.yaml"), *INV_ARG, "--db", db]) == 0
    assert "Đã nhập / Imported: 3 phiên" in capsys.readouterr().out
    assert main(["import", str(FIXTURES / "three-good-one-bad.yaml"), *INV_ARG,
                 "--db", db]) == 1
    assert "Không nhập gì / Nothing imported" in capsys.readouterr().out
    assert main(["list", "--db", db, "--now", NOW_TEXT]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("  ")[0] == "Mã phiên / ID"
    assert "Bắt đầu / Start" in lines[0] and "Tiêu đề / Title" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == [
        "tcd-2026-12-05", "tcd-2026-12-12", "tcd-2026-12-19"]
    assert "2026-12-12 14:00" in lines[2] and "2h30m" in lines[2]
    # after the first session ended, 'list' shows the two others; --all shows all three
    assert main(["list", "--db", db, "--now", "2026-12-06T00:00:00+07:00", "--lang", "en"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert main(["delete", "tcd-2026-12-19", "--db", db]) == 0
    assert main(["delete", "tcd-2026-12-19", "--db", db]) == 1
    capsys.readouterr()
    assert main(["list", "--db", db, "--all", "--lang", "en"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    # --skip-past: a file with a past session imports the rest, with a warning
    other = str(tmp_path / "other.sqlite")
    late = ["--now", "2026-12-13T00:00:00+07:00"]
    assert main(["import", str(FIXTURES / "schedule.yaml"), *INV_ARG[:2], *late,
                 "--db", other]) == 1
    assert main(["import", str(FIXTURES / "schedule.yaml"), *INV_ARG[:2], *late,
                 "--db", other, "--skip-past", "--lang", "en"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == ("Imported: 1 session(s) (1 new or changed, 0 unchanged, 0 cancelled); "
                       "0 error(s), 2 warning(s)")


def test_cli_check_against_the_store_and_usage_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check --db sees stored sessions (the Google export clashes with schedule.yaml);
    an unreadable inventory and a bad --now are exit 2; a missing file is exit 1."""
    db = str(tmp_path / "bw.sqlite")
    assert main(["import", str(FIXTURES / "schedule.yaml"), *INV_ARG, "--db", db]) == 0
    assert main(["check", str(FIXTURES / "google-export.ics"), *INV_ARG, "--db", db]) == 1
    assert main(["check", str(FIXTURES / "google-export.ics"), *INV_ARG]) == 0
    capsys.readouterr()
    assert main(["check", "x.yaml", "--inventory", str(tmp_path / "none.yaml")]) == 2
    assert "inventory" in capsys.readouterr().err
    assert main(["check", "x.yaml", *INV_ARG[:2], "--now", "tomorrow"]) == 2
    assert main(["check", str(tmp_path / "missing.yaml"), *INV_ARG]) == 1
    assert main([]) == 2
    # a mistyped --db is not silently a new, empty database
    assert main(["list", "--db", str(tmp_path / "typo.sqlite")]) == 2
    assert not (tmp_path / "typo.sqlite").exists()
