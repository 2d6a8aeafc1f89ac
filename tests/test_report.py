"""The session report (biên bản kiểm thử): structure, escaping, CSV, and a real browser.

The data is one realistic session of Đồng Tháp's bridges (demo inventory): the central
bridge passed both tests; Sa Đéc failed test 2 three times on upload bandwidth
(3,9 Mbit/s < 5) and missed it; Tràm Chim's UPS ran on battery (12 min left < 3 h 15 min)
at test 1 until a technician fixed it, and again in the start window. The report is taken
at 06:20 on the day (after test 2's deadline, before the start).

The HTML is checked with ``html.parser`` and then rendered in headless Chromium over the
DevTools protocol (deploy/chromium.py): no console error, no request besides the file, a
full-page screenshot kept in ``test-artifacts/report.png`` (with the HTML, CSV and PDF
beside it) for a person to look at.
"""

from __future__ import annotations

import base64
import csv
import io
import re
import struct
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from agent.wire import Criterion
from collector.inventory import Site, load_inventory
from collector.readiness.model import (
    DEFAULT_CHECKPOINTS,
    VIETNAM,
    Confirmation,
    Session,
    Verdict,
)
from collector.readiness.model import TestRecord as StoredTest  # not a test class
from collector.report import (
    CSP,
    CSV_COLUMNS,
    DASH,
    MINUS,
    ReportData,
    format_time,
    format_value,
    render_csv,
    render_html,
    select_tests,
    write_report,
)
from deploy.chromium import WINDOW, Chromium, dump_dom, screenshot
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
INVENTORY = load_inventory(ROOT / "deploy" / "demo-inventory.yaml")
HOST, SA_DEC, TRAM_CHIM = "dt-trung-tam", "dt-sa-dec", "dt-tram-chim"
SID = "tcd-2026-12-05"
START = datetime(2026, 12, 5, 8, 0, tzinfo=VIETNAM)
N_CRITERIA = 16  # every test below reports all the catalogue's criteria


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=VIETNAM)


def criteria(up_mbps: float = 6.2, limit_mbps: float = 5, mains: bool = True,
             runtime_s: float = 4 * 3600) -> tuple[Criterion, ...]:
    """A full test's criteria; the session (3 h) needs 3 h 15 min of UPS runtime."""
    def c(name: str, value: float | None, limit: float | None, unit: str,
          ok: bool | None = None) -> Criterion:
        if ok is None:
            ok = value is not None and limit is not None and value >= limit
        return Criterion(name, ok, value, limit, unit)

    return (
        c("link-rtt", 0.042, 0.150, "s", True),
        c("link-jitter", 0.0061, 0.030, "s", True),
        c("link-loss", 0.0, 0.01, "ratio", True),
        c("link-mos", 4.31, 3.6, "mos"),
        c("bandwidth-up", up_mbps * 1e6, limit_mbps * 1e6, "bit/s"),
        c("bandwidth-down", 2 * limit_mbps * 1e6, limit_mbps * 1e6, "bit/s"),
        c("camera", 1, 1, "count"),
        c("microphone", 2, 1, "count"),
        c("speaker", 1, 1, "count"),
        c("display", 1, 1, "count"),
        c("ups-power", 1.0 if mains else 0.0, 1, "bool", mains),
        c("ups-runtime", runtime_s, 3 * 3600 + 15 * 60, "s"),
        c("recording-space", 41 * 3600, 3 * 3600, "s"),
        c("backup-disk", 1, 1, "bool", True),
        c("clock", 0.012, 0.5, "s", True),
        c("software", 1, 1, "bool", True),
    )


def record(site: str, when: datetime, checkpoint: str, nonce: str, crit: tuple[Criterion, ...],
         trigger: str = "schedule", by: str = "collector",
         test_id: str | None = None) -> StoredTest:
    return StoredTest(test_id or f"{SID}/{checkpoint}/{nonce}", site, when,
                      all(c.ok for c in crit), crit, trigger, by, SID)


