"""A loopback HTTP server answering like Grafana's HTTP API for folders and dashboards.

No Grafana server can be installed where the tests run, so ``bridgewatch-collector dashboards
push`` is tested against this stand-in: it records every request (method, path, headers,
JSON body) and answers the way Grafana's documentation says the real API answers, including
its refusals, so a client that sends the wrong shape gets the error a real Grafana would give.

The shapes, from Grafana's HTTP API reference (the ``/api`` endpoints, documented up to
Grafana 11 and still served by 12 next to the new ``/apis`` structure):

- Folder API, https://grafana.com/docs/grafana/v10.2/developers/http_api/folder/ :
  ``GET /api/folders/:uid`` answers the folder (``id``, ``uid``, ``title``, ``url``, ``version``
  ...) with 200, or 404 "Folder not found"; ``POST /api/folders`` takes ``{"uid", "title"}``
  (uid optional, at most 40 characters) and answers the new folder with 200; an existing
  uid is refused with 409.
- Dashboard API, https://grafana.com/docs/grafana/v11.0/developers/http_api/dashboard/ :
  ``POST /api/dashboards/db`` takes ``{"dashboard": {... "id": null, "uid": ...},
  "folderUid", "message", "overwrite"}`` and answers ``{"id", "uid", "url", "status":
  "success", "version", "slug"}`` with 200; 400 for invalid fields (a uid longer than 40
  characters, an empty title, an unknown folder), 401 without valid credentials, 412 when a
  dashboard with that uid exists and ``overwrite`` is not true.
- Every request needs ``Authorization: Bearer <token>`` (service account token); without it,
  or with another token, 401 ``{"message": "Unauthorized"}``.
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

UID_MAX = 40  # Grafana: "The uid can have a maximum length of 40 characters."


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received, and what the fake answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON body, None when there was none
    status: int


def slugify(title: str) -> str:
    """Grafana-like slug for the ``url`` of a dashboard or folder: ASCII, lower, dashes."""
    ascii_title = unicodedata.normalize("NFKD", title.replace("đ", "d").replace("Đ", "D"))
    ascii_title = ascii_title.encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", errors="replace")
        status, reply = self.server.grafana._answer(method, self.path,
                                                    dict(self.headers.items()), body)
        payload = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the recorded requests are the log."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, grafana: FakeGrafana):
        self.grafana = grafana
        super().__init__(("127.0.0.1", 0), _Handler)


class FakeGrafana:
    """Folders and dashboards in memory, behind Grafana's documented requests and answers.

    ``fail`` maps a dashboard uid to an HTTP status the fake answers instead of saving it
    (e.g. 500), to test how the client reports a server that breaks mid-way.
    """

    def __init__(self, token: str, fail: dict[str, int] | None = None) -> None:
        self.token = token
        self.fail = dict(fail or {})
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}  # uid -> {"dashboard", "folderUid", ...}
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._next_id = 1
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="fake-grafana", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> FakeGrafana:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _answer(self, method: str, path: str, headers: dict[str, str],
                body: Any) -> tuple[int, Any]:
        with self._lock:
            status, reply = self._route(method, path, headers, body)
            self.requests.append(RecordedRequest(method, path, headers, body, status))
            return status, reply

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _route(self, method: str, path: str, headers: dict[str, str],
               body: Any) -> tuple[int, Any]:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        if auth != f"Bearer {self.token}":
            return 401, {"message": "Unauthorized"}
        path = path.split("?", 1)[0]
        folder = re.fullmatch(r"/api/folders/([^/]+)", path)
        if method == "GET" and folder:
            found = self.folders.get(folder.group(1))
            return (200, found) if found else (404, {"message": "Folder not found"})
        if method == "POST" and path == "/api/folders":
            return self._create_folder(body)
        if method == "POST" and path == "/api/dashboards/db":
            return self._save_dashboard(body)
        return 404, {"message": "Not found"}

    def _create_folder(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("title"), str) \
                or not body["title"].strip():
            return 400, {"message": "folder title cannot be empty"}
        uid = body.get("uid")
        if not isinstance(uid, str) or not uid or len(uid) > UID_MAX \
                or not re.fullmatch(r"[A-Za-z0-9_-]+", uid):
            return 400, {"message": "invalid uid for folder provided"}
        if uid in self.folders:
            return 409, {"message": "a folder with the same uid already exists"}
        folder = {"id": self._id(), "uid": uid, "title": body["title"],
                  "url": f"/dashboards/f/{uid}/{slugify(body['title'])}", "hasAcl": False,
                  "canSave": True, "canEdit": True, "canAdmin": True, "version": 1}
        self.folders[uid] = folder
        return 200, folder

    def _save_dashboard(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("dashboard"), dict):
            return 400, {"message": "bad request data"}
        dashboard = body["dashboard"]
        uid, title = dashboard.get("uid"), dashboard.get("title")
        if not isinstance(title, str) or not title.strip():
            return 400, {"message": "Dashboard title cannot be empty", "status": "empty-name"}
        if not isinstance(uid, str) or not uid or len(uid) > UID_MAX:
            return 400, {"message": "Dashboard UID too long" if isinstance(uid, str) and uid
                         else "Dashboard UID required here", "status": "bad-uid"}
        folder_uid = body.get("folderUid")
        if folder_uid not in (None, "") and folder_uid not in self.folders:
            return 400, {"message": "folder not found", "status": "not-found"}
        if uid in self.fail:
            return self.fail[uid], {"message": f"injected failure {self.fail[uid]}"}
        existing = self.dashboards.get(uid)
        if existing is not None and body.get("overwrite") is not True:
            return 412, {"message": "The dashboard has been changed by someone else",
                         "status": "version-mismatch"}
        version = 1 if existing is None else existing["version"] + 1
        dashboard_id = self._id() if existing is None else existing["id"]
        self.dashboards[uid] = {"dashboard": dashboard, "folderUid": folder_uid,
                                "message": body.get("message"), "version": version,
                                "id": dashboard_id}
        slug = slugify(title)
        return 200, {"id": dashboard_id, "uid": uid, "url": f"/d/{uid}/{slug}",
                     "status": "success", "version": version, "slug": slug}
