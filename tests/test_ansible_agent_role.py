"""The bridgewatch_agent Ansible role, run for real against this machine.

One bridge PC of the Đồng Tháp inventory is this host (``ansible_connection: local``),
with everything in a temporary prefix and ``bridgewatch_agent_service_manager: none`` so
no systemd is needed: the role builds a wheel of this checkout, installs it into a fresh
venv (pip fetches the dependencies, once per module), renders agent.yaml, the secrets and
the systemd unit (into ``<prefix>/systemd/`` with service manager none), and is run twice:
the second run must change nothing. The rendered files are then read back with the
agent's own parser and run with the installed agent; the preflight and the tags are
checked with the JSON callback's task list.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.broker import BrokerSettings
from agent.config import DeviceExpectation, parse_config
from tests.conftest import require_binary

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE_DIR = ROOT / "ansible"
ROLE = ANSIBLE_DIR / "roles" / "bridgewatch_agent"
HOST = "dt-sa-dec"
# Throwaway secrets of this test only (no vault: nothing here is ever deployed).
PASSWORD = "test-only-mqtt-password"
REFLECTOR_KEY = "test-only-reflector-key"
# 7.5 is neither level's default (5 member, 30 central): it can only come from the inventory.
BANDWIDTH = 7.5
DEVICES = {"camera": 1, "microphone": 1, "speaker": 1, "display": ["HDMI", "HDMI"]}
UPS = [{"name": "ups-1", "nut": {"host": "127.0.0.1", "ups": "santak"}}]
PLAYBOOK = """\
- name: BridgeWatch agents
  hosts: bridgewatch_sites
  roles:
    - role: bridgewatch_agent
"""


@dataclass
class PlaybookRun:
    rc: int
    report: dict[str, Any]  # the ansible.posix.json callback's document
    stderr: str
    seconds: float

    @property
    def stats(self) -> dict[str, int]:
        return self.report["stats"][HOST]

    def tasks(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(task name, role file it came from or '', this host's result) in run order."""
        out = []
        for play in self.report["plays"]:
            for task in play["tasks"]:
                path = task["task"].get("path") or ""
                where = Path(path.rsplit(":", 1)[0])
                source = where.name if ROLE in where.parents else ""
                out.append((task["task"]["name"], source, task["hosts"].get(HOST, {})))
        return out

    def failure(self) -> tuple[str, dict[str, Any]]:
        """The role file and result of the task that failed."""
        failed = [(src, res) for _, src, res in self.tasks() if res.get("failed")]
        assert failed, f"no task failed (rc {self.rc}): {self.stderr[-2000:]}"
        return failed[0]


@dataclass
class Site:
    """A bridge PC rolled out into tmp: its paths and the playbook runs."""

    base: Path
    inventory: Path
    playbook: Path
    first: PlaybookRun
    second: PlaybookRun

    @property
    def prefix(self) -> Path:
        return self.base / "opt"

    @property
    def config_dir(self) -> Path:
        return self.base / "etc"

    @property
    def state_dir(self) -> Path:
        return self.base / "var"

    @property
    def unit(self) -> Path:
        # service manager none: the role's default unit dir is <prefix>/systemd
        return self.prefix / "systemd" / "bridgewatch-agent.service"


