"""Every query of every dashboard, run against the demo fleet's real Prometheus.

No Grafana can run here, but what a Grafana panel shows is what its PromQL returns. So the
demo (`python -m deploy.demo`, started exactly as tests/test_demo.py does: real Mosquitto,
collector, this machine's agent, simulated bridges, Prometheus with the shipped rules,
Alertmanager) runs once for this module, until bridges report, tests have produced
verdicts and an alert fires; then each panel target of dashboards/json/*.json, with its
Grafana variables substituted the way Grafana would for the Đồng Tháp NOC looking at Sa Đéc
and session tcd-demo-1, goes to Prometheus as an instant query. It must parse (status
success) and return at least one series: a panel that is empty on a fleet that has data
is as broken as one that does not parse. The dashboards' variable queries
(``label_values``) are run the same way, since an empty drop-down breaks every panel.

A query's data can arrive after the fixture's readiness point (a slower test result, a
rate needing two scrapes), so an empty answer is asked again until the demo's data
deadline, never judged on a single early sample.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from collector.inventory import load_inventory
from deploy.demo import INVENTORY
from deploy.localstack import free_port, wait_until
from tests.conftest import require_binary
from tests.demo_process import start_demo

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards" / "json"
# The demo stops on its own after this long, whatever happens to the test process. The
# first alerts fire about 85 s after start (bridges up ~20 s, first test results ~30 s,
# then the readiness rules' `for: 1m` at a 5 s evaluation); the queries then take seconds.
RUN_SECONDS = 300
READY_TIMEOUT = 200  # bridges up, verdicts, a firing alert
# An empty answer is asked again until this long after the fixture was ready.
DATA_GRACE_SECONDS = 60

# What Grafana would put in for the NOC of Đồng Tháp looking at Sa Đéc and the first
# demo session; the built-ins at a 1 h range on a ~1000 px wide panel at a 5 s scrape.
VARIABLES = {
    "province": "dong-thap",
    "site": "dt-sa-dec",
    "session": "tcd-demo-1",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]|\$(\w+)")
GRAFANA_REGEX_SPECIALS = re.compile(r"([\\^$*+?.()|\[\]{}/])")
LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*),\s*)?(\w+)\s*\)\s*$", re.S)


@dataclass(frozen=True)
class Query:
    """One query a dashboard makes, named so a failure points at the panel."""

    dashboard: str  # file name
    panel: str  # panel title, or "variable <name>"
    ref_id: str
    expr: str  # as written in the dashboard
    variables: frozenset[str]  # the dashboard's own template variable names

    @property
    def id(self) -> str:
        return f"{self.dashboard}|{self.panel}|{self.ref_id}"


def _panels(panels: Any) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside rows (collapsed rows nest them in ``panels``)."""
    for panel in panels if isinstance(panels, list) else []:
        if isinstance(panel, dict):
            yield panel
            yield from _panels(panel.get("panels"))


def dashboard_queries(path: Path) -> list[Query]:
    """The panel targets (and label_values variables) of one dashboard file."""
    model = json.loads(path.read_text(encoding="utf-8"))
    listed = (model.get("templating") or {}).get("list") or []
    names = frozenset(v.get("name", "") for v in listed if isinstance(v, dict))
    queries: list[Query] = []
    for panel in _panels(model.get("panels")):
        for number, target in enumerate(panel.get("targets") or []):
            if isinstance(target, dict) and target.get("expr"):
                queries.append(Query(path.name, str(panel.get("title") or f"id {panel.get('id')}"),
                                     str(target.get("refId") or number), target["expr"], names))
    for variable in listed:
        query = variable.get("query") if isinstance(variable, dict) else None
        if isinstance(query, dict):  # newer Grafana: {"query": "...", "refId": ...}
            query = query.get("query")
        if variable.get("type") == "query" and isinstance(query, str):
            queries.append(Query(path.name, f"variable {variable.get('name')}", "var", query,
                                 names))
    return queries


def _grafana_format(value: str, fmt: str | None) -> str:
    """Grafana's formats for a single value; only those a PromQL dashboard would use."""
    if fmt in (None, "raw", "text", "pipe", "csv", "glob", "lucene", "percentencode"):
        return value if fmt != "percentencode" else urllib.parse.quote(value, safe="")
    if fmt == "regex":
        return GRAFANA_REGEX_SPECIALS.sub(r"\\\1", value)
    if fmt == "singlequote":
        return "'" + value.replace("'", "\\'") + "'"
    if fmt == "doublequote":
        return '"' + value.replace('"', '\\"') + '"'
    raise ValueError(f"format :{fmt} not supported by this test")


def substitute(query: Query) -> str:
    """The expr as Grafana sends it: $var, ${var}, ${var:fmt}, [[var]] and [[var:fmt]].

    ``$1`` in a label_replace replacement is not a variable: only the dashboard's own
    variables and Grafana's ``$__`` built-ins are replaced, and either one without a value
    here fails the test (the spec lists the variables a dashboard may use).
    """
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3) or match.group(5)
        fmt = match.group(2) or match.group(4)
        if name == "datasource":
            raise ValueError("$datasource inside a PromQL expression")
        if name in VARIABLES and (name in query.variables or name.startswith("__")):
            return _grafana_format(VARIABLES[name], fmt)
        if name in VARIABLES:
            raise ValueError(f"uses ${name} but the dashboard defines no such variable")
        if name in query.variables or name.startswith("__"):
            raise ValueError(f"variable ${name} has no value for the demo (not in the spec)")
        return match.group(0)

    return VARIABLE.sub(replace, query.expr)


