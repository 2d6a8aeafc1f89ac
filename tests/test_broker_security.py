"""The shipped broker configuration, with the credentials ``pki`` makes, against a real broker.

``bridgewatch-collector pki`` makes a CA, the broker's certificate and every site's
password; a real Mosquitto runs ``deploy/mosquitto/bridgewatch.conf`` as shipped, only
its paths pointed at those files and its two ports at free loopback ports: the sites'
(TLS) and the collector's (127.0.0.1, plaintext). paho-mqtt 2 clients (MQTT 5) then try
what an intruder, a neighbour site or a misconfigured agent would: no login, a wrong
password, plaintext, another CA, another site's topics, commands and client id (its
session), the collector's account beyond its role, an oversized message; a rotated
password and the optional client certificates. The collector's real intake, shards and
command sender share its listener. Last, a backlog larger than Mosquitto's default queue
reaches a collector that was away, in full.
"""

from __future__ import annotations

import itertools
import queue
import re
import signal
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.readiness.runner import COMMAND
from agent.wire import MAX_PAYLOAD_BYTES
from collector.commands import CommandSender
from collector.ingest import Ingest
from collector.inventory import parse_inventory
from collector.main import CollectorConfig, load_config
from collector.main import main as collector_main
from collector.pki import COLLECTOR_USER, PASSWORD_FILE
from collector.state import FleetState
from deploy.localstack import Mosquitto, free_port, port_open, wait_until
from tests.conftest import require_binary
from tests.test_collector_shards import telemetry
from tests.test_pki import ansible_filters

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "deploy" / "mosquitto" / "bridgewatch.conf"
TEMPLATE = ROOT / "ansible" / "roles" / "bridgewatch_central" / "templates" / "mosquitto.conf.j2"
ROLE_DEFAULTS = TEMPLATE.parents[1] / "defaults" / "main.yml"
SHIPPED_DIR = "/etc/mosquitto/bridgewatch/"  # where the shipped file expects pki's broker/
SITES_LISTENER, COLLECTOR_LISTENER = "listener 8883", "listener 8884 127.0.0.1"  # as shipped
SITE, OTHER = "dt-sa-dec", "dt-cai-be"
PROVINCE = "dong-thap"
SERVER_NAME = "mqtt.bridgewatch.test"  # resolved by nobody: clients connect by IP
NOT_AUTHORIZED, BAD_CREDENTIALS = 135, 134  # MQTT 5 reason codes
INVENTORY = {"provinces": {PROVINCE: {}},
             "sites": [{"id": SITE, "province": PROVINCE}, {"id": OTHER, "province": PROVINCE}]}


def topic(site: str, kind: str) -> str:
    return f"bridgewatch/v1/{PROVINCE}/{site}/{kind}"


def pki(*args: str | Path) -> None:
    """``bridgewatch-collector pki ...`` through the collector's own entry point."""
    assert collector_main(["pki", *map(str, args)]) == 0


def make_credentials(base: Path) -> Path:
    """What a province's technician runs: CA, broker certificate, site passwords."""
    base.mkdir(parents=True, exist_ok=True)
    (base / "inventory.yaml").write_text(yaml.safe_dump(INVENTORY))
    pki("init-ca", "--out", base / "ca")
    pki("server-cert", "--ca", base / "ca", "--name", SERVER_NAME, "--ip", "127.0.0.1",
        "--out", base / "pki" / "broker")
    pki("sites", "--inventory", base / "inventory.yaml", "--ca", base / "ca", "--client-certs",
        "--out", base / "pki")
    return base / "pki"


def replace_line(text: str, line: str, new: str) -> str:
    """``text`` with its one line ``line`` replaced by ``new`` (it must be there once)."""
    text, count = re.subn(f"(?m)^{re.escape(line)}$", new, text)
    assert count == 1, line
    return text


