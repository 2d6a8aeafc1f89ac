"""Two provinces and one national Prometheus federating them, every part real.

Each province runs a real Mosquitto, the real collector with the demo's schedule,
simulated bridges (``bridgewatch-agent simulate``) and a real Prometheus on the shipped
``deploy/federation/<province>/prometheus.yml`` with alerts/rules. The national Prometheus
runs ``deploy/federation/national/prometheus.yml`` with alerts/national. Only addresses and
intervals (1 s) are substituted, and the national alerts' ``for:`` is cut to 2 s: their
durations are proven by promtool (alerts/national/tests). Then one province goes dark and
the other loses every bridge, and the national alerts must say so.

The optional state relay runs deploy/federation/mosquitto's files on two real Mosquittos,
with TLS from ``bridgewatch-collector pki`` and passwords from ``mosquitto_passwd``.
"""

from __future__ import annotations

import queue
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml

from agent import wire
from agent.broker import BrokerSettings, make_client
from collector.main import main as collector_main
from deploy.federation import relay
from deploy.federation.sizing import bridges_up, federate
from deploy.federation.stack import (
    HERE,
    NATIONAL_CONFIG,
    NATIONAL_RULES,
    ROOT,
    ConfiguredPrometheus,
    ProvincialStack,
    fetch,
    start_national,
)
from deploy.localstack import Mosquitto, wait_until
from tests.conftest import require_binary

pytestmark = pytest.mark.real
PROVINCES = ("dong-thap", "an-giang")
CONFIGS = sorted(HERE.glob("*/prometheus.yml"))
NATIONAL_RULE_FILE = NATIONAL_RULES / "federation.yml"
FAST_FOR = "2s"
ACCEPTED, REFUSED = (0, 16), 135  # MQTT 5 PUBACK: success, no subscribers; not authorized
# What the national Prometheus makes itself, beside what it federates.
NATIONAL_OWN = ("up", "scrape_duration_seconds", "scrape_samples_scraped",
                "scrape_samples_post_metric_relabeling", "scrape_series_added")


def rules(path: Path) -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
            for r in g["rules"]]


def fast_rules(out: Path) -> Path:
    """alerts/national with every ``for:`` at FAST_FOR and nothing else changed."""
    document = yaml.safe_load(NATIONAL_RULE_FILE.read_text(encoding="utf-8"))
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FAST_FOR
    out.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    assert [{k: v for k, v in r.items() if k != "for"} for r in rules(out)] == \
        [{k: v for k, v in r.items() if k != "for"} for r in rules(NATIONAL_RULE_FILE)]
    return out