def to_promql(query: Query) -> str:
    """A variable's ``label_values(selector, label)`` as the query Grafana makes of it."""
    expr = substitute(query)
    if query.ref_id != "var":
        return expr
    match = LABEL_VALUES.match(expr)
    if match is None:  # a plain PromQL variable query (query_result) is itself a query
        return expr
    selector, label = match.group(1), match.group(2)
    if selector is None:
        return f'group by ({label}) ({{{label}=~".+"}})'
    return f"group by ({label}) ({selector})"


def collect() -> list[Any]:
    """Parameters at collection: an empty or unreadable directory is a failing case."""
    files = sorted(DASHBOARDS.glob("*.json"))
    if not files:
        return [pytest.param(None, id="no-dashboards")]
    params: list[Any] = []
    for path in files:
        try:
            queries = dashboard_queries(path)
        except (OSError, ValueError) as err:
            params.append(pytest.param(f"{path.name}: {err}", id=f"{path.name}|unreadable"))
            continue
        if not queries:
            params.append(pytest.param(f"{path.name}: no queries", id=f"{path.name}|empty"))
        params.extend(pytest.param(q, id=q.id) for q in queries)
    return params


@dataclass
class Demo:
    prometheus: str
    data_deadline: float  # monotonic: an empty answer is retried until then


def instant(prometheus: str, expr: str) -> dict[str, Any]:
    """Prometheus' answer to an instant query; a 400 (bad PromQL) is returned, not raised."""
    data = urllib.parse.urlencode({"query": expr}).encode()
    request = urllib.request.Request(f"{prometheus}/api/v1/query", data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as err:
        return json.load(err)


def series(answer: dict[str, Any]) -> int:
    """How many series (or one scalar) an answer holds."""
    data = answer.get("data") or {}
    if data.get("resultType") in ("scalar", "string"):
        return 1
    return len(data.get("result") or [])


def has(prometheus: str, expr: str) -> bool:
    answer = instant(prometheus, expr)
    return answer.get("status") == "success" and series(answer) > 0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One demo fleet for the whole module, stopped (SIGTERM, like Ctrl-C) afterwards."""
    require_binary("mosquitto")
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    work = tmp_path_factory.mktemp("dashboard-demo")
    prometheus_port = free_port()
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    sites = {s.id for s in load_inventory(INVENTORY).sites.values()}
    output = work / "demo.out"
    proc = start_demo(work / "demo", RUN_SECONDS, prometheus_port, output)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError("the demo exited:\n" + output.read_text(errors="replace"))
            up = instant(prometheus, "bridge_up == 1")
            return ({r["metric"]["site"] for r in up["data"]["result"]} == sites
                    and has(prometheus, 'bridge_readiness{state=~"passed|failed"} == 1')
                    and has(prometheus, 'ALERTS{alertstate="firing"}'))

        try:
            wait_until(ready, READY_TIMEOUT, "every bridge up, a test verdict and a firing "
                       "alert in the demo's Prometheus", interval=2)
        except TimeoutError as err:
            pytest.fail(f"{err}\n{output.read_text(errors='replace')}")
        yield Demo(prometheus, time.monotonic() + DATA_GRACE_SECONDS)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)


@pytest.mark.parametrize("query", collect())
def test_dashboard_query_parses_and_returns_data(query: Query | str | None,
                                                 request: pytest.FixtureRequest) -> None:
    """status success and at least one series, for the Đồng Tháp demo fleet."""
    assert query is not None, f"no dashboards in {DASHBOARDS}: run python -m dashboards.build"
    assert isinstance(query, Query), query
    demo: Demo = request.getfixturevalue("demo")  # started once, only when there is a query
    try:
        expr = to_promql(query)
    except ValueError as err:
        pytest.fail(f"{query.dashboard} / {query.panel} / {query.ref_id}: {err}\n"
                    f"  expr: {query.expr}")
    where = f"{query.dashboard} / {query.panel} / {query.ref_id}\n  expr: {expr}"
    answer = instant(demo.prometheus, expr)
    assert answer.get("status") == "success", f"{where}\n  Prometheus: {answer.get('error')}"
    while series(answer) == 0 and time.monotonic() < demo.data_deadline:
        time.sleep(2)
        answer = instant(demo.prometheus, expr)
    assert series(answer) > 0, f"{where}\n  no series for the demo fleet"


def test_substitution_follows_grafana() -> None:
    """The forms and formats Grafana replaces, and what it leaves alone."""
    names = frozenset({"province", "site", "session", "datasource"})

    def sub(expr: str) -> str:
        return substitute(Query("d.json", "p", "A", expr, names))

    assert sub('bridge_up{province=~"$province",site="${site}"}') \
        == 'bridge_up{province=~"dong-thap",site="dt-sa-dec"}'
    assert sub("rate(x[$__rate_interval]) / [[session]]") == "rate(x[1m]) / tcd-demo-1"
    assert sub('x{site=~"${site:regex}"}') == 'x{site=~"dt-sa-dec"}'
    assert _grafana_format("a.b(c)", "regex") == r"a\.b\(c\)"
    # A regex anchor and a label_replace group reference are not variables.
    assert sub('label_replace(x, "s", "$1", "site", "(.*)$")') \
        == 'label_replace(x, "s", "$1", "site", "(.*)$")'
    with pytest.raises(ValueError, match="__timeFilter"):
        sub("x[$__timeFilter]")
    with pytest.raises(ValueError, match="no such variable"):
        substitute(Query("d.json", "p", "A", 'x{site="$site"}', frozenset({"province"})))
    assert to_promql(Query("d.json", "variable site", "var",
                           'label_values(bridge_site_info{province=~"$province"}, site)',
                           names)) == 'group by (site) (bridge_site_info{province=~"dong-thap"})'
