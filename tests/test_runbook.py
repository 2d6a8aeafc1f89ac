"""The alert runbook: every alert has its section in both languages, and the collector serves it.

Checked against three sources, so a drift anywhere fails here:

* the alert rules (``alerts/rules/*.yml``, read with PyYAML): every alert has a
  ``## <Name>`` section in Vietnamese and English that states the rule's severity and its
  ``for``, and every ``runbook_url`` anchor is an id of the page the collector serves;
* the alert catalogue shared by rules, Alertmanager and runbook (``SPEC`` below, the
  contract's list): the runbook is complete, in the contract's area order, even while the
  rule files are being written;
* the criteria catalogue (``agent.readiness.catalogue``): every label a readiness alert can
  name in ``criteria`` / ``criteria_en`` is in the runbook's table.

The page is fetched from a real ``CollectorServer`` on loopback, and rendered in headless
Chromium at a phone's width (no CSP violation, no request, no sideways scrolling).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import re
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.readiness.catalogue import CRITERIA
from collector import runbook
from collector.http import CollectorServer
from collector.inventory import load_inventory
from collector.state import FleetState
from deploy.chromium import Chromium
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "alerts" / "runbook.md"
RULES_DIR = ROOT / "alerts" / "rules"
INVENTORY = ROOT / "deploy" / "demo-inventory.yaml"
ARTIFACTS = ROOT / "test-artifacts"
PHONE = (390, 844)  # CSS pixels of a common phone in portrait

AREAS = ("agent", "link", "devices", "power", "storage", "readiness", "collector")
# The contract's alerts: name -> (severity, area, for), in the contract's order.
SPEC: dict[str, tuple[str, str, str]] = {
    "BridgeWatchAgentDown": ("warning", "agent", "5m"),
    "BridgeWatchAgentStale": ("warning", "agent", "5m"),
    "BridgeWatchProbeFailing": ("warning", "agent", "15m"),
    "BridgeWatchSpoolDropping": ("warning", "agent", "1m"),
    "BridgeWatchSpoolBacklog": ("info", "agent", "15m"),
    "BridgeWatchLinkLossHigh": ("warning", "link", "10m"),
    "BridgeWatchLinkJitterHigh": ("warning", "link", "10m"),
    "BridgeWatchLinkRttHigh": ("warning", "link", "10m"),
    "BridgeWatchLinkMosLow": ("warning", "link", "10m"),
    "BridgeWatchBandwidthBelowRequired": ("warning", "link", "1m"),
    "BridgeWatchDeviceMissing": ("warning", "devices", "5m"),
    "BridgeWatchClockOffset": ("warning", "devices", "10m"),
    "BridgeWatchConferenceSoftwareClosed": ("warning", "devices", "2m"),
    "BridgeWatchUpsOnBattery": ("warning", "power", "1m"),
    "BridgeWatchUpsLowBattery": ("critical", "power", "1m"),
    "BridgeWatchUpsRuntimeLow": ("warning", "power", "5m"),
    "BridgeWatchUpsSelfTestFailed": ("warning", "power", "1m"),
    "BridgeWatchUpsUnreachable": ("warning", "power", "10m"),
    "BridgeWatchRecordingSpaceLow": ("warning", "storage", "5m"),
    "BridgeWatchRecordingVolumeMissing": ("critical", "storage", "5m"),
    "BridgeWatchBackupDiskMissing": ("warning", "storage", "10m"),
    "BridgeWatchBridgeTestFailed": ("warning", "readiness", "1m"),
    "BridgeWatchNotReadyBeforeDeadline": ("critical", "readiness", "1m"),
    "BridgeWatchCheckpointMissed": ("critical", "readiness", "1m"),
    "BridgeWatchSessionStartingNotReady": ("critical", "readiness", "1m"),
    "BridgeWatchConfirmationMissing": ("warning", "readiness", "1m"),
    "BridgeWatchCollectorDown": ("critical", "collector", "2m"),
    "BridgeWatchCollectorMqttDisconnected": ("critical", "collector", "2m"),
    "BridgeWatchCollectorNotReceiving": ("critical", "collector", "5m"),
    "BridgeWatchCollectorRejecting": ("warning", "collector", "15m"),
    "BridgeWatchCollectorIngestLagHigh": ("warning", "collector", "10m"),
    "BridgeWatchCollectorHttpInternalError": ("warning", "collector", "1m"),
    "BridgeWatchCollectorApiUnauthorized": ("warning", "collector", "10m"),
}

VI_HEADINGS = ("**Ý nghĩa**", "**Việc cần làm tại điểm cầu**", "**Khi nào báo lên**")
EN_HEADINGS = ("**Meaning**", "**On site**", "**Escalate**")
# Letters only Vietnamese uses among the Latin scripts: proof a part is really Vietnamese.
VIETNAMESE_LETTERS = set("ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ")
_UNITS = {"s": ("giây", "s"), "m": ("phút", "min"), "h": ("giờ", "h"), "d": ("ngày", "d")}


# --- the runbook's structure ---------------------------------------------------------------

@dataclass
class Section:
    name: str
    area: str  # the first word of the "# " heading above it
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def parts(self) -> tuple[str, str]:
        """The Vietnamese part (up to **Meaning**) and the English part (from it)."""
        text = self.text
        cut = text.find(EN_HEADINGS[0])
        assert cut > 0, f"{self.name}: no {EN_HEADINGS[0]}"
        return text[:cut], text[cut:]


def parse_runbook(text: str) -> tuple[list[str], dict[str, Section]]:
    """The area headings in order and the ``##`` sections, skipping fenced code."""
    areas: list[str] = []
    sections: dict[str, Section] = {}
    current: Section | None = None
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("# "):
            areas.append(line[2:].split()[0])
            current = None
            continue
        if not fenced and line.startswith("## "):
            name = line[3:].strip()
            assert name not in sections, f"two sections named {name}"
            current = sections[name] = Section(name, areas[-1] if areas else "")
            continue
        if current is not None:
            current.lines.append(line)
    return areas, sections