def make_ca(path: Path) -> None:
    """A self-signed CA certificate, as the province's broker CA would be."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "BridgeWatch test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def site_vars(base: Path) -> dict[str, Any]:
    """Host vars of the bridge PC: the spec's site vars plus the role's test-only settings."""
    return {
        "ansible_connection": "local",
        # The pip module needs ``packaging`` in the interpreter that runs modules; a bridge
        # PC gets python3-packaging from apt, which this run does not do.
        "ansible_python_interpreter": sys.executable,
        "bridgewatch_site_id": HOST,
        "bridgewatch_site_name": "Điểm cầu phường Sa Đéc",
        "bridgewatch_province": "dong-thap",
        "bridgewatch_level": "member",
        "bridgewatch_latitude": 10.2946,
        "bridgewatch_longitude": 105.7599,
        "bridgewatch_required_bandwidth_mbps": BANDWIDTH,
        "bridgewatch_devices": DEVICES,
        "bridgewatch_ups": UPS,
        "bridgewatch_mqtt_password": PASSWORD,
        "bridgewatch_agent_prefix": str(base / "opt"),
        "bridgewatch_agent_config_dir": str(base / "etc"),
        "bridgewatch_agent_state_dir": str(base / "var"),
        "bridgewatch_agent_build_dir": str(base / "wheels"),
        "bridgewatch_agent_service_manager": "none",
        "bridgewatch_agent_install_packages": False,
        "bridgewatch_agent_package": str(ROOT),
    }


def write_inventory(base: Path, host_vars: dict[str, Any]) -> Path:
    """The spec's groups (sites, level, province, canary) with one host, and group vars."""
    ca = base / "ca.crt"
    make_ca(ca)
    inventory = {"all": {
        "vars": {
            "bridgewatch_provinces": {"dong-thap": "Đồng Tháp"},
            # Loopback addresses: nothing in this test resolves names or reaches out.
            "bridgewatch_broker_host": "127.0.0.1",
            "bridgewatch_broker_port": 8883,
            "bridgewatch_reflector_host": "127.0.0.1",
            "bridgewatch_reflector_key": REFLECTOR_KEY,
            "bridgewatch_ca_cert": str(ca),
        },
        "children": {
            "bridgewatch_central": {"hosts": {}},
            "bridgewatch_sites": {
                "hosts": {HOST: host_vars},
                "children": {
                    "bridgewatch_level_member": {"hosts": {HOST: None}},
                    "bridgewatch_province_dong_thap": {"hosts": {HOST: None}},
                    "bridgewatch_canary": {"hosts": {HOST: None}},
                },
            },
        },
    }}
    path = base / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory, allow_unicode=True, sort_keys=False))
    return path


