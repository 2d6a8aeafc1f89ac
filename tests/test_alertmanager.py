"""The shipped Alertmanager configuration (alerts/alertmanager.yml) and its templates.

amtool checks the file and the routing tree as Alertmanager itself parses them; then a real
Alertmanager, fed alerts through its API the way Prometheus feeds it, pages a local sink:
what arrives there is what the on-call technician's Telegram and the NOC's webhook would get.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.inventory import load_inventory
from deploy.alertmanager import Alertmanager, local_config
from deploy.demo import INVENTORY
from deploy.paging_sink import PagingSink, SinkRequest
from tests.conftest import require_binary

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "alerts" / "alertmanager.yml"
WAIT = 20.0  # seconds: generous next to the 1 s / 2 s timers of the test copy
BASE_URL = "http://127.0.0.1:9108"  # bridgewatch.base_url in the shipped template
# The demo inventory's bridges: site_name is the room name the collector exposes.
SITES = load_inventory(INVENTORY).sites
SITE_NAMES = {site_id: site.name for site_id, site in SITES.items()}
SESSION = "tcd-demo-1"


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_binary("amtool"), *args], capture_output=True, text=True,
                          timeout=60, check=False)


# --- (a) the file as Alertmanager parses it -------------------------------------------------

def test_shipped_config_passes_amtool_check() -> None:
    result = amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def referenced_templates() -> list[tuple[str, str]]:
    """(template name, engine) for every template the receivers use: Alertmanager renders
    Telegram HTML messages and mail bodies with html/template, the rest with text/template."""
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    found: list[tuple[str, str]] = []
    for receiver in config["receivers"]:
        for telegram in receiver.get("telegram_configs") or []:
            engine = "html" if telegram.get("parse_mode") == "HTML" else "text"
            found.append((telegram["message"], engine))
        for email in receiver.get("email_configs") or []:
            found.append((email["html"], "html"))
            found.extend((value, "text") for value in email.get("headers", {}).values())
    return sorted(set(found))


@pytest.mark.parametrize(("firing", "title"), [
    (True, "[NGUY CẤP] Đồng Tháp — phiên tcd-demo-1 — 2 điểm cầu chưa sẵn sàng"),
    (False, "[ĐÃ KHẮC PHỤC] Đồng Tháp — phiên tcd-demo-1 — 2 điểm cầu"),
])
def test_every_referenced_template_renders_from_the_configs_own_glob(
        tmp_path: Path, firing: bool, title: str) -> None:
    """check-config accepts a glob that matches nothing; rendering each referenced template
    through the config's own (relative) glob, in the engine Alertmanager uses for it, proves
    the file is found and defines them. The mail is only checked here: no SMTP on loopback."""
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    globs = [str(CONFIG.parent / pattern) for pattern in config["templates"]]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(template_data(firing)), encoding="utf-8")
    templates = referenced_templates()
    assert {engine for _, engine in templates} == {"html", "text"}
    for text, engine in templates:
        result = amtool("template", "render", *(f"--template.glob={g}" for g in globs),
                        f"--template.data={data}", f"--template.type={engine}",
                        f"--template.text={text}")
        assert result.returncode == 0, (text, result.stderr)
        if engine == "text":  # the mail subject: exactly the title, on one line
            assert result.stdout.rstrip("\n") == title
            continue
        rendered = result.stdout
        assert title in rendered
        for expected in (SITE_NAMES["dt-sa-dec"], "kiểm thử trước 02 giờ (test-2)", "Camera",
                         f'<a href="{BASE_URL}/runbook#bridgewatchnotreadybeforedeadline">',
                         "(&lt; 1 giờ)"):
            assert expected in rendered, (text, expected)
        assert "(< 1 giờ)" not in rendered
        assert ("ĐÃ KHẮC PHỤC / RESOLVED" in rendered) is not firing


# --- (b) the routing tree -------------------------------------------------------------------

ROUTES = [
    pytest.param({"severity": "critical", "area": "readiness", "province": "dong-thap",
                  "session": "tcd-demo-1", "checkpoint": "test-2", "site": "dt-sa-dec",
                  "alertname": "BridgeWatchNotReadyBeforeDeadline"},
                 "noc,dong-thap-oncall", id="dong-thap-critical-readiness-pages-on-call"),
    pytest.param({"severity": "critical", "area": "storage", "province": "dong-thap",
                  "site": "dt-sa-dec", "alertname": "BridgeWatchRecordingVolumeMissing"},
                 "noc,dong-thap-oncall", id="dong-thap-critical-symptom-pages-on-call"),
    pytest.param({"severity": "warning", "area": "link", "province": "dong-thap",
                  "site": "dt-tram-chim", "alertname": "BridgeWatchLinkLossHigh"},
                 "noc,dong-thap-technicians", id="dong-thap-warning-to-technicians"),
    pytest.param({"severity": "warning", "area": "readiness", "province": "dong-thap",
                  "session": "tcd-demo-1", "checkpoint": "test-1", "site": "dt-sa-dec",
                  "alertname": "BridgeWatchBridgeTestFailed"},
                 "noc,dong-thap-technicians", id="dong-thap-readiness-warning-to-technicians"),
    pytest.param({"severity": "critical", "area": "readiness", "province": "trung-uong",
                  "session": "tcd-demo-1", "checkpoint": "start", "site": "tw-tiep-cong-dan",
                  "alertname": "BridgeWatchSessionStartingNotReady"},
                 "noc,trung-uong-oncall", id="trung-uong-critical-pages-its-on-call"),
    pytest.param({"severity": "warning", "area": "power", "province": "trung-uong",
                  "site": "tw-tiep-cong-dan", "ups": "ups1",
                  "alertname": "BridgeWatchUpsOnBattery"},
                 "noc,trung-uong-technicians", id="trung-uong-warning-to-technicians"),
    pytest.param({"severity": "critical", "area": "collector",
                  "alertname": "BridgeWatchCollectorDown", "instance": "collector:9108"},
                 "noc", id="collector-critical-noc-only"),
    pytest.param({"severity": "critical", "area": "collector", "province": "dong-thap",
                  "alertname": "BridgeWatchCollectorMqttDisconnected"},
                 "noc", id="collector-with-a-province-label-still-noc-only"),
    pytest.param({"severity": "info", "area": "agent", "province": "dong-thap",
                  "site": "dt-sa-dec", "alertname": "BridgeWatchSpoolBacklog"},
                 "noc", id="info-noc-only"),
    pytest.param({"severity": "critical", "area": "power", "province": "quang-nam",
                  "site": "qn-trung-tam", "alertname": "BridgeWatchUpsLowBattery"},
                 "noc", id="unknown-province-noc-only"),
]


@pytest.mark.parametrize(("labels", "receivers"), ROUTES)
def test_routing(labels: dict[str, str], receivers: str) -> None:
    result = amtool("config", "routes", "test", f"--config.file={CONFIG}",
                    f"--verify.receivers={receivers}",
                    *(f"{name}={value}" for name, value in labels.items()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receivers


# --- (c) a real Alertmanager paging a local sink ------------------------------------------

def test_local_config_changes_only_where_notifications_go(tmp_path: Path) -> None:
    copy = local_config(CONFIG, tmp_path / "am", "http://127.0.0.1:1234/")
    shipped = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    local = yaml.safe_load(copy.read_text(encoding="utf-8"))
    for key in ("global", "route", "inhibit_rules", "templates"):
        assert local[key] == shipped[key], key
    assert (copy.parent / "templates" / "bridgewatch.tmpl").read_bytes() == (
        CONFIG.parent / "templates" / "bridgewatch.tmpl").read_bytes()
    for before, after in zip(shipped["receivers"], local["receivers"], strict=True):
        name = before["name"]
        assert "email_configs" not in after
        assert [w["url"] for w in after.get("webhook_configs", [])] == [
            f"http://127.0.0.1:1234/{name}"] * len(before.get("webhook_configs", []))
        for telegram_before, telegram_after in zip(before.get("telegram_configs", []),
                                                   after.get("telegram_configs", []),
                                                   strict=True):
            assert telegram_after.pop("api_url") == f"http://127.0.0.1:1234/telegram/{name}"
            telegram_before.pop("api_url", None)
            assert telegram_after == telegram_before
    assert amtool("check-config", str(copy)).returncode == 0


def fast_timers(config_path: Path) -> None:
    """Shrink group_wait/group_interval in the tmp_path copy only (routing, grouping and
    inhibition stay as shipped): with the shipped 1 m group_wait for warnings and 1 m/5 m
    group_interval a resolved notification takes minutes, far over a unit test's budget."""
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))

    def shrink(route: dict[str, Any]) -> None:
        if "group_wait" in route:
            route["group_wait"] = "1s"
        if "group_interval" in route:
            route["group_interval"] = "2s"
        for child in route.get("routes") or []:
            shrink(child)

    shrink(config["route"])
    config_path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
                           encoding="utf-8")


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def alert(name: str, severity: str, area: str, site: str | None, summary: str,
          instance: str = "collector-a:9108", **extra: str) -> dict[str, Any]:
    """An alert as Prometheus would post it for the catalogue (labels and annotations)."""
    labels = {"alertname": name, "severity": severity, "area": area, "job": "bridgewatch",
              "instance": instance, **extra}
    annotations = {"summary": summary, "summary_en": f"{name} (en)",
                   "description": summary, "description_en": f"{name} (en)",
                   "runbook_url": f"/runbook#{name.lower()}"}
    if site is not None:
        labels.update(province=SITES[site].province, site=site, level=SITES[site].level)
        annotations["site_name"] = SITE_NAMES[site]
    # startsAt now, as Prometheus sends a newly firing alert: an alert older than group_wait
    # is flushed at once, racing the inhibitor that has not seen its source alert yet.
    return {"labels": labels, "annotations": annotations,
            "startsAt": iso(datetime.now(timezone.utc))}