@pytest.fixture(scope="module")
def sections() -> dict[str, Section]:
    return parse_runbook(RUNBOOK.read_text(encoding="utf-8"))[1]


def duration_words(duration: str) -> tuple[str, str]:
    """``5m`` -> ("**5 phút**", "**5 min**"): how a section states its ``for``."""
    match = re.fullmatch(r"(\d+)([smhd])", duration)
    assert match, f"unsupported duration {duration!r}"
    vi, en = _UNITS[match.group(2)]
    return f"**{match.group(1)} {vi}**", f"**{match.group(1)} {en}**"


def check_section(section: Section, severity: str, duration: str) -> None:
    """Both languages with their three headings in order, steps, severity and ``for``."""
    vi, en = section.parts()
    for part, headings in ((vi, VI_HEADINGS), (en, EN_HEADINGS)):
        lines = part.splitlines()
        for heading in headings:
            assert lines.count(heading) == 1, f"{section.name}: {heading} not once on its line"
        positions = [lines.index(h) for h in headings]
        assert positions == sorted(positions), f"{section.name}: headings out of order"
        steps = lines[positions[1]:positions[2]]
        assert any(line.startswith("1. ") for line in steps), f"{section.name}: no steps"
        assert any(line.startswith("2. ") for line in steps), f"{section.name}: one step only"
        assert any(line.strip() for line in lines[positions[2] + 1:]), \
            f"{section.name}: {headings[2]} is empty"
    assert VIETNAMESE_LETTERS & set(vi.lower()), f"{section.name}: no Vietnamese text"
    vi_for, en_for = duration_words(duration)
    assert f"Mức độ `{severity}`" in vi, f"{section.name}: Vietnamese part lacks the severity"
    assert f"Severity `{severity}`" in en, f"{section.name}: English part lacks the severity"
    assert vi_for in vi, f"{section.name}: Vietnamese part lacks {vi_for}"
    assert en_for in en, f"{section.name}: English part lacks {en_for}"


