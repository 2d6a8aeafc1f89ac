"""The bridgewatch_central role run for real against this machine, then its stack used.

The example inventory (``ansible/inventory/example``, its vault opened with the documented
example password) is rolled out with ``site.yml`` limited to the central host, which is
this machine (connection local): every tree under a temporary prefix, service manager
``none`` (no systemd), no apt; the BridgeWatch wheel is built and installed into the
role's venv. It runs twice and the second run must change nothing. Every rendered file is
then read by its real consumer: the collector's own loaders, ``promtool``, ``amtool``,
``systemd-analyze`` and Mosquitto, started on the rendered configuration with a CA and a
server certificate made here with ``openssl``. paho-mqtt proves the credentials, the ACL
and the two listeners: the sites' (TLS), where a client id is its user name, and the
collector's (127.0.0.1, plaintext), where its connections keep their own. Last, the end
to end of issue 8: the agent role renders dt-sa-dec's agent for this broker, the real
agent publishes and the real collector (rendered config, installed venv) receives it; the
same credentials under another site's name are refused; and ``check.yml`` gathers the
technician's check, link measured against the rendered reflector.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from agent.wire import MAX_PAYLOAD_BYTES
from collector.inventory import load_inventory
from collector.main import load_config
from collector.reflector import load_settings
from deploy.localstack import Process, free_port, port_open, wait_until
from tests.conftest import require_binary

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE_DIR = ROOT / "ansible"
INVENTORY = ANSIBLE_DIR / "inventory" / "example"
AGENT_ROLE = ANSIBLE_DIR / "roles" / "bridgewatch_agent"
BIN = str(Path(sys.executable).parent)
VAULT_PASSWORD = "bridgewatch-example"  # the example vault's documented password
CENTRAL_HOST = "bw-central-dong-thap"
COLLECTOR_USER = "bridgewatch-collector"
SITE, OTHER = "dt-sa-dec", "dt-cai-be"
PROVINCE = "dong-thap"
# From the example inventory's group_vars/bridgewatch_central.yml.
PUBLIC_URL = "https://bridgewatch.dong-thap.example.internal"


# ---- running Ansible ------------------------------------------------------------------


@dataclass
class Run:
    rc: int
    report: dict[str, Any]  # the ansible.posix.json callback's document
    stderr: str
    seconds: float

    def stats(self, host: str) -> dict[str, int]:
        return self.report["stats"][host]

    def results(self, host: str) -> list[tuple[str, dict[str, Any]]]:
        """(task name, this host's result) in run order."""
        return [(task["task"]["name"], task["hosts"][host])
                for play in self.report["plays"] for task in play["tasks"]
                if host in task["hosts"]]

    def describe(self) -> str:
        failed = [f"{name}: {res.get('msg')}" for play in self.report.get("plays", [])
                  for task in play["tasks"] for name, res in
                  [(task["task"]["name"], r) for r in task["hosts"].values()]
                  if res.get("failed") or res.get("unreachable")]
        return "\n".join(failed) or self.stderr[-3000:]


def ansible_env(base: Path) -> dict[str, str]:
    (base / "ansible-tmp").mkdir(exist_ok=True)
    password = base / "vault-password"
    password.write_text(VAULT_PASSWORD + "\n")
    return {
        **os.environ,
        "PATH": BIN + os.pathsep + os.environ.get("PATH", ""),
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),  # the project's own settings
        "ANSIBLE_VAULT_PASSWORD_FILE": str(password),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",  # machine-readable results
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(base / "ansible-tmp"),
        "ANSIBLE_REMOTE_TEMP": str(base / "ansible-tmp"),
    }


