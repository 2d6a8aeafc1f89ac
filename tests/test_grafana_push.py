"""``bridgewatch-collector dashboards push`` against a recording stand-in for Grafana.

No Grafana can be installed here, so deploy/fake_grafana.py answers like Grafana's documented
HTTP API (the request and response shapes and status codes are cited in its docstring:
https://grafana.com/docs/grafana/v10.2/developers/http_api/folder/ and
https://grafana.com/docs/grafana/v11.0/developers/http_api/dashboard/), refusing what a real
Grafana refuses (uids over 40 characters, unknown folders, a second save without
``overwrite``, a missing or wrong bearer token). The client is the real ``grafana-client``
over real HTTP; the tests check every recorded request against those shapes.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.grafana_push import MESSAGE, fit_uid, grafana_api
from collector.inventory import load_inventory
from collector.main import main
from deploy.fake_grafana import FakeGrafana, RecordedRequest
from deploy.localstack import free_port

ROOT = Path(__file__).resolve().parents[1]
REPO_DASHBOARDS = ROOT / "dashboards" / "json"
DEMO_INVENTORY = ROOT / "deploy" / "demo-inventory.yaml"
TOKEN = "glsa_test_token_0123456789abcdef"
LONG_UID = "bw-bridge-detail-for-one-commune-room"  # + "-dong-thap" > 40 characters

INVENTORY_YAML = """\
provinces:
  dong-thap: {name: "Đồng Tháp"}
  thanh-hoa: {}
  gia-lai: {name: "Gia Lai"}
sites:
  - {id: dt-trung-tam, province: dong-thap, name: "Điểm cầu trung tâm", level: central}
  - {id: dt-sa-dec, province: dong-thap, name: "Điểm cầu phường Sa Đéc"}
  - {id: th-trung-tam, province: thanh-hoa, name: "Điểm cầu trung tâm", level: central}
"""  # gia-lai is declared but has no bridge yet: no folder for it


def datasource_variable() -> dict[str, Any]:
    return {"name": "datasource", "type": "datasource", "query": "prometheus"}


def province_variable() -> dict[str, Any]:
    return {"name": "province", "type": "query", "label": "Tỉnh / Province",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": "label_values(bridge_site_info, province)", "refresh": 1,
            "current": {}, "options": []}


def target(expr: str) -> dict[str, Any]:
    return {"refId": "A", "expr": expr, "datasource": {"type": "prometheus",
                                                       "uid": "${datasource}"}}


FLEET = {
    "id": 7, "uid": "bw-fleet-overview", "title": "BridgeWatch — Tổng quan điểm cầu",
    "tags": ["bridgewatch"], "schemaVersion": 39, "version": 3,
    "templating": {"list": [datasource_variable(), province_variable()]},
    "panels": [{
        "id": 1, "type": "table", "title": "Điểm cầu / Bridges",
        "targets": [target('bridge_up{province=~"$province"}')],
        "fieldConfig": {"defaults": {"links": [{
            "title": "Chi tiết / Detail",
            "url": f"/d/{LONG_UID}?var-province=$province&var-site=${{__data.fields.site}}"}]}},
    }],
    "links": [{"type": "link", "title": "Phiên / Sessions", "url": "/d/bw-fleet-overview/"}],
}
DETAIL = {
    "uid": LONG_UID, "title": "BridgeWatch — Chi tiết điểm cầu", "tags": ["bridgewatch"],
    "templating": {"list": [datasource_variable(), {**province_variable(), "multi": True},
                            {"name": "site", "type": "query",
                             "query": 'label_values(bridge_site_info{province=~"$province"}, '
                                      "site)"}]},
    "panels": [{"type": "row", "title": "Phòng / Room", "collapsed": True, "panels": [
        {"type": "stat", "title": "UPS", "targets": [target(
            'bridge_ups_runtime_seconds{site="$site"}')]}]}],
}
HEALTH = {
    "uid": "bw-collector-health", "title": "BridgeWatch — Sức khỏe bộ thu thập",
    "tags": ["bridgewatch"], "templating": {"list": [datasource_variable()]},
    "panels": [{"type": "timeseries", "title": "MQTT", "targets": [target(
        "bridge_collector_mqtt_connected")]}],
}
SAMPLES = {"fleet-overview.json": FLEET, "bridge-detail.json": DETAIL,
           "collector-health.json": HEALTH}
PROVINCES = {"dong-thap": "Đồng Tháp", "thanh-hoa": "thanh-hoa"}  # no name: the slug


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    with FakeGrafana(TOKEN) as fake:
        yield fake


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """(inventory, dashboards dir) written like an operator's checkout would have them."""
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(INVENTORY_YAML, encoding="utf-8")
    directory = tmp_path / "json"
    directory.mkdir()
    for name, model in SAMPLES.items():
        (directory / name).write_text(json.dumps(model, ensure_ascii=False), encoding="utf-8")
    return inventory, directory


