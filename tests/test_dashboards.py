"""The Grafana dashboards (dashboards/) against the issue 7 contract.

The committed JSON must be exactly what the generator writes; uids are the contract's; every
title is Vietnamese; every query names `${datasource}`, has a refId, rates over
`$__rate_interval` and uses only the contract's variables; every expression parses with the
real promtool; and the provisioning files point Grafana at the installed JSON and at the
Prometheus data source the dashboards select by default. (That every query returns data from
a live fleet is tests/test_dashboard_queries.py's job.)
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import build
from dashboards.common import DATASOURCE_UID, JITTER_LIMIT_S, LOSS_LIMIT_RATIO, MOS_MIN, RTT_LIMIT_S
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parent.parent
JSON_DIR = ROOT / "dashboards" / "json"
PROVISIONING = ROOT / "dashboards" / "provisioning"
RULES = ROOT / "alerts" / "rules"

SPEC_UIDS = {
    "fleet-overview.json": "bw-fleet-overview",
    "session-board.json": "bw-session-board",
    "bridge-detail.json": "bw-bridge-detail",
    "collector-health.json": "bw-collector-health",
}
# Variables each dashboard defines (the contract), and those queries may use.
SPEC_VARIABLES = {
    "fleet-overview.json": {"datasource", "province"},
    "session-board.json": {"datasource", "province", "session"},
    "bridge-detail.json": {"datasource", "province", "site"},
    "collector-health.json": {"datasource"},
}
VARIABLE_QUERIES = {
    "province": "label_values(bridge_site_info, province)",
    "site": 'label_values(bridge_site_info{province=~"$province"}, site)',
    "session": "label_values(bridge_session_info, session)",
}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range"}
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
# Values for promtool, as the live-fleet test substitutes them.
SUBSTITUTIONS = {
    "$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h",
    "$province": "dong-thap", "$site": "dt-sa-dec", "$session": "tcd-demo-1",
}
# Letters that only Vietnamese (of the languages here) writes: diacritics and đ.
VIETNAMESE = set(
    "àáảãạăằắẳẵặâầấẩẫậèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵđ"
)
# Grafana's three variable syntaxes; `$1` (a label_replace group) is no variable.
VARIABLE_REF = re.compile(r"\$\{([A-Za-z_]\w*)(?::\w+)?\}|\$([A-Za-z_]\w*)|\[\[(\w+)\]\]")


def load(path: Path) -> dict[str, Any]:
    """A committed dashboard, as Grafana would read it."""
    return json.loads(path.read_text(encoding="utf-8"))


DASHBOARDS = {path.name: load(path) for path in sorted(JSON_DIR.glob("*.json"))}


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels of collapsed rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels") or [])


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Every (panel, query) pair, rows' nested panels included."""
    for panel in all_panels(dashboard["panels"]):
        for tgt in panel.get("targets") or []:
            yield panel, tgt


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and annotation queries."""
    exprs = [tgt["expr"] for _, tgt in targets(dashboard)]
    exprs += [a["expr"] for a in dashboard.get("annotations", {}).get("list", []) if "expr" in a]
    return exprs


def all_expressions() -> list[tuple[str, str]]:
    """(file name, expression) for every dashboard."""
    return [(name, expr) for name, d in DASHBOARDS.items() for expr in expressions(d)]


def substitute(expr: str) -> str:
    """The expression with the variables' demo values, as Grafana would send it."""
    for var in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(var, SUBSTITUTIONS[var])
    return expr


def without_strings(expr: str) -> str:
    """The expression with its string literals emptied (label values may hold anything)."""
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The dashboard's template variables by name."""
    return {v["name"]: v for v in dashboard["templating"]["list"]}


# --- generation ----------------------------------------------------------------------------


def test_regenerating_changes_nothing(tmp_path: Path) -> None:
    build.write(tmp_path)
    generated = {p.name: p.read_bytes() for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_bytes() for p in JSON_DIR.glob("*.json")}
    assert sorted(committed) == sorted(generated), "missing or extra files in dashboards/json"
    for name, text in generated.items():
        assert committed[name] == text, f"dashboards/json/{name} differs: run dashboards.build"
        assert text.endswith(b"\n") and not text.endswith(b"\n\n")
    assert build.main(["--check"]) == 0


