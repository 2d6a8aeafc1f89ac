"""The agent's ``link`` section: defaults, the reflector as a target, and named errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import LinkTarget, load_config

BASE = "site: hn-01\nprovince: ha-noi\nspool: {path: spool.db}\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(BASE + text, encoding="utf-8")
    return path


def test_no_link_section_means_no_link_probing(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).link is None


def test_a_full_link_section(tmp_path: Path) -> None:
    link = load_config(write(tmp_path, """
link:
  reflector: {host: bw.example.vn, key_file: keys/reflector.key}
  targets:
    - {name: gateway, host: 192.0.2.1, method: icmp}
    - {name: platform, host: meet.example.vn, method: tcp-connect, port: 443}
    - {name: backup-reflector, host: bw2.example.vn, method: udp-reflector}
  packet_interval_seconds: 0.5
  required_bandwidth_mbps: 30
""")).link
    assert link is not None and link.reflector is not None
    assert (link.reflector.host, link.reflector.udp_port, link.reflector.tcp_port) == (
        "bw.example.vn", 8620, 8621)
    assert link.reflector.key_file == tmp_path.resolve() / "keys/reflector.key"
    assert (link.packet_interval_seconds, link.connect_interval_seconds,
            link.required_bandwidth_mbps) == (0.5, 10.0, 30.0)
    assert link.all_targets() == (
        LinkTarget("reflector", "bw.example.vn", "udp-reflector", 8620),
        LinkTarget("gateway", "192.0.2.1", "icmp", None),
        LinkTarget("platform", "meet.example.vn", "tcp-connect", 443),
        LinkTarget("backup-reflector", "bw2.example.vn", "udp-reflector", 8620),
    )


def test_targets_without_a_reflector(tmp_path: Path) -> None:
    link = load_config(write(tmp_path, """
link: {targets: [{name: dns, host: 192.0.2.53, method: tcp-connect, port: 53}]}
""")).link
    assert link is not None and link.reflector is None
    assert [t.name for t in link.all_targets()] == ["dns"]


REFLECTOR = "  reflector: {host: bw.example.vn, key_file: k}\n"


@pytest.mark.parametrize(("text", "message"), [
    ("link: []\n", "link must be a mapping"),
    ("link: {}\n", "configure a reflector or at least one target"),
    ("link:\n  reflectr: {}\n", "unknown key link.reflectr"),
    ("link:\n  reflector: {host: bw.example.vn}\n", "link.reflector.key_file is required"),
    ("link:\n  reflector: {key_file: k}\n", "link.reflector.host is required"),
    ("link:\n  reflector: {host: bw, key_file: k, udp_port: 0}\n",
     "link.reflector.udp_port must be a port"),
    ("link:\n" + REFLECTOR + "  targets: {name: x}\n", "link.targets must be a list"),
    ("link:\n" + REFLECTOR + "  targets: [{name: Gate Way, host: h, method: icmp}]\n",
     "link.targets[0].name 'Gate Way' is not a slug"),
    ("link:\n" + REFLECTOR + "  targets: [{name: reflector, host: h, method: icmp}]\n",
     "'reflector' is reserved"),
    ("link:\n" + REFLECTOR + "  targets: [{name: a, host: h, method: ping}]\n",
     "method must be one of udp-reflector, icmp, tcp-connect"),
    ("link:\n" + REFLECTOR + "  targets: [{name: a, host: h, method: tcp-connect}]\n",
     "port is required for tcp-connect"),
    ("link:\n  targets: [{name: a, host: h, method: udp-reflector}]\n",
     "udp-reflector needs link.reflector"),
    ("link:\n" + REFLECTOR + "  targets: [{name: a, host: h, method: icmp, tries: 3}]\n",
     "unknown key link.targets[0].tries"),
    ("link:\n" + REFLECTOR + "  targets: [{name: a, host: h, method: icmp}, "
     "{name: a, host: g, method: icmp}]\n", "name 'a' is used twice"),
    ("link:\n" + REFLECTOR + "  packet_interval_seconds: 0\n",
     "link.packet_interval_seconds must be between"),
    ("link:\n" + REFLECTOR + "  required_bandwidth_mbps: fast\n",
     "link.required_bandwidth_mbps must be a number"),
    ("link:\n" + REFLECTOR + "  targets: [" + ", ".join(
        f"{{name: t{i}, host: h, method: icmp}}" for i in range(32)) + "]\n",
     "at most 32 targets"),
])
def test_link_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        load_config(write(tmp_path, text))
    assert message in str(err.value)
