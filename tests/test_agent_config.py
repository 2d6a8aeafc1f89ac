"""Agent configuration: defaults, overrides, and errors that name the bad key."""

from __future__ import annotations

import re
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
    assert config.spool.keep_acked_seconds == 120  # above the shipped broker's autosave 60 s
    assert config.interval_seconds == 10.0
    assert config.broker.port == 1883
    assert config.recording_volume is None and config.backup_volume is None
    # Probes of optional sections (link, ups, clock, ...) stay off while those are absent.
    # Devices change slowly: read once a minute unless configured otherwise.
    assert enabled_probes(config) == {
        **{n: 10.0 for n in ("agent", "cpu", "disk", "load", "memory", "network", "uptime")},
        "devices": 60.0}


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


def test_room_sections(tmp_path: Path) -> None:
    """Devices, storage, clock, software, UPSes, network gear and the session plan."""
    config = load_config(write(tmp_path, MINIMAL + """
recording_volume: /srv/recordings/bw
backup_volume: /media/backup/bw
devices: {camera: 1, microphone: 1, speaker: 1, display: [HDMI, HDMI]}
storage: {recording_bitrate_mbps: 6, backup_device: /dev/disk/by-label/BW-BACKUP}
clock: {server: ntp.dongthap.gov.vn, max_offset_seconds: 0.25}
software: [{name: vconf, processes: [vconf, VConf.exe], version_file: /opt/vconf/VERSION}]
ups:
  - {name: ups-1, nut: {host: 127.0.0.1, ups: santak, username: mon, password: secret}}
  - {name: ups-2, snmp: {host: 10.0.0.5, community: public}, mib: apc}
  - name: ups-3
    snmp: {host: 10.0.0.6, version: 3, user: bw, auth_protocol: sha, auth_key: authkey123,
           priv_protocol: aes, priv_key: privkey123}
network_gear: [{name: router, snmp: {host: 10.0.0.1, community: public},
                interfaces: [ge-0/0/0]}]
session: {length_seconds: 7200, ups_margin_seconds: 600}
"""))
    assert [(d.kind, d.count, d.names) for d in config.devices] == [
        ("camera", 1, ()), ("microphone", 1, ()), ("speaker", 1, ()),
        ("display", 2, ("HDMI", "HDMI"))]
    assert config.storage.recording_bitrate_mbps == 6.0
    assert config.clock is not None and config.clock.max_offset_seconds == 0.25
    assert config.software[0].processes == ("vconf", "VConf.exe")
    assert [u.name for u in config.ups] == ["ups-1", "ups-2", "ups-3"]
    assert config.ups[0].nut is not None and config.ups[0].nut.port == 3493
    assert config.ups[1].mib == "apc" and config.ups[1].snmp is not None
    assert config.ups[2].snmp is not None and config.ups[2].snmp.version == "3"
    assert config.network_gear[0].interfaces == ("ge-0/0/0",)
    assert (config.session.length_seconds, config.session.ups_margin_seconds) == (7200, 600)
    intervals = enabled_probes(config)
    assert {n: intervals[n] for n in ("devices", "storage", "clock", "software", "ups",
                                      "netgear")} == {
        "devices": 60.0, "storage": 60.0, "clock": 60.0, "software": 30.0, "ups": 10.0,
        "netgear": 30.0}


def test_readiness_limits(tmp_path: Path) -> None:
    """The full test's limits: the usual video-conference figures unless configured."""
    default = load_config(write(tmp_path, MINIMAL)).readiness
    assert (default.max_rtt_ms, default.max_jitter_ms, default.max_loss_percent,
            default.min_mos) == (150.0, 30.0, 1.0, 3.6)
    assert (default.link_seconds, default.link_packets_per_second,
            default.bandwidth_seconds) == (10.0, 20.0, 5.0)
    config = load_config(write(tmp_path, MINIMAL + """
readiness: {max_rtt_ms: 100, max_jitter_ms: 20, max_loss_percent: 0.5, min_mos: 4,
            link_seconds: 2, link_packets_per_second: 10, bandwidth_seconds: 1}
"""))
    r = config.readiness
    assert (r.max_rtt_ms, r.max_jitter_ms, r.max_loss_percent, r.min_mos, r.link_seconds,
            r.link_packets_per_second, r.bandwidth_seconds) == (100, 20, 0.5, 4, 2, 10, 1)
    assert enabled_probes(config) == enabled_probes(load_config(write(tmp_path, MINIMAL)))