def test_check_names_changed_missing_and_stray_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build.write(tmp_path)
    assert build.main(["--check", "--out", str(tmp_path)]) == 0
    changed = tmp_path / "session-board.json"
    changed.write_text(changed.read_text(encoding="utf-8").replace("Phiên", "Phien", 1),
                       encoding="utf-8")
    (tmp_path / "bridge-detail.json").unlink()
    (tmp_path / "old-board.json").write_text("{}\n", encoding="utf-8")
    capsys.readouterr()
    assert build.main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "session-board.json: differs" in err
    assert "bridge-detail.json: missing" in err
    assert "old-board.json: not generated" in err
    assert "fleet-overview.json" not in err


def test_output_is_deterministic_and_sorted() -> None:
    first, second = build.render_all(), build.render_all()
    assert first == second
    for name, text in first.items():
        assert text == json.dumps(json.loads(text), sort_keys=True, indent=2,
                                  ensure_ascii=False) + "\n", name


# --- the contract --------------------------------------------------------------------------


def test_uids_are_the_contracts_and_unique() -> None:
    assert sorted(DASHBOARDS) == sorted(SPEC_UIDS)
    assert {name: d["uid"] for name, d in DASHBOARDS.items()} == SPEC_UIDS
    assert len({d["uid"] for d in DASHBOARDS.values()}) == len(SPEC_UIDS)
    for d in DASHBOARDS.values():
        assert d["tags"] == ["bridgewatch"]


def test_every_title_is_vietnamese() -> None:
    titles = []
    for name, d in DASHBOARDS.items():
        titles.append((name, d["title"]))
        assert d["title"].startswith("BridgeWatch — ")
        titles += [(name, p.get("title", "")) for p in all_panels(d["panels"])]
    assert len(titles) > 4 * 5
    not_vietnamese = [(n, t) for n, t in titles if not VIETNAMESE & set(t.lower())]
    assert not not_vietnamese


def test_every_target_uses_the_datasource_variable_and_has_a_ref_id() -> None:
    count = 0
    for name, d in DASHBOARDS.items():
        for panel in all_panels(d["panels"]):
            tgts = panel.get("targets") or []
            if panel["type"] != "row":
                assert tgts, f"{name}: {panel['title']} has no query"
                assert panel["datasource"] == DATASOURCE_REF, (name, panel["title"])
            refs = [t.get("refId") for t in tgts]
            assert all(refs) and len(set(refs)) == len(refs), (name, panel["title"], refs)
            for tgt in tgts:
                count += 1
                assert tgt["datasource"] == DATASOURCE_REF, (name, panel["title"])
                assert tgt["expr"].strip(), (name, panel["title"])
        for ann in d["annotations"]["list"]:
            assert ann["datasource"] == DATASOURCE_REF
    assert count >= 40


def test_variables_are_the_contracts() -> None:
    for name, d in DASHBOARDS.items():
        defined = variables(d)
        assert set(defined) == SPEC_VARIABLES[name], name
        ds = defined["datasource"]
        assert ds["type"] == "datasource" and ds["query"] == "prometheus"
        assert ds["current"]["value"] == DATASOURCE_UID
        for var, query in VARIABLE_QUERIES.items():
            if var in defined:
                assert defined[var]["type"] == "query"
                assert defined[var]["query"] == query, (name, var)
                assert defined[var]["datasource"] == DATASOURCE_REF


def test_queries_use_only_the_allowed_variables() -> None:
    for name, d in DASHBOARDS.items():
        allowed = SPEC_VARIABLES[name] | GRAFANA_BUILTINS
        texts = expressions(d) + [str(v.get("query", "")) for v in variables(d).values()]
        used = {next(g for g in m.groups() if g) for t in texts
                for m in VARIABLE_REF.finditer(t)}
        assert used <= allowed, (name, used - allowed)
        assert "datasource" not in used, "queries must not name the data source"