def build_report(title: str = "Tiếp công dân định kỳ tháng 12/2026 của Chủ tịch UBND tỉnh",
                 sites: dict[str, Site] | None = None, noc_user: str = "Trần Thị Bình",
                 ) -> ReportData:
    """The session of the module docstring, with every record a real run would leave."""
    session = Session(SID, title, START, timedelta(hours=3), HOST, (SA_DEC, TRAM_CHIM),
                      source="schedule.yaml:3")
    slow = criteria(up_mbps=3.9)
    on_battery = criteria(mains=False, runtime_s=12 * 60)
    tests = [
        record(HOST, at(4, 7, 0), "test-1", "a1", criteria(45, 30)),
        record(HOST, at(5, 5, 0), "test-2", "a2", criteria(44, 30)),
        record(SA_DEC, at(4, 7, 2), "test-1", "b1", criteria()),
        record(SA_DEC, at(5, 5, 1), "test-2", "b2", slow),
        record(SA_DEC, at(5, 5, 31), "test-2", "b3", criteria(up_mbps=4.2), "retry"),
        record(SA_DEC, at(5, 5, 50), "test-2", "b4", slow, "noc", noc_user),
        record(TRAM_CHIM, at(4, 7, 5), "test-1", "c1", on_battery),
        record(TRAM_CHIM, at(4, 7, 40), "", "", criteria(), "technician", "technician",
             test_id="local-7f3a"),
        record(TRAM_CHIM, at(5, 5, 3), "test-2", "c2", criteria()),
        record(TRAM_CHIM, at(5, 6, 12), "", "", on_battery, "technician", "technician",
             test_id="local-9b01"),
    ]

    def verdict(site: str, checkpoint: str, state: str, test_id: str | None = None,
                failing: tuple[str, ...] = ()) -> Verdict:
        spec = next(c for c in DEFAULT_CHECKPOINTS if c.name == checkpoint)
        return Verdict(SID, site, checkpoint, state, spec.deadline(session),
                       spec.window_start(session), test_id, failing)

    verdicts = [
        verdict(HOST, "confirm", "passed"),
        verdict(HOST, "test-1", "passed", f"{SID}/test-1/a1"),
        verdict(HOST, "test-2", "passed", f"{SID}/test-2/a2"),
        verdict(HOST, "start", "pending"),
        verdict(SA_DEC, "confirm", "passed"),
        verdict(SA_DEC, "test-1", "passed", f"{SID}/test-1/b1"),
        verdict(SA_DEC, "test-2", "missed", f"{SID}/test-2/b4", ("bandwidth-up",)),
        verdict(SA_DEC, "start", "pending"),
        verdict(TRAM_CHIM, "confirm", "passed"),
        verdict(TRAM_CHIM, "test-1", "passed", "local-7f3a"),
        verdict(TRAM_CHIM, "test-2", "passed", f"{SID}/test-2/c2"),
        verdict(TRAM_CHIM, "start", "failed", "local-9b01", ("ups-power", "ups-runtime")),
    ]
    confirmations = [
        Confirmation(SID, HOST, at(1, 9, 0), "Nguyễn Văn An"),
        Confirmation(SID, SA_DEC, at(1, 14, 30), "Lê Thị Cúc"),
        Confirmation(SID, TRAM_CHIM, at(2, 7, 45), "Phạm Văn Dũng"),
    ]
    return ReportData(session, DEFAULT_CHECKPOINTS, verdicts,
                      select_tests(session, DEFAULT_CHECKPOINTS, tests), confirmations,
                      sites if sites is not None else INVENTORY.sites, at(5, 6, 20),
                      INVENTORY.provinces)


# --- a tiny DOM from html.parser -------------------------------------------------------------

class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node] = []
        self.text: list[str] = []

    def all(self, tag: str | None = None, **attrs: str) -> Iterator[Node]:
        for child in self.children:
            if (tag is None or child.tag == tag) and all(
                    child.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items()):
                yield child
            yield from child.all(tag, **attrs)

    def content(self) -> str:
        return "".join(self.text) + "".join(c.content() for c in self.children)


