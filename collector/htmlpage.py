"""What every page the collector serves shares: escaping, the vi/en pick, and the CSP.

The biên bản, the runbook and the readiness board are self-contained pages. Each allows
its own stylesheet (by hash) and nothing else: no script, no request, no form, so a
hostile session title or site name can at worst be shown as text.
"""

from __future__ import annotations

import base64
import hashlib
import html


def escape(value: object) -> str:
    """HTML-escape anything shown: titles, names and requesters come from outside."""
    return html.escape(str(value), quote=True)


def pick(pair: tuple[str, str], lang: str) -> str:
    """The English half of a (vi, en) pair when asked for, else the Vietnamese."""
    return pair[1] if lang == "en" else pair[0]


def csp_for(css: str) -> str:
    """The Content-Security-Policy of a page whose only resource is the stylesheet ``css``."""
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    return (f"default-src 'none'; style-src 'sha256-{digest}'; img-src data:; "
            "base-uri 'none'; form-action 'none'")