def resolved(posted: dict[str, Any]) -> dict[str, Any]:
    """The same alert with endsAt in the past: what Prometheus sends once it stops firing."""
    return {**posted, "endsAt": iso(datetime.now(timezone.utc) - timedelta(seconds=1))}


def not_ready(site: str, summary: str, criteria: str, checkpoint: str = "test-2",
              name: str = "BridgeWatchNotReadyBeforeDeadline",
              severity: str = "critical") -> dict[str, Any]:
    posted = alert(name, severity, "readiness", site, summary, session=SESSION,
                   checkpoint=checkpoint)
    del posted["labels"]["level"]  # readiness series carry no level label
    posted["annotations"].update(criteria=criteria, criteria_en=f"{criteria} (en)")
    return posted


def template_data(firing: bool) -> dict[str, Any]:
    """Alertmanager's template data for one session's readiness page (amtool render)."""
    alerts = []
    for site in ("dt-sa-dec", "dt-hong-ngu"):
        posted = not_ready(site, "Điểm cầu chưa sẵn sàng, còn 45 phút (< 1 giờ)", "Camera")
        alerts.append({"status": "firing" if firing else "resolved", **posted,
                       "endsAt": "0001-01-01T00:00:00Z"})
    common = {k: v for k, v in alerts[0]["labels"].items() if k != "site"}
    return {"receiver": "dong-thap-oncall", "status": "firing" if firing else "resolved",
            "externalURL": "http://127.0.0.1:9093", "alerts": alerts,
            "groupLabels": {"province": "dong-thap", "session": SESSION},
            "commonLabels": common, "commonAnnotations": {}}


