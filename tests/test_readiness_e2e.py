"""The proof of issue 5: a session a minute and a half away, four bridges, real parts.

Real Mosquitto, collector (with its readiness service and API), reflector, NUT upsd and
agents, in network namespaces. The checkpoints are the regulations' four, scaled from
days and hours down to seconds in the collector's configuration (its clock is the real
one). The host and one member bridge are healthy; one member's link is capped at 3 Mbit/s
on the emulated WAN (it needs 5); one member's UPS goes on battery with 10 minutes left
(the session needs 30 + 5). The collector orders the tests itself when each window opens,
retries the failures, and the verdicts, the metrics and the biên bản say exactly that,
naming the failing criteria.

The test process enters the central namespace (``setns``) for the central parts, so the
project's own launchers run there unchanged; the capped bridge's agent runs in the site
namespace and reaches the broker and the reflector across the WAN.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from collector.readiness.model import VIETNAM
from deploy.chromium import Chromium
from deploy.localstack import Mosquitto, Process, free_port, port_open, wait_until
from deploy.nut import ON_BATTERY, ONLINE, Upsd
from deploy.wan import CENTRAL_IP, Wan, start_reflector
from tests.collector_client import call_api, write_yaml
from tests.conftest import require_binary, require_root

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
HOST, HEALTHY, CAPPED, WEAK = "dt-trung-tam", "dt-sa-dec", "dt-hong-ngu", "dt-tram-chim"
SESSION = "tcd-e2e"
TOKEN = "noc-e2e " + "t" * 32
LEAD_SECONDS = 105  # the session starts this long after the import
# The regulations' checkpoints (T-3 d, T-24 h with 12 h, T-2 h with 2 h, T with 2 h) in
# seconds: confirm at T-95 s, test 1 in [T-90, T-60], test 2 in [T-45, T-20], start
# in [T-15, T].
CHECKPOINTS = [
    {"name": "confirm", "kind": "confirm", "offset_seconds": -95},
    {"name": "test-1", "kind": "test", "offset_seconds": -60, "window_seconds": 30},
    {"name": "test-2", "kind": "test", "offset_seconds": -20, "window_seconds": 25},
    {"name": "start", "kind": "start", "offset_seconds": 0, "window_seconds": 15},
]
CLONE_NEWNET = 0x40000000


@contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Run this thread (and every child it starts) in a named network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
        yield
    finally:
        if libc.setns(home, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back home")
        os.close(target)
        os.close(home)


def api(port: int, method: str, path: str, body: bytes | None = None,
        content_type: str = "application/json") -> tuple[int, Any]:
    return call_api(port, TOKEN.split()[1], method, path, body, content_type)


def agent_config(work: Path, site: str, broker: str, broker_port: int, reflector: str,
                 key: Path, required_mbps: float, ups_port: int | None) -> Path:
    config: dict[str, Any] = {
        "site": site, "province": "dong-thap", "interval_seconds": 2,
        "broker": {"host": broker, "port": broker_port},
        "spool": {"path": str(work / f"{site}.sqlite")},
        "link": {"reflector": {"host": reflector, "key_file": str(key)},
                 "required_bandwidth_mbps": required_mbps},
        "session": {"ups_margin_seconds": 300},
        "readiness": {"link_seconds": 2, "bandwidth_seconds": 2},
    }
    if ups_port is not None:
        config["ups"] = [{"name": "ups-1", "nut": {"host": "127.0.0.1", "port": ups_port,
                                                   "ups": site}}]
    return write_yaml(work / f"{site}.yaml", config)


def verdicts(port: int) -> dict[tuple[str, str], dict[str, Any]]:
    status, body = api(port, "GET", f"/api/sessions/{SESSION}")
    assert status == 200, body
    return {(v["site"], v["checkpoint"]): v for v in body["verdicts"]}


def test_session_verdicts_and_report_name_what_is_wrong(tmp_path: Path) -> None:
    require_root()
    for binary in ("mosquitto", "ip", "nft", "tc"):
        require_binary(binary)
    require_binary("upsd", "/lib/nut")
    require_binary("chromium")
    key = tmp_path / "reflector.key"
    key.write_text(os.urandom(32).hex() + "\n")
    (tmp_path / "tokens").write_text(TOKEN + "\n")
    broker_port, http_port = free_port(), free_port()
    with Wan(tmp_path / "wan") as wan:
        wan.set_bandwidth("up", 3.0)
        wan.set_bandwidth("down", 3.0)
        start_reflector(wan, tmp_path, key)
        with inside(wan.names["central"]):
            broker = Mosquitto(tmp_path / "mosquitto", port=broker_port,
                               listener_conf=f"listener {broker_port} 0.0.0.0\n"
                                             "allow_anonymous true\n")
            broker.start()
            upsd = Upsd(tmp_path / "nut", {HEALTHY: ONLINE, WEAK: ONLINE, HOST: ONLINE})
            upsd.start()
            collector = Process(
                [sys.executable, "-m", "collector.main", "--config",
                 str(write_yaml(tmp_path / "collector.yaml", {
                     "inventory": str(ROOT / "deploy" / "demo-inventory.yaml"),
                     "listen": f"127.0.0.1:{http_port}",
                     "broker": {"host": "127.0.0.1", "port": broker_port},
                     "readiness": {"database": "readiness.sqlite", "api_tokens_file": "tokens",
                                   "tick_seconds": 1, "retry_after_seconds": 12,
                                   "max_attempts": 3, "checkpoints": CHECKPOINTS}}))],
                tmp_path / "collector.log")
            collector.start()
            agents = [collector]
            try:
                wait_until(lambda: port_open(http_port) or not collector.running, 30,
                           "the collector's HTTP port")
                for site, mbps in ((HOST, 30), (HEALTHY, 5), (WEAK, 5)):
                    agents.append(Process(
                        [sys.executable, "-m", "agent.main", "run", "--config",
                         str(agent_config(tmp_path, site, "127.0.0.1", broker_port,
                                          "127.0.0.1", key, mbps, upsd.port))],
                        tmp_path / f"{site}.log"))
                    agents[-1].start()
                agents.append(wan.run("site", [
                    sys.executable, "-m", "agent.main", "run", "--config",
                    str(agent_config(tmp_path, CAPPED, CENTRAL_IP, broker_port, CENTRAL_IP,
                                     key, 5, None))], tmp_path / f"{CAPPED}.log"))
                # The weak bridge's mains fails: on battery, 10 minutes left.
                upsd.set_state(WEAK, {**ON_BATTERY, "battery.runtime": "600"})
                start = (datetime.now(VIETNAM) + timedelta(seconds=LEAD_SECONDS)).replace(
                    microsecond=0)
                schedule = {"sessions": [{
                    "id": SESSION, "title": "Tiếp công dân định kỳ: kiểm thử đầu cuối",
                    "start": start.isoformat(), "duration": "30m", "host": HOST,
                    "members": [HEALTHY, CAPPED, WEAK]}]}
                status, body = api(http_port, "POST", "/api/sessions",
                                   yaml.safe_dump(schedule, allow_unicode=True).encode(),
                                   "application/yaml")
                assert status == 200, body
                for site in (HOST, HEALTHY, CAPPED, WEAK):
                    status, body = api(http_port, "POST", f"/api/sessions/{SESSION}/confirm",
                                       json.dumps({"site": site}).encode())
                    assert status == 201, body
                # Before the session starts the start checkpoint is still open...
                wait_until(lambda: verdicts(http_port)[(HEALTHY, "test-1")]["state"]
                           == "passed", 60, "the healthy bridge to pass test 1", interval=1)
                # ...and once the start has passed every verdict is final.
                time.sleep(max(0.0, (start - datetime.now(VIETNAM)).total_seconds() + 2))
                final = verdicts(http_port)
                report = urllib.request.urlopen(
                    f"http://127.0.0.1:{http_port}/report/{SESSION}.html", timeout=10).read()
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics",
                                            timeout=10) as answer:
                    metrics = answer.read().decode()
            finally:
                for part in reversed(agents):
                    part.stop()
                upsd.stop()
                broker.stop()
    log = (tmp_path / "collector.log").read_text(errors="replace")
    states = {key: v["state"] for key, v in final.items()}
    for site in (HOST, HEALTHY, CAPPED, WEAK):
        assert states[(site, "confirm")] == "passed", log[-3000:]
    for checkpoint in ("test-1", "test-2", "start"):
        assert states[(HOST, checkpoint)] == "passed", (checkpoint, final, log[-3000:])
        assert states[(HEALTHY, checkpoint)] == "passed", (checkpoint, final)
        capped, weak = final[(CAPPED, checkpoint)], final[(WEAK, checkpoint)]
        assert capped["state"] == "missed", capped
        assert set(capped["failing"]) == {"bandwidth-up", "bandwidth-down"}, capped
        assert weak["state"] == "missed", weak
        assert set(weak["failing"]) == {"ups-power", "ups-runtime"}, weak
    # The alert rules read the same verdicts from /metrics.
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics) for s in family.samples}
    base = {"session": SESSION, "province": "dong-thap"}
    assert samples[("bridge_readiness", tuple(sorted({
        **base, "checkpoint": "test-2", "site": CAPPED, "state": "missed"}.items())))] == 1
    assert samples[("bridge_readiness_failing_criterion", tuple(sorted({
        **base, "checkpoint": "start", "site": WEAK, "criterion": "ups-runtime"}.items())))] == 1
    # The biên bản names the bridges and, in Vietnamese, what failed; Chromium renders it.
    text = report.decode()
    for needle in ("BIÊN BẢN KIỂM THỬ KỸ THUẬT", "Sa Đéc", "Hồng Ngự", "Tràm Chim",
                   "Băng thông tải lên", "Thời gian lưu điện", "Quá hạn"):
        assert needle in text, needle
    page_file = tmp_path / "report.html"
    page_file.write_bytes(report)
    ARTIFACTS.mkdir(exist_ok=True)
    with Chromium() as browser:
        page = browser.open(page_file)
        page.screenshot(ARTIFACTS / "readiness-e2e-report.png", full_page=True)
        assert page.errors == [], page.errors
        assert "Tràm Chim" in page.dom()
    print(f"\nverdicts: {json.dumps({f'{s}/{c}': v for (s, c), v in states.items()})}")
