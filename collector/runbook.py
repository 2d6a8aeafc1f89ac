"""The alert runbook (``alerts/runbook.md``) as one HTML page: ``GET /runbook``.

Every alert's ``runbook_url`` is ``/runbook#<alert name lower-cased>``, so a technician who
taps the link in a Telegram message or an e-mail lands on that alert's section, on a phone
more often than not. The page is therefore one small self-contained document: Vietnamese
(``lang="vi"``), UTF-8, a viewport for phones, a short table of contents, inline CSS only,
and the same strict Content-Security-Policy as the biên bản (``collector.report``): the
page's own stylesheet by hash and nothing else, no script, no request, no form.

Headings get GitHub's anchors (:func:`github_slug`), so the links work the same on this
page and on the repository's rendering of the file. Raw HTML in the Markdown is not passed
through: ``<site>`` in a sentence must read as text, not vanish as an unknown tag.

The file is rendered once per change (its mtime and size), not per request: the page is
read in bursts, when an alert fans out to every technician of a province. ``/runbook.md``
serves the file itself. A missing file is a 404 page saying so in both languages; the
collector's log names the path it looked for.
"""

from __future__ import annotations

import html
import logging
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import markdown

from .api import Response
from .htmlpage import csp_for
from .report import HTML_CONTENT_TYPE
from .selfmetrics import LogOnce

log = logging.getLogger("bridgewatch.collector.runbook")

# The repository's runbook, beside the package (a checkout or an editable install).
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "alerts" / "runbook.md"
MARKDOWN_CONTENT_TYPE = "text/markdown; charset=utf-8"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
ALERT_PREFIX = "BridgeWatch"  # left out of the table of contents' link texts: shorter lines
TOC_ID = "muc-luc"

_CSS = """
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body { margin: 0; background: #fff; color: #1a1a1a; font-size: 16px; line-height: 1.55;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", Arial, sans-serif; }
main { max-width: 48rem; margin: 0 auto; padding: 0.75rem 1rem 4rem; }
h1 { font-size: 1.45rem; line-height: 1.25; margin: 2rem 0 0.75rem; padding-top: 0.75rem;
  border-top: 3px solid #1f4e79; color: #1f4e79; }
main > h1:first-child { border-top: 0; margin-top: 0.5rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 0.5rem; padding: 0.35rem 0.5rem; background: #eef3f8;
  border-left: 4px solid #1f4e79; overflow-wrap: anywhere; scroll-margin-top: 0.5rem; }
h2:target { background: #fff3c4; border-left-color: #b8860b; }
p, li { overflow-wrap: break-word; }
p > strong:only-child { display: block; margin-top: 1rem; color: #1f4e79; }
ol, ul { padding-left: 1.4rem; }
li { margin: 0.3rem 0; }
code { font-family: ui-monospace, "DejaVu Sans Mono", Consolas, monospace; font-size: 0.9em;
  background: #f3f3f3; padding: 0.05em 0.25em; border-radius: 3px; overflow-wrap: anywhere; }
pre { background: #f3f3f3; padding: 0.6rem; overflow-x: auto; border-radius: 4px; }
pre code { background: none; padding: 0; overflow-wrap: normal; }
table { display: block; overflow-x: auto; border-collapse: collapse; margin: 0.75rem 0;
  font-size: 0.92em; }
th, td { border: 1px solid #c8c8c8; padding: 0.3rem 0.45rem; text-align: left;
  vertical-align: top; }
th { background: #eef3f8; }
td a { overflow-wrap: anywhere; }
a { color: #0b5cad; }
nav { margin: 0.5rem 0 1rem; padding: 0.5rem 0.75rem; background: #f7f7f7;
  border: 1px solid #ddd; border-radius: 6px; scroll-margin-top: 0.5rem; }
nav summary { font-weight: bold; cursor: pointer; }
nav > details > ul { list-style: none; padding: 0; margin: 0.5rem 0 0; }
nav > details > ul > li { margin: 0.5rem 0; }
nav ul ul { display: flex; flex-wrap: wrap; gap: 0.2rem 0.9rem; list-style: none;
  padding: 0; margin: 0.2rem 0 0; font-size: 0.92em; }
nav ul ul li { margin: 0; }
a.top { position: fixed; right: 0.75rem; bottom: 0.75rem; padding: 0.4rem 0.7rem;
  background: #1f4e79; color: #fff; border-radius: 1rem; text-decoration: none;
  font-size: 0.9em; }
.missing { margin-top: 2rem; }
@media print { a.top, nav { display: none; } }
""".strip()

CSP = csp_for(_CSS)
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache"}

_NOT_WORD = re.compile(r"[^\w\- ]")