def names(request: SinkRequest, status: str | None = None) -> set[str]:
    return {a["labels"]["alertname"] for a in request.body["alerts"]
            if status is None or a["status"] == status}


def key(posted: dict[str, Any]) -> tuple[str, str, str]:
    """(alertname, site, checkpoint): tells the test's alerts apart."""
    labels = posted["labels"]
    return labels["alertname"], labels.get("site", ""), labels.get("checkpoint", "")


def sites(request: SinkRequest) -> set[str]:
    return {a["labels"].get("site", "") for a in request.body["alerts"]}


def group_of(request: SinkRequest, **labels: str) -> bool:
    return isinstance(request.body, dict) and all(
        request.body.get("groupLabels", {}).get(k) == v for k, v in labels.items())


@pytest.fixture
def paged(tmp_path: Path) -> Iterator[tuple[Alertmanager, PagingSink]]:
    require_binary("prometheus-alertmanager")
    require_binary("amtool")
    with PagingSink() as sink:
        config = local_config(CONFIG, tmp_path / "config", sink.url)
        fast_timers(config)
        manager = Alertmanager(tmp_path / "alertmanager", config)
        try:
            manager.start()
            yield manager, sink
        finally:
            manager.stop()
            print(manager.log())  # shown by pytest only when the test failed