def shipped_conf(credentials: Path, port: int, collector_port: int,
                 client_certs: bool = False) -> str:
    """The shipped file with its paths at ``credentials/broker`` and its two listeners on
    the given loopback ports; with ``client_certs``, ``require_certificate`` turned on."""
    text = SHIPPED.read_text().replace(SHIPPED_DIR, f"{credentials / 'broker'}/")
    assert SHIPPED_DIR not in text
    text = replace_line(text, SITES_LISTENER, f"listener {port} 127.0.0.1")
    text = replace_line(text, COLLECTOR_LISTENER, f"listener {collector_port} 127.0.0.1")
    if client_certs:
        text = replace_line(text, "#require_certificate true", "require_certificate true")
    return text


class Broker(Mosquitto):
    """Mosquitto on the shipped file: sites on ``port`` (TLS), the collector on
    ``collector_port`` (127.0.0.1, plaintext)."""

    collector_port: int


def start_broker(workdir: Path, credentials: Path, extra: str = "",
                 client_certs: bool = False) -> Broker:
    """A real Mosquitto on the shipped configuration (plus ``extra``: global settings only,
    as it goes after the collector's listener).

    It goes after localstack's own defaults, so every setting it has is the one in force;
    localstack keeps only what a test host needs (persistence folder, logging, user).
    """
    require_binary("mosquitto")
    port, collector_port = free_port(), free_port()
    broker = Broker(workdir, port=port, listener_conf="# listeners: shipped file below\n",
                    extra_conf=shipped_conf(credentials, port, collector_port, client_certs)
                    + extra)
    broker.collector_port = collector_port
    broker.start()
    wait_until(lambda: port_open(collector_port) or not broker.running, 10,
               "mosquitto's collector listener")
    assert broker.running, broker.log()
    return broker


@dataclass
class Deployment:
    credentials: Path
    broker: Broker

    def password(self, user: str) -> str:
        folder = "collector" if user == COLLECTOR_USER else f"sites/{user}"
        return (self.credentials / folder / PASSWORD_FILE).read_text().strip()

    @property
    def ca(self) -> Path:
        return self.credentials / "broker" / "ca.crt"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp("security")
    credentials = make_credentials(base)
    broker = start_broker(base / "mosquitto", credentials)
    yield Deployment(credentials, broker)
    broker.stop()


# ---- an MQTT 5 client whose events arrive in order -------------------------------------


@dataclass
class Event:
    kind: str  # connect, message, puback, suback, disconnect
    topic: str = ""
    payload: bytes = b""
    code: int = 0
    mid: int = 0
    session_present: bool = False


