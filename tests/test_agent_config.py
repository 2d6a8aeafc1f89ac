"""Agent configuration: defaults, overrides, and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.probes import enabled_probes

MINIMAL = "site: hn-01\nprovince: ha-noi\nspool: {path: spool.db}\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert (config.site, config.province, config.prefix) == ("hn-01", "ha-noi", "bridgewatch")
    assert config.spool.path == tmp_path.resolve() / "spool.db"  # next to the config file
    assert (config.spool.max_messages, config.spool.max_age_seconds, config.spool.max_bytes) == (
        200_000, 8 * 86400, 256 * 1024 * 1024)
    assert config.interval_seconds == 10.0
    assert config.broker.port == 1883
    assert config.recording_volume is None and config.backup_volume is None
    assert enabled_probes(config) == {
        n: 10.0 for n in ("agent", "cpu", "disk", "link", "load", "memory", "network",
                          "uptime")}


def test_overrides(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
site: hn-01
province: ha-noi
spool: {path: /var/lib/bw/spool.db, max_messages: 10}
interval_seconds: 5
broker: {host: mq.example, port: 8883, tls: {ca_file: /etc/ca.pem}}
recording_volume: /srv/rec
probes:
  disk: {interval_seconds: 60}
  load: {enabled: false}
"""))
    assert config.spool.path == Path("/var/lib/bw/spool.db")
    assert config.spool.max_messages == 10
    assert (config.broker.host, config.broker.port, config.broker.tls) == ("mq.example", 8883, True)
    assert config.recording_volume == "/srv/rec"
    probes = enabled_probes(config)
    assert probes["disk"] == 60.0 and probes["cpu"] == 5.0 and "load" not in probes


@pytest.mark.parametrize(("text", "message"), [
    ("site: HN 01\nprovince: ha-noi\nspool: {path: s}\n", "site 'HN 01' is not a slug"),
    ("province: ha-noi\nspool: {path: s}\n", "site is required"),
    (MINIMAL + "intervall_seconds: 3\n", "unknown key intervall_seconds"),
    (MINIMAL + "interval_seconds: fast\n", "interval_seconds must be a number"),
    (MINIMAL + "interval_seconds: 0\n", "interval_seconds must be between"),
    (MINIMAL + "probes: {gpu: {enabled: true}}\n", "unknown probe probes.gpu"),
    (MINIMAL + "probes: {cpu: {enabled: 'yes'}}\n", "probes.cpu.enabled must be true or false"),
    (MINIMAL + "probes: {cpu: {every: 3}}\n", "unknown key probes.cpu.every"),
    (MINIMAL + "broker: {hots: x}\n", "broker: unknown broker settings: hots"),
    (MINIMAL + "broker: {port: 70000}\n", "broker: broker port 70000 out of range"),
    (MINIMAL + "prefix: a/b\n", "prefix must be"),
    (MINIMAL + "backup_volume: 3\n", "backup_volume must be a path"),
    ("site: a\nprovince: b\nspool: {}\n", "spool.path is required"),
    ("site: a\nprovince: b\nspool: {path: s, max_bytes: 10}\n", "spool.max_bytes must be"),
    ("site: a\nprovince: b\nspool: {path: s, max_age_seconds: -1}\n", "spool.max_age_seconds"),
    ("site: a\nprovince: b\nspool: {path: s, size: 1}\n", "unknown key spool.size"),
    ("site: a\nprovince: b\n", "spool must be a mapping"),
    ("- a list\n", "configuration must be a mapping"),
    ("site: [unclosed\n", "not valid YAML"),
    (MINIMAL + "probes: {" + ", ".join(
        f"{n}: {{enabled: false}}" for n in
        ("agent", "cpu", "disk", "link", "load", "memory", "network", "uptime")) + "}\n",
     "every probe is disabled"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        load_config(write(tmp_path, text))
    assert message in str(err.value)
