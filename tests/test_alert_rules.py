"""The Prometheus rules (alerts/rules) against the alert contract, through the real promtool.

promtool checks every rules file and runs every unit test file (alerts/tests); the Python
checks hold the catalogue to the contract shared with Alertmanager and the runbook: names,
severities, areas, labels, annotations, and that every alert is tested both firing and
silent. Inhibition is Alertmanager's job and is tested with its configuration, not here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "rules"
UNIT_TESTS = ROOT / "alerts" / "tests"
RUNBOOK = ROOT / "alerts" / "runbook.md"

AREAS = ("agent", "link", "devices", "power", "storage", "readiness", "collector")
RULE_FILES = sorted(RULES.glob("*.yml"))
TEST_FILES = sorted(UNIT_TESTS.glob("*.yml"))

# The contract (alert catalogue): name -> (severity, area).
CATALOGUE: dict[str, tuple[str, str]] = {
    "BridgeWatchAgentDown": ("warning", "agent"),
    "BridgeWatchAgentStale": ("warning", "agent"),
    "BridgeWatchProbeFailing": ("warning", "agent"),
    "BridgeWatchSpoolDropping": ("warning", "agent"),
    "BridgeWatchSpoolBacklog": ("info", "agent"),
    "BridgeWatchLinkLossHigh": ("warning", "link"),
    "BridgeWatchLinkJitterHigh": ("warning", "link"),
    "BridgeWatchLinkRttHigh": ("warning", "link"),
    "BridgeWatchLinkMosLow": ("warning", "link"),
    "BridgeWatchBandwidthBelowRequired": ("warning", "link"),
    "BridgeWatchDeviceMissing": ("warning", "devices"),
    "BridgeWatchClockOffset": ("warning", "devices"),
    "BridgeWatchConferenceSoftwareClosed": ("warning", "devices"),
    "BridgeWatchUpsOnBattery": ("warning", "power"),
    "BridgeWatchUpsLowBattery": ("critical", "power"),
    "BridgeWatchUpsRuntimeLow": ("warning", "power"),
    "BridgeWatchUpsSelfTestFailed": ("warning", "power"),
    "BridgeWatchUpsUnreachable": ("warning", "power"),
    "BridgeWatchRecordingSpaceLow": ("warning", "storage"),
    "BridgeWatchRecordingVolumeMissing": ("critical", "storage"),
    "BridgeWatchBackupDiskMissing": ("warning", "storage"),
    "BridgeWatchBridgeTestFailed": ("warning", "readiness"),
    "BridgeWatchNotReadyBeforeDeadline": ("critical", "readiness"),
    "BridgeWatchCheckpointMissed": ("critical", "readiness"),
    "BridgeWatchSessionStartingNotReady": ("critical", "readiness"),
    "BridgeWatchConfirmationMissing": ("warning", "readiness"),
    "BridgeWatchCollectorDown": ("critical", "collector"),
    "BridgeWatchCollectorMqttDisconnected": ("critical", "collector"),
    "BridgeWatchCollectorNotReceiving": ("critical", "collector"),
    "BridgeWatchCollectorRejecting": ("warning", "collector"),
    "BridgeWatchCollectorIngestLagHigh": ("warning", "collector"),
    "BridgeWatchCollectorHttpInternalError": ("warning", "collector"),
    "BridgeWatchCollectorApiUnauthorized": ("warning", "collector"),
}

# The recording rules the alerts and the dashboards share.
RECORDING = {
    "bridge_site:link_loss_ratio:rate5m",
    "bridge_site:bandwidth_ratio",
    "bridge_site:recording_sessions_left",
    "bridge_site:ups_runtime_margin_seconds",
    "bridge_site:test_last_passed_timestamp_seconds",
    "bridge_checkpoint:seconds_left",
    "bridge_checkpoint:window_seconds",
    "bridge_readiness:not_ready",
    "bridge_readiness:missed",
    "province:bridges:count",
    "province:bridges_up:sum",
    "session_checkpoint:bridges:count",
    "session_checkpoint:bridges_passed:sum",
}

ANNOTATIONS = {"summary", "description", "summary_en", "description_en", "runbook_url"}
NAME = re.compile(r"^BridgeWatch[A-Z][A-Za-z]+$")
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
VIETNAMESE = re.compile(r"[ăâđêôơưĂÂĐÊÔƠƯà-ỹ]")  # a letter only Vietnamese text has


def load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict), f"{path.name}: not a YAML mapping"
    return data


def alerts() -> list[tuple[Path, dict[str, Any]]]:
    """Every alerting rule with the file it is in."""
    return [(path, rule) for path in RULE_FILES for group in load(path)["groups"]
            for rule in group["rules"] if "alert" in rule]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)


# -- promtool --------------------------------------------------------------------------


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_accepts_rules_file(path: Path) -> None:
    """Prometheus would refuse to load a rules file promtool rejects."""
    promtool = require_binary("promtool")
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path: Path) -> None:
    """The rules fire, stay silent and render their annotations as each case expects."""
    promtool = require_binary("promtool")
    result = run(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_compares_rendered_annotations(tmp_path: Path) -> None:
    """A wrong room name fails the run: templates really query the test series, and
    promtool compares whole annotations (so the passing runs above mean something)."""
    promtool = require_binary("promtool")
    data = load(UNIT_TESTS / "agent.yml")
    data["rule_files"] = [str((UNIT_TESTS / f).resolve()) for f in data["rule_files"]]
    case = data["tests"][0]
    expected = next(t for t in case["alert_rule_test"] if t["exp_alerts"])
    notes = expected["exp_alerts"][0]["exp_annotations"]
    name = notes["site_name"]  # the room's name from bridge_site_info, not the site id
    assert name.startswith("Điểm cầu"), name
    notes["site_name"] = "dt-sa-dec"
    data["tests"] = [case]
    broken = tmp_path / "agent-wrong-name.yml"
    broken.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    result = run(promtool, "test", "rules", str(broken))
    assert result.returncode != 0, result.stdout + result.stderr
    assert f'site_name="{name}"' in result.stderr + result.stdout, result.stderr


# -- the catalogue ---------------------------------------------------------------------


def test_one_group_per_file_named_after_its_area() -> None:
    """Group names say the area, so a rule's origin shows in Prometheus' rules page."""
    names = {path.stem for path in RULE_FILES}
    assert names == {"recording", *AREAS}
    for path in RULE_FILES:
        groups = load(path)["groups"]
        assert len(groups) == 1, path.name
        assert groups[0]["name"] == f"bridgewatch-{path.stem}", path.name


def test_recording_rules_are_the_shared_ones() -> None:
    """Dashboards query these names: none missing, none renamed, no alert among them."""
    rules = load(RULES / "recording.yml")["groups"][0]["rules"]
    assert all("record" in rule for rule in rules)
    assert [r["record"] for r in rules if r["record"] not in RECORDING] == []
    assert {rule["record"] for rule in rules} == RECORDING
    for path in RULE_FILES:
        if path.stem != "recording":
            assert all("alert" in r for r in load(path)["groups"][0]["rules"]), path.name


def test_alerts_are_exactly_the_catalogue() -> None:
    """Alertmanager routes and the runbook go by these names, severities and areas."""
    found = {rule["alert"]: (rule["labels"]["severity"], rule["labels"]["area"])
             for _, rule in alerts()}
    assert len(found) == len(alerts()), "an alert name is used twice"
    assert found == CATALOGUE


@pytest.mark.parametrize(("path", "rule"),
                         [pytest.param(path, rule, id=rule["alert"]) for path, rule in alerts()])
def test_alert_follows_the_contract(path: Path, rule: dict[str, Any]) -> None:
    """Name, for, labels and annotations as Alertmanager templates and routes expect."""
    name = rule["alert"]
    assert NAME.match(name), name
    assert DURATION.match(str(rule.get("for", ""))), f"{name}: needs a for"
    labels = rule["labels"]
    assert set(labels) == {"severity", "area"}, f"{name}: other labels come from the series"
    assert labels["severity"] in {"critical", "warning", "info"}
    assert labels["area"] in AREAS
    assert labels["area"] == path.stem, f"{name} is in {path.name}"
    notes = rule["annotations"]
    required = set(ANNOTATIONS)
    if labels["area"] != "collector":  # every other alert is about one bridge
        required.add("site_name")
    if labels["area"] == "readiness":
        required |= {"criteria", "criteria_en"}
    assert set(notes) == required, name
    assert notes["runbook_url"] == f"/runbook#{name.lower()}"
    for key in ("summary", "description"):
        assert VIETNAMESE.search(notes[key]), f"{name}: {key} must be in Vietnamese"
        assert not VIETNAMESE.search(re.sub(r"\{\{.*?\}\}|“.*?”", "", notes[f"{key}_en"])), \
            f"{name}: {key}_en must be in English"


def test_every_alert_is_tested_firing_and_silent() -> None:
    """A rule never seen firing may never fire; one never seen silent may always fire."""
    firing: set[str] = set()
    silent: set[str] = set()
    for path in TEST_FILES:
        for case in load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                if "exp_alerts" not in check:
                    continue  # an omitted list is not an explicit "must not fire"
                (firing if check["exp_alerts"] else silent).add(check["alertname"])
    assert sorted(set(CATALOGUE) - firing) == []
    assert sorted(set(CATALOGUE) - silent) == []
    assert sorted((firing | silent) - set(CATALOGUE)) == [], "a test names an unknown alert"


def test_every_rules_file_is_unit_tested() -> None:
    """A rules file that no test file loads is never evaluated before production."""
    loaded: set[Path] = set()
    for path in TEST_FILES:
        for name in load(path)["rule_files"]:
            rule_file = (path.parent / name).resolve()
            assert rule_file.is_file(), f"{path.name}: {name} does not exist"
            loaded.add(rule_file)
    assert sorted(p.name for p in RULE_FILES if p.resolve() not in loaded) == []


def test_every_runbook_link_has_its_section() -> None:
    """/runbook#<alertname lowercased> must land on the alert's '## <AlertName>' section."""
    assert RUNBOOK.is_file(), f"{RUNBOOK.relative_to(ROOT)} is missing"
    headings = {m.group(1).strip().lower() for m in
                re.finditer(r"^## +(.+)$", RUNBOOK.read_text(encoding="utf-8"), re.M)}
    anchors = {rule["annotations"]["runbook_url"].partition("#")[2] for _, rule in alerts()}
    assert sorted(anchors - headings) == []
