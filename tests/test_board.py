"""The built-in readiness board (``GET /board``) on a real collector server, and in a browser.

A real ``ReadinessService`` over a real SQLite store, with its clock fixed at 04:40 on
5 December 2026, judges a session starting at 08:00 that day (Đồng Tháp demo inventory):

* the central bridge, Hồng Ngự and Tháp Mười passed both tests;
* Sa Đéc passed test 1 and failed test 2 at 04:20 on upload bandwidth and mains power
  (still ``failed``: test 2 is due at 06:00, 1 h 20 min from now);
* Tràm Chim failed test 1 on UPS runtime (now ``missed``), has not tested for test 2
  (``pending``), never confirmed (``missed``), and its agent is offline;
* a second session, the next day, has a title with ``<script>`` in it; a third one ended
  yesterday and must not be on the board.

The fleet state is fed real MQTT state messages (every bridge online but Tràm Chim). The
page is fetched from a real ``CollectorServer`` and read with ``html.parser``; then it is
rendered in headless Chromium at a wall screen's width and at a phone's, and kept in
``test-artifacts/board-wall.png`` and ``test-artifacts/board-phone.png``.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from agent import wire
from agent.durations import spoken
from agent.wire import Criterion
from collector import board
from collector.api import Api
from collector.apitokens import ApiTokens
from collector.http import CollectorServer
from collector.inventory import load_inventory
from collector.readiness.config import ReadinessConfig
from collector.readiness.model import VIETNAM, Confirmation, Session
from collector.readiness.model import TestRecord as Record  # not a test class
from collector.readiness.service import ReadinessService
from collector.readiness.store import Store
from collector.state import FleetState
from deploy.chromium import Chromium
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
INVENTORY = load_inventory(ROOT / "deploy" / "demo-inventory.yaml")
WALL = (1920, 1080)  # the NOC's wall screen
PHONE = (390, 844)  # CSS pixels of a common phone in portrait

HOST, SA_DEC, HONG_NGU = "dt-trung-tam", "dt-sa-dec", "dt-hong-ngu"
TRAM_CHIM, THAP_MUOI, LAI_VUNG = "dt-tram-chim", "dt-thap-muoi", "dt-lai-vung"
SID, HOSTILE_SID, OVER_SID = "tcd-2026-12-05", "tcd-2026-12-06", "tcd-2026-12-04"
START = datetime(2026, 12, 5, 8, 0, tzinfo=VIETNAM)
NOW = datetime(2026, 12, 5, 4, 40, tzinfo=VIETNAM)
HOSTILE_TITLE = 'Phiên <script>alert("x")</script> & <b>đặc biệt</b>'
TITLE = "Tiếp công dân định kỳ tháng 12/2026 của Chủ tịch UBND tỉnh"
CHECKPOINTS = ("confirm", "test-1", "test-2", "start")

OK_UP = Criterion("bandwidth-up", True, 6.2e6, 5e6, "bit/s")
SLOW_UP = Criterion("bandwidth-up", False, 3.9e6, 5e6, "bit/s")
ON_BATTERY = Criterion("ups-power", False, 0.0, 1, "bool")
MAINS = Criterion("ups-power", True, 1.0, 1, "bool")
SHORT_UPS = Criterion("ups-runtime", False, 720.0, 3 * 3600 + 900, "s")
CLOCK_OK = Criterion("clock", True, 0.01, 0.5, "s")

# What the board must show for the first session: (bridge, checkpoint) -> state.
EXPECTED: dict[tuple[str, str], str] = {
    **{(site, "confirm"): "passed" for site in (HOST, SA_DEC, HONG_NGU, THAP_MUOI)},
    (TRAM_CHIM, "confirm"): "missed",
    **{(site, "test-1"): "passed" for site in (HOST, SA_DEC, HONG_NGU, THAP_MUOI)},
    (TRAM_CHIM, "test-1"): "missed",
    **{(site, "test-2"): "passed" for site in (HOST, HONG_NGU, THAP_MUOI)},
    (SA_DEC, "test-2"): "failed",
    (TRAM_CHIM, "test-2"): "pending",
    **{(site, "start"): "pending" for site in (HOST, SA_DEC, HONG_NGU, TRAM_CHIM, THAP_MUOI)},
}


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=VIETNAM)


class Clock:
    """The service's clock, fixed unless a test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now.timestamp()

    def __call__(self) -> float:
        return self.now