@dataclass
class Client:
    """paho-mqtt 2, MQTT 5, over TLS unless ``ca`` is None."""

    port: int
    user: str | None
    password: str | None
    client_id: str
    ca: Path | None
    session_seconds: int = 0  # > 0: a persistent session, as agents and the collector keep
    cert: Path | None = None  # a folder with client.crt and client.key (pki --client-certs)
    events: queue.Queue[Event] = field(default_factory=queue.Queue)
    seen: list[Event] = field(default_factory=list)
    error: Exception | None = None

    def __post_init__(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5)
        if self.user is not None:
            client.username_pw_set(self.user, self.password)
        if self.ca is not None:
            client.tls_set(ca_certs=str(self.ca), cert_reqs=ssl.CERT_REQUIRED,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT,
                           certfile=self.cert and str(self.cert / "client.crt"),
                           keyfile=self.cert and str(self.cert / "client.key"))
        client.reconnect_delay_set(60, 120)  # a refused client stays refused in the test
        put = self.events.put
        client.on_connect = lambda c, u, f, rc, p: put(Event(
            "connect", code=rc.value, session_present=f.session_present))
        client.on_message = lambda c, u, m: put(Event("message", m.topic, m.payload))
        client.on_publish = lambda c, u, mid, rc, p: put(Event("puback", code=rc.value, mid=mid))
        client.on_subscribe = lambda c, u, mid, rcs, p: put(
            Event("suback", mid=mid, code=max(r.value for r in rcs)))
        client.on_disconnect = lambda c, u, f, rc, p: put(Event("disconnect", code=rc.value))
        self.client = client

    def start(self, timeout: float = 15) -> int | None:
        """Connect; the CONNACK's reason code (0: in), or None when there was none."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_seconds
        try:
            # By IP: the broker's certificate names 127.0.0.1 in its SAN.
            self.client.connect("127.0.0.1", self.port, clean_start=self.session_seconds == 0,
                                properties=props)
        except (ssl.SSLError, OSError) as err:  # TLS refused during connect()
            self.error = err
            return None
        self.client.loop_start()
        end = self.wait(lambda e: e.kind in ("connect", "disconnect"), "CONNACK", timeout,
                        required=False)
        return end.code if end is not None and end.kind == "connect" else None

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait(self, match: Callable[[Event], bool], what: str, timeout: float = 15,
             required: bool = True) -> Event | None:
        """The next event that matches, in arrival order (all are kept in ``seen``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                if required:
                    pytest.fail(f"{self.client_id}: không thấy / never saw {what}; "
                                f"saw {self.seen[-5:]}")
                return None
            self.seen.append(event)
            if match(event):
                return event

    def subscribe(self, *topics: str) -> int:
        """Subscribe at QoS 1; the SUBACK's highest reason code."""
        _, mid = self.client.subscribe([(t, 1) for t in topics])
        event = self.wait(lambda e: e.kind == "suback" and e.mid == mid, "SUBACK")
        assert event is not None
        return event.code

    def publish(self, topic_: str, payload: bytes) -> int:
        """Publish at QoS 1; the PUBACK's reason code (0/16 delivered, 135 refused)."""
        mid = self.client.publish(topic_, payload, qos=1).mid
        event = self.wait(lambda e: e.kind == "puback" and e.mid == mid, f"PUBACK {mid}")
        assert event is not None
        return event.code

    def messages(self) -> list[bytes]:
        return [e.payload for e in self.seen if e.kind == "message"]


@pytest.fixture
def clients(deployment: Deployment) -> Iterator[Callable[..., Client]]:
    """Clients as deployed: a site on the sites' listener over TLS, the collector on its
    own (plaintext, loopback); ``sites_listener`` puts the collector on the sites' one."""
    made: list[Client] = []

    def make(user: str | None, password: str | None = None, client_id: str = "",
             ca: Path | None = None, plaintext: bool = False, session_seconds: int = 0,
             broker: Broker | None = None, cert: Path | None = None,
             sites_listener: bool = False) -> Client:
        if password is None and user is not None:
            password = deployment.password(user)
        broker = broker or deployment.broker
        local = user == COLLECTOR_USER and not sites_listener
        client = Client(broker.collector_port if local else broker.port, user, password,
                        client_id or f"test-{user}-{len(made)}",
                        None if plaintext or local else ca or deployment.ca,
                        session_seconds, cert)
        made.append(client)
        return client

    yield make
    for client in made:
        client.stop()


def collector_listening(clients: Callable[..., Client], *kinds: str) -> Client:
    collector = clients(COLLECTOR_USER)
    assert collector.start() == 0
    assert collector.subscribe(*(f"bridgewatch/v1/+/+/{kind}" for kind in kinds)) == 1
    return collector


# ---- who gets in ----------------------------------------------------------------------


def settings(text: str) -> list[tuple[str, str]]:
    """Every setting of a Mosquitto file, in order: a listener's own options are the ones
    after its ``listener`` line, so the order is part of what it says."""
    pairs = [line.split(None, 1) for line in text.splitlines()
             if line.strip() and not line.startswith("#")]
    return [(key, value) for key, value in pairs]


def after_listener(pairs: list[tuple[str, str]], listener: str) -> dict[str, str]:
    """The settings from ``listener <listener>`` to the next listener line."""
    start = pairs.index(("listener", listener)) + 1
    end = next((i for i in range(start, len(pairs)) if pairs[i][0] == "listener"), len(pairs))
    return dict(pairs[start:end])


def test_the_shipped_file_says_what_the_ansible_role_renders() -> None:
    """Two copies of one configuration: every setting but paths must agree, in order.

    Also what each listener is: the sites' ties client ids to users and has the TLS files;
    the collector's is on loopback, with no TLS file and client ids left alone.
    """
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text())
    rendered = jinja2.Template(TEMPLATE.read_text()).render({
        **defaults, "ansible_managed": "", "bridgewatch_central_listen_port": 8883,
        "__bridgewatch_central_mosquitto_files": SHIPPED_DIR.rstrip("/")})
    shipped = settings(SHIPPED.read_text())
    # Debian's main file turns persistence on for the role; the shipped file says it too.
    shipped.remove(("persistence", "true"))
    assert settings(rendered) == shipped
    values = dict(shipped)
    assert values["per_listener_settings"] == "false"  # one password file and ACL for both
    assert int(values["message_size_limit"]) > MAX_PAYLOAD_BYTES
    assert int(values["max_queued_messages"]) > 1000  # finite, and above the default
    sites = after_listener(shipped, SITES_LISTENER.split(None, 1)[1])
    assert sites["use_username_as_clientid"] == "true"
    assert {"cafile", "certfile", "keyfile"} <= set(sites)
    collector = after_listener(shipped, COLLECTOR_LISTENER.split(None, 1)[1])
    assert collector["use_username_as_clientid"] == "false"
    tls = {"cafile", "certfile", "keyfile", "require_certificate", "tls_version"}
    assert not tls & set(collector), "the collector's listener is plaintext, on loopback"


