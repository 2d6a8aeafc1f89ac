"""The demo end to end: broker, collector, this machine's real agent, the simulated bridges,
Prometheus with the alert rules and Alertmanager, started by `python -m deploy.demo` exactly
as a person would, then checked through Prometheus' HTTP API, which is where the NOC
looks."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from collector.inventory import load_inventory
from deploy.demo import INVENTORY, real_agent_site
from deploy.localstack import free_port, wait_until
from tests.conftest import require_binary
from tests.demo_process import start_demo

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
RUN_SECONDS = 60


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]["result"]


def rule_groups(prometheus: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{prometheus}/api/v1/rules", timeout=5) as resp:
        return json.load(resp)["data"]["groups"]


def rules_evaluated_ok(prometheus: str) -> bool:
    """Every rule has been evaluated at least once, and none failed."""
    rules = [r for g in rule_groups(prometheus) for r in g["rules"]]
    return bool(rules) and all(r["health"] == "ok" for r in rules)


def sites_up(prometheus: str) -> set[str]:
    return {r["metric"]["site"] for r in query(prometheus, "bridge_up == 1")}


def test_demo_shows_every_bridge_up_and_this_machine_real(tmp_path: Path) -> None:
    require_binary("mosquitto")
    require_binary("prometheus")
    sites = list(load_inventory(INVENTORY).sites.values())
    real = real_agent_site(sites)
    prometheus_port = free_port()
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    output = tmp_path / "demo.out"
    proc = start_demo(tmp_path / "demo", RUN_SECONDS, prometheus_port, output)
    try:
        wait_until(lambda: sites_up(prometheus) == {s.id for s in sites}, RUN_SECONDS - 5,
                   "bridge_up 1 for every inventory site", interval=1)
        memory = query(prometheus, f'bridge_memory_total_bytes{{site="{real.id}"}}')
        assert len(memory) == 1
        assert float(memory[0]["value"][1]) == psutil.virtual_memory().total
        # Link quality to the central reflector: measured for real by this machine's
        # agent, simulated for the others.
        wait_until(lambda: {r["metric"]["site"] for r in query(
            prometheus, 'bridge_link_mos{target="reflector"}')} == {s.id for s in sites},
            RUN_SECONDS - 5, "a MOS for every bridge", interval=1)
        real_rtt = query(prometheus, f'bridge_link_rtt_seconds{{site="{real.id}",'
                                     'method="udp-reflector",quantile="0.5"}')
        assert len(real_rtt) == 1 and 0 < float(real_rtt[0]["value"][1]) < 0.1
        # The room: this machine's UPS is read from the demo's real upsd (on mains), its
        # clock from the demo's chronyd; the simulated rooms report the same families.
        wait_until(lambda: {r["metric"]["site"] for r in query(
            prometheus, 'bridge_ups_power_state == 1')} == {s.id for s in sites},
            RUN_SECONDS - 5, "a power state for every bridge", interval=1)
        power = query(prometheus, f'bridge_ups_power_state{{site="{real.id}"}} == 1')
        assert [r["metric"]["state"] for r in power] == ["mains"]
        offset = query(prometheus, f'bridge_clock_offset_seconds{{site="{real.id}"}}')
        assert len(offset) == 1 and abs(float(offset[0]["value"][1])) < 0.5
        # The demo schedule's first session has its test-1 window open: the collector
        # orders every bridge's test and the answers turn into verdicts.
        wait_until(lambda: query(prometheus, 'bridge_readiness{session="tcd-demo-1",'
                                 'checkpoint="test-1",state=~"passed|failed"} == 1'),
                   RUN_SECONDS - 5, "a test-1 verdict drawn from a test result", interval=1)
        # The alert rules of alerts/ are loaded, one group per area, and evaluate cleanly
        # against the demo fleet's real series (a typo in a metric name would not error,
        # but a bad join would: "many-to-many matching" is a failed evaluation).
        groups = {g["name"] for g in rule_groups(prometheus)}
        assert groups == {f"bridgewatch-{area}" for area in (
            "recording", "agent", "link", "devices", "power", "storage", "readiness",
            "collector")}, groups
        wait_until(lambda: rules_evaluated_ok(prometheus), RUN_SECONDS - 5,
                   "every rule evaluated without error", interval=1)
        code = proc.wait(RUN_SECONDS + 30)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
    text = output.read_text(errors="replace")
    assert code == 0, text
    assert f"{prometheus}/graph" in text and "everything stopped" in text, text
