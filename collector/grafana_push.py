"""``bridgewatch-collector dashboards push``: the NOC dashboards into a province's Grafana.

    GRAFANA_TOKEN=... bridgewatch-collector dashboards push --inventory inventory.yaml \\
        --url https://grafana.example.gov.vn [--dashboards DIR] [--dry-run]

The dashboards of ``dashboards/json`` are generic: a ``province`` variable picks the
province. A NOC supervising several provinces, and the technicians of each, want one folder
per province whose dashboards open on that province, so this command pushes, through
Grafana's HTTP API (``grafana-client``):

- per province of the inventory (the provinces that have sites): a folder, uid
  ``bw-<province>``, title "BridgeWatch — <Vietnamese name>" (created when missing, reused
  otherwise), and in it every dashboard that has a ``province`` variable, with uid
  ``<uid>-<province>`` (at most Grafana's 40 characters: a long one is cut and ends with a
  short hash of the whole, so it stays stable and distinct), title suffixed
  " — <province name>", the variable's current value preset to the province, and links
  between those dashboards (``/d/<uid>``) pointed at the same province's copies;
- once, into a folder ``bw-noc`` "BridgeWatch — NOC", every dashboard without a ``province``
  variable (the collector's own health), under its own uid.

Every save is ``overwrite: true`` by uid, so pushing again updates in place. The token is
read from the environment (``GRAFANA_TOKEN``, a service account token with the Editor role),
never from the command line where ``ps`` and shell history would show it, and it is never
printed. One line per dashboard; an HTTP error names the dashboard (or folder) and the
status, and the command exits 1 after the summary.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import niquests.exceptions
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaException, TokenAuth

from .inventory import Inventory, load_inventory

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "dashboards" / "json"
TOKEN_ENV = "GRAFANA_TOKEN"
UID_MAX = 40  # Grafana's limit on dashboard and folder uids
NOC_FOLDER_UID = "bw-noc"
NOC_FOLDER_TITLE = "BridgeWatch — NOC"
MESSAGE = "bridgewatch-collector dashboards push"
PROVINCE_VARIABLE = "province"
TIMEOUT_SECONDS = 15.0


class PushError(Exception):
    """A problem with the command's input, reported before anything is sent."""


@dataclass(frozen=True)
class DashboardFile:
    """One dashboard JSON file, as generated in dashboards/json."""

    path: Path
    model: dict[str, Any]

    @property
    def uid(self) -> str:
        return str(self.model["uid"])

    @property
    def title(self) -> str:
        return str(self.model["title"])

    @property
    def per_province(self) -> bool:
        """A dashboard with a ``province`` variable gets one copy per province."""
        return any(v.get("name") == PROVINCE_VARIABLE for v in _variables(self.model))


@dataclass(frozen=True)
class Target:
    """Where one dashboard goes: the folder (created if missing) and the model to save."""

    folder_uid: str
    folder_title: str
    source: DashboardFile
    dashboard: dict[str, Any]


def fit_uid(uid: str) -> str:
    """``uid`` itself when it fits in 40 characters, else a stable cut plus a short hash.

    The hash is of the whole uid, so two long uids sharing their first 31 characters still
    differ, and the same input always gives the same uid (a second push overwrites).
    """
    if len(uid) <= UID_MAX:
        return uid
    digest = hashlib.sha256(uid.encode()).hexdigest()[:8]
    return f"{uid[:UID_MAX - len(digest) - 1].rstrip('-')}-{digest}"


def _variables(model: dict[str, Any]) -> list[dict[str, Any]]:
    templating = model.get("templating")
    listed = templating.get("list") if isinstance(templating, dict) else None
    return [v for v in listed if isinstance(v, dict)] if isinstance(listed, list) else []


def load_dashboards(directory: Path) -> list[DashboardFile]:
    """Every ``*.json`` of the directory, in name order; each must have a uid and a title."""
    if not directory.is_dir():
        raise PushError(f"không có thư mục / no directory {directory}")
    found: list[DashboardFile] = []
    for path in sorted(directory.glob("*.json")):
        try:
            model = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise PushError(f"{path}: không đọc được / cannot read: {err}") from None
        if not isinstance(model, dict) or not model.get("uid") or not model.get("title"):
            raise PushError(f"{path}: thiếu uid hoặc title / no uid or title")
        found.append(DashboardFile(path, model))
    if not found:
        raise PushError(f"không có bảng điều khiển nào / no dashboards (*.json) in {directory}")
    uids = [d.uid for d in found]
    if len(set(uids)) != len(uids):
        raise PushError(f"{directory}: trùng uid / duplicate dashboard uids {sorted(uids)}")
    return found