def test_only_known_users_with_their_own_password_get_in(
        deployment: Deployment, clients: Callable[..., Client]) -> None:
    """Tried: the site's password (in), no user, a wrong password, another site's password."""
    assert clients(SITE).start() == 0, "mật khẩu đúng phải vào được / right password refused"
    assert clients(None).start() == NOT_AUTHORIZED
    assert clients(SITE, "not-the-password-of-this-site").start() in (BAD_CREDENTIALS,
                                                                       NOT_AUTHORIZED)
    assert clients(SITE, deployment.password(OTHER)).start() in (BAD_CREDENTIALS,
                                                                 NOT_AUTHORIZED)
    assert clients("dt-unknown", deployment.password(SITE)).start() in (BAD_CREDENTIALS,
                                                                        NOT_AUTHORIZED)
    # The Ansible role's filter writes this very file from the same passwords: the logins
    # above prove its hashes too.
    users = [COLLECTOR_USER, OTHER, SITE]
    assert ansible_filters().mosquitto_passwd(
        [[user, deployment.password(user)] for user in users]) == (
            deployment.credentials / "broker" / "passwords").read_text()


def test_with_client_certificates_a_password_alone_is_not_enough(
        deployment: Deployment, clients: Callable[..., Client], tmp_path: Path) -> None:
    """The shipped file's optional require_certificate, with pki --client-certs.

    Tried: the site's password without a certificate (no CONNACK), then with its own;
    the collector's certificate on the sites' listener. On its own listener (loopback,
    no TLS) the collector's password alone opens, as it does without the option.
    """
    broker = start_broker(tmp_path / "client-certs", deployment.credentials,
                          client_certs=True)
    try:
        assert clients(SITE, broker=broker).start(timeout=5) is None
        own = deployment.credentials / "sites" / SITE
        assert clients(SITE, broker=broker, cert=own).start() == 0
        collector = clients(COLLECTOR_USER, broker=broker, sites_listener=True,
                            cert=deployment.credentials / "collector")
        assert collector.start() == 0
        collector.stop()
        assert clients(COLLECTOR_USER, broker=broker).start() == 0
    finally:
        broker.stop()


def test_a_rotated_password_takes_effect_on_reload(clients: Callable[..., Client],
                                                   tmp_path: Path) -> None:
    """Tried: pki sites --rotate for one site, then SIGHUP (systemctl reload): its old
    password is refused from then on, its new one and the others' unchanged ones work."""
    base = tmp_path / "rotation"
    credentials = make_credentials(base)
    broker = start_broker(base / "mosquitto", credentials)
    try:
        rotation = Deployment(credentials, broker)
        old = rotation.password(SITE)
        pki("sites", "--inventory", base / "inventory.yaml", "--out", credentials,
            "--rotate", SITE)
        new = rotation.password(SITE)
        assert new != old
        broker.send_signal(signal.SIGHUP)
        wait_until(lambda: clients(SITE, new, broker=broker, ca=rotation.ca).start() == 0,
                   15, "the new password to open the broker")
        assert clients(SITE, old, broker=broker, ca=rotation.ca).start() in (
            BAD_CREDENTIALS, NOT_AUTHORIZED)
        assert clients(OTHER, rotation.password(OTHER), broker=broker,
                       ca=rotation.ca).start() == 0
    finally:
        broker.stop()