class Tree(HTMLParser):
    """Parses the page into Nodes; ``tags`` counts every element (script, img, ...)."""

    VOID = frozenset({"meta", "br", "img", "input", "link", "hr", "col"})

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.at = self.root
        self.tags: list[str] = []
        self.attr_names: set[str] = set()
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attr_names.update(k for k, _ in attrs)
        node = Node(tag, dict(attrs), self.at)
        self.at.children.append(node)
        if tag not in self.VOID:
            self.at = node

    def handle_endtag(self, tag: str) -> None:
        node = self.at
        while node.parent is not None and node.tag != tag:
            node = node.parent
        if node.parent is not None:
            self.at = node.parent

    def handle_data(self, data: str) -> None:
        self.at.text.append(data)


# --- the HTML ------------------------------------------------------------------------------

def test_html_names_every_bridge_checkpoint_test_and_failing_criterion() -> None:
    """Tried: the summary has a row per bridge and a cell per checkpoint with the state in
    words; each bridge has its own section with every test (trigger and requester in
    Vietnamese) and a row per criterion; the failing criteria are named in Vietnamese
    with the values a technician reads (3,9 Mbit/s, 12 phút, 3 giờ 15 phút)."""
    report = build_report()
    page = render_html(report)
    tree = Tree(page)
    text = tree.root.content()

    assert tree.root.children[0].tag == "html"
    assert "BIÊN BẢN KIỂM THỬ KỸ THUẬT" in next(tree.root.all("h1")).content()
    assert "08:00 ngày 05/12/2026" in text and "Tiếp công dân định kỳ tháng 12/2026" in text
    assert "UBND TỈNH ĐỒNG THÁP" in text
    assert "Đại diện Sở KH&CN".upper() in text and "KỸ THUẬT VIÊN" in text

    summary = next(tree.root.all("table", **{"class": "summary"}))
    rows = {r.attrs["data-site"]: r for r in summary.all("tr") if "data-site" in r.attrs}
    assert list(rows) == [HOST, SA_DEC, TRAM_CHIM]
    for site_id, row in rows.items():
        assert INVENTORY.sites[site_id].name in row.content()
        states = [td.attrs.get("data-state") for td in row.all("td") if "data-state" in td.attrs]
        assert len(states) == len(DEFAULT_CHECKPOINTS)
    expected = {HOST: ["passed", "passed", "passed", "pending"],
                SA_DEC: ["passed", "passed", "missed", "pending"],
                TRAM_CHIM: ["passed", "passed", "passed", "failed"]}
    words = {"passed": "Đạt", "failed": "Không đạt", "pending": "Chờ kiểm thử",
             "missed": "Quá hạn"}
    for site_id, states in expected.items():
        cells = [td for td in rows[site_id].all("td") if "data-state" in td.attrs]
        assert [td.attrs["data-state"] for td in cells] == states
        for td, state in zip(cells, states, strict=True):
            assert td.content().strip().split("\n")[0].find(words[state]) >= 0
    header = [th.attrs["data-checkpoint"] for th in summary.all("th")
              if "data-checkpoint" in th.attrs]
    assert header == [c.name for c in DEFAULT_CHECKPOINTS]
    assert f"Kiểm thử lần 2 (T{MINUS}2 giờ)" in summary.content()
    assert "Băng thông tải lên" in rows[SA_DEC].content()
    assert "Thời gian lưu điện" in rows[TRAM_CHIM].content()

    sections = {s.attrs["data-site"]: s for s in tree.root.all("section", **{"class": "bridge"})}
    assert list(sections) == [HOST, SA_DEC, TRAM_CHIM]
    for site_id, n_tests in ((HOST, 2), (SA_DEC, 4), (TRAM_CHIM, 4)):
        blocks = list(sections[site_id].all("div", **{"class": "test"}))
        assert len(blocks) == n_tests
        for block in blocks:
            assert len([r for r in block.all("tr") if "data-criterion" in r.attrs]) == N_CRITERIA

    sa_dec = sections[SA_DEC].content()
    assert "theo lịch" in sa_dec and "thử lại" in sa_dec and "NOC yêu cầu" in sa_dec
    assert "Trần Thị Bình" in sa_dec and "Lê Thị Cúc" in sa_dec
    failing = [r for r in sections[SA_DEC].all("tr", data_ok="false")]
    assert {r.attrs["data-criterion"] for r in failing} == {"bandwidth-up"}
    first = failing[0].content()
    assert "Băng thông tải lên" in first and "3,9 Mbit/s" in first and "≥ 5 Mbit/s" in first
    assert "✗ Không đạt" in first and "Liên hệ nhà cung cấp" in first

    tram = sections[TRAM_CHIM]
    assert "kỹ thuật viên tại chỗ" in tram.content()
    bad = {r.attrs["data-criterion"]: r.content() for r in tram.all("tr", data_ok="false")}
    assert set(bad) == {"ups-power", "ups-runtime"}
    assert "12 phút" in bad["ups-runtime"] and "≥ 3 giờ 15 phút" in bad["ups-runtime"]
    assert "Nguồn điện lưới" in bad["ups-power"] and "Không" in bad["ups-power"]
    assert "Sạc đầy hoặc thay ắc quy UPS" in bad["ups-runtime"]
    ok_row = next(tram.all("tr", data_criterion="link-rtt")).content()
    assert "42 ms" in ok_row and "≤ 150 ms" in ok_row and "✓ Đạt" in ok_row
    assert "< 1%" in next(tram.all("tr", data_criterion="link-loss")).content()
    assert "±500 ms" in next(tram.all("tr", data_criterion="clock")).content()

    conclusion = next(tree.root.all("section", **{"class": "conclusion"})).content()
    assert INVENTORY.sites[SA_DEC].name in conclusion
    assert INVENTORY.sites[TRAM_CHIM].name in conclusion
    assert INVENTORY.sites[HOST].name not in conclusion