def run_playbook(base: Path, inventory: Path, *args: str) -> PlaybookRun:
    playbook_bin = require_binary("ansible-playbook", str(Path(sys.executable).parent))
    playbook = base / "agents.yml"
    if not playbook.exists():
        playbook.write_text(PLAYBOOK)
    (base / "ansible-tmp").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),  # the project's own settings
        "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",  # machine-readable results
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(base / "ansible-tmp"),
        "ANSIBLE_REMOTE_TEMP": str(base / "ansible-tmp"),
    }
    started = time.monotonic()
    done = subprocess.run([playbook_bin, "-i", str(inventory), str(playbook), *args],
                          capture_output=True, text=True, env=env, cwd=ANSIBLE_DIR,
                          timeout=900, check=False)
    seconds = time.monotonic() - started
    # The JSON document starts at a line of its own "{"; a callback that ansible.cfg enables
    # may print around it.
    start = done.stdout.find("{\n")
    try:
        report, _ = json.JSONDecoder().raw_decode(done.stdout[start:])
    except (json.JSONDecodeError, ValueError):
        pytest.fail(f"ansible-playbook rc {done.returncode}, no JSON report:\n"
                    f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return PlaybookRun(done.returncode, report, done.stderr, seconds)


def describe_failures(run: PlaybookRun) -> str:
    return "\n".join(f"{name} ({src}): {res.get('msg')}" for name, src, res in run.tasks()
                     if res.get("failed")) or run.stderr[-3000:]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One rollout, run twice: the pip install into the venv happens once per module."""
    base = tmp_path_factory.mktemp("bridge-pc")
    inventory = write_inventory(base, site_vars(base))
    first = run_playbook(base, inventory)
    assert first.rc == 0, describe_failures(first)
    second = run_playbook(base, inventory)
    assert second.rc == 0, describe_failures(second)
    print(f"\nrole run 1: {first.seconds:.1f} s, run 2: {second.seconds:.1f} s")
    yield Site(base, inventory, base / "agents.yml", first, second)


def unit_directives(path: Path) -> dict[str, str]:
    """``Section.Key`` -> value of a unit file (this unit sets each key once)."""
    out: dict[str, str] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        assert f"{section}.{key}" not in out, f"{key} set twice in [{section}]"
        out[f"{section}.{key}"] = value
    return out


def test_first_run_installs_and_the_second_changes_nothing(site: Site) -> None:
    assert site.first.stats["failures"] == 0
    assert site.first.stats["changed"] > 0
    changed_first = {name for name, _, res in site.first.tasks() if res.get("changed")}
    assert any("Install the agent into its venv" in name for name in changed_first)
    assert any("Render agent.yaml" in name for name in changed_first)
    assert site.second.stats["failures"] == 0
    assert site.second.stats["changed"] == 0, [
        name for name, _, res in site.second.tasks() if res.get("changed")]


def test_rendered_config_is_the_inventory_site(site: Site) -> None:
    path = site.config_dir / "agent.yaml"
    config = parse_config(yaml.safe_load(path.read_text()), base_dir=site.config_dir)
    assert (config.site, config.province) == (HOST, "dong-thap")
    assert config.link is not None and config.link.required_bandwidth_mbps == BANDWIDTH
    assert config.link.reflector is not None
    assert config.link.reflector.host == "127.0.0.1"
    assert config.link.reflector.key_file == site.config_dir / "reflector.key"
    assert config.devices == (DeviceExpectation("camera", 1), DeviceExpectation("microphone", 1),
                              DeviceExpectation("speaker", 1),
                              DeviceExpectation("display", 2, ("HDMI", "HDMI")))
    assert [(u.name, u.nut.host if u.nut else None, u.nut.ups if u.nut else None)
            for u in config.ups] == [("ups-1", "127.0.0.1", "santak")]
    assert config.spool.path == site.state_dir / "spool.sqlite"
    assert site.state_dir.is_dir()
    # The broker: the site's own username, the password from a file, TLS with the CA.
    broker: BrokerSettings = config.broker
    assert (broker.host, broker.port, broker.username) == ("127.0.0.1", 8883, HOST)
    assert broker.password_file == str(site.config_dir / "mqtt-password")
    assert broker.password() == PASSWORD
    assert broker.tls and broker.ca_file == str(site.config_dir / "ca.crt")
    assert (site.config_dir / "ca.crt").read_bytes() == (site.base / "ca.crt").read_bytes()
    assert (site.config_dir / "reflector.key").read_text().strip() == REFLECTOR_KEY
    modes = {name: stat.S_IMODE((site.config_dir / name).stat().st_mode)
             for name in ("mqtt-password", "reflector.key", "agent.yaml")}
    assert modes == {"mqtt-password": 0o600, "reflector.key": 0o600, "agent.yaml": 0o640}
    assert PASSWORD not in path.read_text()  # the secret lives only in its 0600 file


def test_installed_agent_runs_with_the_rendered_config(site: Site) -> None:
    venv = site.prefix / "venv"
    helped = subprocess.run([str(venv / "bin" / "bridgewatch-agent"), "--help"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert helped.returncode == 0, helped.stderr
    assert "run" in helped.stdout and "check" in helped.stdout
    # The agent came from the venv the role made, not from this checkout (-I: the current
    # directory is not on sys.path).
    where = subprocess.run([str(venv / "bin" / "python"), "-I", "-c",
                            "import agent; print(agent.__file__)"],
                           capture_output=True, text=True, timeout=60, check=True)
    assert Path(where.stdout.strip()).is_relative_to(venv)
    # One real message from the installed agent with the rendered config (no broker needed).
    # This room has no camera or UPS, so probes may fail: exit 1 then, and the message
    # still comes out.
    sample = subprocess.run([str(venv / "bin" / "bridgewatch-agent"), "sample", "--config",
                             str(site.config_dir / "agent.yaml")],
                            capture_output=True, text=True, timeout=120, check=False,
                            cwd=site.base)
    assert sample.stdout.strip(), sample.stderr[-2000:]
    message = json.loads(sample.stdout.strip().splitlines()[-1])
    assert (message["site"], message["province"]) == (HOST, "dong-thap")
    probes = message["probes"]
    assert sample.returncode == (0 if all(p["ok"] for p in probes.values()) else 1)
    # The inventory's devices and UPS reached the probes.
    expected = {kind: count for kind, count in probes["devices"]["metrics"]["device_expected"]}
    assert expected == {"camera": 1.0, "microphone": 1.0, "speaker": 1.0, "display": 2.0}
    assert "ups" in probes and "link" in probes


HARDENING = {
    "Service.NoNewPrivileges": "yes",
    "Service.ProtectSystem": "strict",
    "Service.ProtectHome": "yes",
    "Service.PrivateTmp": "yes",
    "Service.ProtectKernelTunables": "yes",
    "Service.ProtectKernelModules": "yes",
    "Service.RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "Service.Restart": "on-failure",
    "Service.User": "bridgewatch",
    "Service.Group": "bridgewatch",
}


@pytest.fixture(scope="module")
def icmp_unit(site: Site) -> Path:
    """The unit rendered again, run tag only, with ICMP on and a backup disk configured."""
    unit_dir = site.base / "unit-icmp"
    extra = {"bridgewatch_agent_icmp": True, "bridgewatch_agent_unit_dir": str(unit_dir),
             "bridgewatch_agent_storage": {"backup_device": "/dev/disk/by-label/BW-BACKUP"}}
    run = run_playbook(site.base, site.inventory, "--tags", "bridgewatch_agent_run",
                       "--extra-vars", json.dumps(extra))
    assert run.rc == 0, describe_failures(run)
    assert {src for _, src, _ in run.tasks()} <= {"", "main.yml", "preflight.yml", "run.yml"}
    return unit_dir / "bridgewatch-agent.service"


def test_unit_is_hardened_and_grants_cap_net_raw_only_for_icmp(site: Site,
                                                               icmp_unit: Path) -> None:
    plain = unit_directives(site.unit)
    icmp = unit_directives(icmp_unit)
    for unit in (plain, icmp):
        assert HARDENING.items() <= unit.items()
        assert unit["Service.ReadWritePaths"] == str(site.state_dir)
        assert unit["Service.ExecStart"] == (
            f"{site.prefix}/venv/bin/bridgewatch-agent run --config "
            f"{site.config_dir}/agent.yaml --log-level INFO")
    assert plain["Service.CapabilityBoundingSet"] == ""
    assert plain["Service.AmbientCapabilities"] == ""
    assert "CAP_NET_RAW" not in site.unit.read_text()
    assert icmp["Service.CapabilityBoundingSet"] == "CAP_NET_RAW"
    assert icmp["Service.AmbientCapabilities"] == "CAP_NET_RAW"
    # The devices probe never opens /dev, but a backup disk's by-label link must resolve.
    assert (plain["Service.PrivateDevices"], icmp["Service.PrivateDevices"]) == ("yes", "no")
    differing = {key for key in plain.keys() | icmp.keys() if plain.get(key) != icmp.get(key)}
    assert differing == {"Service.CapabilityBoundingSet", "Service.AmbientCapabilities",
                         "Service.PrivateDevices"}


def test_units_pass_systemd_analyze_verify(site: Site, icmp_unit: Path) -> None:
    # systemd-analyze verifies a unit file offline (no systemd as PID 1 needed): unknown
    # keys, bad values and a missing ExecStart binary. Under CI it is required.
    analyze = require_binary("systemd-analyze")
    for unit in (site.unit, icmp_unit):
        done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                              timeout=60, check=False)
        ours = [line for line in (done.stdout + done.stderr).splitlines()
                if "bridgewatch-agent" in line]
        assert done.returncode == 0 and not ours, done.stdout + done.stderr


def configure_task_names() -> set[str]:
    tasks = yaml.safe_load((ROLE / "tasks" / "configure.yml").read_text())
    return {task["name"] for task in tasks}


def test_configure_tag_runs_only_preflight_and_configure(site: Site) -> None:
    run = run_playbook(site.base, site.inventory, "--tags", "bridgewatch_agent_configure")
    assert run.rc == 0, describe_failures(run)
    ran = run.tasks()
    sources = {src for _, src, _ in ran}
    # main.yml contributes only its include statements (Windows' is skipped here).
    assert sources == {"", "main.yml", "preflight.yml", "configure.yml"}
    assert {name.split(" : ", 1)[-1] for name, src, _ in ran if src == "main.yml"} == {
        "Preflight", "Configure", "Windows"}
    configured = {name.split(" : ", 1)[-1] for name, src, res in ran
                  if src == "configure.yml" and not res.get("skipped")}
    assert configured == configure_task_names()
    assert run.stats["changed"] == 0  # already configured by the fixture's runs


BAD_SITES = {
    "bad site id": ({"bridgewatch_site_id": "Sa Dec"}, None,
                    ["Mã điểm cầu", "'Sa Dec'", "is not a slug"]),
    "missing password": ({}, "bridgewatch_mqtt_password",
                         ["Thiếu mật khẩu MQTT", HOST, "password", "missing"]),
    # The inventory's own form, with a vault that has no password for this site.
    "password not in the vault": (
        {"vault_passwords": {"dt-hong-ngu": "another-site"},
         "bridgewatch_mqtt_password": "{{ vault_passwords[bridgewatch_site_id] }}"},
        None, ["Thiếu mật khẩu MQTT", HOST, "password", "missing"]),
}


@pytest.mark.parametrize("case", BAD_SITES)
def test_preflight_refuses_a_bad_site(tmp_path: Path, case: str) -> None:
    override, drop, expected = BAD_SITES[case]
    host_vars = {**copy.deepcopy(site_vars(tmp_path)), **override}
    if drop is not None:
        del host_vars[drop]
    inventory = write_inventory(tmp_path, host_vars)
    run = run_playbook(tmp_path, inventory)
    assert run.rc != 0
    source, result = run.failure()
    assert source == "preflight.yml"
    for text in expected:
        assert text in result["msg"], result["msg"]
    # Refused before anything was installed or written.
    assert not (tmp_path / "opt").exists() and not (tmp_path / "etc").exists()