def test_no_plaintext_and_no_other_ca(deployment: Deployment, clients: Callable[..., Client],
                                      tmp_path: Path) -> None:
    """Tried: the right password in plaintext; TLS trusting another CA; the wrong name.

    Each must end without a CONNACK: the password never reaches the broker in clear,
    and an agent given the province's CA talks to no other broker.
    """
    plaintext = clients(SITE, plaintext=True)
    assert plaintext.start(timeout=5) is None, "kết nối không mã hóa được nhận / plaintext in"
    pki("init-ca", "--out", tmp_path / "other-ca")
    stranger = clients(SITE, ca=tmp_path / "other-ca" / "ca.crt")
    assert stranger.start() is None
    assert isinstance(stranger.error, ssl.SSLCertVerificationError), stranger.error
    # The right CA, but a name the certificate does not carry: refused as well.
    wrong_name = clients(SITE)
    try:
        wrong_name.client.connect("localhost", deployment.broker.port)
    except ssl.SSLCertVerificationError as err:
        assert "localhost" in str(err)
    else:
        pytest.fail("tên máy chủ sai vẫn được nhận / a name not in the certificate accepted")


# ---- what each may do -------------------------------------------------------------------


def test_a_site_publishes_only_as_itself(clients: Callable[..., Client]) -> None:
    """Tried: each kind of another site's topic, and commands (its own and another's)."""
    collector = collector_listening(clients, "telemetry", "state", "test")
    site = clients(SITE)
    assert site.start() == 0
    assert site.publish(topic(SITE, "telemetry"), b"own-1") == 0
    collector.wait(lambda e: e.payload == b"own-1", "the site's own telemetry")
    for kind in ("telemetry", "state", "test", "cmd"):
        assert site.publish(topic(OTHER, kind), b"spoofed") == NOT_AUTHORIZED, kind
    # A site cannot order tests either, not even its own.
    assert site.publish(topic(SITE, "cmd"), b"spoofed") == NOT_AUTHORIZED
    # One publisher's messages arrive in order: once this one is in, any before it is too.
    assert site.publish(topic(SITE, "state"), b"own-2") == 0
    collector.wait(lambda e: e.payload == b"own-2", "the site's next message")
    assert b"spoofed" not in collector.messages()


def test_a_site_reads_only_its_own_commands(clients: Callable[..., Client]) -> None:
    """Tried: subscribing to another site's commands, and to everyone's."""
    nosy = clients(SITE)
    assert nosy.start() == 0
    nosy.subscribe(topic(OTHER, "cmd"), "bridgewatch/v1/+/+/cmd", topic(SITE, "cmd"))
    other = clients(OTHER)
    assert other.start() == 0
    other.subscribe(topic(OTHER, "cmd"))
    collector = clients(COLLECTOR_USER)
    assert collector.start() == 0
    assert collector.publish(topic(OTHER, "cmd"), b"for-the-other-site") == 0
    other.wait(lambda e: e.payload == b"for-the-other-site", "its own command")
    assert collector.publish(topic(SITE, "cmd"), b"for-this-site") == 0
    nosy.wait(lambda e: e.payload == b"for-this-site", "its own command")
    assert b"for-the-other-site" not in nosy.messages(), (
        "điểm cầu đọc được lệnh của điểm cầu khác / a site read another site's command")


CONNECTED_AS = re.compile(r"New client connected from \S+ as (\S+) \(.*u'([^']*)'\)")