def run_playbook(base: Path, playbook: str, *args: str) -> Run:
    """``ansible-playbook`` on the example inventory from ansible/, with the test's vars."""
    binary = require_binary("ansible-playbook", BIN)
    started = time.monotonic()
    done = subprocess.run([binary, "-i", str(INVENTORY), "-e", f"@{base / 'vars.json'}",
                           playbook, *args], capture_output=True, text=True,
                          env=ansible_env(base), cwd=ANSIBLE_DIR, timeout=900, check=False)
    seconds = time.monotonic() - started
    start = done.stdout.find("{\n")
    try:
        report, _ = json.JSONDecoder().raw_decode(done.stdout[start:])
    except ValueError:
        pytest.fail(f"ansible-playbook {playbook} rc {done.returncode}, no JSON report:\n"
                    f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return Run(done.returncode, report, done.stderr, seconds)


def vault_secrets(base: Path) -> dict[str, Any]:
    binary = require_binary("ansible-vault", BIN)
    done = subprocess.run([binary, "view", str(INVENTORY / "group_vars" / "all" / "vault.yml")],
                          capture_output=True, text=True, env=ansible_env(base), timeout=120,
                          check=True)
    return yaml.safe_load(done.stdout)


# ---- the PKI, made with openssl as a province would -----------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def make_pki(base: Path) -> Pki:
    """A CA, and a broker certificate for localhost signed by it."""
    openssl = require_binary("openssl")

    def sh(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=base, check=True, capture_output=True, timeout=60)

    sh("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
       "-days", "2", "-subj", "/CN=BridgeWatch test CA")
    sh("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
       "-subj", "/CN=localhost")
    (base / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    sh("x509", "-req", "-in", "broker.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
       "-CAcreateserial", "-out", "broker.crt", "-days", "2", "-extfile", "san.ext")
    return Pki(base / "ca.crt", base / "broker.crt", base / "broker.key")


# ---- the central host, rolled out twice -----------------------------------------------


@dataclass
class Central:
    base: Path
    root: Path  # bridgewatch_central_prefix
    pki: Pki
    secrets: dict[str, Any]
    ports: dict[str, int]
    first: Run
    second: Run

    @property
    def etc(self) -> Path:
        return self.root / "etc" / "bridgewatch"

    @property
    def mosquitto(self) -> Path:
        return self.root / "etc" / "mosquitto"

    @property
    def prometheus(self) -> Path:
        return self.root / "etc" / "prometheus"

    @property
    def venv(self) -> Path:
        return self.root / "opt" / "bridgewatch" / "venv"

    def password(self, user: str) -> str:
        if user == COLLECTOR_USER:
            return self.secrets["vault_bridgewatch_collector_mqtt_password"]
        return self.secrets["vault_bridgewatch_mqtt_passwords"][user]


def extra_vars(base: Path, pki: Pki, ports: dict[str, int]) -> dict[str, Any]:
    """Extra vars: this machine as every host, everything under base, loopback ports."""
    agent = base / "agent"
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,  # has pip's ``packaging``
        "ansible_become": False,  # already root or not needed: no sudo here
        "bridgewatch_broker_host": "localhost",  # the name in the broker's certificate
        "bridgewatch_broker_port": ports["broker"],
        "bridgewatch_central_mosquitto_collector_port": ports["collector_mqtt"],
        "bridgewatch_reflector_host": "127.0.0.1",
        "bridgewatch_ca_cert": str(pki.ca),
        "bridgewatch_central_prefix": str(base / "root"),
        "bridgewatch_central_service_manager": "none",
        "bridgewatch_central_install_packages": False,
        "bridgewatch_central_venv_python": sys._base_executable,
        "bridgewatch_central_build_dir": str(base / "wheels"),
        "bridgewatch_central_tls_cert": str(pki.cert),
        "bridgewatch_central_tls_key": str(pki.key),
        "bridgewatch_central_listen_address": "127.0.0.1",
        "bridgewatch_central_collector_listen": f"127.0.0.1:{ports['collector']}",
        "bridgewatch_central_reflector_listen": "127.0.0.1",
        "bridgewatch_central_reflector_udp_port": ports["udp"],
        "bridgewatch_central_reflector_tcp_port": ports["tcp"],
        "bridgewatch_central_reflector_allow": ["127.0.0.0/8"],
        # The agent role, for the end to end (same loopback stack).
        "bridgewatch_agent_prefix": str(agent / "opt"),
        "bridgewatch_agent_config_dir": str(agent / "etc"),
        "bridgewatch_agent_state_dir": str(agent / "var"),
        "bridgewatch_agent_build_dir": str(base / "wheels"),
        "bridgewatch_agent_service_manager": "none",
        "bridgewatch_agent_install_packages": False,
        "bridgewatch_agent_create_user": False,
        "bridgewatch_agent_reflector_udp_port": ports["udp"],
        "bridgewatch_agent_reflector_tcp_port": ports["tcp"],
        "bridgewatch_agent_interval_seconds": 1,
        "bridgewatch_agent_readiness": {"link_seconds": 1, "bandwidth_seconds": 1},
    }


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Central:
    base = tmp_path_factory.mktemp("central")
    pki = make_pki(base)
    ports = {"broker": free_port(), "collector_mqtt": free_port(), "collector": free_port(),
             "udp": free_port(udp=True), "tcp": free_port()}
    (base / "vars.json").write_text(json.dumps(extra_vars(base, pki, ports)))
    first = run_playbook(base, "site.yml", "--limit", CENTRAL_HOST)
    assert first.rc == 0, first.describe()
    second = run_playbook(base, "site.yml", "--limit", CENTRAL_HOST)
    assert second.rc == 0, second.describe()
    print(f"\ncentral role run 1: {first.seconds:.1f} s, run 2: {second.seconds:.1f} s")
    return Central(base, base / "root", pki, vault_secrets(base), ports, first, second)


def test_second_run_changes_nothing(central: Central) -> None:
    first, second = central.first.stats(CENTRAL_HOST), central.second.stats(CENTRAL_HOST)
    assert first["failures"] == 0 and first["changed"] > 0
    changed = {name.split(" : ", 1)[-1] for name, res in central.first.results(CENTRAL_HOST)
               if res.get("changed")}
    assert {"Write the broker's password file", "Install BridgeWatch (collector, reflector) "
            "into its venv", "Write the collector's site inventory from the Ansible "
            "inventory"} <= changed
    again = [name for name, res in central.second.results(CENTRAL_HOST) if res.get("changed")]
    assert second["changed"] == 0, f"lần chạy thứ hai vẫn thay đổi / second run changed: {again}"


BAD_INVENTORIES = {
    # -e applies to every host: each case breaks all the sites at once.
    "duplicate site ids": ({"bridgewatch_site_id": SITE}, "Mã điểm cầu bị trùng"),
    "undeclared province": ({"bridgewatch_province": "ha-noi"}, f"Điểm cầu {SITE}"),
    "short MQTT password": ({"bridgewatch_mqtt_password": "short"}, "mật khẩu MQTT ≥ 16"),
    # Mosquitto would not start with two listeners on one port.
    "one port for both listeners": ({"bridgewatch_central_mosquitto_collector_port": 8883},
                                    "Cổng MQTT của bộ thu thập trùng"),
}


@pytest.mark.parametrize("case", BAD_INVENTORIES)
def test_preflight_refuses_a_bad_inventory_before_writing(tmp_path: Path, case: str) -> None:
    override, expected = BAD_INVENTORIES[case]
    fake = Pki(tmp_path / "ca.crt", tmp_path / "broker.crt", tmp_path / "broker.key")
    ports = {"broker": 8883, "collector_mqtt": 8884, "collector": 9108, "udp": 8620,
             "tcp": 8621}
    (tmp_path / "vars.json").write_text(json.dumps(extra_vars(tmp_path, fake, ports)))
    run = run_playbook(tmp_path, "site.yml", "--limit", CENTRAL_HOST, "-e", json.dumps(override))
    assert run.rc != 0
    [(name, result)] = [(n, r) for n, r in run.results(CENTRAL_HOST) if r.get("failed")]
    messages = [result.get("msg", "")] + [r.get("msg", "") for r in result.get("results", [])]
    assert any(expected in str(m) for m in messages), (name, messages)
    assert not (tmp_path / "root").exists(), "không được ghi gì / nothing may be written"


# ---- every rendered file, read by its real consumer ----------------------------------


def inventory_sites(base: Path) -> dict[str, str]:
    """inventory hostname -> bridgewatch_site_id of every host in bridgewatch_sites."""
    binary = require_binary("ansible-inventory", BIN)
    done = subprocess.run([binary, "-i", str(INVENTORY), "--list"], capture_output=True,
                          text=True, env=ansible_env(base), timeout=120, check=True)
    listing = json.loads(done.stdout)

    def hosts(group: str) -> set[str]:
        entry = listing.get(group, {})
        return set(entry.get("hosts", [])).union(*(hosts(g) for g in entry.get("children", [])))

    return {host: listing["_meta"]["hostvars"][host]["bridgewatch_site_id"]
            for host in hosts("bridgewatch_sites")}


def test_site_inventory_is_generated_from_the_ansible_inventory(central: Central) -> None:
    rendered = load_inventory(central.etc / "inventory.yaml")
    sites = inventory_sites(central.base)
    assert set(rendered.sites) == set(sites.values()), "phải đúng các điểm cầu của inventory"
    # The example inventory is the Đồng Tháp demo: same ids, names, levels, coordinates,
    # bandwidths and provinces as deploy/demo-inventory.yaml, read by the same loader.
    assert rendered == load_inventory(ROOT / "deploy" / "demo-inventory.yaml")


def test_collector_and_reflector_configs_load(central: Central) -> None:
    config = load_config(central.etc / "collector.yaml")
    assert config.inventory == central.etc / "inventory.yaml"
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", central.ports["collector"])
    broker = config.broker
    # The broker's listener for the collector: loopback, no TLS (its connections keep
    # their client ids there).
    assert (broker.host, broker.port, broker.username) == (
        "127.0.0.1", central.ports["collector_mqtt"], COLLECTOR_USER)
    assert broker.password() == central.password(COLLECTOR_USER)
    assert not broker.tls
    assert config.runbook_file == central.etc / "runbook.md"
    assert config.runbook_file.read_bytes() == (ROOT / "alerts" / "runbook.md").read_bytes()
    assert config.readiness is not None
    assert config.readiness.database.parent == central.root / "var" / "lib" / "bridgewatch"

    reflector = load_settings(central.etc / "reflector.yaml")
    assert reflector.key == central.secrets["vault_bridgewatch_reflector_key"].encode()
    assert (reflector.host, reflector.udp_port, reflector.tcp_port) == (
        "127.0.0.1", central.ports["udp"], central.ports["tcp"])
    assert [str(n) for n in reflector.allow or ()] == ["127.0.0.0/8"]

    secret_files = [central.etc / "collector-mqtt-password", central.etc / "reflector.key",
                    central.mosquitto / "bridgewatch" / "passwords",
                    central.mosquitto / "bridgewatch" / "server.key",
                    central.prometheus / "alertmanager.yml",
                    central.etc / "secrets" / "smtp-password"]
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in secret_files}
    assert set(modes.values()) == {"0o640"}, f"bí mật không được để ai cũng đọc / {modes}"


