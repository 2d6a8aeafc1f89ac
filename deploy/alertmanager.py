"""A real Alertmanager on loopback, and a copy of the shipped configuration that pages a
local sink instead of Telegram, mail and the NOC.

The routing, grouping, inhibition and templates under test are the shipped ones
(alerts/alertmanager.yml): local_config() changes only where notifications go.
"""

from __future__ import annotations

import glob
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from deploy.localstack import MissingPrerequisite, Process, find_binary, free_port, wait_until


def alertmanager_binary() -> str:
    """Debian ships it as prometheus-alertmanager, upstream tarballs as alertmanager."""
    try:
        return find_binary("prometheus-alertmanager")
    except MissingPrerequisite:
        return find_binary("alertmanager")


class Alertmanager(Process):
    """One Alertmanager, no cluster gossip, its state (silences, notification log) in workdir."""

    def __init__(self, workdir: Path, config: Path, port: int | None = None):
        self.workdir = workdir
        self.config = config
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__([
            alertmanager_binary(),
            f"--config.file={config}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--web.external-url=http://127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # empty: a single instance, no gossip port
        ], workdir / "alertmanager.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        wait_until(lambda: self._request("GET", "/-/ready") is not None or not self.running,
                   30, "alertmanager ready")
        if not self.running:
            raise RuntimeError(f"alertmanager exited:\n{self.log()}")

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            raise RuntimeError(f"{method} {path}: HTTP {err.code}: {detail}") from err
        if not raw:
            return b""
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """What Prometheus does: POST /api/v2/alerts (labels, annotations, startsAt, endsAt)."""
        self._request("POST", "/api/v2/alerts", alerts)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds, with status.state and status.inhibitedBy."""
        result = self._request("GET", "/api/v2/alerts")
        if not isinstance(result, list):
            raise RuntimeError(f"GET /api/v2/alerts: unexpected answer {result!r}")
        return result


def local_config(source: Path, dest_dir: Path, sink_url: str) -> Path:
    """Write a copy of the shipped config whose receivers all point at ``sink_url``.

    Webhooks go to ``<sink_url>/<receiver>``, Telegram's API to
    ``<sink_url>/telegram/<receiver>``, mail is dropped (no SMTP server on loopback); routes,
    timers, inhibitions and templates stay as shipped. The templates are copied next to the
    copy, so the relative ``templates:`` globs resolve as they do in production.
    """
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    sink_url = sink_url.rstrip("/")
    for receiver in config.get("receivers") or []:
        name = receiver["name"]
        for webhook in receiver.get("webhook_configs") or []:
            webhook["url"] = f"{sink_url}/{name}"
        for telegram in receiver.get("telegram_configs") or []:
            telegram["api_url"] = f"{sink_url}/telegram/{name}"
        receiver.pop("email_configs", None)
    dest_dir.mkdir(parents=True, exist_ok=True)
    for pattern in config.get("templates") or []:
        if Path(pattern).is_absolute():
            raise ValueError(f"template glob {pattern!r} must be relative to the config")
        for found in glob.glob(str(source.parent / pattern)):
            target = dest_dir / Path(found).relative_to(source.parent)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found, target)
    dest = dest_dir / "alertmanager.yml"
    dest.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
                    encoding="utf-8")
    return dest