def test_a_site_using_another_sites_client_id_gets_its_own_session(
        deployment: Deployment, clients: Callable[..., Client], tmp_path: Path) -> None:
    """Tried: site A connects with B's client id (the agents use their site id as client
    id), first while B is away with a command queued in its persistent session, then while
    B is connected.

    Before use_username_as_clientid (the shipped file without it, and this test's previous
    version) A took B's session over: B was disconnected, and the command queued for B was
    dropped, as A's ACL refuses it. Now the broker names A's connection after A's user: A
    gets A's own session and its own queued command, nothing of B's; B, back, gets its
    command, and a connected B is not disconnected. The broker's log says which client id
    each connection got.
    """
    broker = start_broker(tmp_path / "client-ids", deployment.credentials)
    try:
        def site(user: str, client_id: str) -> Client:
            return clients(user, client_id=client_id, session_seconds=600, broker=broker)

        for user in (OTHER, SITE):  # both subscribe to their commands, then go away
            away = site(user, user)
            assert away.start() == 0
            away.subscribe(topic(user, "cmd"))
            away.stop()
        collector = clients(COLLECTOR_USER, broker=broker)
        assert collector.start() == 0
        assert collector.publish(topic(OTHER, "cmd"), b"queued-for-B") == 0
        assert collector.publish(topic(SITE, "cmd"), b"queued-for-A") == 0

        thief = site(SITE, OTHER)
        assert thief.start() == 0
        assert thief.seen[-1].session_present
        # A's session, with A's subscription and A's queued command.
        thief.wait(lambda e: e.payload == b"queued-for-A", "A's own queued command")
        owner = site(OTHER, OTHER)
        assert owner.start() == 0
        assert owner.seen[-1].session_present, "B's session is still there"
        owner.wait(lambda e: e.payload == b"queued-for-B", "B's queued command, for B")

        # B connected: A with B's client id again (A's first connection is replaced).
        again = site(SITE, OTHER)
        assert again.start() == 0
        assert collector.publish(topic(OTHER, "cmd"), b"live-for-B") == 0
        owner.wait(lambda e: e.payload == b"live-for-B", "B's next command, still connected")
        assert not [e for e in owner.seen if e.kind == "disconnect"], "B was kicked off"
        assert b"queued-for-B" not in thief.messages() + again.messages()
        assert b"live-for-B" not in thief.messages() + again.messages()
    finally:
        broker.stop()
    named = CONNECTED_AS.findall(broker.log())  # (client id, user), written out at exit
    sites = [(client_id, user) for client_id, user in named if user != COLLECTOR_USER]
    assert sites.count((SITE, SITE)) == 3 and sites.count((OTHER, OTHER)) == 2, named
    assert (OTHER, SITE) not in sites


def collector_config(tmp_path: Path, broker: Broker, credentials: Path,
                     shard: str) -> CollectorConfig:
    """collector.yaml as the Ansible role renders it: its listener, no TLS."""
    path = tmp_path / f"collector-{shard.replace('/', '-of-')}.yaml"
    path.write_text(yaml.safe_dump({
        "inventory": str(tmp_path / "inventory.yaml"), "shard": shard,
        "broker": {"host": "127.0.0.1", "port": broker.collector_port,
                   "username": COLLECTOR_USER,
                   "password_file": str(credentials / "collector" / PASSWORD_FILE)}}))
    return load_config(path)


def test_the_collectors_connections_share_its_listener(
        deployment: Deployment, clients: Callable[..., Client], tmp_path: Path) -> None:
    """Two collectors' worth of connections under its one user, on its own listener as
    collector.yaml reaches it (127.0.0.1, no TLS): the real intake and command sender of
    an unsharded collector and of shard 1/2, with the client ids collector.main gives them.

    Tried, all four connected at once: each site's telemetry (both intakes count it) and
    a command from each sender (the site gets it). No connection replaced another: the
    broker's log names all four, and says nothing was "already connected".
    """
    broker = start_broker(tmp_path / "collector-listener", deployment.credentials)
    inventory = parse_inventory(INVENTORY)
    configs = [collector_config(tmp_path, broker, deployment.credentials, shard)
               for shard in ("0/1", "1/2")]
    assert all(not c.broker.tls for c in configs)
    states = [FleetState(inventory.shard(c.shard_index, c.shard_count), render_delay=0)
              for c in configs]
    assert all(set(s.sites) == {SITE, OTHER} for s in states), "shard 1/2 has both sites"
    intakes = [Ingest(state, c.broker, client_id=c.client_id, per_site=c.shard_count > 1)
               for state, c in zip(states, configs, strict=True)]
    senders = [CommandSender(c.broker, f"{c.client_id}-cmd", c.prefix) for c in configs]
    seq = itertools.count(1)
    try:
        for part in (*intakes, *senders):
            part.start()
        for name in (SITE, OTHER):
            agent = clients(name, broker=broker)
            assert agent.start() == 0
            agent.subscribe(topic(name, "cmd"))

            def arrived(agent: Client = agent, name: str = name) -> bool:
                # Again until both intakes have it: the first may precede a SUBSCRIBE.
                assert agent.publish(*telemetry(name, next(seq))) == 0
                return all(s.sites[name].tracker.received for s in states)

            wait_until(arrived, 30, f"{name}'s telemetry at both intakes", interval=0.2)
            for sender in senders:
                sender.send(inventory.sites[name], COMMAND, {})
                agent.wait(lambda e: e.kind == "message", f"{name}'s command")
    finally:
        for part in (*senders, *intakes):
            part.stop()
        broker.stop()
    log = broker.log()
    assert "already connected" not in log, "a collector connection was replaced"
    named = {client_id for client_id, user in CONNECTED_AS.findall(log)
             if user == COLLECTOR_USER}
    ids = {c.client_id for c in configs}
    assert ids == {"bridgewatch-collector", "bridgewatch-collector-1-of-2"}
    assert named == ids | {f"{i}-cmd" for i in ids}