def record(site: str, when: datetime, checkpoint: str, nonce: str,
           criteria: tuple[Criterion, ...]) -> Record:
    return Record(f"{SID}/{checkpoint}/{nonce}", site, when, all(c.ok for c in criteria),
                  criteria, "schedule", "collector", SID)


def online(fleet: FleetState, site_id: str, up: bool, conn: int, ts: float) -> None:
    """A real retained-state message from the site's agent, through the intake's path."""
    site = INVENTORY.sites[site_id]
    topic = wire.topic(wire.DEFAULT_PREFIX, site.province, site_id, wire.Kind.STATE)
    payload = wire.encode(wire.State(site.province, site_id, 0, conn, ts,
                                     "online" if up else "offline", "0.1.0", "pc", "Linux"))
    assert fleet.apply(topic, payload)


class Stack:
    """Store, fleet, readiness service and a collector server on a free loopback port."""

    def __init__(self, tmp: Path) -> None:
        self.clock = Clock(NOW)
        self.fleet = FleetState(INVENTORY, clock=self.clock, render_delay=0)
        self.store = Store(tmp / "readiness.sqlite")
        self.service = ReadinessService(self.store, ReadinessConfig(tmp / "readiness.sqlite"),
                                        INVENTORY, self.fleet, None, clock=self.clock)
        self.server = CollectorServer(("127.0.0.1", 0), self.fleet,
                                      Api(self.service, ApiTokens.load(None)))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.port = self.server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.store.close()


def populate(stack: Stack) -> None:
    """The sessions, tests, confirmations and agents of the module docstring."""
    members = (SA_DEC, HONG_NGU, TRAM_CHIM, THAP_MUOI)
    stack.store.upsert_sessions([
        Session(SID, TITLE, START, timedelta(hours=3), HOST, members, source="test"),
        Session(HOSTILE_SID, HOSTILE_TITLE, at(6, 9), timedelta(hours=2), HOST, (LAI_VUNG,),
                source="test"),
        Session(OVER_SID, "Phiên đã kết thúc hôm qua", at(4, 8), timedelta(hours=3), HOST,
                (SA_DEC,), source="test"),
    ])
    good = (OK_UP, MAINS, CLOCK_OK)
    for i, site in enumerate((HOST, SA_DEC, HONG_NGU, THAP_MUOI)):
        stack.store.add_test(record(site, at(4, 7, i), "test-1", f"a{i}", good))
        stack.store.add_confirmation(Confirmation(SID, site, at(1, 9), "UBND"))
    for i, site in enumerate((HOST, HONG_NGU, THAP_MUOI)):
        stack.store.add_test(record(site, at(5, 4, 10 + i), "test-2", f"b{i}", good))
    stack.store.add_test(record(SA_DEC, at(5, 4, 20), "test-2", "c1",
                                (SLOW_UP, ON_BATTERY, CLOCK_OK)))
    stack.store.add_test(record(TRAM_CHIM, at(4, 7, 5), "test-1", "d1",
                                (OK_UP, MAINS, SHORT_UPS)))
    for n, site_id in enumerate(INVENTORY.sites, 1):
        if site_id != TRAM_CHIM:
            online(stack.fleet, site_id, True, n, stack.clock.now)
    stack.service.tick()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    populate(s)
    yield s
    s.close()


def get(port: int, path: str) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    answer = conn.getresponse()
    body = answer.read().decode("utf-8")
    headers = dict(answer.getheaders())
    conn.close()
    return answer.status, headers, body


# --- reading the page ----------------------------------------------------------------------

@dataclass
class Cell:
    state: str
    text: str = ""
    failing: str = ""


@dataclass
class Section:
    title: str = ""
    summary: str = ""
    summary_checkpoint: str = ""
    heads: dict[str, str] = field(default_factory=dict)  # checkpoint -> head text
    next_head: str = ""  # checkpoint of the head marked next
    rows: dict[str, str] = field(default_factory=dict)  # site -> row head text
    conn: dict[str, str] = field(default_factory=dict)  # site -> up / down / unwatched
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)