@pytest.mark.parametrize(("text", "message"), [
    ("devices: {webcam: 1}\n", "unknown key devices.webcam"),
    ("devices: {camera: -1}\n", "devices.camera must be a count"),
    ("devices: {camera: []}\n", "devices.camera must be a count or a list"),
    ("storage: {recording_bitrate_mbps: 0}\n", "storage.recording_bitrate_mbps must be"),
    ("clock: {port: 123}\n", "host is required"),
    ("clock: {server: ntp, max_offset_seconds: x}\n", "clock.max_offset_seconds must be"),
    ("software: [{name: vconf}]\n", "software[0].processes must be"),
    ("software: [{name: Zoom App, processes: zoom}]\n", "software[0].name 'Zoom App'"),
    ("ups: [{name: u, nut: {host: h}}]\n", "ups[0].nut.ups must be"),
    ("ups: [{name: u}]\n", "give exactly one of nut or snmp"),
    ("ups: [{name: u, nut: {host: h, ups: a}, snmp: {host: h, community: c}}]\n",
     "give exactly one of nut or snmp"),
    ("ups: [{name: u, nut: {host: h, ups: a, username: x}}]\n", "username and password go"),
    ("ups: [{name: u, nut: {host: h, ups: a}}, {name: u, nut: {host: h, ups: b}}]\n",
     "name 'u' is used twice"),
    ("ups: [{name: u, snmp: {host: h}}]\n", "community is required for SNMP v2c"),
    ("ups: [{name: u, snmp: {host: h, community: c}, mib: eaton}]\n", "mib must be one of"),
    ("ups: [{name: u, snmp: {host: h, version: 1, community: c}}]\n", "version must be 2c or 3"),
    ("ups: [{name: u, snmp: {host: h, version: 3}}]\n", "user is required for SNMP v3"),
    ("ups: [{name: u, snmp: {host: h, version: 3, user: x, auth_protocol: sha, "
     "auth_key: short}}]\n", "auth_key must be at least 8"),
    ("ups: [{name: u, snmp: {host: h, version: 3, user: x, priv_protocol: aes, "
     "priv_key: longenough}}]\n", "privacy needs authentication"),
    ("ups: [{name: u, snmp: {host: h, version: 3, user: x, auth_protocol: sha1, "
     "auth_key: longenough}}]\n", "auth_protocol must be one of"),
    ("network_gear: [{name: r, snmp: {host: h, community: c}, interfaces: eth0}]\n",
     "interfaces must be a list"),
    ("session: {length_seconds: 10}\n", "session.length_seconds must be between"),
    ("session: {lenght_seconds: 7200}\n", "unknown key session.lenght_seconds"),
    ("readiness: 5\n", "readiness must be a mapping"),
    ("readiness: {max_rtt: 100}\n", "unknown key readiness.max_rtt"),
    ("readiness: {max_rtt_ms: fast}\n", "readiness.max_rtt_ms must be a number"),
    ("readiness: {max_loss_percent: 0}\n", "readiness.max_loss_percent must be between"),
    ("readiness: {min_mos: 5}\n", "readiness.min_mos must be between 1 and 4.5"),
    ("readiness: {link_seconds: 0.5}\n", "readiness.link_seconds must be between 1 and"),
    ("readiness: {link_packets_per_second: 100}\n",
     "readiness.link_packets_per_second must be between 1 and 40"),
    ("readiness: {bandwidth_seconds: 61}\n", "readiness.bandwidth_seconds must be between"),
])
def test_room_section_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(write(tmp_path, MINIMAL + text))


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
    ("site: a\nprovince: b\nspool: {path: s, keep_acked_seconds: -1}\n",
     "spool.keep_acked_seconds"),
    ("site: a\nprovince: b\nspool: {path: s, keep_acked_seconds: x}\n",
     "spool.keep_acked_seconds"),
    ("site: a\nprovince: b\nspool: {path: s, keep_acked_seconds: 1.0e+9}\n",
     "spool.keep_acked_seconds"),
    ("site: a\nprovince: b\n", "spool must be a mapping"),
    ("- a list\n", "configuration must be a mapping"),
    ("site: [unclosed\n", "not valid YAML"),
    (MINIMAL + "probes: {" + ", ".join(
        f"{n}: {{enabled: false}}" for n in
        ("agent", "cpu", "devices", "disk", "load", "memory", "network", "uptime")) + "}\n",
     "every probe is disabled"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        load_config(write(tmp_path, text))
    assert message in str(err.value)
