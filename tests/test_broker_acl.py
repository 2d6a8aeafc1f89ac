"""The shipped broker ACL: an agent can publish only as itself.

A real Mosquitto with per-site passwords and ``deploy/mosquitto/acl``, the real collector
intake, and the real agent: with its own credentials its data arrives; configured as
another site, the broker refuses every publish and the collector sees nothing of it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agent.broker import BrokerSettings
from collector.ingest import Ingest
from collector.inventory import parse_inventory
from collector.state import FleetState
from deploy.localstack import Mosquitto, Process, free_port, wait_until
from tests.conftest import require_binary

pytestmark = pytest.mark.real
ACL = Path(__file__).parents[1] / "deploy" / "mosquitto" / "acl"
USERS = {"dt-sa-dec": "pw-sa-dec", "dt-cai-be": "pw-cai-be",
         "bridgewatch-collector": "pw-collector"}
INVENTORY = parse_inventory({"provinces": {"dong-thap": {}}, "sites": [
    {"id": "dt-sa-dec", "province": "dong-thap"}, {"id": "dt-cai-be", "province": "dong-thap"}]})


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    passwd = require_binary("mosquitto_passwd")
    passwords = tmp_path / "passwords"
    for user, password in USERS.items():
        flags = ["-c"] if not passwords.exists() else []
        subprocess.run([passwd, "-b", *flags, str(passwords), user, password], check=True)
    port = free_port()
    broker = Mosquitto(tmp_path / "mosquitto", port=port, listener_conf=(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
        f"acl_file {ACL}\n"))
    broker.start()
    yield broker
    broker.stop()


def password_file(tmp_path: Path, user: str) -> str:
    path = tmp_path / f"{user}.password"
    path.write_text(USERS[user] + "\n")
    return str(path)


def start_agent(tmp_path: Path, port: int, site: str, user: str) -> Process:
    config = tmp_path / f"agent-{site}.yaml"
    config.write_text(yaml.safe_dump({
        "site": site, "province": "dong-thap", "interval_seconds": 0.5,
        "broker": {"port": port, "username": user,
                   "password_file": password_file(tmp_path, user)},
        "spool": {"path": str(tmp_path / f"spool-{site}.sqlite")}}))
    agent = Process([sys.executable, "-m", "agent.main", "run", "--config", str(config)],
                    tmp_path / f"agent-{site}.log")
    agent.start()
    return agent


def test_an_agent_can_publish_only_as_itself(acl_broker: Mosquitto, tmp_path: Path) -> None:
    fleet = FleetState(INVENTORY, render_delay=0)
    ingest = Ingest(fleet, BrokerSettings(
        port=acl_broker.port, username="bridgewatch-collector",
        password_file=password_file(tmp_path, "bridgewatch-collector")))
    ingest.start()
    honest = start_agent(tmp_path, acl_broker.port, "dt-sa-dec", "dt-sa-dec")
    # dt-cai-be's config, but dt-sa-dec's credentials: a stolen or copied password file.
    impostor = start_agent(tmp_path, acl_broker.port, "dt-cai-be", "dt-sa-dec")
    try:
        wait_until(lambda: fleet.sites["dt-sa-dec"].tracker.received >= 3, 30,
                   "the honest agent's telemetry")
        wait_until(lambda: "broker refused message" in impostor.log(), 30,
                   "the broker to refuse the impostor")
        assert "Not authorized" in impostor.log()
        assert fleet.sites["dt-cai-be"].tracker.received == 0
        assert fleet.sites["dt-cai-be"].connected is None, "not even its state got through"
    finally:
        honest.stop()
        impostor.stop()
        ingest.stop()