def test_real_alertmanager_groups_pages_inhibits_and_resolves(
        paged: tuple[Alertmanager, PagingSink]) -> None:
    manager, sink = paged
    oncall, technicians, noc = "/dong-thap-oncall", "/dong-thap-technicians", "/noc"
    telegram = "/telegram/dong-thap-oncall/"

    readiness = [
        not_ready("dt-sa-dec", "Điểm cầu chưa sẵn sàng, còn 45 phút (< 1 giờ) đến hạn kiểm tra",
                  "Độ trễ đường truyền, Camera"),
        not_ready("dt-hong-ngu", "Điểm cầu chưa sẵn sàng, chưa kiểm tra", "chưa kiểm tra"),
    ]
    loss = alert("BridgeWatchLinkLossHigh", "warning", "link", "dt-tram-chim",
                 "Mất gói cao trên đường truyền", target="reflector", method="udp-reflector")
    agent_down = alert("BridgeWatchAgentDown", "warning", "agent", "dt-thap-muoi",
                       "Tác tử mất kết nối")
    masked = [  # consequences of the agent being gone: inhibited while AgentDown fires
        alert("BridgeWatchUpsOnBattery", "warning", "power", "dt-thap-muoi", "UPS đang chạy pin",
              ups="ups1"),
        alert("BridgeWatchLinkRttHigh", "warning", "link", "dt-thap-muoi", "Độ trễ cao",
              target="reflector", method="udp-reflector"),
        alert("BridgeWatchProbeFailing", "warning", "agent", "dt-thap-muoi",
              "Một phép đo không chạy", probe="devices"),
    ]
    # Another collector shard off its broker: its agents look silent (inhibited), the agent
    # alerts scraped from collector-a (AgentDown above) must not be.
    mqtt_down = alert("BridgeWatchCollectorMqttDisconnected", "critical", "collector", None,
                      "Bộ thu thập mất kết nối MQTT", instance="collector-b:9108")
    stale_b = alert("BridgeWatchAgentStale", "warning", "agent", "dt-lai-vung",
                    "Tác tử không gửi số liệu", instance="collector-b:9108")
    # "Not ready, deadline close" covers the failed test of the same checkpoint, not another
    # checkpoint's; a UPS on low battery covers its own "on battery".
    test_failed = not_ready("dt-sa-dec", "Lần kiểm tra gần nhất không đạt", "Camera",
                            name="BridgeWatchBridgeTestFailed", severity="warning")
    other_checkpoint = not_ready("dt-hong-ngu", "Lần kiểm tra gần nhất không đạt", "Camera",
                                 checkpoint="test-1", name="BridgeWatchBridgeTestFailed",
                                 severity="warning")
    low_battery = alert("BridgeWatchUpsLowBattery", "critical", "power", "dt-tram-chim",
                        "UPS sắp cạn pin", ups="ups1")
    on_battery = alert("BridgeWatchUpsOnBattery", "warning", "power", "dt-tram-chim",
                       "UPS đang chạy pin", ups="ups1")
    muted = [*masked, stale_b, test_failed, on_battery]
    manager.post_alerts([*readiness, loss, agent_down, *masked, mqtt_down, stale_b,
                         test_failed, other_checkpoint, low_battery, on_battery])

    # One page for the session, listing both bridges, on the webhook and on Telegram.
    page = sink.wait_for(lambda r: r.path == oncall and group_of(r, session=SESSION), WAIT)
    assert page.body["status"] == "firing"
    assert page.body["groupLabels"] == {"province": "dong-thap", "session": SESSION}
    assert sites(page) == {"dt-sa-dec", "dt-hong-ngu"}
    message = sink.wait_for(lambda r: r.path.startswith(telegram)
                            and f"phiên {SESSION}" in r.body["text"], WAIT)
    assert message.path.endswith("/sendMessage")
    assert message.body["parse_mode"] == "HTML"
    text = message.body["text"]
    assert text.startswith(
        f"🔴 <b>[NGUY CẤP] Đồng Tháp — phiên {SESSION} — 2 điểm cầu chưa sẵn sàng</b>"), text
    for expected in (SITE_NAMES["dt-sa-dec"], SITE_NAMES["dt-hong-ngu"], f"Phiên: {SESSION}",
                     "Mốc: kiểm thử trước 02 giờ (test-2)",
                     "Tiêu chí không đạt: Độ trễ đường truyền, Camera",
                     f'<a href="{BASE_URL}/runbook#bridgewatchnotreadybeforedeadline">',
                     "(&lt; 1 giờ)"):  # escaped: a raw "<" makes Telegram refuse the message
        assert expected in text
    assert "(< 1 giờ)" not in text
    assert text.index("NGUY CẤP") < text.index("English") < text.index("CRITICAL")

    # The agent problem reaches the technicians alone; an unrelated symptom still does.
    down = sink.wait_for(lambda r: r.path == technicians and group_of(r, site="dt-thap-muoi"),
                         WAIT)
    assert names(down) == {"BridgeWatchAgentDown"}
    symptom = sink.wait_for(
        lambda r: r.path == technicians and group_of(r, site="dt-tram-chim"), WAIT)
    assert names(symptom) == {"BridgeWatchLinkLossHigh"}
    tests = sink.wait_for(lambda r: r.path == technicians and group_of(r, session=SESSION),
                          WAIT)
    assert {(a["labels"]["site"], a["labels"]["checkpoint"]) for a in tests.body["alerts"]} == {
        ("dt-hong-ngu", "test-1")}
    state = {key(a): a["status"] for a in manager.alerts()}
    for held in muted:
        assert state[key(held)]["state"] == "suppressed", key(held)
        assert state[key(held)]["inhibitedBy"], key(held)
    assert state[key(agent_down)]["state"] == "active"

    # A new, not inhibited alert at the same bridge joins the group's next notification:
    # that notification went out after the inhibited ones had every chance, without them.
    spool = alert("BridgeWatchSpoolDropping", "warning", "agent", "dt-thap-muoi",
                  "Tác tử bỏ bớt dữ liệu trong hàng đợi")
    manager.post_alerts([spool])
    later = sink.wait_for(lambda r: r.path == technicians and group_of(r, site="dt-thap-muoi")
                          and "BridgeWatchSpoolDropping" in names(r), WAIT)
    assert names(later) == {"BridgeWatchAgentDown", "BridgeWatchSpoolDropping"}
    muted_keys = {key(held) for held in muted}
    for request in sink.requests(technicians) + sink.requests(noc):
        assert not {key(a) for a in request.body["alerts"]} & muted_keys, request.body
    assert [r for r in sink.requests(oncall) if group_of(r, session=SESSION)] == [page]

    # The agent is back, the collector shard too, both bridges pass: resolved notifications,
    # and the alerts the agent outage held back reach the technicians now.
    manager.post_alerts([resolved(a) for a in (*readiness, agent_down, mqtt_down)])
    done = sink.wait_for(lambda r: r.path == oncall and group_of(r, session=SESSION)
                         and r.body["status"] == "resolved", WAIT)
    assert sites(done) == {"dt-sa-dec", "dt-hong-ngu"}
    assert names(done, "resolved") == {"BridgeWatchNotReadyBeforeDeadline"}
    resolved_text = sink.wait_for(lambda r: r.path.startswith(telegram)
                                  and f"phiên {SESSION}" in r.body["text"]
                                  and "ĐÃ KHẮC PHỤC" in r.body["text"], WAIT).body["text"]
    assert resolved_text.startswith(
        f"✅ <b>[ĐÃ KHẮC PHỤC] Đồng Tháp — phiên {SESSION} — 2 điểm cầu</b>"), resolved_text
    assert "ĐÃ KHẮC PHỤC / RESOLVED" in resolved_text
    assert SITE_NAMES["dt-sa-dec"] in resolved_text
    unmasked = sink.wait_for(lambda r: r.path == technicians and group_of(r, site="dt-thap-muoi")
                             and "BridgeWatchUpsOnBattery" in names(r, "firing"), WAIT)
    assert names(unmasked, "firing") == {"BridgeWatchUpsOnBattery", "BridgeWatchLinkRttHigh",
                                         "BridgeWatchProbeFailing", "BridgeWatchSpoolDropping"}
    assert names(unmasked, "resolved") == {"BridgeWatchAgentDown"}
    stale = sink.wait_for(lambda r: r.path == technicians and group_of(r, site="dt-lai-vung"),
                          WAIT)
    assert names(stale) == {"BridgeWatchAgentStale"}