def github_slug(value: str, separator: str = "-") -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation out, spaces to ``-``.

    ``BridgeWatchAgentDown`` gives ``bridgewatchagentdown``, the ``runbook_url`` anchors.
    Letters keep their diacritics (``Tác tử`` gives ``tác-tử``) as on GitHub; NFC first,
    so a file saved with combining marks gets the same anchors.
    """
    text = unicodedata.normalize("NFC", value).strip().lower()
    return _NOT_WORD.sub("", text).replace(" ", separator)


def _converter() -> markdown.Markdown:
    """Markdown with GitHub-style anchors and tables; raw HTML is shown as text."""
    md = markdown.Markdown(
        extensions=["toc", "tables", "fenced_code", "sane_lists"],
        extension_configs={"toc": {"slugify": github_slug, "toc_depth": "1-2"}},
        output_format="html",
    )
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    return md


def _toc(tokens: list[dict[str, Any]]) -> str:
    """The table of contents: each area (``#``) with its alerts (``##``) as short links.

    A top heading without sections under it (the page's title) is not listed.
    """
    areas = []
    for area in tokens:
        if not area["children"]:
            continue
        links = []
        for section in area["children"]:
            name = section["name"]  # already HTML-escaped by the toc extension
            short = name[len(ALERT_PREFIX):] if name.startswith(ALERT_PREFIX) else name
            links.append(f'<li><a href="#{html.escape(section["id"])}" title="{name}">'
                         f"{short}</a></li>")
        areas.append(f'<li><a href="#{html.escape(area["id"])}">{area["name"]}</a>'
                     f"<ul>{''.join(links)}</ul></li>")
    return (f'<nav id="{TOC_ID}" aria-label="Mục lục"><details open>'
            f"<summary>Mục lục · Contents</summary><ul>{''.join(areas)}</ul></details></nav>")


def _document(title: str, body: str) -> bytes:
    return (
        '<!DOCTYPE html>\n<html lang="vi"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(CSP)}">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{title}</title><style>{_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    ).encode()


def render_html(text: str) -> bytes:
    """The whole page for the runbook's Markdown ``text``."""
    md = _converter()
    content = md.convert(text)
    tokens: list[dict[str, Any]] = getattr(md, "toc_tokens", [])  # set by the toc extension
    title = tokens[0]["name"] if tokens else "Sổ tay xử lý cảnh báo BridgeWatch"
    # The contents go right under the page's title, the first heading, when there is one.
    head, closing, rest = content.partition("</h1>")
    if not closing:  # no title: the contents lead
        head, rest = "", content
    body = f'{head}{closing}{_toc(tokens)}{rest}<a class="top" href="#{TOC_ID}">↑ Mục lục</a>'
    return _document(title, body)


MISSING_HTML = _document(
    "Không tìm thấy sổ tay · Runbook not found",
    '<h1>Không tìm thấy sổ tay xử lý cảnh báo</h1><p lang="vi">Máy chủ thu thập '
    "(collector) không tìm thấy hoặc không đọc được tệp <code>runbook.md</code>, nên chưa "
    "hiển thị được hướng dẫn xử lý cảnh báo. Nhật ký của collector ghi đường dẫn đã tìm. "
    "Hãy báo NOC của Sở KH&amp;CN.</p>"
    '<div class="missing" lang="en"><h1>Runbook not found</h1><p>The collector cannot '
    "find or read its <code>runbook.md</code> file, so the alert instructions cannot be "
    "shown. The collector's log names the path it looked for. Please tell the province "
    "NOC (Department of Science &amp; Technology).</p></div>")
MISSING_TEXT = ("Không tìm thấy sổ tay xử lý cảnh báo (runbook.md) trên máy chủ thu thập.\n"
                "Runbook not found: the collector cannot find or read runbook.md.\n").encode()


@dataclass(frozen=True)
class Page:
    """One rendering of the file, and which version of the file it was made from."""

    version: tuple[int, int]  # (st_mtime_ns, st_size)
    markdown: bytes
    html: bytes


class Runbook:
    """The runbook file and its cached rendering; safe to share between request threads."""

    def __init__(self, path: Path = DEFAULT_PATH) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._page: Page | None = None
        self._log_once = LogOnce(log)
        self.renders = 0  # how many times the file was rendered (the cache at work)

    def page(self) -> Page | None:
        """The current rendering, redone only when the file changed; None when missing.

        The version is taken *before* reading, so a file changed while it is read is
        rendered again on the next request rather than cached under its new version.
        """
        try:
            stat = self.path.stat()
            version = (stat.st_mtime_ns, stat.st_size)
            with self._lock:
                if self._page is not None and self._page.version == version:
                    return self._page
                raw = self.path.read_bytes()
                page = Page(version, raw, render_html(raw.decode("utf-8")))
                self._page = page
                self.renders += 1
                return page
        except (FileNotFoundError, NotADirectoryError):
            self._log_once.warning(("missing", str(self.path)), "runbook %s not found",
                                   self.path)
        except (OSError, UnicodeDecodeError) as err:
            self._log_once.warning(("unreadable", str(self.path)), "runbook %s unreadable: %s",
                                   self.path, err)
        return None

    def html_response(self) -> Response:
        """``GET /runbook``: the page, or the 404 page in Vietnamese and English."""
        page = self.page()
        if page is None:
            return Response(404, MISSING_HTML, HTML_CONTENT_TYPE, dict(_HEADERS))
        return Response(200, page.html, HTML_CONTENT_TYPE, dict(_HEADERS))

    def markdown_response(self) -> Response:
        """``GET /runbook.md``: the file as it is (for a text reader or a wiki)."""
        page = self.page()
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
        if page is None:
            return Response(404, MISSING_TEXT, TEXT_CONTENT_TYPE, headers)
        return Response(200, page.markdown, MARKDOWN_CONTENT_TYPE, headers)