def test_on_the_sites_listener_the_collectors_connections_would_replace_each_other(
        clients: Callable[..., Client]) -> None:
    """Why the collector has a listener of its own. Tried: its intake's session, then a
    second connection of its user (the command sender, a shard) on the sites' listener.

    The second one gets the same client id (its user name): it disconnects the first and
    takes its session over, subscriptions included, so the sites' telemetry goes to a
    client that does not read it. A collector.yaml still pointing at 8883 loses data.
    """
    intake = clients(COLLECTOR_USER, client_id="bridgewatch-collector", session_seconds=600,
                     sites_listener=True)
    assert intake.start() == 0
    assert intake.subscribe("bridgewatch/v1/+/+/telemetry") == 1
    sender = clients(COLLECTOR_USER, client_id="bridgewatch-collector-cmd",
                     session_seconds=600, sites_listener=True)
    assert sender.start() == 0
    assert sender.seen[-1].session_present, "the intake's session"
    intake.wait(lambda e: e.kind == "disconnect", "the intake to be disconnected")
    site = clients(SITE)
    assert site.start() == 0
    assert site.publish(topic(SITE, "telemetry"), b"to-the-wrong-client") == 0
    sender.wait(lambda e: e.payload == b"to-the-wrong-client", "the telemetry at the sender")


def test_the_collector_reads_data_and_writes_commands_only(
        clients: Callable[..., Client]) -> None:
    """Tried: the collector publishing telemetry and state as a site, and reading commands."""
    collector = collector_listening(clients, "telemetry", "cmd")
    for kind in ("telemetry", "state", "test"):
        assert collector.publish(topic(SITE, kind), b"forged") == NOT_AUTHORIZED, kind
    site = clients(SITE)
    assert site.start() == 0
    site.subscribe(topic(SITE, "cmd"))
    assert collector.publish(topic(SITE, "cmd"), b"run-test") == 0
    site.wait(lambda e: e.payload == b"run-test", "the collector's command")
    # Routed before the site's next telemetry: once that arrives, the command would have.
    assert site.publish(topic(SITE, "telemetry"), b"after-the-command") == 0
    collector.wait(lambda e: e.payload == b"after-the-command", "the site's telemetry")
    assert collector.messages() == [b"after-the-command"], "nothing forged, no command read"


