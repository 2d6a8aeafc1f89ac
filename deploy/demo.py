"""`python -m deploy.demo`: a province's whole BridgeWatch chain on this PC, in the foreground.

A real Mosquitto, the collector, this machine's real agent as one commune bridge, simulated
bridges for every other site of the Đồng Tháp demo inventory, a real Prometheus scraping
the collector and evaluating the alert rules of ``alerts/``, and a real Alertmanager
routing them with the shipped configuration to a local sink that writes each page to
``pages.log`` (instead of Telegram and mail): what the NOC of Sở KH&CN runs, shrunk onto
one machine, so anyone can see the data path end to end. Ctrl-C (or --seconds) stops every
part cleanly; a part that dies is named with the tail of its log. Everything lives under
--workdir (.demo/).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import socket
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from collector.inventory import Site, load_inventory
from collector.readiness.model import VIETNAM
from deploy.alertmanager import Alertmanager, local_config
from deploy.chrony import Chrony
from deploy.localstack import (
    MissingPrerequisite,
    Mosquitto,
    Process,
    Prometheus,
    port_open,
    wait_until,
)
from deploy.localstack import free_port as any_free_port
from deploy.nut import ONLINE, Upsd
from deploy.paging_sink import PagingSink, SinkRequest

INVENTORY = Path(__file__).with_name("demo-inventory.yaml")
ALERTS = Path(__file__).resolve().parent.parent / "alerts"
# The regulations' checkpoints without the T-3 d confirmation: the demo's schedule is made
# on the spot, after any invitation round could have taken place.
DEMO_CHECKPOINTS = [
    {"name": "test-1", "kind": "test", "offset_seconds": -24 * 3600,
     "window_seconds": 12 * 3600},
    {"name": "test-2", "kind": "test", "offset_seconds": -2 * 3600, "window_seconds": 2 * 3600},
    {"name": "start", "kind": "start", "offset_seconds": 0, "window_seconds": 2 * 3600},
]
PREFIX = "bridgewatch"
LOG_TAIL_LINES = 20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deploy.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(".demo"))
    parser.add_argument("--inventory", type=Path, default=INVENTORY)
    parser.add_argument("--broker-port", type=int, help="default 1883 when free")
    parser.add_argument("--collector-port", type=int, help="default 9108 when free")
    parser.add_argument("--prometheus-port", type=int, help="default 9090 when free")
    parser.add_argument("--alertmanager-port", type=int, help="default 9093 when free")
    parser.add_argument("--reflector-port", type=int, help="UDP; default 8620 when free")
    parser.add_argument("--interval", type=float, default=10.0, help="telemetry seconds")
    parser.add_argument("--flaky", type=int, default=1,
                        help="simulated sites that drop offline now and then (default 1)")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds")
    return parser.parse_args(argv)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pick_port(requested: int | None, preferred: int) -> int:
    """The port asked for, else the well-known one when free, else any free one."""
    if requested is not None:
        return requested
    return preferred if port_free(preferred) else any_free_port()


def console_script(name: str) -> str:
    """A console script of this distribution, next to the running interpreter first."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise MissingPrerequisite(f"{name} not found: run scripts/bootstrap.sh (pip install -e .)")
    return found


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def demo_schedule(sites: list[Site], now: datetime | None = None) -> dict[str, Any]:
    """Three sessions around now: two whose first test window is open (so the collector
    orders tests as soon as the bridges are up) and one next week, still pending."""
    now = now or datetime.now(VIETNAM)
    hour = now.replace(minute=0, second=0, microsecond=0)
    host = next(s.id for s in sites if s.level == "central")
    members = [s.id for s in sites if s.level == "member"]
    sessions = []
    for number, (hours, bridges) in enumerate(((25, members), (30, members[::2]),
                                               (7 * 24 + 1, members)), start=1):
        start = hour + timedelta(hours=hours)
        sessions.append({
            "id": f"tcd-demo-{number}", "duration": "3h", "host": host, "members": bridges,
            "title": f"Tiếp công dân trực tuyến định kỳ ngày {start:%d/%m/%Y}",
            "start": start.isoformat()})
    return {"sessions": sessions}


def log_page(path: Path, request: SinkRequest) -> None:
    """One line per notification: when, to whom, firing or resolved, which alerts where."""
    body = request.body if isinstance(request.body, dict) else {}
    if "alerts" in body:  # a webhook; Telegram's copy of the same page is left out
        alerts = ", ".join(
            f"{a['labels'].get('alertname', '?')}@{a['labels'].get('site', '-')}"
            for a in body["alerts"])
        line = (f"{datetime.now(VIETNAM):%Y-%m-%d %H:%M:%S} {request.path.strip('/')} "
                f"{body.get('status', '?')}: {alerts}\n")
        with path.open("a", encoding="utf-8") as out:
            out.write(line)