def test_every_range_is_the_rate_interval() -> None:
    ranges = []
    for name, expr in all_expressions():
        bare = without_strings(expr)
        ranges += [(name, r) for r in re.findall(r"\[([^\]]*)\]", bare)]
        for call in re.finditer(r"\b(rate|irate|increase)\s*\(", bare):
            inner = bare[call.end():]
            assert inner.split(")")[0].rstrip().endswith("[$__rate_interval]"), (name, expr)
    assert ranges, "no rate() anywhere: the check would prove nothing"
    assert {r for _, r in ranges} == {"$__rate_interval"}, ranges


def test_recording_rules_used_exist() -> None:
    recorded = set()
    for path in RULES.glob("*.yml"):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            recorded |= {r["record"] for r in group["rules"] if "record" in r}
    used = {m for _, expr in all_expressions()
            for m in re.findall(r"\b[a-z_]+:[a-z0-9_:]+\b", without_strings(expr))}
    assert used, "the dashboards should use the shared recording rules"
    assert used <= recorded, used - recorded


def test_link_thresholds_sit_at_the_readiness_limits() -> None:
    """Each link measure's panel colours at the readiness test's limit."""
    detail = DASHBOARDS["bridge-detail.json"]
    limits = {"bridge_link_rtt_seconds": RTT_LIMIT_S, "bridge_link_jitter_seconds": JITTER_LIMIT_S,
              "bridge_site:link_loss_ratio:rate5m": LOSS_LIMIT_RATIO, "bridge_link_mos": MOS_MIN}
    for metric, limit in limits.items():
        panels = [p for p, t in targets(detail) if t["expr"].startswith(metric)]
        assert panels, metric
        steps = panels[0]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert limit in [s["value"] for s in steps], (metric, steps)
    assert (RTT_LIMIT_S, JITTER_LIMIT_S, LOSS_LIMIT_RATIO, MOS_MIN) == (0.150, 0.030, 0.01, 3.6)


def test_panels_fit_the_grid_without_overlap() -> None:
    for name, d in DASHBOARDS.items():
        ids = [p["id"] for p in all_panels(d["panels"])]
        assert len(ids) == len(set(ids)), name
        cells: dict[tuple[int, int], str] = {}
        for panel in d["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, (name, panel["title"])
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in cells, (name, panel["title"], cells.get((x, y)))
                    cells[(x, y)] = panel["title"]


# --- PromQL through the real promtool -----------------------------------------------------


def promtool_check(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` on a rules file with each expression as a recording rule
    (promtool 2.42 has no parse-only command)."""
    rules = [{"record": f"bridgewatch_dashboard:expr_{i}:check", "expr": substitute(e)}
             for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]},
                                   allow_unicode=True), encoding="utf-8")
    return subprocess.run([require_binary("promtool"), "check", "rules", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    exprs = [expr for _, expr in all_expressions()]
    result = promtool_check(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout


def test_promtool_check_rejects_a_broken_expression(tmp_path: Path) -> None:
    result = promtool_check(["sum by (site) (rate(bridge_up[$__rate_interval])",
                             'ALERTS{province=~"$province"}'], tmp_path)
    assert result.returncode != 0
    assert "parse error" in result.stdout + result.stderr


# --- provisioning --------------------------------------------------------------------------


def test_dashboard_provider_reads_the_installed_json_directory() -> None:
    text = (PROVISIONING / "dashboards.yml").read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == build.INSTALL_PATH
    assert provider["options"].get("foldersFromFilesStructure") is False
    assert provider["allowUiUpdates"] is False
    assert VIETNAMESE & set(provider["folder"].lower())
    # The comment says where the files come from (Ansible installs dashboards/json there).
    assert "dashboards/json" in text and "Ansible" in text


def test_datasource_is_the_one_the_dashboards_select() -> None:
    config = yaml.safe_load((PROVISIONING / "datasources.yml").read_text(encoding="utf-8"))
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["uid"] == DATASOURCE_UID == "bridgewatch-prometheus"
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://127.0.0.1:9090"
    for d in DASHBOARDS.values():
        assert variables(d)["datasource"]["current"]["value"] == source["uid"]
