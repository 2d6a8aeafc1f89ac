"""The shipped broker ACL: an agent can publish only as itself, over TLS.

A real Mosquitto on the shipped configuration (``deploy/mosquitto/bridgewatch.conf``) with
the CA, certificate and per-site passwords ``bridgewatch-collector pki`` makes, the real
collector intake, and the real agent: with its own credentials its data arrives; configured
as another site, the broker refuses every publish and the collector sees nothing of it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agent.broker import BrokerSettings
from collector.ingest import Ingest
from collector.inventory import parse_inventory
from collector.pki import PASSWORD_FILE
from collector.state import FleetState
from deploy.localstack import Mosquitto, Process, wait_until
from tests.test_broker_security import INVENTORY, OTHER, SITE, make_credentials, start_broker

pytestmark = pytest.mark.real
COLLECTOR = "bridgewatch-collector"


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    return make_credentials(tmp_path / "credentials")


@pytest.fixture
def acl_broker(tmp_path: Path, credentials: Path) -> Iterator[Mosquitto]:
    broker = start_broker(tmp_path / "mosquitto", credentials)
    yield broker
    broker.stop()


def settings(credentials: Path, user: str, port: int) -> dict[str, object]:
    """The broker section of an agent's (or the collector's) YAML, from pki's files."""
    folder = credentials / ("collector" if user == COLLECTOR else f"sites/{user}")
    return {"port": port, "username": user, "password_file": str(folder / PASSWORD_FILE),
            "tls": {"ca_file": str(folder / "ca.crt")}}


def start_agent(tmp_path: Path, credentials: Path, port: int, site: str, user: str) -> Process:
    config = tmp_path / f"agent-{site}.yaml"
    config.write_text(yaml.safe_dump({
        "site": site, "province": "dong-thap", "interval_seconds": 0.5,
        "broker": settings(credentials, user, port),
        "spool": {"path": str(tmp_path / f"spool-{site}.sqlite")}}))
    agent = Process([sys.executable, "-m", "agent.main", "run", "--config", str(config)],
                    tmp_path / f"agent-{site}.log")
    agent.start()
    return agent


def test_an_agent_can_publish_only_as_itself(acl_broker: Mosquitto, credentials: Path,
                                             tmp_path: Path) -> None:
    fleet = FleetState(parse_inventory(INVENTORY), render_delay=0)
    ingest = Ingest(fleet, BrokerSettings.from_dict(
        settings(credentials, COLLECTOR, acl_broker.port)))
    ingest.start()
    honest = start_agent(tmp_path, credentials, acl_broker.port, SITE, SITE)
    # dt-cai-be's config, but dt-sa-dec's credentials: a stolen or copied password file.
    impostor = start_agent(tmp_path, credentials, acl_broker.port, OTHER, SITE)
    try:
        wait_until(lambda: fleet.sites[SITE].tracker.received >= 3, 30,
                   "the honest agent's telemetry")
        wait_until(lambda: "broker refused message" in impostor.log(), 30,
                   "the broker to refuse the impostor")
        assert "Not authorized" in impostor.log()
        assert fleet.sites[OTHER].tracker.received == 0
        assert fleet.sites[OTHER].connected is None, "not even its state got through"
    finally:
        honest.stop()
        impostor.stop()
        ingest.stop()