def real_agent_site(sites: list[Site]) -> Site:
    """This machine plays the first commune bridge: the most common kind of site."""
    for site in sites:
        if site.level == "member":
            return site
    raise SystemExit("the inventory has no member site for this machine's real agent")


class Demo:
    """The parts, started in data-path order and stopped in reverse."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir: Path = args.workdir.resolve()
        self.inventory_path: Path = args.inventory.resolve()
        self.sites = list(load_inventory(self.inventory_path).sites.values())
        self.real_site = real_agent_site(self.sites)
        self.broker_port = pick_port(args.broker_port, 1883)
        self.collector_port = pick_port(args.collector_port, 9108)
        self.prometheus_port = pick_port(args.prometheus_port, 9090)
        self.alertmanager_port = pick_port(args.alertmanager_port, 9093)
        self.reflector_port = pick_port(args.reflector_port, 8620)  # UDP echo
        # Bandwidth tests: beside the UDP port when it was chosen for us, else any free port
        # (two demos started side by side, as tests do, must not race for 8621).
        self.reflector_tcp_port = pick_port(None, 8621) if args.reflector_port is None \
            else any_free_port()
        self.parts: list[tuple[str, Process]] = []
        self.upsd: Upsd | None = None
        self.sink: PagingSink | None = None

    def start(self) -> None:
        work = self.workdir
        work.mkdir(parents=True, exist_ok=True)
        broker = Mosquitto(work / "mosquitto", port=self.broker_port)
        self._start("broker Mosquitto", broker)
        broker_conf = {"host": "127.0.0.1", "port": self.broker_port}
        token = secrets.token_urlsafe(24)
        (work / "api-tokens").write_text(f"demo-noc {token}\n", encoding="utf-8")
        (work / "api-tokens").chmod(0o600)
        (work / "readiness.sqlite").unlink(missing_ok=True)  # a fresh schedule each run
        collector_yaml = write_yaml(work / "collector.yaml", {
            "prefix": PREFIX, "inventory": str(self.inventory_path),
            "listen": f"127.0.0.1:{self.collector_port}", "broker": broker_conf,
            "readiness": {"database": str(work / "readiness.sqlite"),
                          "schedule": str(write_yaml(work / "schedule.yaml",
                                                     demo_schedule(self.sites))),
                          "api_tokens_file": str(work / "api-tokens"),
                          "retry_after_seconds": 300, "tick_seconds": 2,
                          "checkpoints": DEMO_CHECKPOINTS}})
        collector = Process([console_script("bridgewatch-collector"), "--config",
                             str(collector_yaml)], work / "collector.log")
        self._start("bộ thu thập / collector", collector)
        wait_until(lambda: port_open(self.collector_port) or not collector.running, 30,
                   "the collector to serve /metrics")
        self._check_alive()
        # The central site's reflector, which the real agent measures its link against.
        key = work / "reflector.key"
        key.write_text(secrets.token_hex(32) + "\n")
        reflector_yaml = write_yaml(work / "reflector.yaml", {
            "listen": "127.0.0.1", "udp_port": self.reflector_port,
            "tcp_port": self.reflector_tcp_port, "key_file": str(key)})
        self._start("bộ phản hồi / reflector", Process(
            [console_script("bridgewatch-reflector"), "--config", str(reflector_yaml)],
            work / "reflector.log"))
        # The real agent's room: a UPS behind a real NUT server and the province's NTP
        # server (here a local chronyd), read exactly as on a commune PC.
        self.upsd = Upsd(work / "nut", {"santak": ONLINE})
        self.upsd.start()
        self.parts.extend(("UPS (NUT upsd)", p) for p in self.upsd.processes)
        ntp = Chrony(work / "chrony")
        self._start("NTP (chronyd)", ntp)
        site = self.real_site
        agent_yaml = write_yaml(work / "agent.yaml", {
            "site": site.id, "province": site.province, "prefix": PREFIX, "broker": broker_conf,
            "spool": {"path": str(work / "spool" / "agent.sqlite")},
            "interval_seconds": self.args.interval,
            "recording_volume": str(work),
            "ups": [{"name": "ups-1", "nut": {"host": self.upsd.host, "port": self.upsd.port,
                                              "ups": "santak"}}],
            "clock": {"server": "127.0.0.1", "port": ntp.port},
            "link": {"reflector": {"host": "127.0.0.1", "udp_port": self.reflector_port,
                                   "tcp_port": self.reflector_tcp_port, "key_file": str(key)},
                     "required_bandwidth_mbps": site.bandwidth_bits_per_second / 1e6}})
        (work / "spool").mkdir(exist_ok=True)
        agent = console_script("bridgewatch-agent")
        self._start(f"agent thật / real agent ({site.id})",
                    Process([agent, "run", "--config", str(agent_yaml)], work / "agent.log"))
        self._start("điểm cầu mô phỏng / simulated bridges", Process([
            agent, "simulate", "--inventory", str(self.inventory_path),
            "--broker-host", "127.0.0.1", "--broker-port", str(self.broker_port),
            "--prefix", PREFIX, "--interval", str(self.args.interval),
            "--flaky", str(self.args.flaky), "--skip", site.id], work / "simulate.log"))
        # Alerts: the shipped rules and routing; pages go to pages.log instead of phones.
        pages = work / "pages.log"
        pages.write_text("", encoding="utf-8")
        self.sink = PagingSink(on_request=lambda r: log_page(pages, r))
        self._start("Alertmanager", Alertmanager(
            work / "alertmanager",
            local_config(ALERTS / "alertmanager.yml", work / "alertmanager", self.sink.url),
            port=self.alertmanager_port))
        self._start("Prometheus", Prometheus(
            work / "prometheus", [f"127.0.0.1:{self.collector_port}"], scrape_interval="5s",
            port=self.prometheus_port, rule_files=sorted((ALERTS / "rules").glob("*.yml")),
            alertmanagers=[f"127.0.0.1:{self.alertmanager_port}"]))
        self._check_alive()

    def _start(self, label: str, part: Process) -> None:
        self.parts.append((label, part))
        part.start()

    def _check_alive(self) -> None:
        for label, part in self.parts:
            if not part.running:
                code = part.proc.returncode if part.proc else None
                raise ChildDied(f"{label} đã dừng / exited (code {code}); "
                                f"log {part.log_path}:\n{tail(part.log())}")

    def banner(self) -> str:
        prom = f"http://127.0.0.1:{self.prometheus_port}"
        query = "bridge_up"
        return "\n".join([
            "",
            f"BridgeWatch demo: {len(self.sites)} điểm cầu / bridges, "
            f"máy này là / this PC is {self.real_site.id} ({self.real_site.name})",
            f"  Prometheus:          {prom}/graph?g0.expr={query}&g0.tab=1",
            f"      truy vấn mẫu / example queries: {query}   "
            f"bridge_memory_total_bytes{{site=\"{self.real_site.id}\"}}",
            f"  Số liệu / metrics:   http://127.0.0.1:{self.collector_port}/metrics",
            f"  Phiên / sessions:    http://127.0.0.1:{self.collector_port}/api/sessions   "
            f"biên bản / report: http://127.0.0.1:{self.collector_port}/report/tcd-demo-1.html",
            f"  Bảng sẵn sàng / board: http://127.0.0.1:{self.collector_port}/board   "
            "(English: /board?lang=en)",
            f"      mã API / API token: {self.workdir}/api-tokens",
            f"  Cảnh báo / alerts:   {prom}/alerts   Alertmanager "
            f"http://127.0.0.1:{self.alertmanager_port}   "
            f"hướng dẫn xử lý / runbook: http://127.0.0.1:{self.collector_port}/runbook",
            f"      tin nhắn gửi kỹ thuật viên / pages: {self.workdir}/pages.log",
            f"  Broker MQTT:         127.0.0.1:{self.broker_port} (chủ đề / topics {PREFIX}/v1/#)",
            f"  Nhật ký / logs:      {self.workdir}/*.log, "
            f"{self.workdir}/mosquitto/mosquitto.log, {self.workdir}/prometheus/prometheus.log",
            "  Dừng / stop:         Ctrl-C",
            "",
        ])

    def watch(self, seconds: float | None) -> None:
        """Return when the time is up; raise ChildDied as soon as a part dies."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            self._check_alive()
            time.sleep(0.5)

    def stop(self) -> None:
        for _, part in reversed(self.parts):
            part.stop()
        if self.sink is not None:
            self.sink.close()
        if self.upsd is not None:
            self.upsd.stop()  # and its private state directory


class ChildDied(RuntimeError):
    """A part of the demo exited on its own: the message names it and shows its log."""


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo exactly like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    demo = Demo(args)
    code = 0
    try:
        demo.start()
        print(demo.banner(), flush=True)
        demo.watch(args.seconds)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as err:  # ChildDied, MissingPrerequisite, start failures
        print(f"\nLỖI / ERROR: {err}", file=sys.stderr, flush=True)
        code = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # let the parts stop, whatever is pressed
        print("Đang dừng / stopping…", flush=True)
        demo.stop()
    print("Đã dừng tất cả / everything stopped.", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