def test_the_wires_largest_message_passes_and_a_larger_one_does_not(
        deployment: Deployment, clients: Callable[..., Client]) -> None:
    """Tried: 60 KiB and 64 KiB (the wire's limit) payloads, then one byte over the limit.

    Mosquitto 2.0.11 answers the oversized QoS 1 publish with PUBACK reason 0x95, which
    MQTT 5 does not allow in a PUBACK: paho takes it as a malformed packet and drops the
    connection. Either way the message goes nowhere.
    """
    collector = collector_listening(clients, "telemetry")
    site = clients(SITE)
    assert site.start() == 0
    for size in (60 * 1024, MAX_PAYLOAD_BYTES):
        payload = bytes([size % 251]) * size
        assert site.publish(topic(SITE, "telemetry"), payload) == 0
        collector.wait(lambda e, p=payload: e.payload == p, f"a {size}-byte payload")
    limit = int(re.search(r"(?m)^message_size_limit (\d+)$", SHIPPED.read_text())[1])
    assert MAX_PAYLOAD_BYTES < limit <= MAX_PAYLOAD_BYTES + 8192, "the wire's, plus a margin"
    # Another site: a second connection of the same would replace the first (one client
    # id per user on the sites' listener).
    oversized = clients(OTHER)
    assert oversized.start() == 0
    mid = oversized.client.publish(topic(OTHER, "telemetry"), b"y" * (limit + 1), qos=1).mid
    end = oversized.wait(lambda e: e.kind == "disconnect" or (e.kind == "puback"
                                                              and e.mid == mid), "a refusal")
    assert end is not None and (end.kind == "disconnect" or end.code >= 128), end
    oversized.client.loop_stop()  # paho would resend it on every reconnect
    assert site.publish(topic(SITE, "telemetry"), b"after") == 0
    collector.wait(lambda e: e.payload == b"after", "the next message")
    assert max(len(p) for p in collector.messages()) == MAX_PAYLOAD_BYTES


# ---- a collector's backlog --------------------------------------------------------------

BACKLOG = 2500  # 2.5x Mosquitto's default queue: about two minutes of a 200-bridge province


def queue_backlog(clients: Callable[..., Client], broker: Mosquitto, name: str) -> Client:
    """A collector session that subscribes, goes away, and misses BACKLOG messages."""
    away = clients(COLLECTOR_USER, client_id=name, session_seconds=3600, broker=broker)
    assert away.start() == 0
    away.subscribe("bridgewatch/v1/+/+/telemetry")
    away.stop()
    site = clients(SITE, broker=broker)
    assert site.start() == 0
    payload = b"t" * 2900  # the size of real telemetry (README, Scale)
    mids = {site.client.publish(topic(SITE, "telemetry"), b"%06d" % n + payload, qos=1).mid
            for n in range(BACKLOG)}
    while mids:  # every one accepted by the broker before the collector returns
        event = site.wait(lambda e: e.kind == "puback", "PUBACKs")
        assert event is not None and event.code == 0, event
        mids.discard(event.mid)
    back = clients(COLLECTOR_USER, client_id=name, session_seconds=3600, broker=broker)
    assert back.start() == 0
    return back


def test_a_collector_that_was_away_gets_its_whole_backlog(
        deployment: Deployment, clients: Callable[..., Client]) -> None:
    """Tried: 2,500 messages queued for the collector's persistent session while it is
    offline, on the shipped settings: every one arrives, once, in order."""
    back = queue_backlog(clients, deployment.broker, "collector-backlog")
    seen: list[int] = []
    while len(seen) < BACKLOG:
        event = back.wait(lambda e: e.kind == "message", f"message {len(seen)} of the backlog")
        assert event is not None
        seen.append(int(event.payload[:6]))
    assert seen == list(range(BACKLOG))


def test_mosquittos_default_queue_would_drop_that_backlog(
        deployment: Deployment, clients: Callable[..., Client], tmp_path: Path) -> None:
    """The same backlog with only max_queued_messages back at Mosquitto's default (1000):
    the collector gets 1000 messages, the rest is gone, and the broker's log (error,
    warning, notice) does not say so. What the shipped setting is for."""
    broker = start_broker(tmp_path / "default-queue", deployment.credentials,
                          extra="max_queued_messages 1000\n")
    try:
        back = queue_backlog(clients, broker, "collector-default-queue")
        fence = clients(OTHER, broker=broker)  # SITE's connection is still up
        assert fence.start() == 0
        assert fence.publish(topic(OTHER, "telemetry"), b"fence") == 0
        back.wait(lambda e: e.payload == b"fence", "the message sent after the backlog")
        got = [m for m in back.messages() if m != b"fence"]
        assert len(got) == 1000 < BACKLOG
        # Silently: Mosquitto 2.0.11 says so only in its debug log, which nobody runs.
        assert "dropped" not in broker.log().lower()
    finally:
        broker.stop()