def test_html_is_self_contained_printable_and_english_on_request() -> None:
    """Tried: no script, no link, no external URL anywhere; the CSP allows only the inline
    stylesheet; print CSS sets A4 and a page break before each bridge; the English line is
    under every state in Vietnamese, and ``lang=en`` gives an English page."""
    page = render_html(build_report())
    tree = Tree(page)
    assert not {"script", "link", "iframe", "img", "object", "embed"} & set(tree.tags)
    assert not re.search(r"(?i)\b(?:https?|ftp|file):", page)
    assert not {"src", "href", "action", "srcset", "poster"} & tree.attr_names
    assert "@import" not in page and "url(" not in page
    csp = next(m for m in tree.root.all("meta") if m.attrs.get("http-equiv")
               == "Content-Security-Policy").attrs["content"]
    assert csp == CSP and "default-src 'none'" in csp and "script" not in csp
    style = next(tree.root.all("style")).content()
    assert "size: A4" in style and "page-break-before: always" in style
    assert "Passed" in page and "Missed" in page  # the smaller English line
    assert all(a != "style" for a in tree.attr_names)  # the CSP hash covers <style> only

    english = render_html(build_report(), lang="en")
    assert "TECHNICAL TEST RECORD" in english and "08:00 on 05/12/2026" in english
    assert "Upload bandwidth" in english and "3.9 Mbit/s" in english
    assert "BIÊN BẢN" not in Tree(english).root.content().split("TECHNICAL")[1]
    with pytest.raises(ValueError):
        render_html(build_report(), lang="fr")


def test_hostile_title_names_and_requester_are_escaped() -> None:
    """Tried: a session title that is a script, a site name with both quotes and markup
    (built directly: the inventory itself refuses '"'), a requester that closes an
    attribute: none of them becomes an element or an attribute; all read back as text."""
    title = "<script>alert(1)</script>"
    site_name = 'Điểm cầu "Sa Đéc" <u>\'x\'</u> & co'
    requester = '"><img src=x onerror=alert(1)>'
    sites = dict(INVENTORY.sites)
    base = sites[SA_DEC]
    sites[SA_DEC] = Site(base.id, base.province, site_name, base.level,
                         base.bandwidth_bits_per_second)
    page = render_html(build_report(title, sites, requester))
    tree = Tree(page)
    assert "script" not in tree.tags and "img" not in tree.tags and "u" not in tree.tags
    assert "onerror" not in tree.attr_names and "src" not in tree.attr_names
    text = tree.root.content()
    assert title in text and site_name in text and requester in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;Sa Đéc&quot;" in page
    title_tag = next(tree.root.all("title")).content()
    assert title in title_tag