def _relink(value: Any, uids: dict[str, str]) -> Any:
    """Links to ``/d/<uid>`` of a per-province dashboard, pointed at this province's copy."""
    if isinstance(value, dict):
        return {k: _relink(v, uids) for k, v in value.items()}
    if isinstance(value, list):
        return [_relink(v, uids) for v in value]
    if isinstance(value, str) and "/d/" in value:
        for old, new in uids.items():
            for end in ("/", "?", '"', "#"):
                value = value.replace(f"/d/{old}{end}", f"/d/{new}{end}")
            if value.endswith(f"/d/{old}"):
                value = value[: -len(old)] + new
    return value


def province_dashboard(source: DashboardFile, province: str, name: str,
                       uids: dict[str, str]) -> dict[str, Any]:
    """The province's copy: its uid and title, the province preset, links kept inside."""
    model = _relink(copy.deepcopy(source.model), uids)
    model["id"] = None  # Grafana: id null, the uid identifies the dashboard
    model["uid"] = uids[source.uid]
    model["title"] = f"{source.title} — {name}"
    for variable in _variables(model):
        if variable.get("name") == PROVINCE_VARIABLE:
            value: Any = [province] if variable.get("multi") else province
            variable["current"] = {"selected": True, "text": value, "value": value}
    return model


def plan(inventory: Inventory, dashboards: list[DashboardFile]) -> list[Target]:
    """Every save to make, province folders first (inventory order), then the NOC's."""
    provinces = [p for p in inventory.provinces
                 if any(s.province == p for s in inventory.sites.values())]
    per_province = [d for d in dashboards if d.per_province]
    targets: list[Target] = []
    for province in provinces:
        name = inventory.provinces[province]
        uids = {d.uid: fit_uid(f"{d.uid}-{province}") for d in per_province}
        for source in per_province:
            targets.append(Target(fit_uid(f"bw-{province}"), f"BridgeWatch — {name}", source,
                                  province_dashboard(source, province, name, uids)))
    for source in dashboards:
        if not source.per_province:
            model = copy.deepcopy(source.model)
            model["id"] = None
            targets.append(Target(NOC_FOLDER_UID, NOC_FOLDER_TITLE, source, model))
    return targets


def grafana_api(url: str, token: str) -> GrafanaApi:
    """A client for ``url`` (a sub-path like https://host/grafana works) with the token."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PushError(f"--url phải là / must be http(s)://host[:port][/path], not {url!r}")
    path = parts.path if parts.path.endswith("/") or not parts.path else parts.path + "/"
    # grafana-client appends "api" to the path as given: "/grafana" would become
    # "/grafanaapi".
    base = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    return GrafanaApi.from_url(base, credential=TokenAuth(token), timeout=TIMEOUT_SECONDS)


def _http_error(err: GrafanaException) -> str:
    """``HTTP 401 Unauthorized``: status and Grafana's message, never the request itself."""
    response = err.response
    message = response.get("message") if isinstance(response, dict) else None
    text = message or str(err.message or "")
    if not err.status_code:  # a timeout or a broken connection: no HTTP answer at all
        return f"không có trả lời / no answer: {text}"
    return f"HTTP {err.status_code} {text}".strip()