def test_prometheus_config_passes_promtool(central: Central) -> None:
    promtool = require_binary("promtool")
    config_file = central.prometheus / "prometheus.yml"
    done = subprocess.run([promtool, "check", "config", str(config_file)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    sources = sorted((ROOT / "alerts" / "rules").glob("*.yml"))
    assert f"SUCCESS: {len(sources)} rule files found" in done.stdout + done.stderr
    config = yaml.safe_load(config_file.read_text())
    rules_dir = central.prometheus / "rules" / "bridgewatch"
    assert config["rule_files"] == [str(rules_dir / s.name) for s in sources]
    for source in sources:  # the role's copies, unchanged
        assert (rules_dir / source.name).read_bytes() == source.read_bytes(), source.name
    [job] = config["scrape_configs"]
    assert job["job_name"] == "bridgewatch"  # the job the alert rules name
    assert job["static_configs"] == [{"targets": [f"127.0.0.1:{central.ports['collector']}"]}]
    assert config["alerting"]["alertmanagers"] == [
        {"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]


def test_alertmanager_config_passes_amtool(central: Central) -> None:
    amtool = require_binary("amtool")
    config_file = central.prometheus / "alertmanager.yml"
    done = subprocess.run([amtool, "check-config", str(config_file)], capture_output=True,
                          text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "1 templates" in output, output
    text = config_file.read_text()
    assert "PLACEHOLDER" not in text and "example.invalid" not in text
    rendered = yaml.safe_load(text)
    source = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text())
    # The routing is the repository's, unchanged; only addresses and secrets are filled.
    assert rendered["route"] == source["route"]
    assert rendered["inhibit_rules"] == source["inhibit_rules"]
    receivers = {r["name"]: r for r in rendered["receivers"]}
    assert list(receivers) == [r["name"] for r in source["receivers"]]
    oncall = receivers["dong-thap-oncall"]
    assert oncall["telegram_configs"][0]["bot_token"] == (
        central.secrets["vault_bridgewatch_telegram_bot_token"])
    assert oncall["telegram_configs"][0]["chat_id"] == -1001234567001
    assert oncall["webhook_configs"][0]["url"].startswith("https://noc.dong-thap.")
    assert receivers["dong-thap-technicians"]["email_configs"][0]["to"] == (
        "kythuat@dong-thap.example.internal")
    password_file = Path(rendered["global"]["smtp_auth_password_file"])
    assert password_file.read_text() == central.secrets["vault_bridgewatch_smtp_password"]
    # The templates, with the collector's public address for the runbook links.
    tmpl = (central.prometheus / "templates" / "bridgewatch.tmpl").read_text()
    define = '{{ define "bridgewatch.base_url" }}'
    assert f"{define}{PUBLIC_URL}{{{{ end }}}}" in tmpl
    original = (ROOT / "alerts" / "templates" / "bridgewatch.tmpl").read_text()
    assert tmpl.replace(PUBLIC_URL, "http://127.0.0.1:9108") == original


def test_grafana_provisioning_points_at_the_copied_dashboards(central: Central) -> None:
    provisioning = central.root / "etc" / "grafana" / "provisioning"
    dashboards = central.root / "var" / "lib" / "grafana" / "dashboards" / "bridgewatch"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "bridgewatch.yml").read_text())[
        "providers"]
    assert provider["options"]["path"] == str(dashboards) and provider["type"] == "file"
    [source] = yaml.safe_load((provisioning / "datasources" / "bridgewatch.yml").read_text())[
        "datasources"]
    assert (source["uid"], source["url"]) == ("bridgewatch-prometheus", "http://127.0.0.1:9090")
    assert source["jsonData"]["timeInterval"] == "15s"  # the scrape interval
    originals = sorted((ROOT / "dashboards" / "json").glob("*.json"))
    assert sorted(p.name for p in dashboards.iterdir()) == [p.name for p in originals]
    for original in originals:
        assert (dashboards / original.name).read_bytes() == original.read_bytes()


def acl_rules(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_password_file_holds_each_sites_password_and_acl_is_the_shipped_one(
        central: Central) -> None:
    lines = (central.mosquitto / "bridgewatch" / "passwords").read_text().splitlines()
    users = [line.split(":", 1)[0] for line in lines]
    assert users[0] == COLLECTOR_USER
    assert sorted(users[1:]) == sorted(inventory_sites(central.base).values())
    for line in lines:
        user, hashed = line.split(":", 1)
        _, kind, rounds, salt, digest = hashed.split("$")
        assert (kind, rounds, len(base64.b64decode(salt))) == ("7", "101", 12)
        # PBKDF2-HMAC-SHA512 of this user's vault password: what Mosquitto checks.
        expected = hashlib.pbkdf2_hmac("sha512", central.password(user).encode(),
                                       base64.b64decode(salt), 101, 64)
        assert base64.b64decode(digest) == expected, f"sai mật khẩu / wrong hash for {user}"
    rendered = (central.mosquitto / "bridgewatch" / "acl").read_text()
    shipped = (ROOT / "deploy" / "mosquitto" / "acl").read_text()
    assert acl_rules(rendered) == acl_rules(shipped)


def test_systemd_units_pass_systemd_analyze_verify(central: Central) -> None:
    """The units (rendered by the role only under systemd) rendered from the role's
    templates with its defaults, into the test's folder, and checked offline."""
    analyze = require_binary("systemd-analyze")
    role = ANSIBLE_DIR / "roles" / "bridgewatch_central"
    units = central.base / "units"
    playbook = central.base / "units.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Render the central role's units", "hosts": CENTRAL_HOST, "gather_facts": False,
        "vars_files": [str(role / "defaults" / "main.yml"), str(role / "vars" / "main.yml")],
        "vars": {"role_path": str(role)},
        "tasks": [{"name": "Render", "ansible.builtin.template": {
            "src": str(role / "templates" / "{{ item }}.j2"), "dest": f"{units}/{{{{ item }}}}",
            "mode": "0644"}, "loop": ["bridgewatch-collector.service",
                                      "bridgewatch-reflector.service"]}]}]))
    units.mkdir()
    run = run_playbook(central.base, str(playbook), "--limit", CENTRAL_HOST)
    assert run.rc == 0, run.describe()
    for unit in sorted(units.iterdir()):
        done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                              timeout=60, check=False)
        ours = [line for line in (done.stdout + done.stderr).splitlines() if unit.name in line]
        assert done.returncode == 0 and not ours, done.stdout + done.stderr
        text = unit.read_text()
        program = unit.stem  # bridgewatch-collector / bridgewatch-reflector
        assert f"ExecStart={central.venv}/bin/{program} --config {central.etc}/" in text
        for hardening in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                          "PrivateTmp=yes", "CapabilityBoundingSet=\n", "User=bridgewatch"):
            assert hardening in text, f"{unit.name}: {hardening!r}"