def test_time_and_values_are_formatted_for_people() -> None:
    """Tried: Vietnam time whatever zone the datetime carries; units people read."""
    from datetime import timezone
    assert format_time(datetime(2026, 12, 5, 1, 0, tzinfo=timezone.utc)) == "08:00 ngày 05/12/2026"
    assert format_value(3.9e6, "bit/s") == "3,9 Mbit/s"
    assert format_value(0.0123, "ratio") == "1,2%"
    assert format_value(0.004, "ratio") == "0,4%"
    assert format_value(11700, "s") == "3 giờ 15 phút"
    assert format_value(720, "s", scale=11700) == "12 phút"
    assert format_value(720, "s", lang="en", scale=11700) == "12 min"
    assert format_value(0.2, "s", scale=0.15) == "200 ms"
    assert format_value(0.0061, "s", scale=0.03) == "6,1 ms"
    assert format_value(None, "s") == "không đo được"
    assert format_value(0, "bool") == "Không"
    assert format_value(4.31, "mos") == "4,31"


# --- the CSV -------------------------------------------------------------------------------

def test_csv_has_bom_one_row_per_criterion_and_round_trips() -> None:
    """Tried: BOM first; parsed back with ``csv``: one row per (bridge, checkpoint, test,
    criterion), a checkpoint without a test still one row (5 of them here), Vietnamese
    intact, CRLF line ends, a name with comma/quote/newline quoted (RFC 4180) and a name
    starting with '=' kept from running as a spreadsheet formula."""
    report = build_report()
    text = render_csv(report)
    assert text.startswith("\ufeff")
    assert text.encode("utf-8").startswith(b"\xef\xbb\xbf")
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")
    rows = list(csv.reader(io.StringIO(text[1:], newline="")))
    header, body = rows[0], rows[1:]
    assert header == [vi for vi, _ in CSV_COLUMNS]
    assert all(len(r) == len(header) for r in body)
    # 10 tests x 16 criteria, plus the checkpoints with no test: confirm and start of the
    # central bridge and of Sa Đéc, confirm of Tràm Chim.
    assert len(body) == 10 * N_CRITERIA + 5
    col = {key: i for i, (_, key) in enumerate(CSV_COLUMNS)}
    slow = [r for r in body if r[col["criterion"]] == "bandwidth-up"
            and r[col["criterion_result"]] == "Không đạt"]
    assert len(slow) == 3 and {r[col["site_id"]] for r in slow} == {SA_DEC}
    assert slow[0][col["site_name"]] == INVENTORY.sites[SA_DEC].name
    assert slow[0][col["criterion_label"]] == "Băng thông tải lên"
    assert slow[0][col["value"]] == "3,9 Mbit/s" and slow[0][col["value_raw"]] == "3900000"
    assert slow[0][col["state_label"]] == "Quá hạn"
    assert [r[col["trigger"]] for r in slow] == ["theo lịch", "thử lại", "NOC yêu cầu"]
    runtime = [r for r in body if r[col["criterion"]] == "ups-runtime"
               and r[col["criterion_result"]] == "Không đạt"]
    assert [r[col["checkpoint"]] for r in runtime] == ["test-1", "start"]
    assert runtime[0][col["value"]] == "12 phút" and runtime[0][col["limit"]] == "≥ 3 giờ 15 phút"
    confirm = next(r for r in body if r[col["site_id"]] == HOST
                   and r[col["checkpoint"]] == "confirm")
    assert "Nguyễn Văn An" in confirm[col["note"]] and confirm[col["test_id"]] == ""

    sites = dict(INVENTORY.sites)
    base = sites[HOST]
    odd = 'Trung tâm, "A"\nB'
    sites[HOST] = Site(base.id, base.province, odd, base.level, base.bandwidth_bits_per_second)
    hostile = render_csv(build_report(sites=sites, noc_user="=HYPERLINK(\"http://x\")"))
    parsed = list(csv.reader(io.StringIO(hostile[1:], newline="")))
    assert parsed[1][col["site_name"]] == odd
    assert '"Trung tâm, ""A""\nB"' in hostile
    noc = [r for r in parsed if r[col["trigger"]] == "NOC yêu cầu"]
    assert noc and all(r[col["requested_by"]].startswith("'=") for r in noc)


