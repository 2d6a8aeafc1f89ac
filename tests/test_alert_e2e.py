"""The proof of issue 6: a bridge fails its T-2h test, the right technician is paged, and
gets the resolve once it is fixed. Real parts end to end, shipped rules and routing.

Real Mosquitto, collector (readiness service and API), reflector, NUT ``upsd``, agents,
Prometheus evaluating ``alerts/rules/*.yml`` unchanged, Alertmanager running
``alerts/alertmanager.yml`` with only its receiver addresses pointed at a local sink
(``deploy.alertmanager.local_config``), and the sink recording the webhook and Telegram
calls.

The session starts 2 h 30 min from now, so the T-2h test window is open and its deadline
is 30 minutes away: less than half the window, so a bridge not ready now is a page
(``BridgeWatchNotReadyBeforeDeadline``, critical). The collector is configured with the
T-2h and start checkpoints only (a province may drop the others), so confirmations and a
T-24h deadline already past do not add their own alerts. Tràm Chim's mains is cut
(UPS on battery, 29 min left for a 30 min session + 5 min margin): its test fails on
``ups-power`` and ``ups-runtime``, the Đồng Tháp on-call technician is paged with the
bridge, the session and both criteria, the national on-call is not. Mains back, the
collector's retry passes, and the resolve arrives.

The figure: seconds from the failing test's finish (the agent's own timestamp, same
clock) to the page at the sink, and from the passing test to the resolve, printed with
the settings that explain them, and kept in ``test-artifacts/alert-e2e.json``.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from collector.readiness.model import VIETNAM
from collector.reflector import Reflector, ReflectorSettings
from deploy.alertmanager import Alertmanager, local_config
from deploy.localstack import Mosquitto, Process, Prometheus, free_port, port_open, wait_until
from deploy.nut import ON_BATTERY, ONLINE, Upsd
from deploy.paging_sink import PagingSink
from tests.collector_client import call_api, write_yaml
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
HOST, WEAK = "dt-trung-tam", "dt-tram-chim"
SESSION = "tcd-alert-e2e"
TOKEN = "noc-alert-e2e " + "a" * 32
KEY = b"alert-e2e-reflector-key-0123456789"
EVALUATION = "2s"  # the test Prometheus scrapes and evaluates every 2 s (shipped: 15 s)
RETRY_SECONDS = 20
# T-2h and start with the regulations' windows (2 h each); see the module docstring.
CHECKPOINTS = [
    {"name": "test-2", "kind": "test", "offset_seconds": -7200, "window_seconds": 7200},
    {"name": "start", "kind": "start", "offset_seconds": 0, "window_seconds": 7200},
]
PAGE = "BridgeWatchNotReadyBeforeDeadline"


def api(port: int, method: str, path: str, body: bytes | None = None,
        content_type: str = "application/json") -> tuple[int, Any]:
    return call_api(port, TOKEN.split()[1], method, path, body, content_type)


def agent_config(work: Path, site: str, broker_port: int, reflector: Reflector,
                 ups_port: int) -> Path:
    (work / "reflector.key").write_bytes(KEY)
    return write_yaml(work / f"{site}.yaml", {
        "site": site, "province": "dong-thap", "interval_seconds": 2,
        "broker": {"host": "127.0.0.1", "port": broker_port},
        "spool": {"path": str(work / f"{site}.sqlite")},
        "link": {"reflector": {"host": "127.0.0.1", "udp_port": reflector.udp_port,
                               "tcp_port": reflector.tcp_port,
                               "key_file": str(work / "reflector.key")},
                 "required_bandwidth_mbps": 1},
        "session": {"ups_margin_seconds": 300},
        "readiness": {"link_seconds": 2, "bandwidth_seconds": 1},
        "ups": [{"name": "ups-1", "nut": {"host": "127.0.0.1", "port": ups_port,
                                          "ups": site}}],
    })


def site_tests(port: int, site: str) -> list[dict[str, Any]]:
    status, body = api(port, "GET", f"/api/tests?site={site}")
    assert status == 200, body
    return sorted(body, key=finished)


def finished(test: dict[str, Any]) -> float:
    return datetime.fromisoformat(test["finished"]).timestamp()


def page_alerts(body: dict[str, Any], status: str) -> list[dict[str, Any]]:
    """The alerts named PAGE with ``status`` in one webhook notification."""
    return [a for a in body.get("alerts", [])
            if a["labels"].get("alertname") == PAGE and a["status"] == status]


def test_failing_bridge_pages_its_technician_and_resolves(tmp_path: Path) -> None:
    for binary in ("mosquitto", "prometheus", "prometheus-alertmanager"):
        require_binary(binary)
    require_binary("upsd", "/lib/nut")
    (tmp_path / "tokens").write_text(TOKEN + "\n")
    http_port = free_port()
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    upsd = Upsd(tmp_path / "nut", {HOST: ONLINE, WEAK: ONLINE})
    upsd.start()
    parts: list[Any] = []
    with PagingSink() as sink, Reflector(ReflectorSettings(
            key=KEY, host="127.0.0.1", udp_port=0, tcp_port=0)) as reflector:
        try:
            manager = Alertmanager(tmp_path / "alertmanager", local_config(
                ROOT / "alerts" / "alertmanager.yml", tmp_path / "alertmanager", sink.url))
            manager.start()
            parts.append(manager)
            collector = Process(
                [sys.executable, "-m", "collector.main", "--config",
                 str(write_yaml(tmp_path / "collector.yaml", {
                     "inventory": str(ROOT / "deploy" / "demo-inventory.yaml"),
                     "listen": f"127.0.0.1:{http_port}",
                     "broker": {"host": "127.0.0.1", "port": broker.port},
                     "readiness": {"database": "readiness.sqlite", "api_tokens_file": "tokens",
                                   "tick_seconds": 1, "retry_after_seconds": RETRY_SECONDS,
                                   "max_attempts": 50, "checkpoints": CHECKPOINTS}}))],
                tmp_path / "collector.log")
            collector.start()
            parts.append(collector)
            wait_until(lambda: port_open(http_port) or not collector.running, 30,
                       "the collector's HTTP port")
            prometheus = Prometheus(
                tmp_path / "prometheus", [f"127.0.0.1:{http_port}"], EVALUATION,
                rule_files=sorted((ROOT / "alerts" / "rules").glob("*.yml")),
                alertmanagers=[f"127.0.0.1:{manager.port}"])
            prometheus.start()
            parts.append(prometheus)
            for site in (HOST, WEAK):
                parts.append(Process(
                    [sys.executable, "-m", "agent.main", "run", "--config",
                     str(agent_config(tmp_path, site, broker.port, reflector, upsd.port))],
                    tmp_path / f"{site}.log"))
                parts[-1].start()
            # Tràm Chim's mains fails before the session is scheduled.
            upsd.set_state(WEAK, {**ON_BATTERY, "battery.runtime": "1740"})
            start = (datetime.now(VIETNAM) + timedelta(hours=2, minutes=30)).replace(
                microsecond=0)
            status, body = api(http_port, "POST", "/api/sessions", yaml.safe_dump({
                "sessions": [{"id": SESSION, "title": "Tiếp công dân: kiểm thử cảnh báo",
                              "start": start.isoformat(), "duration": "30m", "host": HOST,
                              "members": [WEAK]}]}, allow_unicode=True).encode(),
                "application/yaml")
            assert status == 200, body

            # The page: the Đồng Tháp on-call webhook, with the bridge, session, criteria.
            fired = sink.wait_for(lambda r: "dong-thap" in r.path and "oncall" in r.path
                                  and "/telegram/" not in r.path
                                  and page_alerts(r.body, "firing"), timeout=240)
            failing = [t for t in site_tests(http_port, WEAK) if not t["passed"]]
            assert failing, site_tests(http_port, WEAK)
            failed_at = finished(failing[0])
            alert = page_alerts(fired.body, "firing")[0]
            assert alert["labels"]["site"] == WEAK and alert["labels"]["session"] == SESSION
            assert alert["labels"]["checkpoint"] == "test-2"
            assert alert["labels"]["severity"] == "critical"
            assert fired.body["groupLabels"].get("session") == SESSION, fired.body
            annotations = alert["annotations"]
            assert "Nguồn điện lưới" in annotations["criteria"], annotations
            assert "Thời gian lưu điện" in annotations["criteria"], annotations
            assert "Tràm Chim" in annotations["site_name"], annotations
            assert annotations["runbook_url"] == f"/runbook#{PAGE.lower()}"
            # The healthy host passed: it is in no page.
            assert all(a["labels"].get("site") != HOST for a in page_alerts(fired.body,
                                                                            "firing"))
            # The Telegram message of the same page, in Vietnamese.
            telegram = sink.wait_for(lambda r: r.path.startswith("/telegram/")
                                     and "dong-thap" in r.path
                                     and SESSION in json.dumps(r.body, ensure_ascii=False),
                                     timeout=30)
            text = telegram.body["text"]
            for needle in ("Tràm Chim", SESSION, "test-2", "Nguồn điện lưới"):
                assert needle in text, (needle, text)

            # Mains back: the collector's retry passes and the resolve follows.
            upsd.set_state(WEAK, ONLINE)
            resolved = sink.wait_for(lambda r: r.path == fired.path
                                     and page_alerts(r.body, "resolved"), timeout=240)
            passing = [t for t in site_tests(http_port, WEAK)
                       if t["passed"] and finished(t) > failed_at]
            assert passing, site_tests(http_port, WEAK)
            passed_at = finished(passing[0])
            # One family per metric name on /metrics: a name exposed twice (fleet state and
            # readiness) makes the rules' one-to-one joins fail with duplicate series.
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics",
                                        timeout=10) as answer:
                types = [line.split()[2] for line in answer.read().decode().splitlines()
                         if line.startswith("# TYPE ")]
            assert "bridge_test_last_passed" in types
            assert sorted(t for t in set(types) if types.count(t) > 1) == []
            # Nothing went to the national on-call.
            assert not [r for r in sink.requests() if "trung-uong" in r.path], sink.requests()
        finally:
            for part in reversed(parts):
                part.stop()
            upsd.stop()
            broker.stop()

    to_page = fired.wall - failed_at
    to_resolve = resolved.wall - passed_at
    assert to_page > 0 and to_resolve > 0, (to_page, to_resolve)
    figures = {
        "seconds_failing_test_to_page": round(to_page, 1),
        "seconds_passing_test_to_resolve": round(to_resolve, 1),
        "settings": {
            "collector_tick_seconds": 1, "prometheus_scrape_and_evaluation": EVALUATION,
            "rule_for": "1m", "alertmanager": "shipped timers (critical: group_wait 15s, "
                                              "group_interval 1m)",
            "collector_retry_after_seconds": RETRY_SECONDS},
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "alert-e2e.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nalert e2e: failing test -> page {to_page:.1f} s; passing test -> resolve "
          f"{to_resolve:.1f} s ({json.dumps(figures['settings'])})")