def test_runbook_covers_the_contract_in_area_order(sections: dict[str, Section]) -> None:
    """Every alert of the contract has its section, under its area, areas in the contract's
    order, no section the contract does not know, each complete in both languages."""
    areas, _ = parse_runbook(RUNBOOK.read_text(encoding="utf-8"))
    assert [a for a in areas if a in AREAS] == list(AREAS), areas
    assert list(sections) == list(SPEC)  # same alerts, same order
    for name, (severity, area, duration) in SPEC.items():
        assert sections[name].area == area, f"{name} is under {sections[name].area}"
        check_section(sections[name], severity, duration)


def test_section_checker_rejects_what_it_should() -> None:
    """The checker is not vacuous: a section without English, with the headings swapped,
    with a wrong severity or a wrong ``for`` is refused."""
    good = parse_runbook(RUNBOOK.read_text(encoding="utf-8"))[1]["BridgeWatchAgentDown"]
    check_section(good, "warning", "5m")
    broken = [
        Section("no-english", "agent", good.text.split(EN_HEADINGS[0])[0].splitlines()),
        Section("swapped", "agent", good.text.replace(VI_HEADINGS[1], "@@").replace(
            VI_HEADINGS[2], VI_HEADINGS[1]).replace("@@", VI_HEADINGS[2]).splitlines()),
    ]
    for section in broken:
        with pytest.raises(AssertionError):
            check_section(section, "warning", "5m")
    with pytest.raises(AssertionError):
        check_section(good, "critical", "5m")
    with pytest.raises(AssertionError):
        check_section(good, "warning", "10m")


def test_every_criterion_label_is_in_the_runbook(sections: dict[str, Section]) -> None:
    """Readiness alerts name failing criteria by the catalogue's labels (``criteria`` in
    Vietnamese, ``criteria_en``): each label is a row of the table that says where to go."""
    vi, en = sections["BridgeWatchBridgeTestFailed"].parts()
    for info in CRITERIA.values():
        assert f"| {info.vi} |" in vi, info.vi
        assert f"| {info.en} |" in en, info.en


# --- the alert rules -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    """Every alerting rule of ``alerts/rules/*.yml`` (there must be some)."""
    files = sorted(RULES_DIR.glob("*.yml"))
    assert files, f"no rule files in {RULES_DIR}"
    found = []
    for path in files:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for group in document.get("groups", []):
            found += [rule for rule in group.get("rules", []) if "alert" in rule]
    assert found, "the rule files hold no alerting rule"
    return found


def test_every_rule_has_its_section(rules: list[dict[str, Any]],
                                    sections: dict[str, Section]) -> None:
    """Each alert of the rule files has a complete section stating the rule's own severity
    and ``for`` (so the runbook follows the rules when they change)."""
    for rule in rules:
        name = rule["alert"]
        assert name in sections, f"{name} has no '## {name}' section"
        check_section(sections[name], rule["labels"]["severity"], rule["for"])


def test_rules_runbook_urls_land_on_the_served_page(rules: list[dict[str, Any]],
                                                    served: Server) -> None:
    """Each ``runbook_url`` is ``/runbook#<alert lower-cased>`` and that id is on the page
    the collector serves."""
    status, _, body = served.get("/runbook")
    assert status == 200
    ids = page_ids(body)
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "/runbook", url
        assert anchor == rule["alert"].lower(), url
        assert anchor in ids, f"{url}: no id {anchor!r} on the page"


# --- rendering -------------------------------------------------------------------------------

class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for key, value in attrs:
            if key == "id" and value:
                self.ids.append(value)
            elif key == "href" and value:
                self.hrefs.append(value)


def parse_page(body: bytes) -> _Ids:
    parser = _Ids()
    parser.feed(body.decode("utf-8"))
    return parser


def page_ids(body: bytes) -> set[str]:
    return set(parse_page(body).ids)


def test_github_anchors() -> None:
    """Anchors as GitHub makes them, so a link works on the page and on the repository:
    lower case, punctuation dropped, spaces to hyphens, diacritics kept, NFD as NFC."""
    assert runbook.github_slug("BridgeWatchAgentDown") == "bridgewatchagentdown"
    assert runbook.github_slug("agent · Tác tử giám sát", "-") == "agent--tác-tử-giám-sát"
    assert (runbook.github_slug(unicodedata.normalize("NFD", "Nguồn điện và UPS"))
            == "nguồn-điện-và-ups")