def test_write_report_writes_both_files(tmp_path: Path) -> None:
    """Tried: what the CLI writes: bien-ban-<session>.html/.csv, the CSV byte-exact."""
    report = build_report()
    html_path, csv_path = write_report(report, tmp_path / "out")
    assert html_path.name == f"bien-ban-{SID}.html" and csv_path.name == f"bien-ban-{SID}.csv"
    assert html_path.read_text(encoding="utf-8") == render_html(report)
    assert csv_path.read_bytes() == render_csv(report).encode("utf-8")


# --- in a real browser -----------------------------------------------------------------------

def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from IHDR, after checking the signature, IHDR's CRC, a complete
    IDAT stream of the size the header promises, and IEND."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    ihdr = data[16:29]
    (crc,) = struct.unpack(">I", data[29:33])
    assert zlib.crc32(b"IHDR" + ihdr) == crc, "IHDR CRC mismatch"
    width, height, depth, colour = struct.unpack(">IIBB", ihdr[:10])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IEND":
            break
    assert kind == b"IEND" and pos == len(data), "PNG truncated"
    raw = zlib.decompress(idat)
    assert len(raw) == height * (1 + (width * channels * depth + 7) // 8)
    return width, height


# Share of pixels that are not (near) white, counted by the browser from the PNG itself.
INK = """
new Promise((resolve, reject) => {
  const img = new Image();
  img.onload = () => {
    const c = document.createElement('canvas');
    c.width = img.width; c.height = img.height;
    const g = c.getContext('2d'); g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let ink = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] < 600) ink++;
    resolve(ink / (d.length / 4));
  };
  img.onerror = () => reject(new Error('png did not decode'));
  img.src = 'data:image/png;base64,%s';
})
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    binary = require_binary("chromium")
    with Chromium(tmp_path_factory.mktemp("chromium"), binary=binary, timeout=60) as b:
        yield b


def test_chromium_reports_page_errors(browser: Chromium, tmp_path: Path) -> None:
    """Tried: the launcher's error check is not vacuous: a page with console.error, an
    uncaught exception and a missing image yields all three, and console.log is not one."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>x</title></head>'
                   '<body><p>x</p><img src="missing.png"><script>console.log("all-good-42");'
                   'console.error("boom"); notDefined();</script></body></html>')
    page = browser.open(bad)
    try:
        errors = "\n".join(page.errors)
        assert "console.error: boom" in errors
        assert "notDefined" in errors
        assert "missing.png" in errors
        assert "all-good-42" not in errors and ("log", "all-good-42") in page.console
        assert any(u.endswith("missing.png") for u in page.requests)
    finally:
        page.close()


