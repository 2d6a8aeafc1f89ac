"""`bridgewatch-agent simulate`: many simulated bridges over real MQTT, for the demo and bench/.

Each simulated site behaves on the wire like a real agent, so the collector cannot tell
them apart: its own MQTT connection (client id = site id), a retained ``online`` state
with a retained ``offline`` Last Will, and a QoS1 telemetry message every interval whose
values come from ``agent.simulated_pc`` and pass ``wire.decode`` before they are sent.
``conn`` is the unix time in ms at each connect, so a rerun always beats an old will.

All clients share ONE thread: a ``selectors`` (epoll) loop drives paho's
loop_read/loop_write/loop_misc through its socket callbacks, and a timer heap wakes each
site when it has something to do. Limits: one socket per site, so the open-file limit
(``ulimit -n``, raised to the hard limit here when needed) and the broker's own limit
cap the fleet; a connect to an unreachable broker blocks the loop up to paho's 5 s
connect timeout per site, so point it at a broker that is up.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import logging
import random
import resource
import selectors
import signal
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent import __version__, wire
from agent.broker import BrokerSettings, connect_async, make_client
from agent.simulated_pc import SimulatedPc
from collector.inventory import Site, load_inventory

log = logging.getLogger("bridgewatch.simulate")

AGENT_VERSION = f"{__version__}+sim"
OS_NAME = "Ubuntu 22.04.5 LTS"
# MQTT v5 reason 4: the broker publishes the Last Will, exactly as when a PC drops off.
DROP_WITH_WILL = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
FLAKY_ONLINE_INTERVALS = (8, 20)
FLAKY_OFFLINE_INTERVALS = (4, 9)
SHUTDOWN_SECONDS = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inventory", required=True, help="the collector's site inventory YAML")
    parser.add_argument("--broker-host", default="127.0.0.1")
    parser.add_argument("--broker-port", type=int, default=1883)
    parser.add_argument("--prefix", default=wire.DEFAULT_PREFIX)
    parser.add_argument("--interval", type=float, default=10.0, metavar="SECONDS",
                        help="seconds between telemetry messages of one site")
    parser.add_argument("--sites", type=int, default=None, metavar="N",
                        help="simulate only the first N sites of the inventory")
    parser.add_argument("--skip", action="append", default=[], metavar="SITE",
                        help="a site served by a real agent (repeatable)")
    parser.add_argument("--flaky", type=int, default=0, metavar="N",
                        help="N member sites that drop offline now and then and come back")
    parser.add_argument("--seed", type=int, default=None, help="repeatable values per site")


class SimulatedSite:
    """One bridge: its MQTT connection, its stream counters and its PC."""

    def __init__(self, site: Site, args: argparse.Namespace, settings: BrokerSettings,
                 epoch: int, rng: random.Random, wake: Callable[[SimulatedSite, float], None]):
        self.site = site
        self.prefix = args.prefix
        self.interval = args.interval
        self.settings = settings
        self.epoch = epoch
        self.rng = rng
        self.wake = wake
        self.pc = SimulatedPc(site.level, site.bandwidth_bits_per_second, rng, time.time())
        self.conn = 0
        self.seq = 0
        self.want_online = True
        now = time.monotonic()
        self.retry_at = now
        self.backoff = settings.reconnect_min_seconds
        self.publish_at = now + rng.uniform(0, self.interval)  # spread sites over the interval
        self.flip_at: float | None = None
        self.tests: list[tuple[float, wire.Command]] = []  # ordered tests: (due, order)
        self.client = make_client(settings, site.id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        connect_async(self.client, settings)

    def make_flaky(self) -> None:
        self.flip_at = self.publish_at + self.interval * self.rng.randint(*FLAKY_ONLINE_INTERVALS)

    def topic(self, kind: wire.Kind) -> str:
        return wire.topic(self.prefix, self.site.province, self.site.id, kind)

    def _state(self, state: str) -> bytes:
        return wire.encode(wire.State(
            self.site.province, self.site.id, seq=self.seq, conn=self.conn, ts=time.time(),
            state=state, agent_version=AGENT_VERSION, hostname=f"pc-{self.site.id}", os=OS_NAME))

    def step(self, now: float) -> float:
        """Do whatever is due (flip, connect, publish); return when to wake next."""
        if self.flip_at is not None and now >= self.flip_at:
            self._flip(now)
        if self.want_online and self.client.socket() is None and now >= self.retry_at:
            self._connect(now)
        if now >= self.publish_at:
            self.pc.advance(self.interval)
            if self.client.is_connected():
                self._publish_telemetry()
            self.publish_at += self.interval
            if self.publish_at < now:  # the loop fell behind: skip, do not burst
                self.publish_at = now + self.interval
        if self.tests and now >= self.tests[0][0] and self.client.is_connected():
            self._publish_test(self.tests.pop(0)[1])
        due = [self.publish_at, *(at for at, _ in self.tests[:1])]
        if self.want_online and self.client.socket() is None:
            due.append(self.retry_at)
        if self.flip_at is not None:
            due.append(self.flip_at)
        return min(due)

    def _flip(self, now: float) -> None:
        self.want_online = not self.want_online
        span = FLAKY_ONLINE_INTERVALS if self.want_online else FLAKY_OFFLINE_INTERVALS
        self.flip_at = now + self.interval * self.rng.randint(*span)
        if self.want_online:
            log.info("%s: back online", self.site.id)
            self.retry_at = now
        elif self.client.socket() is not None:
            log.info("%s: dropping offline (Last Will)", self.site.id)
            self.client.disconnect(reasoncode=DROP_WITH_WILL)

    def _connect(self, now: float) -> None:
        self.conn = max(self.conn + 1, int(time.time() * 1000))
        self.client.will_set(self.topic(wire.Kind.STATE), self._state("offline"), qos=1,
                             retain=True)
        try:
            self.client.reconnect()
        except OSError as err:
            log.warning("%s: cannot reach the broker (%s); retry in %.0f s", self.site.id, err,
                        self.backoff)
            self._retry_later(now)

    def _retry_later(self, now: float) -> None:
        self.retry_at = now + self.backoff
        self.backoff = min(self.backoff * 2, self.settings.reconnect_max_seconds)
        self.wake(self, self.retry_at)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any,
                    reason: ReasonCode, properties: Any) -> None:
        if reason.is_failure:
            log.warning("%s: broker refused the connection: %s", self.site.id, reason)
            return  # the broker closes the socket; _on_disconnect schedules the retry
        self.backoff = self.settings.reconnect_min_seconds
        client.publish(self.topic(wire.Kind.STATE), self._state("online"), qos=1, retain=True)
        client.subscribe(self.topic(wire.Kind.CMD), qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any,
                    message: mqtt.MQTTMessage) -> None:
        """A test order from the collector: answered after the time a real test takes."""
        try:
            command = wire.decode(message.payload, wire.Kind.CMD, now=time.time())
        except wire.WireError as err:
            log.warning("%s: bad command: %s", self.site.id, err)
            return
        assert isinstance(command, wire.Command)
        test_id = command.args.get("test_id")
        if command.command != "run-test" or not isinstance(test_id, str) or any(
                test_id == c.args["test_id"] for _, c in self.tests):
            return
        self.tests.append((time.monotonic() + self.rng.uniform(15, 30), command))
        self.wake(self, self.tests[0][0])

    def _publish_test(self, order: wire.Command) -> None:
        self.seq += 1
        session = order.args.get("session_seconds")
        criteria = self.pc.readiness_test(session if isinstance(session, (int, float))
                                          else None)
        message = wire.TestResult(
            self.site.province, self.site.id, self.epoch, self.seq, floor=self.seq,
            ts=time.time(), test_id=str(order.args["test_id"]),
            trigger=str(order.args.get("trigger", "schedule")),
            passed=all(c.ok for c in criteria), criteria=criteria)
        payload = wire.encode(message)
        wire.decode(payload, wire.Kind.TEST, now=time.time())
        self.client.publish(self.topic(wire.Kind.TEST), payload, qos=1)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason: ReasonCode, properties: Any) -> None:
        if self.want_online:
            log.warning("%s: connection lost (%s); retry in %.0f s", self.site.id, reason,
                        self.backoff)
            self._retry_later(time.monotonic())

    def _publish_telemetry(self) -> None:
        self.seq += 1
        message = wire.Telemetry(self.site.province, self.site.id, self.epoch, self.seq,
                                 floor=self.seq, ts=time.time(),
                                 probes=self.pc.probes(self.interval))
        payload = wire.encode(message)
        # Never send what a real agent could not: the collector's own validation, first.
        wire.decode(payload, wire.Kind.TELEMETRY, now=time.time())
        self.client.publish(self.topic(wire.Kind.TELEMETRY), payload, qos=1)

    def go_offline(self) -> None:
        """Leave like a PC switched off: the broker publishes the retained offline will."""
        self.want_online = False
        if self.client.socket() is not None:
            self.client.disconnect(reasoncode=DROP_WITH_WILL)


class Fleet:
    """Many sites on one thread: one selector for every socket, one heap for every timer."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.sites: list[SimulatedSite] = []
        self.timers: list[tuple[float, int, SimulatedSite]] = []
        self.wakes: dict[str, tuple[float, int]] = {}  # site id -> its one live timer
        self.tokens = itertools.count()

    def add(self, site: SimulatedSite) -> None:
        client = site.client
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._written
        self.sites.append(site)
        self.schedule(site, time.monotonic())

    def schedule(self, site: SimulatedSite, when: float) -> None:
        """Wake ``site`` at ``when`` unless it already wakes earlier; older timers go stale."""
        live = self.wakes.get(site.site.id)
        if live is not None and live[0] <= when:
            return
        token = next(self.tokens)
        self.wakes[site.site.id] = (when, token)
        heapq.heappush(self.timers, (when, token, site))

    def _socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.selector.register(sock, selectors.EVENT_READ, client)

    def _socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.selector.unregister(sock)

    def _want_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def _written(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.selector.modify(sock, selectors.EVENT_READ, client)

    def run(self, stopping: Callable[[], bool]) -> None:
        misc_at = 0.0
        while not stopping():
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, token, site = heapq.heappop(self.timers)
                if self.wakes[site.site.id][1] == token:
                    del self.wakes[site.site.id]
                    self.schedule(site, site.step(now))
            if now >= misc_at:
                self._misc()
                misc_at = now + 1.0
            timeout = min(misc_at, self.timers[0][0] if self.timers else misc_at) - now
            self._poll(max(0.0, min(timeout, 1.0)))

    def _poll(self, timeout: float) -> None:
        for key, events in self.selector.select(timeout):
            client: mqtt.Client = key.data
            if events & selectors.EVENT_READ:
                client.loop_read()
            if events & selectors.EVENT_WRITE and client.socket() is not None:
                client.loop_write()

    def _misc(self) -> None:
        for site in self.sites:
            site.client.loop_misc()  # keepalive pings

    def shutdown(self) -> None:
        for site in self.sites:
            site.go_offline()
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        while self.selector.get_map() and time.monotonic() < deadline:
            self._poll(0.1)
        self.selector.close()


def _choose_sites(args: argparse.Namespace) -> list[Site]:
    sites = list(load_inventory(args.inventory).sites.values())
    if args.sites is not None:
        sites = sites[: args.sites]
    unknown = set(args.skip) - {s.id for s in sites}
    if unknown:
        log.warning("--skip names sites not simulated anyway: %s", ", ".join(sorted(unknown)))
    return [s for s in sites if s.id not in set(args.skip)]


def _raise_open_file_limit(sockets: int) -> None:
    """One socket per site: lift the soft limit toward the hard one when the fleet needs it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = sockets + 64
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            raise SystemExit(f"{sockets} sites need {needed} open files; the hard limit is {hard}")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sites = _choose_sites(args)
    if not sites:
        log.error("no site to simulate in %s", args.inventory)
        return 2
    if args.interval <= 0:
        log.error("--interval must be positive")
        return 2
    _raise_open_file_limit(len(sites))
    settings = BrokerSettings(host=args.broker_host, port=args.broker_port)
    base_seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    epoch = int(time.time() * 1000)
    fleet = Fleet()
    for site in sites:
        rng = random.Random(f"{base_seed}/{site.id}")  # a site's values do not depend on --skip
        fleet.add(SimulatedSite(site, args, settings, epoch, rng, fleet.schedule))
    members = [s for s in fleet.sites if s.site.level == "member"] or fleet.sites
    flaky = random.Random(base_seed).sample(members, min(max(args.flaky, 0), len(members)))
    for site in flaky:
        site.make_flaky()
    log.info("simulating %d sites (%s flaky) on %s:%d every %g s, epoch %d, seed %d",
             len(sites), ", ".join(s.site.id for s in flaky) or "none", args.broker_host,
             args.broker_port, args.interval, epoch, base_seed)

    stop = False

    def request_stop(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        fleet.run(lambda: stop)
    finally:
        fleet.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped: every simulated site went offline")
    return 0