class BoardParser(HTMLParser):
    """Sessions by id, with their heads, rows, cells and links as text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, Section] = {}
        self.order: list[str] = []
        self.meta: dict[str, str] = {}
        self.h1 = ""
        self.links: list[str] = []
        self.style = ""
        self._section: Section | None = None
        self._site = ""
        self._stack: list[tuple[str, str, str]] = []  # (tag, role, key) of open elements

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        role, key = "", ""
        if tag == "meta" and "http-equiv" in a:
            self.meta[a["http-equiv"].lower()] = a.get("content", "")
            return
        if tag == "section" and "data-session" in a:
            self._section = self.sections.setdefault(a["data-session"], Section())
            self.order.append(a["data-session"])
        elif tag == "a":
            self.links.append(a.get("href", ""))
            if self._section is not None:
                self._section.links.append(a.get("href", ""))
        elif tag == "tr" and "data-site" in a:
            self._site = a["data-site"]
        section = self._section
        if tag == "h1":
            role = "h1"
        elif tag == "style":
            role = "style"
        elif section is not None:
            if tag == "h2":
                role = "title"
            elif tag == "p" and a.get("class") == "summary":
                role, section.summary_checkpoint = "summary", a.get("data-checkpoint", "")
            elif tag == "th" and "data-checkpoint" in a:
                role, key = "head", a["data-checkpoint"]
                section.heads[key] = ""
                if "next" in a.get("class", "").split():
                    section.next_head = key
            elif tag == "th" and a.get("scope") == "row":
                role, key = "row", self._site
                section.rows[key] = ""
            elif tag == "span" and "data-conn" in a:
                section.conn[self._site] = a["data-conn"]
            elif tag == "td" and "data-state" in a:
                role, key = "cell", a["data-checkpoint"]
                section.cells[self._site, key] = Cell(a["data-state"])
            elif tag == "span" and a.get("class") == "failing":
                role, key = "failing", ""
        if tag not in ("meta", "br", "img", "input", "link"):
            self._stack.append((tag, role, key))

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            open_tag, _, _ = self._stack.pop()
            if open_tag == tag:
                break
        if tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        section = self._section
        for _, role, key in self._stack:
            if role == "h1":
                self.h1 += data
            elif role == "style":
                self.style += data
            elif section is None:
                continue
            elif role == "title":
                section.title += data
            elif role == "summary":
                section.summary += data
            elif role == "head":
                section.heads[key] += data
            elif role == "row":
                section.rows[key] += data
            elif role == "cell":
                section.cells[self._site, key].text += data
            elif role == "failing":
                cell = next(reversed(section.cells.values()))
                cell.failing += data


def parse(text: str) -> BoardParser:
    parser = BoardParser()
    parser.feed(text)
    parser.close()
    return parser


# --- over HTTP -----------------------------------------------------------------------------

def test_board_shows_every_bridge_and_checkpoint_in_vietnamese(stack: Stack) -> None:
    """Tried: GET /board. 200, HTML, the strict CSP (whose hash is the page's own style),
    meta refresh 30 s, lang vi; the header names the province (not the national bridges'
    "Trung ương") and the time the verdicts were drawn; the two sessions not over, by
    start, and not the one that ended yesterday; every cell's state as the engine rules
    give it, in Vietnamese with its mark; the failing criteria in Vietnamese under the
    failed and missed cells; test 2 marked next with "còn 1 giờ 20 phút" (spoken());
    3/5 passed it; Tràm Chim offline and the others online; links to the biên bản and the
    runbook; the hostile title shown as text."""
    status, headers, text = get(stack.port, "/board")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == board.CSP
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src" not in board.CSP and "'unsafe-inline'" not in board.CSP
    assert "default-src 'none'" in board.CSP
    page = parse(text)
    style_hash = base64.b64encode(hashlib.sha256(page.style.encode()).digest()).decode()
    assert f"style-src 'sha256-{style_hash}'" in board.CSP
    assert page.meta["refresh"] == "30"
    assert page.meta["content-security-policy"] == board.CSP
    assert text.startswith('<!DOCTYPE html>\n<html lang="vi">')
    assert page.h1 == "Bảng sẵn sàng điểm cầu — Đồng Tháp"
    assert "Cập nhật lúc 04:40:00 ngày 05/12/2026 (giờ Việt Nam)" in text

    assert page.order == [SID, HOSTILE_SID]
    assert OVER_SID not in text and "Phiên đã kết thúc hôm qua" not in text

    main = page.sections[SID]
    assert main.title == TITLE
    assert {key: cell.state for key, cell in main.cells.items()} == EXPECTED
    words = {"passed": "✓ Đạt", "failed": "✗ Không đạt", "pending": "○ Chờ kiểm thử",
             "missed": "⊘ Quá hạn"}
    for key, cell in main.cells.items():
        assert cell.text.startswith(words[cell.state]), (key, cell)
    assert main.cells[SA_DEC, "test-2"].failing == "Băng thông tải lên, Nguồn điện lưới"
    assert main.cells[TRAM_CHIM, "test-1"].failing == "Thời gian lưu điện"
    assert main.cells[TRAM_CHIM, "confirm"].failing == "chưa xác nhận tham dự"
    assert all(not c.failing for c in main.cells.values() if c.state in ("passed", "pending"))

    left = f"còn {spoken(80 * 60, 'vi')}"
    assert left == "còn 1 giờ 20 phút"
    assert main.next_head == "test-2"
    assert main.heads["test-2"] == f"Kiểm thử lần 2 (T\u22122 giờ)hạn 06:00 05/12{left}"
    assert all(left not in head for cp, head in main.heads.items() if cp != "test-2")
    assert main.summary_checkpoint == "test-2"
    assert main.summary.startswith(
        "3/5 điểm cầu đã đạt mốc kiểm thử trước 02 giờ (✗ 1 Không đạt · ○ 1 Chờ kiểm thử)")
    assert main.summary.endswith(f"hạn 06:00 ngày 05/12/2026, {left}")
    assert f"Điểm cầu chủ trì: {INVENTORY.sites[HOST].name}" in text
    assert "4/5 điểm cầu đang trực tuyến" in text

    assert list(main.rows) == [HOST, SA_DEC, HONG_NGU, TRAM_CHIM, THAP_MUOI]
    assert main.conn == {HOST: "up", SA_DEC: "up", HONG_NGU: "up", TRAM_CHIM: "down",
                         THAP_MUOI: "up"}
    assert main.rows[TRAM_CHIM] == (f"{INVENTORY.sites[TRAM_CHIM].name}{TRAM_CHIM} "
                                    "✕ Mất kết nối")
    assert main.rows[SA_DEC].endswith("● Trực tuyến")
    assert main.links == [f"/report/{SID}.html"]
    assert "/runbook" in page.links and "/board?lang=en" in page.links

    hostile = page.sections[HOSTILE_SID]
    assert hostile.title == HOSTILE_TITLE
    assert "<script" not in text and "<b>" not in text
    assert "Phiên &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;" in text
    # The next day's test 1 is due at 09:00 today: 4 h 20 min from now.
    assert hostile.next_head == "test-1"
    assert f"còn {spoken(260 * 60, 'vi')}" in hostile.heads["test-1"]
    assert hostile.conn == {HOST: "up", LAI_VUNG: "up"}


def test_board_in_english(stack: Stack) -> None:
    """Tried: /board?lang=en: lang en, English states, criteria, time left (spoken() in
    English), offline marker, summary and the biên bản link in English; no Vietnamese
    state word left. A lang other than vi or en is a 400 page under the same CSP."""
    status, headers, text = get(stack.port, "/board?lang=en")
    assert status == 200 and headers["Content-Security-Policy"] == board.CSP
    assert text.startswith('<!DOCTYPE html>\n<html lang="en">')
    page = parse(text)
    assert page.h1 == "Bridge readiness board — Đồng Tháp"
    assert page.meta["refresh"] == "30"
    main = page.sections[SID]
    words = {"passed": "✓ Passed", "failed": "✗ Failed", "pending": "○ Pending",
             "missed": "⊘ Missed"}
    assert {key: cell.state for key, cell in main.cells.items()} == EXPECTED
    for key, cell in main.cells.items():
        assert cell.text.startswith(words[cell.state]), (key, cell)
    assert main.cells[SA_DEC, "test-2"].failing == "Upload bandwidth, Mains power"
    assert main.cells[TRAM_CHIM, "test-1"].failing == "UPS runtime"
    assert f"{spoken(80 * 60, 'en')} left" in main.heads["test-2"]
    assert main.summary.startswith("3/5 bridges passed the T\u22122 h test checkpoint")
    assert main.rows[TRAM_CHIM].endswith("✕ Offline")
    assert main.links == [f"/report/{SID}.html?lang=en"]
    for vietnamese in ("Không đạt", "Chờ kiểm thử", "Quá hạn", "Mất kết nối", "còn "):
        assert vietnamese not in text, vietnamese

    for query in ("?lang=fr", "?lang=vi&lang=en"):
        status, headers, text = get(stack.port, f"/board{query}")
        assert status == 400 and headers["Content-Security-Policy"] == board.CSP
        assert "phải là" in text and "must be" in text


def test_board_without_readiness(tmp_path: Path) -> None:
    """Tried: a collector with no readiness configured: 404 (documented in the module),
    a page saying so in Vietnamese and English, under the CSP, still refreshing; the
    other routes are unaffected."""
    fleet = FleetState(INVENTORY, render_delay=0)
    server = CollectorServer(("127.0.0.1", 0), fleet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        for path in ("/board", "/board?lang=en"):
            status, headers, text = get(port, path)
            assert status == 404
            assert headers["Content-Type"] == "text/html; charset=utf-8"
            assert headers["Content-Security-Policy"] == board.CSP
            page = parse(text)
            assert page.meta["refresh"] == "30"
            assert "chưa được cấu hình phần đánh giá sẵn sàng" in text
            assert "This collector has no readiness configured" in text
            assert page.sections == {}
        assert get(port, "/metrics")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_board_without_sessions(tmp_path: Path) -> None:
    """Tried: readiness configured but nothing scheduled in the horizon: 200 (unlike the
    404 of a collector without readiness) and a sentence saying so, in both languages."""
    empty = Stack(tmp_path)
    try:
        empty.service.tick()
        status, _, text = get(empty.port, "/board")
        assert status == 200 and parse(text).sections == {}
        assert "Không có phiên tiếp công dân nào sắp diễn ra trong 8 ngày tới." in text
        status, _, text = get(empty.port, "/board?lang=en")
        assert status == 200 and "No citizen reception session in the next 8 days." in text
    finally:
        empty.close()


def test_board_is_rendered_once_per_change(stack: Stack) -> None:
    """Tried: the cache, with the board's monotonic clock under the test's hand. Screens
    polling the same snapshot share one rendering per language; a bridge coming online is
    not rendered sooner than 2 s after the last rendering, then is; a new snapshot (a
    tick) is; a snapshot left behind by a stopped readiness thread is flagged."""
    ticks = [100.0]
    cache = board.board_for(stack.service)
    cache.monotonic = lambda: ticks[0]
    first = [get(stack.port, "/board")[2] for _ in range(3)]
    english = [get(stack.port, "/board?lang=en")[2] for _ in range(2)]
    assert cache.renders == 2
    assert first[0] == first[1] == first[2] and english[0] == english[1]
    assert parse(first[0]).sections[SID].conn[TRAM_CHIM] == "down"

    online(stack.fleet, TRAM_CHIM, True, 99, stack.clock.now)
    ticks[0] += 1.0
    assert get(stack.port, "/board")[2] == first[0]  # within 2 s: the same bytes
    assert cache.renders == 2
    ticks[0] += 1.0
    text = get(stack.port, "/board")[2]
    assert parse(text).sections[SID].conn[TRAM_CHIM] == "up"
    assert "5/5 điểm cầu đang trực tuyến" in text
    assert cache.renders == 3
    assert get(stack.port, "/board")[2] == text and cache.renders == 3

    # Five minutes later, with a tick: test 2 has 1 h 15 min left.
    stack.clock.now += 300
    stack.service.tick()
    ticks[0] += 5.0
    text = get(stack.port, "/board")[2]
    assert cache.renders == 4
    assert f"còn {spoken(75 * 60, 'vi')}" in parse(text).sections[SID].heads["test-2"]
    assert "Cập nhật lúc 04:45:00 ngày 05/12/2026" in text and 'class="stale"' not in text

    # Then no tick for ten minutes: the page says since when it has not been updated.
    stack.clock.now += 600
    ticks[0] += 5.0
    text = get(stack.port, "/board")[2]
    assert cache.renders == 5
    assert 'class="stale" role="alert"' in text
    assert "Dữ liệu chưa được cập nhật từ 04:45:00 ngày 05/12/2026" in text


# --- in a browser --------------------------------------------------------------------------

def png_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack("!II", png[16:24])
    return width, height


@pytest.fixture(scope="module")
def chromium_binary() -> str:
    return require_binary("chromium")


def test_board_on_the_wall_screen(stack: Stack, chromium_binary: str,
                                  tmp_path: Path) -> None:
    """Tried: the board in headless Chromium at 1920 px: no console error and no CSP
    violation, no request but the page itself, no script run (the hostile title is text),
    the hashed stylesheet applied (each state its own colour, the next column marked), the
    meta refresh in the DOM, nothing wider than the screen; full-page screenshot kept in
    test-artifacts/board-wall.png."""
    url = stack.url("/board")
    with Chromium(tmp_path / "wall", window=WALL, binary=chromium_binary,
                  timeout=60) as browser:
        page = browser.open(url)
        try:
            assert page.errors == [], page.errors
            assert page.requests == [url], page.requests
            assert page.evaluate("document.scripts.length") == 0
            assert page.evaluate("document.documentElement.lang") == "vi"
            assert page.evaluate(
                "document.querySelector('meta[http-equiv=refresh]').content") == "30"
            assert page.evaluate(
                f"document.querySelector('[data-session=\"{HOSTILE_SID}\"] h2')"
                ".textContent") == HOSTILE_TITLE
            colours = page.evaluate(
                "Object.fromEntries(['passed', 'failed', 'pending', 'missed'].map(s => [s, "
                "getComputedStyle(document.querySelector('td.state-' + s)).backgroundColor]))")
            assert len(set(colours.values())) == 4, colours
            assert page.evaluate("getComputedStyle(document.querySelector('th.next'))"
                                 ".backgroundColor") == "rgb(255, 232, 154)"
            assert page.evaluate("getComputedStyle(document.querySelector('thead'))"
                                 ".position") == "static"  # the table layout, not cards
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= WALL[0], width
            dom = page.dom()
            assert "Mất kết nối" in dom and "còn 1 giờ 20 phút" in dom
            ARTIFACTS.mkdir(exist_ok=True)
            png = page.screenshot(ARTIFACTS / "board-wall.png", full_page=True)
            assert png_size(png)[0] == WALL[0] and png_size(png)[1] >= 400
            assert page.errors == [], page.errors
        finally:
            page.close()
    assert (ARTIFACTS / "board-wall.png").read_bytes() == png


def test_board_on_a_phone(stack: Stack, chromium_binary: str, tmp_path: Path) -> None:
    """Tried: the board at 390 px: no error, no request but the page; each bridge becomes
    a card whose cells carry their checkpoint's name (the column heads are hidden), and
    nothing, tables included, scrolls sideways; kept in test-artifacts/board-phone.png."""
    url = stack.url("/board")
    with Chromium(tmp_path / "phone", window=PHONE, binary=chromium_binary,
                  timeout=60) as browser:
        page = browser.open(url)
        try:
            assert page.errors == [], page.errors
            assert page.requests == [url], page.requests
            assert page.evaluate("getComputedStyle(document.querySelector('tbody tr'))"
                                 ".display") == "block"
            before = page.evaluate(
                "getComputedStyle(document.querySelector('td[data-checkpoint=\"test-2\"]'),"
                " '::before').content")
            assert before == '"Kiểm thử lần 2 (T\u22122 giờ)"', before
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE[0], width
            # Every visible box; the column heads are hidden (kept for screen readers).
            overflow = page.evaluate(
                "[...document.querySelectorAll('section, table, tbody tr, tbody th, td')]"
                ".map(e => e.scrollWidth - e.clientWidth)")
            assert overflow and max(overflow) <= 0, max(overflow)
            ARTIFACTS.mkdir(exist_ok=True)
            png = page.screenshot(ARTIFACTS / "board-phone.png", full_page=True)
            assert png_size(png)[0] == PHONE[0]
            assert page.errors == [], page.errors
        finally:
            page.close()
    assert (ARTIFACTS / "board-phone.png").read_bytes() == png