# ---- a real Mosquitto on the rendered configuration -----------------------------------


@pytest.fixture(scope="module")
def broker(central: Central) -> Iterator[Process]:
    """Mosquitto with Debian's main file: persistence and logging, then include_dir conf.d."""
    workdir = central.base / "mosquitto-run"
    workdir.mkdir()
    # As root Mosquitto drops to its own user, which cannot read the test's 0700 folders.
    user = "user root\n" if os.geteuid() == 0 else ""
    (workdir / "mosquitto.conf").write_text(
        f"{user}persistence false\nlog_dest stdout\nlog_type error\nlog_type warning\n"
        f"log_type notice\nlog_type information\n"
        f"include_dir {central.mosquitto / 'conf.d'}\n")
    process = Process([require_binary("mosquitto"), "-c", str(workdir / "mosquitto.conf")],
                      workdir / "mosquitto.log")
    process.start()
    for port in (central.ports["broker"], central.ports["collector_mqtt"]):
        wait_until(lambda p=port: port_open(p) or not process.running, 10,
                   "mosquitto to listen")
    assert process.running, process.log()
    yield process
    process.stop()


@dataclass
class Event:
    kind: str  # connect, message, puback, disconnect
    topic: str = ""
    payload: bytes = b""
    code: int = 0
    mid: int = 0