def push(api: GrafanaApi, targets: list[Target], base_url: str) -> tuple[int, int]:
    """Make every save; ``(pushed, errors)``. Stops early on 401: the token is refused."""
    pushed = errors = 0
    ready: dict[str, bool] = {}  # folder uid -> usable
    for index, target in enumerate(targets):
        name = f"{target.source.path.name} → {target.dashboard['uid']}"
        try:
            if target.folder_uid not in ready:
                ready[target.folder_uid] = False
                try:
                    api.folder.get_folder(target.folder_uid)
                except GrafanaException as err:
                    if err.status_code != 404:
                        raise
                    api.folder.create_folder(target.folder_title, uid=target.folder_uid)
                    print(f"tạo thư mục / created folder {target.folder_uid} "
                          f"«{target.folder_title}»", flush=True)
                ready[target.folder_uid] = True
            if not ready[target.folder_uid]:
                errors += 1
                print(f"LỖI / ERROR: {name}: không đẩy vì thư mục lỗi / not pushed, folder "
                      f"{target.folder_uid} failed", file=sys.stderr, flush=True)
                continue
            answer = api.dashboard.update_dashboard({
                "dashboard": target.dashboard, "folderUid": target.folder_uid,
                "overwrite": True, "message": MESSAGE})
        except niquests.exceptions.RequestException as err:
            left = len(targets) - index
            errors += left
            print(f"LỖI: không kết nối được Grafana / ERROR: cannot reach Grafana at {base_url} "
                  f"({type(err).__name__}); {left} bảng chưa đẩy / dashboards not pushed",
                  file=sys.stderr, flush=True)
            break
        except GrafanaException as err:
            errors += 1
            where = name if ready.get(target.folder_uid) else \
                f"{name} (thư mục / folder {target.folder_uid})"
            print(f"LỖI / ERROR: {where}: {_http_error(err)}", file=sys.stderr, flush=True)
            if err.status_code == 401:
                left = len(targets) - index - 1
                errors += left
                print(f"Grafana từ chối mã {TOKEN_ENV} (cần mã service account, quyền Editor); "
                      f"dừng, {left} bảng chưa đẩy / Grafana refused the {TOKEN_ENV} token "
                      f"(a service account token with the Editor role is needed); stopping, "
                      f"{left} dashboards not pushed", file=sys.stderr, flush=True)
                break
            continue
        pushed += 1
        # Grafana's "url" already holds a sub-path (root_url), so it is joined to the host.
        link = urljoin(base_url, answer.get("url", "")) if isinstance(answer, dict) else base_url
        print(f"đã đẩy / pushed {name} «{target.dashboard['title']}» "
              f"→ {link} (phiên bản / version "
              f"{answer.get('version') if isinstance(answer, dict) else '?'})", flush=True)
    return pushed, errors


def push_main(argv: list[str]) -> int:
    """``dashboards push``: 0 all pushed, 1 an HTTP error, 2 bad input or no token."""
    parser = argparse.ArgumentParser(
        prog="bridgewatch-collector dashboards push",
        description="Đẩy bảng điều khiển lên Grafana, một thư mục mỗi tỉnh / push the "
                    f"dashboards to Grafana, one folder per province. Token: env {TOKEN_ENV}.")
    parser.add_argument("--inventory", required=True, type=Path, help="site inventory YAML")
    parser.add_argument("--url", required=True, help="Grafana base URL, e.g. https://host:3000")
    parser.add_argument("--dashboards", type=Path, default=DEFAULT_DIR,
                        help=f"directory of dashboard JSON files (default {DEFAULT_DIR})")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be pushed; contact nothing, no token needed")
    args = parser.parse_args(argv)
    try:
        inventory = load_inventory(args.inventory)
        targets = plan(inventory, load_dashboards(args.dashboards))
        if args.dry_run:
            for target in targets:
                print(f"sẽ đẩy / would push {target.source.path.name} → "
                      f"{target.dashboard['uid']} «{target.dashboard['title']}» "
                      f"(thư mục / folder {target.folder_uid})")
            print(f"{len(targets)} bảng, chưa gửi gì / dashboards, nothing sent (--dry-run)")
            return 0
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            print(f"LỖI: thiếu mã truy cập Grafana, hãy đặt biến môi trường {TOKEN_ENV} "
                  f"(không nhận qua tham số dòng lệnh).\nERROR: no Grafana token: set the "
                  f"{TOKEN_ENV} environment variable (it is never accepted as an option).",
                  file=sys.stderr)
            return 2
        api = grafana_api(args.url, token)
    except (OSError, PushError, ValueError) as err:  # InventoryError is a ValueError
        print(f"LỖI / ERROR: {err}", file=sys.stderr)
        return 2
    pushed, errors = push(api, targets, args.url)
    print(f"Đã đẩy {pushed}/{len(targets)} bảng, {errors} lỗi / pushed {pushed}/{len(targets)} "
          f"dashboards, {errors} failed", flush=True)
    return 1 if errors else 0


def main(argv: list[str]) -> int:
    """``dashboards <command>``: only ``push`` for now."""
    if argv[:1] == ["push"]:
        return push_main(argv[1:])
    parser = argparse.ArgumentParser(prog="bridgewatch-collector dashboards")
    parser.add_argument("command", choices=["push"])
    parser.parse_args(argv[:1])  # prints usage and exits 2 on anything else
    return 2