def test_every_link_in_the_runbook_lands(sections: dict[str, Section]) -> None:
    """Each ``(#anchor)`` written in the runbook, and each link of the page's table of
    contents, points at an id of the rendered page; every section is in the contents."""
    text = RUNBOOK.read_text(encoding="utf-8")
    page = parse_page(runbook.render_html(text))
    ids = set(page.ids)
    written = re.findall(r"\]\(#([^)]+)\)", text)
    assert written, "the runbook links its sections to each other"
    assert set(written) <= ids, set(written) - ids
    internal = {h[1:] for h in page.hrefs if h.startswith("#")}
    assert internal <= ids, internal - ids
    assert {name.lower() for name in sections} <= internal


def test_raw_html_in_the_markdown_is_shown_as_text() -> None:
    """``<site>`` in a sentence reads as text and a stray ``<script>`` runs nothing."""
    page = runbook.render_html("# T\n\n## BridgeWatchX\n\nRun `check` for <site>.\n\n"
                               "<script>alert(1)</script>\n")
    text = page.decode()
    assert "&lt;site&gt;" in text and "&lt;script&gt;" in text
    assert "script" not in parse_page(page).tags
    assert 'id="bridgewatchx"' in text


# --- served by the collector -----------------------------------------------------------------

class Server:
    """A real ``CollectorServer`` on a free loopback port (no broker: the page needs none)."""

    def __init__(self) -> None:
        self.http = CollectorServer(("127.0.0.1", 0), FleetState(load_inventory(INVENTORY)))
        self.port = self.http.server_address[1]
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            answer = conn.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        finally:
            conn.close()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(5)


@pytest.fixture
def served() -> Iterator[Server]:
    server = Server()
    yield server
    server.close()