def push(inventory: Path, directory: Path, url: str, *extra: str) -> int:
    return main(["dashboards", "push", "--inventory", str(inventory), "--url", url,
                 "--dashboards", str(directory), *extra])


def header(request: RecordedRequest, name: str) -> str | None:
    return {k.lower(): v for k, v in request.headers.items()}.get(name.lower())


def saves(grafana: FakeGrafana) -> list[dict[str, Any]]:
    return [r.body for r in grafana.requests
            if r.method == "POST" and r.path == "/api/dashboards/db"]


def expected_copy(model: dict[str, Any], uid: str, title: str,
                  province: str | None) -> dict[str, Any]:
    """The file's dashboard with only what the push is meant to change, changed."""
    want = copy.deepcopy(model)
    want.update(id=None, uid=uid, title=title)
    for variable in want["templating"]["list"]:
        if variable["name"] == "province":  # a multi-value variable holds a list (Grafana)
            value = [province] if variable.get("multi") else province
            variable["current"] = {"selected": True, "text": value, "value": value}
    return want


def test_first_push_creates_a_folder_per_province_and_saves_every_dashboard(
        files: tuple[Path, Path], grafana: FakeGrafana,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented calls, in order, each with the token as a bearer and a JSON body."""
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert push(*files, grafana.url) == 0
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    assert err == ""
    for request in grafana.requests:
        assert header(request, "Authorization") == f"Bearer {TOKEN}"
        assert request.status == 200 or (request.method, request.status) == ("GET", 404)
        if request.method == "POST":
            assert (header(request, "Content-Type") or "").startswith("application/json")
    # Folders: looked up by uid, created when Grafana says 404, with the documented body.
    folder_calls = [(r.method, r.path, r.body, r.status) for r in grafana.requests
                    if r.path.startswith("/api/folders")]
    assert folder_calls == [
        ("GET", "/api/folders/bw-dong-thap", None, 404),
        ("POST", "/api/folders", {"uid": "bw-dong-thap", "title": "BridgeWatch — Đồng Tháp"},
         200),
        ("GET", "/api/folders/bw-thanh-hoa", None, 404),
        ("POST", "/api/folders", {"uid": "bw-thanh-hoa", "title": "BridgeWatch — thanh-hoa"},
         200),
        ("GET", "/api/folders/bw-noc", None, 404),
        ("POST", "/api/folders", {"uid": "bw-noc", "title": "BridgeWatch — NOC"}, 200),
    ]
    # Dashboards: the documented body, overwrite by uid, the tool named in the history.
    bodies = saves(grafana)
    assert len(bodies) == 2 * 2 + 1
    for body in bodies:
        assert set(body) == {"dashboard", "folderUid", "overwrite", "message"}
        assert body["overwrite"] is True and body["message"] == MESSAGE
        assert len(body["dashboard"]["uid"]) <= 40
    by_uid = {b["dashboard"]["uid"]: b for b in bodies}
    long_uids = {p: fit_uid(f"{LONG_UID}-{p}") for p in PROVINCES}
    for province, name in PROVINCES.items():
        fleet = by_uid[f"bw-fleet-overview-{province}"]
        assert fleet["folderUid"] == f"bw-{province}"
        want = expected_copy(FLEET, f"bw-fleet-overview-{province}",
                             f"BridgeWatch — Tổng quan điểm cầu — {name}", province)
        # Links between the province's dashboards lead to the same province's copies.
        want["panels"][0]["fieldConfig"]["defaults"]["links"][0]["url"] = (
            f"/d/{long_uids[province]}?var-province=$province&var-site=${{__data.fields.site}}")
        want["links"][0]["url"] = f"/d/bw-fleet-overview-{province}/"
        assert fleet["dashboard"] == want
        detail = by_uid[long_uids[province]]
        assert detail["folderUid"] == f"bw-{province}"
        assert detail["dashboard"] == expected_copy(
            DETAIL, long_uids[province], f"BridgeWatch — Chi tiết điểm cầu — {name}", province)
    # The collector's health is one for the whole NOC: once, under its own uid and title.
    health = by_uid["bw-collector-health"]
    assert health["folderUid"] == "bw-noc"
    assert health["dashboard"] == {**HEALTH, "id": None}
    # One line per dashboard, then the count.
    pushed = [line for line in out.splitlines() if line.startswith("đã đẩy / pushed")]
    assert len(pushed) == 5
    assert any(f"{grafana.url}/d/bw-fleet-overview-dong-thap/" in line for line in pushed)
    assert "pushed 5/5 dashboards, 0 failed" in out


def test_second_push_reuses_the_folders_and_overwrites_by_uid(
        files: tuple[Path, Path], grafana: FakeGrafana,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Pushing again is safe: folders found (200), not created twice; dashboards updated."""
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert push(*files, grafana.url) == 0
    first = len(grafana.requests)
    assert push(*files, grafana.url) == 0
    second = grafana.requests[first:]
    assert [(r.method, r.path, r.status) for r in second if r.path.startswith("/api/folders")] \
        == [("GET", f"/api/folders/{uid}", 200) for uid in ("bw-dong-thap", "bw-thanh-hoa",
                                                             "bw-noc")]
    assert len(grafana.folders) == 3
    assert sorted(grafana.dashboards) == sorted(
        [f"bw-fleet-overview-{p}" for p in PROVINCES] + [fit_uid(f"{LONG_UID}-{p}")
                                                         for p in PROVINCES]
        + ["bw-collector-health"])
    assert {d["version"] for d in grafana.dashboards.values()} == {2}
    assert "pushed 5/5 dashboards, 0 failed" in capsys.readouterr().out


def test_long_uids_are_cut_stably_to_grafanas_40_characters() -> None:
    """Same input, same uid (so a re-push overwrites); a shared prefix still differs."""
    assert fit_uid("bw-fleet-overview-dong-thap") == "bw-fleet-overview-dong-thap"
    a = fit_uid(f"{LONG_UID}-dong-thap")
    b = fit_uid(f"{LONG_UID}-dong-nai")
    assert len(a) <= 40 and len(b) <= 40
    assert a != b and a == fit_uid(f"{LONG_UID}-dong-thap")
    assert a.startswith("bw-bridge-detail-for-one-commun")
    assert fit_uid("x" * 40) == "x" * 40 and len(fit_uid("x" * 41)) == 40


def test_missing_token_is_refused_and_nothing_is_sent(
        files: tuple[Path, Path], grafana: FakeGrafana,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """No token, no request: the operator is told, in both languages, where to put it."""
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    assert push(*files, grafana.url) == 2
    err = capsys.readouterr().err
    assert "thiếu mã truy cập Grafana" in err and "no Grafana token" in err
    assert "GRAFANA_TOKEN" in err
    assert grafana.requests == []


def test_the_token_is_never_accepted_as_an_option(
        files: tuple[Path, Path], grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch) -> None:
    """A --token flag would leave the secret in ps output and shell history."""
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        push(*files, grafana.url, "--token", TOKEN)
    assert exit_info.value.code == 2
    assert grafana.requests == []


def test_a_refused_token_is_reported_and_stops_the_push(
        files: tuple[Path, Path], grafana: FakeGrafana,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """401: the first call fails, the folder and dashboard are named, nothing more is tried."""
    monkeypatch.setenv("GRAFANA_TOKEN", "glsa_wrong")
    assert push(*files, grafana.url) == 1
    out, err = capsys.readouterr()
    assert [(r.path, r.status) for r in grafana.requests] == [("/api/folders/bw-dong-thap", 401)]
    assert "HTTP 401" in err and "bridge-detail.json" in err and "bw-dong-thap" in err
    assert "glsa_wrong" not in out + err
    assert "pushed 0/5 dashboards, 5 failed" in out
    assert grafana.dashboards == {}


def test_a_server_error_names_the_dashboard_and_the_rest_is_pushed(
        files: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """500 on one save: that dashboard and the status on stderr, the others saved, exit 1."""
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    with FakeGrafana(TOKEN, fail={"bw-fleet-overview-thanh-hoa": 500}) as grafana:
        assert push(*files, grafana.url) == 1
        saved = sorted(grafana.dashboards)
    out, err = capsys.readouterr()
    assert "fleet-overview.json → bw-fleet-overview-thanh-hoa: HTTP 500" in err
    assert "Traceback" not in err
    assert len(saved) == 4 and "bw-fleet-overview-thanh-hoa" not in saved
    assert "pushed 4/5 dashboards, 1 failed" in out


def test_an_unreachable_grafana_exits_1_without_a_traceback(
        files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The console script as an operator runs it, pointed at a port nobody listens on."""
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    script = Path(sys.executable).parent / "bridgewatch-collector"
    inventory, directory = files
    result = subprocess.run(
        [str(script), "dashboards", "push", "--inventory", str(inventory),
         "--url", f"http://127.0.0.1:{free_port()}", "--dashboards", str(directory)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot reach Grafana" in result.stderr and "Traceback" not in result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert "pushed 0/5 dashboards, 5 failed" in result.stdout


def test_dry_run_lists_the_plan_and_sends_nothing(
        files: tuple[Path, Path], grafana: FakeGrafana,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    assert push(*files, grafana.url, "--dry-run") == 0
    out = capsys.readouterr().out
    assert grafana.requests == []
    assert out.count("would push") == 5
    assert "bw-fleet-overview-dong-thap «BridgeWatch — Tổng quan điểm cầu — Đồng Tháp»" in out


def test_a_grafana_under_a_sub_path_gets_its_api_there() -> None:
    """https://host/grafana: the API is /grafana/api, not /grafanaapi (grafana-client joins
    the path and "api" as given)."""
    assert grafana_api("https://noc.example.vn/grafana", TOKEN).client.url \
        == "https://noc.example.vn/grafana/api"
    assert grafana_api("http://127.0.0.1:3000", TOKEN).client.url == "http://127.0.0.1:3000/api"


def test_empty_dashboards_directory_is_an_error(
        files: tuple[Path, Path], tmp_path: Path, grafana: FakeGrafana,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert push(files[0], empty, grafana.url) == 2
    assert "no dashboards" in capsys.readouterr().err
    assert grafana.requests == []


def _unlink(value: Any, back: dict[str, str]) -> Any:
    """The pushed copy's /d/<province uid> links read back as the file's /d/<uid>."""
    if isinstance(value, dict):
        return {k: _unlink(v, back) for k, v in value.items()}
    if isinstance(value, list):
        return [_unlink(v, back) for v in value]
    if isinstance(value, str):
        for new, old in back.items():
            value = value.replace(f"/d/{new}", f"/d/{old}")
    return value


def test_the_repository_dashboards_push_for_the_demo_province(
        grafana: FakeGrafana, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real dashboards/json (default directory) and the demo inventory: every file saved
    once per province (or once for the NOC), each equal to its file but for what the push
    sets. Fails, not skips, while the dashboards are not generated yet."""
    files = sorted(REPO_DASHBOARDS.glob("*.json"))
    assert files, f"no dashboards in {REPO_DASHBOARDS}: run python -m dashboards.build"
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert main(["dashboards", "push", "--inventory", str(DEMO_INVENTORY),
                 "--url", grafana.url]) == 0, capsys.readouterr().err
    inventory = load_inventory(DEMO_INVENTORY)
    provinces = sorted({s.province for s in inventory.sites.values()})
    models = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in files}
    regional = {n: m for n, m in models.items() if any(
        v.get("name") == "province" for v in m.get("templating", {}).get("list", []))}
    assert "collector-health.json" in models and "collector-health.json" not in regional
    bodies = {b["dashboard"]["uid"]: b for b in saves(grafana)}
    assert len(bodies) == len(regional) * len(provinces) + len(models) - len(regional)
    for province in provinces:
        back = {fit_uid(f"{m['uid']}-{province}"): m["uid"] for m in regional.values()}
        for model in regional.values():
            uid = fit_uid(f"{model['uid']}-{province}")
            body = bodies[uid]
            assert body["folderUid"] == f"bw-{province}" and body["overwrite"] is True
            name = inventory.provinces[province]
            pushed = _unlink(body["dashboard"], back)
            assert pushed == expected_copy(model, model["uid"], f"{model['title']} — {name}",
                                           province) | {"uid": uid}
    for name, model in models.items():
        if name not in regional:
            assert bodies[model["uid"]]["folderUid"] == "bw-noc"
            assert bodies[model["uid"]]["dashboard"] == {**model, "id": None}
    assert set(grafana.folders) == {f"bw-{p}" for p in provinces} | {"bw-noc"}