def test_report_renders_in_chromium(browser: Chromium) -> None:
    """Tried: the report file in headless Chromium: no console error, no request but the
    file itself; the DOM has the heading and the three bridge names and no script; print
    media breaks a page before each bridge and the PDF has at least five A4 pages; the
    full-page screenshot is a valid PNG at least the window's size, kept in
    test-artifacts/report.png; it is not blank: a blank page in the same run is the
    baseline, for the PNG size (same viewport) and for the share of inked pixels."""
    ARTIFACTS.mkdir(exist_ok=True)
    report = build_report()
    html_path, _ = write_report(report, ARTIFACTS)
    html_path = html_path.rename(ARTIFACTS / "report.html")
    (ARTIFACTS / f"bien-ban-{SID}.csv").replace(ARTIFACTS / "report.csv")
    blank = ARTIFACTS / "blank.html"
    blank.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>blank</title>'
                     "</head><body></body></html>")

    base_page = browser.open(blank)
    base_png = base_page.screenshot()
    base_page.close()
    blank.unlink()

    page = browser.open(html_path)
    try:
        assert page.errors == [], page.errors
        assert page.requests == [html_path.as_uri()], page.requests

        dom = page.dom()
        assert "BIÊN BẢN KIỂM THỬ KỸ THUẬT" in dom
        for site_id in (HOST, SA_DEC, TRAM_CHIM):
            assert INVENTORY.sites[site_id].name in dom
        assert page.evaluate("document.scripts.length") == 0
        assert page.evaluate("document.querySelector('h1').getBoundingClientRect().height") > 0

        page.emulate_media("print")
        breaks = page.evaluate("[...document.querySelectorAll('section.bridge')]"
                               ".map(s => getComputedStyle(s).breakBefore)")
        assert breaks == ["page", "page", "page"]
        page.emulate_media("")
        pdf = page.pdf(ARTIFACTS / "report.pdf")
        assert pdf.startswith(b"%PDF-")
        assert len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf)) >= 5
        boxes = re.findall(rb"/MediaBox\s*\[0 0 ([\d.]+) ([\d.]+)\]", pdf)
        assert boxes and all(abs(float(w) - 595.28) < 1 and abs(float(h) - 841.89) < 1
                             for w, h in boxes), boxes  # A4 in points

        view_png = page.screenshot()
        png = page.screenshot(ARTIFACTS / "report.png", full_page=True)
        width, height = png_size(png)
        assert width >= WINDOW[0] and height >= WINDOW[1]
        assert png_size(base_png) == WINDOW == png_size(view_png)
        assert len(view_png) > 5 * len(base_png), (len(view_png), len(base_png))

        ink, base_ink = (page.evaluate(INK % base64.b64encode(p).decode(), await_promise=True)
                         for p in (view_png, base_png))
        assert base_ink == 0 and ink > 0.01, (ink, base_ink)
        assert page.errors == [], page.errors
    finally:
        page.close()
    assert (ARTIFACTS / "report.png").read_bytes() == png


def test_hostile_report_runs_nothing_in_chromium(browser: Chromium, tmp_path: Path) -> None:
    """Tried: the hostile title and requester in the browser: no script, no image, no
    request but the file, no error (an escaping slip would show as a CSP violation)."""
    sites = dict(INVENTORY.sites)
    base = sites[SA_DEC]
    sites[SA_DEC] = Site(base.id, base.province, 'Sa Đéc "x" <u>y</u>', base.level,
                         base.bandwidth_bits_per_second)
    path = tmp_path / "hostile.html"
    path.write_text(render_html(build_report("<script>alert(1)</script>", sites,
                                             '"><img src=x onerror=alert(1)>')),
                    encoding="utf-8")
    page = browser.open(path)
    try:
        assert page.errors == [] and page.requests == [path.as_uri()]
        assert page.evaluate("document.querySelectorAll('script, img, u').length") == 0
        assert page.evaluate("document.title").startswith(
            f"BIÊN BẢN KIỂM THỬ KỸ THUẬT {DASH} <script>")
    finally:
        page.close()


def test_one_shot_screenshot_and_dump_dom(tmp_path: Path) -> None:
    """Tried: the command-line modes (``--screenshot``, ``--dump-dom``) on the report:
    a valid PNG of exactly the window, and the DOM with the heading and a bridge name."""
    binary = require_binary("chromium")
    page = tmp_path / "report.html"
    page.write_text(render_html(build_report()), encoding="utf-8")
    png = screenshot(page, tmp_path / "shot.png", binary=binary)
    assert png_size(png.read_bytes()) == WINDOW
    dom = dump_dom(page, binary=binary)
    assert "BIÊN BẢN KIỂM THỬ KỸ THUẬT" in dom and INVENTORY.sites[SA_DEC].name in dom
