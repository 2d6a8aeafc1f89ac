"""ansible/ as Ansible and ansible-lint read it, and the rollout's stop rule.

- ``ansible-lint --profile production`` over ansible/ (both roles, the playbooks, the
  example inventory with its vault opened by the documented example password);
- ``ansible-playbook --syntax-check`` of site.yml, agents.yml and check.yml with the
  example inventory;
- agents.yml really stops: an unreachable canary stops everything, and an unreachable PC
  in the first batch stops the later batches. No role task runs in these plays (the hosts
  fail first), and the agent role's paths point into the test's folder all the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE_DIR = ROOT / "ansible"
INVENTORY = ANSIBLE_DIR / "inventory" / "example"
BIN = str(Path(sys.executable).parent)
VAULT_PASSWORD = "bridgewatch-example"  # documented in ansible/README.md, example only
PLAYBOOKS = ("site.yml", "agents.yml", "check.yml")


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    password = tmp_path / "vault-password"
    password.write_text(VAULT_PASSWORD + "\n")
    (tmp_path / "ansible-tmp").mkdir(exist_ok=True)
    return {**os.environ,
            "PATH": BIN + os.pathsep + os.environ.get("PATH", ""),
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_VAULT_PASSWORD_FILE": str(password),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1", **extra}


def test_ansible_lint_production_profile_passes(tmp_path: Path) -> None:
    lint = require_binary("ansible-lint", BIN)
    done = subprocess.run([lint, "--profile", "production", "ansible/"], cwd=ROOT,
                          capture_output=True, text=True, env=env_for(tmp_path), timeout=600,
                          check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"ansible-lint (production) không đạt / failed:\n{output}"
    assert "Profile 'production' was required, and it passed" in output, output


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax_check(tmp_path: Path, playbook: str) -> None:
    binary = require_binary("ansible-playbook", BIN)
    done = subprocess.run([binary, "--syntax-check", "-i", str(INVENTORY), playbook],
                          cwd=ANSIBLE_DIR, capture_output=True, text=True,
                          env=env_for(tmp_path), timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


UNREACHABLE = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 1,
               "ansible_user": "nobody"}  # nothing listens on port 1: refused at once


def rollout(tmp_path: Path, hosts: dict[str, tuple[str, dict[str, Any]]],
            *args: str) -> tuple[int, dict[str, Any]]:
    """agents.yml on a throwaway inventory; hosts: name -> (group, host vars)."""
    groups: dict[str, dict[str, Any]] = {"bridgewatch_canary": {"hosts": {}},
                                         "bridgewatch_level_member": {"hosts": {}}}
    for name, (group, host_vars) in hosts.items():
        groups[group]["hosts"][name] = host_vars
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {"all": {
        "vars": {
            "ansible_become": False,
            # Were the stop rule broken, the role would still stay inside the test's folder.
            "bridgewatch_agent_prefix": str(tmp_path / "opt"),
            "bridgewatch_agent_config_dir": str(tmp_path / "etc"),
            "bridgewatch_agent_state_dir": str(tmp_path / "var"),
            "bridgewatch_agent_build_dir": str(tmp_path / "wheels"),
            "bridgewatch_agent_service_manager": "none",
            "bridgewatch_agent_install_packages": False,
            "bridgewatch_rollout_connect_timeout": 3,
        },
        "children": {"bridgewatch_sites": {"children": {
            group: {"hosts": {h: {**local, **v} if v is not UNREACHABLE else v
                              for h, v in members["hosts"].items()}}
            for group, members in groups.items()}}}}}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    binary = require_binary("ansible-playbook", BIN)
    done = subprocess.run([binary, "-i", str(path), "agents.yml", *args], cwd=ANSIBLE_DIR,
                          capture_output=True, text=True, timeout=300, check=False,
                          env=env_for(tmp_path, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
                                      ANSIBLE_HOST_KEY_CHECKING="false"))
    start = done.stdout.find("{\n")
    try:
        report, _ = json.JSONDecoder().raw_decode(done.stdout[start:])
    except ValueError:
        pytest.fail(f"rc {done.returncode}, no JSON report:\n{done.stdout}\n{done.stderr}")
    return done.returncode, report


def tasks_run(report: dict[str, Any], host: str) -> list[str]:
    return [task["task"]["name"] for play in report["plays"] for task in play["tasks"]
            if host in task["hosts"] and not task["hosts"][host].get("skipped")]


def test_unreachable_canary_stops_the_whole_rollout(tmp_path: Path) -> None:
    require_binary("ssh")
    code, report = rollout(tmp_path, {
        "canary-down": ("bridgewatch_canary", UNREACHABLE),
        "canary-up": ("bridgewatch_canary", {}),
        "member-1": ("bridgewatch_level_member", {}),
        "member-2": ("bridgewatch_level_member", {}),
    })
    assert code != 0
    assert report["stats"]["canary-down"]["failures"] == 1
    # The healthy canary got no further than the connection check; no member was touched.
    assert tasks_run(report, "canary-up") == ["Reach the bridge PC (unreachable stops the "
                                              "rollout)"]
    assert set(report["stats"]) == {"canary-down", "canary-up"}, (
        "triển khai phải dừng / the rollout must stop")


def test_unreachable_pc_in_the_first_batch_stops_the_later_batches(tmp_path: Path) -> None:
    require_binary("ssh")
    code, report = rollout(tmp_path, {
        "canary": ("bridgewatch_canary", {}),
        "member-1": ("bridgewatch_level_member", UNREACHABLE),
        "member-2": ("bridgewatch_level_member", {}),
        "member-3": ("bridgewatch_level_member", {}),
    }, "--limit", "bridgewatch_sites:!bridgewatch_canary")
    assert code != 0
    # Batches of 1, 10 %, 25 %: member-1 alone first; its failure ends the rollout there.
    assert set(report["stats"]) == {"member-1"}, report["stats"]
    assert report["stats"]["member-1"]["failures"] == 1