def test_collector_serves_the_runbook(served: Server) -> None:
    """``GET /runbook``: 200, UTF-8 HTML in Vietnamese for phones, the strict CSP as a
    header and in the page, the CSP's hash is the page's own stylesheet, no script, every
    alert's anchor; ``/runbook.md`` is the file itself as UTF-8 Markdown."""
    status, headers, body = served.get("/runbook")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    csp = headers["Content-Security-Policy"]
    assert csp == runbook.CSP and csp.startswith("default-src 'none';")
    assert "unsafe-inline" not in csp and "script-src" not in csp
    text = body.decode("utf-8")
    assert text.startswith("<!DOCTYPE html>\n<html lang=\"vi\">")
    assert '<meta charset="utf-8">' in text and 'name="viewport"' in text
    assert 'http-equiv="Content-Security-Policy"' in text
    style = re.search(r"<style>(.*?)</style>", text, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp
    page = parse_page(body)
    assert "script" not in page.tags
    assert "Sổ tay xử lý cảnh báo" in text and "Mục lục" in text
    assert {name.lower() for name in SPEC} <= set(page.ids)

    status, headers, raw = served.get("/runbook.md")
    assert status == 200
    assert headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert raw == RUNBOOK.read_bytes()


def test_missing_runbook_is_a_clear_404(served: Server, tmp_path: Path) -> None:
    """A runbook file that is not there: 404 pages saying so in Vietnamese and English,
    under the same CSP; the server carries on (the next request is answered)."""
    served.http.runbook = runbook.Runbook(tmp_path / "absent" / "runbook.md")
    status, headers, body = served.get("/runbook")
    assert status == 404
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == runbook.CSP
    text = body.decode("utf-8")
    assert '<html lang="vi">' in text
    assert "Không tìm thấy sổ tay xử lý cảnh báo" in text and "Runbook not found" in text
    status, headers, body = served.get("/runbook.md")
    assert status == 404
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "Không tìm thấy" in body.decode("utf-8") and b"Runbook not found" in body
    status, _, _ = served.get("/healthz")
    assert status in (200, 503)  # answered: 503 only says no broker is connected


def test_rendered_once_per_change(served: Server, tmp_path: Path) -> None:
    """Requests between two changes of the file share one rendering; a changed file is
    rendered again at the next request; a deleted one is a 404, a restored one served."""
    path = tmp_path / "runbook.md"
    path.write_text("# Sổ tay\n\n## BridgeWatchOne\n\nMột.\n", encoding="utf-8")
    book = served.http.runbook = runbook.Runbook(path)
    first = [served.get("/runbook") for _ in range(3)]
    assert book.renders == 1
    assert all(status == 200 and b'id="bridgewatchone"' in body for status, _, body in first)
    assert first[0][2] == first[1][2] == first[2][2]

    before = path.stat().st_mtime_ns
    path.write_text("# Sổ tay\n\n## BridgeWatchTwo\n\nHai.\n", encoding="utf-8")
    os.utime(path, ns=(before + 10**9, before + 10**9))  # a coarse clock must not hide it
    status, _, body = served.get("/runbook")
    assert status == 200 and b'id="bridgewatchtwo"' in body and b"bridgewatchone" not in body
    assert book.renders == 2
    status, _, raw = served.get("/runbook.md")
    assert raw == path.read_bytes() and book.renders == 2

    path.unlink()
    assert served.get("/runbook")[0] == 404
    path.write_text("# Sổ tay\n\n## BridgeWatchThree\n\nBa.\n", encoding="utf-8")
    status, _, body = served.get("/runbook")
    assert status == 200 and b'id="bridgewatchthree"' in body


# --- in a browser, on a phone ----------------------------------------------------------------

@pytest.fixture(scope="module")
def phone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    binary = require_binary("chromium")
    with Chromium(tmp_path_factory.mktemp("chromium"), window=PHONE, binary=binary,
                  timeout=60) as browser:
        yield browser


def test_runbook_on_a_phone(phone: Chromium, served: Server) -> None:
    """Tried: an alert's link opened in headless Chromium at 390 px: no error and no CSP
    violation, no request but the page itself, the hashed stylesheet applied, the page
    lands on the alert's section, nothing (tables included) wider than the screen; kept in
    test-artifacts/runbook-phone.png."""
    url = served.url("/runbook#bridgewatchupslowbattery")
    page = phone.open(url)
    try:
        assert page.errors == [], page.errors
        assert page.requests == [served.url("/runbook")], page.requests
        assert page.evaluate("document.documentElement.lang") == "vi"
        assert page.evaluate("document.scripts.length") == 0
        assert page.evaluate(
            "getComputedStyle(document.querySelector('h2')).borderLeftStyle") == "solid"
        assert page.evaluate("document.querySelector(':target').id") == \
            "bridgewatchupslowbattery"
        top = page.evaluate("document.getElementById('bridgewatchupslowbattery')"
                            ".getBoundingClientRect().top")
        assert 0 <= top < 50, top
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE[0], width
        tables = page.evaluate("[...document.querySelectorAll('table')]"
                               ".map(t => t.scrollWidth - t.clientWidth)")
        assert tables and all(extra <= 0 for extra in tables), tables  # no sideways scroll
        ARTIFACTS.mkdir(exist_ok=True)
        png = page.screenshot(ARTIFACTS / "runbook-phone.png")
        assert png.startswith(b"\x89PNG")
        assert page.errors == [], page.errors
    finally:
        page.close()


def test_runbook_file_setting_is_relative_to_the_collector_config(tmp_path: Path) -> None:
    """A deployment that installs the package without the repository points the collector
    at its copy of the runbook; a relative path is read beside collector.yaml."""
    from collector.main import load_config

    (tmp_path / "collector.yaml").write_text(
        "inventory: inventory.yaml\nrunbook_file: docs/runbook.md\n", encoding="utf-8")
    assert load_config(tmp_path / "collector.yaml").runbook_file == (
        tmp_path / "docs" / "runbook.md")
    (tmp_path / "default.yaml").write_text("inventory: inventory.yaml\n", encoding="utf-8")
    assert load_config(tmp_path / "default.yaml").runbook_file == runbook.DEFAULT_PATH
