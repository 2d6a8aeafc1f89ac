"""The optional state relay (deploy/federation/mosquitto/) on loopback brokers.

Renders the shipped national broker configuration and a province's bridge file with only
paths, ports and the password substituted, so tests/test_federation.py runs what an
operator installs.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from deploy.localstack import Mosquitto, free_port

FOLDER = Path(__file__).resolve().parent / "mosquitto"
NATIONAL_CONF = FOLDER / "national.conf"
NATIONAL_ACL = FOLDER / "national-acl"
BRIDGE_CONF = FOLDER / "bridge-to-national.conf"
SHIPPED_DIR = "/etc/mosquitto/bridgewatch/"
BRIDGE_ADDRESS = "mqtt.noc.example:8883"
BRIDGE_PASSWORD = "CHANGE-ME"
LOG_FILE = "broker.log"


def _substitute(text: str, pattern: str, value: str) -> str:
    """Replace exactly one line matching ``pattern``: a missing line is a broken file."""
    text, count = re.subn(pattern, value, text, flags=re.MULTILINE)
    if count != 1:
        raise ValueError(f"expected one line matching {pattern!r}, found {count}")
    return text


def national_broker(workdir: Path, broker_files: Path) -> Mosquitto:
    """The national broker of national.conf; ``broker_files`` holds what the shipped file
    expects in /etc/mosquitto/bridgewatch/ (ca.crt, server.*, passwords); the ACL is
    copied there from national-acl."""
    shutil.copy(NATIONAL_ACL, broker_files / "national-acl")
    port = free_port()
    text = NATIONAL_CONF.read_text().replace(SHIPPED_DIR, f"{broker_files}/")
    text = _substitute(text, r"^listener 8883$", f"listener {port} 127.0.0.1")
    # After localstack's defaults, so every setting in the shipped file is the one in force;
    # plus a log file, which Mosquitto flushes line by line (its stdout it does not).
    return Mosquitto(workdir, port=port, listener_conf="# listener: shipped file below\n",
                     extra_conf=text + f"log_dest file {workdir / LOG_FILE}\n")


def broker_log(broker: Mosquitto) -> str:
    """What a broker of national_broker() has logged so far."""
    try:
        return (broker.workdir / LOG_FILE).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def bridge_conf(national_port: int, national_ca: Path, password: str) -> str:
    """bridge-to-national.conf pointing at the loopback national broker."""
    text = BRIDGE_CONF.read_text()
    text = _substitute(text, rf"^address {re.escape(BRIDGE_ADDRESS)}$",
                       f"address 127.0.0.1:{national_port}")
    text = _substitute(text, rf"^remote_password {BRIDGE_PASSWORD}$",
                       f"remote_password {password}")
    text = text.replace(f"{SHIPPED_DIR}national-ca.crt", str(national_ca))
    if SHIPPED_DIR in text:
        raise ValueError(f"{BRIDGE_CONF}: a path under {SHIPPED_DIR} was left unmapped")
    return text


def provincial_broker(workdir: Path, national_port: int, national_ca: Path,
                      password: str) -> Mosquitto:
    """A provincial broker (open on loopback, as localstack's) with the bridge file added."""
    return Mosquitto(workdir, extra_conf=bridge_conf(national_port, national_ca, password))