@dataclass
class Mqtt:
    """A paho MQTT v5 client whose events arrive in order in a queue: a site over TLS on
    the sites' listener, the collector on its own (127.0.0.1, plaintext), as rendered."""

    central: Central
    user: str | None
    password: str | None
    client_id: str
    events: queue.Queue[Event] = field(default_factory=queue.Queue)
    seen: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5)
        if self.user is not None:
            client.username_pw_set(self.user, self.password)
        if not self.local:
            client.tls_set(ca_certs=str(self.central.pki.ca), cert_reqs=ssl.CERT_REQUIRED,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        put = self.events.put
        client.on_connect = lambda c, u, f, rc, p: put(Event("connect", code=rc.value))
        client.on_message = lambda c, u, m: put(Event("message", m.topic, m.payload))
        client.on_publish = lambda c, u, mid, rc, p: put(Event("puback", code=rc.value, mid=mid))
        client.on_subscribe = lambda c, u, mid, rcs, p: put(Event("suback", mid=mid))
        client.on_disconnect = lambda c, u, f, rc, p: put(Event("disconnect", code=rc.value))
        self.client = client

    @property
    def local(self) -> bool:
        return self.user == COLLECTOR_USER

    def start(self) -> int:
        """Connect; the CONNACK's reason code (0 accepted)."""
        if self.local:
            self.client.connect("127.0.0.1", self.central.ports["collector_mqtt"])
        else:
            self.client.connect("localhost", self.central.ports["broker"])
        self.client.loop_start()
        return self.wait(lambda e: e.kind == "connect", "CONNACK").code

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait(self, match: Callable[[Event], bool], what: str, timeout: float = 15) -> Event:
        """The next event that matches, in arrival order (others are kept in ``seen``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"{self.client_id}: không thấy / never saw {what}; saw {self.seen}")
            self.seen.append(event)
            if match(event):
                return event

    def subscribe(self, *topics: str) -> None:
        _, mid = self.client.subscribe([(t, 1) for t in topics])
        self.wait(lambda e: e.kind == "suback" and e.mid == mid, "SUBACK")

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1; the PUBACK's reason code (0 or 16 delivered, 135 refused)."""
        mid = self.client.publish(topic, payload, qos=1).mid
        return self.wait(lambda e: e.kind == "puback" and e.mid == mid, f"PUBACK {mid}").code

    def messages(self) -> list[tuple[str, bytes]]:
        return [(e.topic, e.payload) for e in self.seen if e.kind == "message"]


def topic(site: str, kind: str) -> str:
    return f"bridgewatch/v1/{PROVINCE}/{site}/{kind}"


NOT_AUTHORIZED = 135  # MQTT 5 reason code


def listening_addresses(port: int) -> set[str]:
    """The addresses a TCP port is listened on, as the kernel says (/proc/net/tcp, tcp6)."""
    found = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in (Path("/proc/net") / name).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
                found.add(socket.inet_ntop(family, b"".join(
                    raw[i:i + 4][::-1] for i in range(0, len(raw), 4))))
    return found


@pytest.fixture
def mqtt_clients(central: Central, broker: Process) -> Iterator[Callable[..., Mqtt]]:
    made: list[Mqtt] = []

    def make(user: str | None, password: str | None = None, name: str = "",
             client_id: str = "") -> Mqtt:
        password = password if password is not None or user is None else central.password(user)
        client = Mqtt(central, user, password,
                      client_id or f"test-{name or user}-{len(made)}")
        made.append(client)
        return client

    yield make
    for client in made:
        client.stop()


def test_broker_refuses_anonymous_and_wrong_passwords(
        central: Central, mqtt_clients: Callable[..., Mqtt]) -> None:
    assert mqtt_clients(SITE).start() == 0, "mật khẩu đúng phải vào được / right password"
    assert mqtt_clients(None, name="anonymous").start() == NOT_AUTHORIZED
    assert mqtt_clients(SITE, "not-the-password-of-the-site", name="wrong").start() in (
        134, NOT_AUTHORIZED)  # bad user name or password / not authorized
    # Another site's password does not open this site's account.
    assert mqtt_clients(SITE, central.password(OTHER), name="swapped").start() in (
        134, NOT_AUTHORIZED)


def test_site_publishes_only_as_itself(mqtt_clients: Callable[..., Mqtt]) -> None:
    collector = mqtt_clients(COLLECTOR_USER)
    assert collector.start() == 0
    collector.subscribe(*(f"bridgewatch/v1/+/+/{kind}" for kind in ("telemetry", "state",
                                                                    "test")))
    site = mqtt_clients(SITE)
    assert site.start() == 0
    assert site.publish(topic(SITE, "telemetry"), b"own-1") == 0
    collector.wait(lambda e: e.payload == b"own-1", "the site's own telemetry")
    # Under another site's name: refused by the broker (PUBACK "not authorized").
    assert site.publish(topic(OTHER, "telemetry"), b"spoofed") == NOT_AUTHORIZED
    assert site.publish(topic(OTHER, "state"), b"spoofed") == NOT_AUTHORIZED
    # The broker delivers one publisher's messages in order: once the next own message
    # arrives, anything delivered before it has been seen.
    assert site.publish(topic(SITE, "state"), b"own-2") == 0
    collector.wait(lambda e: e.payload == b"own-2", "the site's next message")
    assert [m for m in collector.messages() if m[1] == b"spoofed"] == []
    # The collector's own account cannot pose as a bridge either.
    assert collector.publish(topic(OTHER, "telemetry"), b"from-collector") == NOT_AUTHORIZED


def test_site_reads_only_its_own_commands(mqtt_clients: Callable[..., Mqtt]) -> None:
    site = mqtt_clients(SITE)
    assert site.start() == 0
    site.subscribe(topic(OTHER, "cmd"), topic(SITE, "cmd"))
    collector = mqtt_clients(COLLECTOR_USER)
    assert collector.start() == 0
    assert collector.publish(topic(OTHER, "cmd"), b"for-the-other-site") in (0, 16)
    assert collector.publish(topic(SITE, "cmd"), b"for-this-site") == 0
    site.wait(lambda e: e.payload == b"for-this-site", "its own command")
    assert [m for m in site.messages() if m[1] == b"for-the-other-site"] == [], (
        "điểm cầu đọc được lệnh của điểm cầu khác / a site read another site's command")


def test_broker_takes_the_wires_largest_payload_and_nothing_much_larger(
        central: Central, mqtt_clients: Callable[..., Mqtt]) -> None:
    collector = mqtt_clients(COLLECTOR_USER)
    assert collector.start() == 0
    collector.subscribe(topic(SITE, "telemetry"))
    site = mqtt_clients(SITE)
    assert site.start() == 0
    largest = b"x" * MAX_PAYLOAD_BYTES
    assert site.publish(topic(SITE, "telemetry"), largest) == 0
    collector.wait(lambda e: e.payload == largest, "a 64 KiB payload")
    # Over message_size_limit: Mosquitto drops the publisher's connection. Another site's:
    # a second connection of dt-sa-dec would replace the first (client id = user name).
    oversized = mqtt_clients(OTHER, name="oversized")
    assert oversized.start() == 0
    limit = int(next(line.split()[1] for line in
                     (central.mosquitto / "conf.d" / "bridgewatch.conf").read_text().splitlines()
                     if line.startswith("message_size_limit")))
    assert MAX_PAYLOAD_BYTES < limit < 2 * MAX_PAYLOAD_BYTES
    oversized.client.publish(topic(OTHER, "telemetry"), b"y" * (limit + 1), qos=1)
    oversized.wait(lambda e: e.kind == "disconnect", "the broker to drop the oversized publish")
    oversized.client.loop_stop()
    assert site.publish(topic(SITE, "telemetry"), b"after") == 0
    collector.wait(lambda e: e.payload == b"after", "the next message")
    assert all(len(p) <= limit for _, p in collector.messages())


def test_rendered_broker_gives_a_site_its_own_client_id(
        central: Central, mqtt_clients: Callable[..., Mqtt]) -> None:
    """Tried: dt-sa-dec connecting with dt-cai-be's client id (an agent's client id is its
    site id) while dt-cai-be is connected. dt-cai-be is not disconnected and still gets
    its commands, and none reaches dt-sa-dec. Then the collector's listener: bound to
    127.0.0.1 only, and two collector connections there both stay up."""
    owner = mqtt_clients(OTHER, client_id=OTHER)
    assert owner.start() == 0
    owner.subscribe(topic(OTHER, "cmd"))
    thief = mqtt_clients(SITE, client_id=OTHER)
    assert thief.start() == 0
    thief.subscribe(topic(OTHER, "cmd"), topic(SITE, "cmd"))
    intake = mqtt_clients(COLLECTOR_USER, client_id="bridgewatch-collector")
    assert intake.start() == 0
    sender = mqtt_clients(COLLECTOR_USER, client_id="bridgewatch-collector-cmd")
    assert sender.start() == 0
    assert sender.publish(topic(OTHER, "cmd"), b"for-the-owner") == 0
    owner.wait(lambda e: e.payload == b"for-the-owner", "its command, still connected")
    assert sender.publish(topic(SITE, "cmd"), b"fence") == 0
    thief.wait(lambda e: e.payload == b"fence", "its own command")
    assert b"for-the-owner" not in [p for _, p in thief.messages()]
    for client in (owner, intake):
        assert not [e for e in client.seen if e.kind == "disconnect"], client.client_id
    assert listening_addresses(central.ports["collector_mqtt"]) == {"127.0.0.1"}


# ---- end to end: the agent role's agent, this role's broker and collector ------------


def metrics(port: int) -> dict[tuple[str, str], float]:
    """(sample name, site) -> value from the collector's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, s.labels.get("site", "")): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@dataclass
class Rollout:
    central: Central
    agent_dir: Path
    collector: Process
    run: Run

    def received(self, site: str) -> float:
        return metrics(self.central.ports["collector"]).get(
            ("bridge_messages_received_total", site), 0.0)


@pytest.fixture(scope="module")
def rollout(central: Central, broker: Process) -> Iterator[Rollout]:
    """dt-sa-dec rolled out with agents.yml; the rendered collector and reflector running."""
    if not (AGENT_ROLE / "tasks" / "main.yml").exists():
        pytest.fail("ansible/roles/bridgewatch_agent chưa có / the agent role is missing")
    run = run_playbook(central.base, "agents.yml", "--limit", SITE)
    assert run.rc == 0, run.describe()
    print(f"\nagent role run (agents.yml -l {SITE}): {run.seconds:.1f} s")
    logs = central.base / "logs"
    logs.mkdir()
    collector = Process([str(central.venv / "bin" / "bridgewatch-collector"), "--config",
                         str(central.etc / "collector.yaml")], logs / "collector.log")
    reflector = Process([str(central.venv / "bin" / "bridgewatch-reflector"), "--config",
                         str(central.etc / "reflector.yaml")], logs / "reflector.log")
    collector.start()
    reflector.start()
    try:
        wait_until(lambda: port_open(central.ports["collector"]) or not collector.running, 30,
                   "the collector's /metrics")
        assert collector.running, collector.log()
        wait_until(lambda: port_open(central.ports["tcp"]) or not reflector.running, 30,
                   "the reflector")
        assert reflector.running, reflector.log()
        yield Rollout(central, central.base / "agent", collector, run)
    finally:
        collector.stop()
        reflector.stop()


def start_agent(rollout: Rollout, config: Path, name: str) -> Process:
    agent = Process([str(rollout.agent_dir / "opt" / "venv" / "bin" / "bridgewatch-agent"),
                     "run", "--config", str(config)], rollout.central.base / "logs" / name)
    agent.start()
    return agent


def test_rendered_agent_publishes_to_the_rendered_collector(rollout: Rollout) -> None:
    config = rollout.agent_dir / "etc" / "agent.yaml"
    agent = start_agent(rollout, config, "agent.log")
    port = rollout.central.ports["collector"]

    def arrived() -> bool:
        seen = metrics(port)  # one exposition: both values of the same moment
        return (seen.get(("bridge_messages_received_total", SITE), 0) >= 3
                and seen.get(("bridge_up", SITE)) == 1)

    try:
        wait_until(lambda: arrived() or not agent.running, 60,
                   "dt-sa-dec up at the collector with its telemetry")
        assert agent.running, f"tác tử đã dừng / the agent exited:\n{agent.log()}"
    finally:
        agent.stop()
    assert rollout.collector.running, rollout.collector.log()


def test_rendered_credentials_cannot_publish_as_another_site(rollout: Rollout) -> None:
    """dt-cai-be's name with dt-sa-dec's password file: a copied or stolen configuration.

    One after the other: both log in as dt-sa-dec, and on the sites' listener a user has
    one client id, so together each would keep taking the other's connection.
    """
    raw = yaml.safe_load((rollout.agent_dir / "etc" / "agent.yaml").read_text())
    raw["site"] = OTHER
    raw["spool"]["path"] = str(rollout.central.base / "impostor-spool.sqlite")
    impostor_config = rollout.central.base / "impostor.yaml"
    impostor_config.write_text(yaml.safe_dump(raw))
    impostor = start_agent(rollout, impostor_config, "impostor.log")
    honest: Process | None = None
    try:
        wait_until(lambda: "Not authorized" in impostor.log() or not impostor.running, 60,
                   "the broker to refuse the impostor")
        assert "Not authorized" in impostor.log(), impostor.log()
        impostor.stop()
        honest = start_agent(rollout, rollout.agent_dir / "etc" / "agent.yaml", "honest.log")
        before = rollout.received(SITE)
        # The honest agent's next messages, sent after the refusal: the intake is live.
        wait_until(lambda: rollout.received(SITE) >= before + 2, 60, "the honest agent")
        assert rollout.received(OTHER) == 0, "không nhận gì của kẻ mạo danh / impostor got in"
        assert metrics(rollout.central.ports["collector"]).get(("bridge_up", OTHER), 0) == 0
    finally:
        impostor.stop()
        if honest is not None:
            honest.stop()


def test_check_playbook_gathers_the_technicians_check(rollout: Rollout) -> None:
    results = rollout.central.base / "check-results.json"
    run = run_playbook(rollout.central.base, "check.yml", "--limit", SITE,
                       "-e", f"bridgewatch_check_results={results}")
    assert run.rc == 0, run.describe()  # a bridge that is not ready is a result
    assert run.stats(SITE)["changed"] == 0 and run.stats(SITE)["failures"] == 0
    gathered = json.loads(results.read_text())["sites"]
    assert list(gathered) == [SITE]
    entry = gathered[SITE]
    assert (entry["status"], entry["rc"]) in (("ready", 0), ("not_ready", 1)), entry
    check = entry["check"]
    assert (check["site"], check["province"], check["recorded"]) == (SITE, PROVINCE, None)
    criteria = {c["name"]: c["ok"] for c in check["criteria"]}
    # The link test ran against the rendered reflector with the vault's shared key.
    assert criteria["link-loss"] is True and criteria["link-rtt"] is True, criteria
    assert entry["status"] == ("ready" if all(criteria.values()) else "not_ready")
    [summary] = [res["msg"] for name, res in run.results(SITE) if name == "Summary / Tóm tắt"]
    assert "điểm cầu sẵn sàng" in summary and "bridges ready" in summary
    assert f"{SITE}: " in summary and str(results) in summary