@dataclass
class Federation:
    stacks: dict[str, ProvincialStack]
    national: ConfiguredPrometheus

    def firing(self, alertname: str) -> list[dict[str, str]]:
        return [a["labels"] for a in self.national.alerts()
                if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    for binary in ("mosquitto", "prometheus"):
        require_binary(binary)
    base = tmp_path_factory.mktemp("federation")
    stacks = {p: ProvincialStack(p, base / p) for p in PROVINCES}
    national: ConfiguredPrometheus | None = None
    try:
        for stack in stacks.values():
            stack.start()
        for stack in stacks.values():  # scraped, and the rules evaluated over every bridge
            own = sum(s.province == stack.province for s in stack.sites)
            wait_until(lambda st=stack, n=own: bridges_up(st) == n, 30,
                       f"{stack.province}'s rules", interval=0.2)
        national = start_national(base / "national", list(stacks.values()),
                                  rule_files=[fast_rules(base / "national-rules.yml")])
        yield Federation(stacks, national)
    finally:
        if national is not None:
            national.stop()
        for stack in stacks.values():
            stack.stop()


# ---- the configuration files ---------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.parent.name)
def test_promtool_checks_every_config_and_its_rules(config: Path) -> None:
    """promtool check config, which also checks every rule file the config names (the
    provincial configs name alerts/rules, the national one alerts/national)."""
    promtool = require_binary("promtool")
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rules found" in result.stdout, "the config names no rule file that exists"


def test_promtool_unit_tests_of_the_national_rules() -> None:
    promtool = require_binary("promtool")
    tests = sorted((NATIONAL_RULES / "tests").glob("*.yml"))
    assert tests
    result = subprocess.run([promtool, "test", "rules", *map(str, tests)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_national_prometheus_never_pages_a_province() -> None:
    """No double pages: the national side loads only alerts/national, whose alerts are
    all scope national and none a provincial one; each province labels its own stack."""
    national = yaml.safe_load(NATIONAL_CONFIG.read_text(encoding="utf-8"))
    loaded = {p for f in national["rule_files"] for p in NATIONAL_CONFIG.parent.glob(f)}
    assert {p.resolve() for p in loaded} == {NATIONAL_RULE_FILE}
    provincial = {r["alert"] for f in (ROOT / "alerts" / "rules").glob("*.yml")
                  for r in rules(f) if "alert" in r}
    ours = [r for r in rules(NATIONAL_RULE_FILE) if "alert" in r]
    assert ours and all(r["labels"]["scope"] == "national" for r in ours)
    assert not provincial & {r["alert"] for r in ours}
    jobs = {j["job_name"]: j for j in national["scrape_configs"]}
    assert set(jobs) == {f"federate-{p}" for p in PROVINCES}
    assert all(j["honor_labels"] and j["metrics_path"] == "/federate" for j in jobs.values())
    for province in PROVINCES:
        config = yaml.safe_load((HERE / province / "prometheus.yml").read_text())
        assert config["global"]["external_labels"] == {"stack": province}
        assert [j["job_name"] for j in config["scrape_configs"]] == ["bridgewatch"]


# ---- two provinces, one national Prometheus ------------------------------------------


def national_series(federation: Federation, stack: str) -> list[dict[str, str]]:
    """What the national Prometheus holds from one province (not its own series)."""
    found = federation.national.query(f'{{stack="{stack}"}}')
    return [s["metric"] for s in found if s["metric"]["__name__"] not in NATIONAL_OWN
            and not s["metric"]["__name__"].startswith(("stack:", "national_site:"))
            and not s["metric"].get("alertname", "").startswith("BridgeWatchNational")]


def identity(labels: dict[str, str]) -> frozenset[tuple[str, str]]:
    """A series without job and instance, which the federating side may fill in."""
    return frozenset((k, v) for k, v in labels.items()
                     if k not in ("job", "instance") and v != "")


def test_each_province_federates_its_bridges_under_its_stack_label(
        federation: Federation) -> None:
    for province, stack in federation.stacks.items():
        samples = federate(stack)
        assert samples and {s.labels.get("stack") for s in samples} == {province}
        up = {s.labels["site"] for s in samples if s.name == "bridge_up"}
        assert up == {s.id for s in stack.sites}


def test_the_national_prometheus_has_both_provinces_once(federation: Federation) -> None:
    """Per province: bridge_up of every site, the recording rules' bridges up, and the
    very series its /federate answers, each exactly once (nothing renamed exported_*)."""
    national = federation.national
    for province, stack in federation.stacks.items():
        sites = {s.id for s in stack.sites}
        wait_until(lambda p=province, s=sites: {r["metric"]["site"] for r in national.query(
            f'bridge_up{{stack="{p}"}} == 1')} == s, 30, f"{province}'s bridges nationally")
        up = national.query(f'bridge_up{{stack="{province}"}}')
        assert all(r["metric"]["job"] == "bridgewatch" for r in up), "honor_labels keeps job"
        own = len([s for s in stack.sites if s.province == province])
        wait_until(lambda p=province, n=own: national.value(
            f'province:bridges_up:sum{{stack="{p}",province="{p}"}}') == n, 30,
            f"{province}'s province:bridges_up:sum")

        def same(p: str = province, st: ProvincialStack = stack) -> bool:
            held = [identity(m) for m in national_series(federation, p)]
            return len(held) == len(set(held)) and set(held) == {
                identity({"__name__": s.name, **s.labels}) for s in federate(st)}

        wait_until(same, 30, f"{province}: the national series equal to its /federate")
        assert not [m for m in national_series(federation, province)
                    if any(k.startswith("exported_") for k in m)]
    stacks = {r["metric"]["stack"] for r in national.query("province:bridges_up:sum")}
    assert stacks == set(PROVINCES)
    # The national bridge is reported by both provinces: two series, one per stack.
    twice = national.query('bridge_up{site="tw-tiep-cong-dan"}')
    assert sorted(r["metric"]["stack"] for r in twice) == sorted(PROVINCES)
    wait_until(lambda: national.value(
        'national_site:bridge_up:max{site="tw-tiep-cong-dan"}') == 1, 30,
        "the national bridge seen once")


def test_curated_federation_ships_a_fraction_of_each_bridges_series(
        federation: Federation) -> None:
    """The point of curating: per bridge, far fewer series than its /metrics holds."""
    for stack in federation.stacks.values():
        metrics = [line for line in fetch(stack.collector_url + "/metrics").splitlines()
                   if 'site="' in line and not line.startswith("#")]
        federated = [s for s in federate(stack) if "site" in s.labels]
        print(f"{stack.province}: {len(metrics) / len(stack.sites):.0f} series per bridge "
              f"on /metrics, {len(federated) / len(stack.sites):.1f} federated")
        assert 0 < len(federated) < len(metrics) / 2


def test_a_province_going_dark_fires_only_its_meta_alert(federation: Federation) -> None:
    """Đồng Tháp's collector and Prometheus stop (a stack down, or the national link):
    the national StackUnreachable fires for dong-thap alone, Đồng Tháp's series go stale
    and An Giang's stay."""
    dark = federation.stacks["dong-thap"]
    assert dark.prometheus is not None and dark.collector is not None
    assert not federation.firing("BridgeWatchNationalStackUnreachable")
    dark.prometheus.stop()
    dark.collector.stop()
    wait_until(lambda: federation.firing("BridgeWatchNationalStackUnreachable"), 30,
               "StackUnreachable firing")
    fired = federation.firing("BridgeWatchNationalStackUnreachable")
    assert [(a["stack"], a["job"], a["scope"]) for a in fired] == [
        ("dong-thap", "federate-dong-thap", "national")]
    national = federation.national
    wait_until(lambda: not national.query('bridge_up{stack="dong-thap"}'), 30,
               "Đồng Tháp's series stale")
    assert len(national.query('bridge_up{stack="an-giang"}')) == len(
        federation.stacks["an-giang"].sites)
    assert national.value('province:bridges_up:sum{stack="an-giang",province="an-giang"}') == 5
    assert national.value('up{job="federate-an-giang"}') == 1


def test_a_province_losing_every_bridge_fires_many_bridges_down(
        federation: Federation) -> None:
    """An Giang's simulated bridges all leave (Last Will): its bridge_up go to 0 in the
    province, the national ratio follows, and ManyBridgesDown fires for an-giang."""
    stack = federation.stacks["an-giang"]
    assert stack.simulator is not None
    assert not federation.firing("BridgeWatchNationalManyBridgesDown")
    stack.simulator.stop()
    wait_until(lambda: federation.firing("BridgeWatchNationalManyBridgesDown"), 60,
               "ManyBridgesDown firing")
    assert [a["stack"] for a in federation.firing("BridgeWatchNationalManyBridgesDown")] == [
        "an-giang"]
    assert federation.national.value('stack:bridges_up:ratio{stack="an-giang"}') == 0


# ---- the optional state relay (Mosquitto bridge) -------------------------------------


@dataclass
class Watcher:
    """A client of the national broker (TLS, MQTT 5) that keeps what it receives."""

    port: int
    ca: Path
    password_file: Path
    user: str = "noc"
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    seen: list[mqtt.MQTTMessage] = field(default_factory=list)

    def __post_init__(self) -> None:
        settings = BrokerSettings(port=self.port, username=self.user, ca_file=str(self.ca),
                                  password_file=str(self.password_file))
        self.client = make_client(settings, f"watcher-{time.monotonic_ns()}")
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.acks: queue.Queue[int] = queue.Queue()
        self.client.on_publish = lambda c, u, mid, rc, p: self.acks.put(rc.value)
        subscribed: queue.Queue[int] = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.put(rcs[0].value)
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if self.user == "noc":
            self.client.subscribe("bridgewatch-relay/#", qos=1)
            assert subscribed.get(timeout=10) == 1, "the NOC may read the relayed states"

    def wait_for(self, topic: str, payload: bytes, timeout: float) -> mqtt.MQTTMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(message)
            if message.topic == topic and message.payload == payload:
                return message
        pytest.fail(f"never saw {topic} {payload!r}; saw {[m.topic for m in self.seen]}")

    def publish(self, topic: str) -> int:
        """Publish at QoS 1; the PUBACK's reason code."""
        self.client.publish(topic, b"x", qos=1)
        return self.acks.get(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def state(site: str, province: str, seq: int, value: str) -> tuple[str, bytes]:
    """A real wire state message, as an agent's broker keeps it retained."""
    return (wire.topic(wire.DEFAULT_PREFIX, province, site, wire.Kind.STATE),
            wire.encode(wire.State(province, site, seq=seq, conn=seq, ts=time.time(),
                                   state=value, agent_version="test")))


def publish(broker: Mosquitto, messages: list[tuple[str, bytes]]) -> None:
    """Publish on a provincial broker (QoS 1, retained as agents do) and wait for PUBACKs."""
    client = make_client(BrokerSettings(port=broker.port), f"agent-{time.monotonic_ns()}")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass
class Credentials:
    broker_files: Path  # what national.conf expects in /etc/mosquitto/bridgewatch/
    passwords: dict[str, Path]  # user -> a file with its password

    @property
    def ca(self) -> Path:
        return self.broker_files / "ca.crt"

    def password(self, user: str) -> str:
        return self.passwords[user].read_text().strip()


@pytest.fixture
def credentials(tmp_path: Path) -> Credentials:
    """The national broker's certificate (bridgewatch-collector pki) and passwords."""
    require_binary("mosquitto")
    passwd = require_binary("mosquitto_passwd")
    files = tmp_path / "national-broker"
    assert collector_main(["pki", "init-ca", "--out", str(tmp_path / "ca")]) == 0
    assert collector_main(["pki", "server-cert", "--ca", str(tmp_path / "ca"), "--name",
                           "mqtt.noc.test", "--ip", "127.0.0.1", "--out", str(files)]) == 0
    passwords = {}
    for user in ("dong-thap", "noc"):
        passwords[user] = tmp_path / f"{user}.password"
        passwords[user].write_text(f"pw-{user}-for-the-relay-test\n")
        flags = [] if (files / "passwords").exists() else ["-c"]
        subprocess.run([passwd, "-b", *flags, str(files / "passwords"), user,
                        passwords[user].read_text().strip()], check=True)
    return Credentials(files, passwords)


def test_state_relay_to_the_national_broker(credentials: Credentials, tmp_path: Path) -> None:
    """The shipped bridge over TLS with its password: only this province's states arrive,
    under bridgewatch-relay/, retained, and after a national outage; never telemetry,
    never another province's topic; a wrong password relays nothing."""
    national = relay.national_broker(tmp_path / "national", credentials.broker_files)
    national.start()
    parts: list[Mosquitto] = [national]
    noc = Watcher(national.port, credentials.ca, credentials.passwords["noc"])
    try:
        # A wrong password: the national broker refuses the bridge, nothing is relayed.
        impostor = relay.provincial_broker(tmp_path / "impostor", national.port,
                                           credentials.ca, "not-the-password")
        parts.append(impostor)
        impostor.start()
        publish(impostor, [state("dt-cai-be", "dong-thap", 1, "online")])
        wait_until(lambda: "not authorised" in relay.broker_log(national), 30,
                   "the national broker refusing the bridge")
        impostor.stop()

        province = relay.provincial_broker(tmp_path / "dong-thap", national.port,
                                           credentials.ca, credentials.password("dong-thap"))
        parts.append(province)
        province.start()
        noc.wait_for("bridgewatch-relay/v1/dong-thap/connection", b"1", 30)
        telemetry = (wire.topic(wire.DEFAULT_PREFIX, "dong-thap", "dt-sa-dec",
                                wire.Kind.TELEMETRY), b"{}")
        online = state("dt-sa-dec", "dong-thap", 1, "online")
        publish(province, [telemetry, state("tw-tiep-cong-dan", "trung-uong", 1, "online"),
                           online])
        # One connection, in order: telemetry or the other province's state, had they
        # been relayed, would have come before this one.
        noc.wait_for("bridgewatch-relay/v1/dong-thap/dt-sa-dec/state", online[1], 30)
        assert {m.topic for m in noc.seen} == {"bridgewatch-relay/v1/dong-thap/connection",
                                              "bridgewatch-relay/v1/dong-thap/dt-sa-dec/state"}

        # The national link down: the state change waits in the provincial broker.
        national.stop()
        offline = state("dt-sa-dec", "dong-thap", 2, "offline")
        publish(province, [offline])
        national.start()
        started = time.monotonic()
        late = Watcher(national.port, credentials.ca, credentials.passwords["noc"])
        try:
            late.wait_for("bridgewatch-relay/v1/dong-thap/dt-sa-dec/state", offline[1], 90)
            print(f"state relayed {time.monotonic() - started:.1f} s after the national "
                  "broker came back")
        finally:
            late.close()

        # The ACL: a province's relay user writes only its own prefix; the NOC reads only.
        writer = Watcher(national.port, credentials.ca, credentials.passwords["dong-thap"],
                         user="dong-thap")
        try:
            assert writer.publish("bridgewatch-relay/v1/dong-thap/dt-sa-dec/state") in ACCEPTED
            assert writer.publish("bridgewatch-relay/v1/an-giang/ag-chau-doc/state") == REFUSED
        finally:
            writer.close()
        assert noc.publish("bridgewatch-relay/v1/dong-thap/dt-sa-dec/state") == REFUSED
    finally:
        noc.close()
        for part in reversed(parts):
            part.stop()
