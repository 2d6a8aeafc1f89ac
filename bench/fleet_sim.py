"""A fleet simulator: thousands of bridges, each over its own MQTT connection, like agents.

bench/loadgen.py pushes a rate through one connection; a national fleet is many slow
connections instead, and that is what a broker and the subscribers behind it must hold:
20,000 sockets, 20,000 sessions with a Last Will, 20,000 retained states. Each simulated
bridge connects as an agent does (MQTT v5, clean start off with a session expiry, a
retained QoS 1 Last Will on its state topic), subscribes to its command topic, publishes
its retained "online" state, then one telemetry message every interval at its own phase
(the fleet's phases are spread evenly over the interval), QoS 1, counting PUBACKs.

Payloads are real wire-v1 telemetry from bench/fleetdata.py: ``rounds`` consecutive
intervals of each site's simulated PC, encoded up front and replayed in a cycle (room
probes every 6th round, counters moving), with seq and ts written in at send
(bench/loadgen.py's templates), so a message costs microseconds here and the CPU stays
with what is measured.

A worker process drives its share of the bridges with epoll (``selectors``), raising its
open-file limit to the hard limit. :class:`Fleet` starts the workers, each against one
broker port, and talks to them over pipes: JSON status lines out, ``go <epoch>`` and
``stop`` in.

    python -m bench.fleet_sim --port P --sites N [--interval 10] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from agent import wire
from agent.broker import DEFAULT_SESSION_EXPIRY_SECONDS
from bench.fleetdata import PROVINCE, FleetFeed, inventory_part
from bench.loadgen import Template, connect_packet, publish_packet, split_packets
from collector.mqtt_intake import subscribe_packet

ROOT = Path(__file__).parents[1]
SUBSCRIBE_PID, STATE_PID = 1, 2  # telemetry packet ids cycle over 3..65535
MAX_CONNECTING = 50  # connections opened but not yet acknowledged: no SYN-queue overflow
STOP_DRAIN_SECONDS = 60.0

_CONNACK, _PUBLISH, _PUBACK, _SUBACK, _PINGRESP, _DISCONNECT = 2, 3, 4, 9, 13, 14
_PINGREQ = b"\xc0\x00"
_DISCONNECT_NORMAL = b"\xe0\x00"  # v5, reason 0: the broker drops the Last Will
_IDLE, _CONNECTING, _WAIT_CONNACK, _READY, _CLOSED = range(5)


def raise_fd_limit(needed: int) -> int:
    """Soft open-file limit up to the hard one; the hard one, or an error naming it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and needed > hard:
        raise RuntimeError(f"{needed} open files needed, the hard limit (ulimit -Hn) is {hard}")
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Bridge:
    """One simulated bridge: its socket, what waits to be written, where it stands."""

    __slots__ = ("inbuf", "index", "last_sent", "out", "seq", "sock", "stage")

    def __init__(self, index: int) -> None:
        self.index = index
        self.sock: socket.socket | None = None
        self.out = bytearray()
        self.inbuf = bytearray()
        self.stage = _IDLE
        self.seq = 0
        self.last_sent = 0.0


@dataclass
class Counts:
    """What a worker (or the whole fleet) did so far; ``t`` is when it was counted."""

    t: float = 0.0
    bridges: int = 0
    connected: int = 0
    sent: int = 0  # telemetry messages written
    acked: int = 0  # telemetry PUBACKs
    state_acked: int = 0
    late: int = 0  # messages sent more than a second after their due time
    closed: int = 0  # connections the broker closed, or that failed to open

    def __add__(self, other: Counts) -> Counts:
        merged = Counts(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                           for f in fields(self) if f.name != "t"})
        merged.t = min(self.t, other.t) if self.t and other.t else self.t or other.t
        return merged


class Worker:
    """Sites ``[first, first + count)`` of an N-site fleet, on one broker port."""

    def __init__(self, port: int, sites: int, first: int, count: int, interval: float,
                 rounds: int, keepalive: int) -> None:
        raise_fd_limit(count + 64)
        self.port, self.interval, self.keepalive = port, interval, keepalive
        feed = FleetFeed(inventory_part(sites, first, first + count), interval, seed=first + 1)
        feed.next_round()  # the start-up round carries every room probe at once: skip it
        self.templates: list[list[Template]] = [[] for _ in range(count)]
        for _ in range(rounds):
            for index, (topic, payload) in enumerate(feed.next_round()):
                self.templates[index].append(Template(topic, payload))
        now = time.time()
        self.hello: list[bytes] = []  # CONNECT with the Will, then SUBSCRIBE and online state
        for site in feed.sites:
            def state(name: str, site_id: str = site.id) -> bytes:
                return wire.encode(wire.State(PROVINCE, site_id, 0, 1, now, name, "fleet-sim",
                                              site_id, "Linux"))
            state_topic = wire.topic(wire.DEFAULT_PREFIX, PROVINCE, site.id, wire.Kind.STATE)
            cmd_topic = wire.topic(wire.DEFAULT_PREFIX, PROVINCE, site.id, wire.Kind.CMD)
            self.hello.append(connect_packet(site.id, keepalive, DEFAULT_SESSION_EXPIRY_SECONDS,
                                             (state_topic.encode(), state("offline"))))
            self.hello.append(subscribe_packet(SUBSCRIBE_PID, [cmd_topic])
                              + publish_packet(state_topic.encode(), STATE_PID, state("online"),
                                               retain=True))
        self.phases = [(first + i) * interval / sites for i in range(count)]
        self.bridges = [Bridge(i) for i in range(count)]
        self.counts = Counts(bridges=count)
        self.selector = selectors.DefaultSelector()
        self.start_at: float | None = None
        self.stop_at: float | None = None
        self.next_message = 0

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        self.selector.register(sys.stdin.fileno(), selectors.EVENT_READ, None)
        self._say("ready")
        opened, told_connected, next_status, next_ping = 0, False, 0.0, 0.0
        while True:
            now = time.time()
            connecting = opened - self.counts.connected - self.counts.closed
            while opened < len(self.bridges) and connecting < MAX_CONNECTING:
                self._open(self.bridges[opened])
                opened, connecting = opened + 1, connecting + 1
            if not told_connected and self.counts.connected + self.counts.closed == opened \
                    == len(self.bridges):
                told_connected = True
                self._say("connected")
            if self.start_at is not None and self.stop_at is None:
                self._publish_due(now)
            if now >= next_ping:
                self._ping_idle(now)
                next_ping = now + 1
            if now >= next_status:
                self._say("status")
                next_status = now + 1
            if self.stop_at is not None and (self.counts.acked >= self.counts.sent
                                             or now > self.stop_at + STOP_DRAIN_SECONDS):
                break
            for key, mask in self.selector.select(self._timeout(now)):
                if key.data is None:
                    self._command(sys.stdin.readline())
                else:
                    self._event(key.data, mask)
        for bridge in self.bridges:
            if bridge.stage == _READY:
                self._send(bridge, _DISCONNECT_NORMAL)
            if bridge.sock is not None:
                bridge.sock.close()
        self._say("done")

    def _timeout(self, now: float) -> float:
        if self.start_at is None or self.stop_at is not None:
            return 0.05
        return min(0.05, max(0.0, self._due(self.next_message) - now))

    def _due(self, message: int) -> float:
        assert self.start_at is not None
        rounds, index = divmod(message, len(self.bridges))
        return self.start_at + self.phases[index] + rounds * self.interval

    def _publish_due(self, now: float) -> None:
        while self._due(self.next_message) <= now:
            bridge = self.bridges[self.next_message % len(self.bridges)]
            if now - self._due(self.next_message) > 1.0:
                self.counts.late += 1
            self.next_message += 1
            if bridge.stage != _READY:
                continue
            templates = self.templates[bridge.index]
            bridge.seq += 1
            packet = templates[(bridge.seq - 1) % len(templates)].fill(
                3 + bridge.seq % 65533, bridge.seq, time.time())
            self._send(bridge, packet)
            self.counts.sent += 1

    def _ping_idle(self, now: float) -> None:
        for bridge in self.bridges:
            if bridge.stage == _READY and now - bridge.last_sent > self.keepalive / 2:
                self._send(bridge, _PINGREQ)

    def _command(self, line: str) -> None:
        words = line.split()
        if not line:  # EOF: the front went away
            self.selector.unregister(sys.stdin.fileno())
        if (not line or words[:1] == ["stop"]) and self.stop_at is None:
            self.stop_at = time.time()
        elif words[:1] == ["go"]:
            self.start_at = float(words[1])

    def _say(self, event: str) -> None:
        self.counts.t = time.time()
        print(json.dumps({"event": event, **self.counts.__dict__}), flush=True)

    # -- one connection --------------------------------------------------------------------

    def _open(self, bridge: Bridge) -> None:
        sock = bridge.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))
        bridge.stage = _CONNECTING
        self.selector.register(sock, selectors.EVENT_WRITE, bridge)

    def _send(self, bridge: Bridge, data: bytes) -> None:
        assert bridge.sock is not None
        bridge.last_sent = time.time()
        if bridge.out:
            bridge.out += data
            return
        try:
            sent = bridge.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(bridge)
            return
        if sent < len(data):
            bridge.out += data[sent:]
            self.selector.modify(bridge.sock, selectors.EVENT_READ | selectors.EVENT_WRITE,
                                 bridge)

    def _close(self, bridge: Bridge) -> None:
        if bridge.stage == _CLOSED:
            return
        if bridge.stage == _READY:
            self.counts.connected -= 1
        bridge.stage = _CLOSED
        self.counts.closed += 1
        if bridge.sock is not None:
            self.selector.unregister(bridge.sock)
            bridge.sock.close()
            bridge.sock = None

    def _event(self, bridge: Bridge, mask: int) -> None:
        sock = bridge.sock
        if sock is None:
            return
        if bridge.stage == _CONNECTING:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._close(bridge)
                return
            bridge.stage = _WAIT_CONNACK
            self.selector.modify(sock, selectors.EVENT_READ, bridge)
            self._send(bridge, self.hello[2 * bridge.index])
            return
        if mask & selectors.EVENT_WRITE and bridge.out:
            try:
                sent = sock.send(bridge.out)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close(bridge)
                return
            del bridge.out[:sent]
            if not bridge.out:
                self.selector.modify(sock, selectors.EVENT_READ, bridge)
        if mask & selectors.EVENT_READ:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close(bridge)
                return
            bridge.inbuf += data
            for kind, body in split_packets(bridge.inbuf):
                self._packet(bridge, kind, body)

    def _packet(self, bridge: Bridge, kind: int, body: bytes) -> None:
        if kind == _PUBACK:
            if body[:2] == STATE_PID.to_bytes(2, "big"):
                self.counts.state_acked += 1
            else:
                self.counts.acked += 1
        elif kind == _CONNACK:
            if len(body) < 2 or body[1] >= 0x80:
                print(f"bridge {bridge.index}: CONNACK refused {body[:2].hex()}",
                      file=sys.stderr)
                self._close(bridge)
                return
            bridge.stage = _READY
            self.counts.connected += 1
            self._send(bridge, self.hello[2 * bridge.index + 1])
        elif kind == _DISCONNECT:
            print(f"bridge {bridge.index}: broker disconnected it ({body[:1].hex()})",
                  file=sys.stderr)
            self._close(bridge)
        elif kind == _PUBLISH:  # a command: this bench orders none, so one is worth a line
            print(f"bridge {bridge.index}: unexpected command", file=sys.stderr)


# -- the front: workers as child processes ------------------------------------------------


@dataclass(frozen=True)
class Share:
    port: int
    first: int
    count: int


def plan(sites: int, ports: Sequence[int], per_worker: int) -> list[Share]:
    """Contiguous shares of the fleet, as many per broker port, each within ``per_worker``."""
    per_port = math.ceil(math.ceil(sites / per_worker) / len(ports))
    workers = per_port * len(ports)
    bounds = [round(i * sites / workers) for i in range(workers + 1)]
    return [Share(ports[i // per_port], bounds[i], bounds[i + 1] - bounds[i])
            for i in range(workers) if bounds[i + 1] > bounds[i]]


class Fleet:
    """N simulated bridges over N connections, spread over worker processes and ports."""

    def __init__(self, ports: Sequence[int], sites: int, interval: float, workdir: Path,
                 rounds: int = 6, per_worker: int = 10_000, keepalive: int = 30) -> None:
        self.sites, self.interval = sites, interval
        self.shares = plan(sites, ports, per_worker)
        self.workdir = workdir
        self.rounds, self.keepalive = rounds, keepalive
        self.procs: list[subprocess.Popen[str]] = []
        self.latest: list[dict[str, float]] = []
        self.events: list[set[str]] = []
        self._changed = threading.Condition()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self, timeout: float = 600) -> float:
        """Start the workers and connect every bridge; return how long connecting took."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for number, share in enumerate(self.shares):
            log = open(self.workdir / f"fleet-{number}.log", "ab")  # noqa: SIM115 - the child's
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.fleet_sim", "worker", "--port", str(share.port),
                 "--sites", str(self.sites), "--first", str(share.first), "--count",
                 str(share.count), "--interval", str(self.interval), "--rounds",
                 str(self.rounds), "--keepalive", str(self.keepalive)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
            log.close()
            self.procs.append(proc)
            self.latest.append({})
            self.events.append(set())
            threading.Thread(target=self._read, args=(number,), daemon=True).start()
        self._wait("ready", timeout)
        started = time.monotonic()
        self._wait("connected", timeout)
        return time.monotonic() - started

    def go(self, at: float) -> None:
        """Start publishing: bridge i's first telemetry at ``at + i * interval / N``."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(f"go {at!r}\n")
            proc.stdin.flush()

    def counts(self) -> Counts:
        with self._changed:
            return sum((Counts(**latest) for latest in self.latest), Counts())

    def stop(self, timeout: float = STOP_DRAIN_SECONDS + 30) -> Counts:
        """Stop publishing, wait for the PUBACKs, disconnect; the final counts."""
        for proc in self.procs:
            if proc.poll() is None and proc.stdin is not None:
                proc.stdin.write("stop\n")
                proc.stdin.flush()
        try:
            self._wait("done", timeout)
        finally:
            self.kill()
        return self.counts()

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def _read(self, number: int) -> None:
        proc = self.procs[number]
        assert proc.stdout is not None
        for line in proc.stdout:
            message = json.loads(line)
            with self._changed:
                self.events[number].add(message.pop("event"))
                self.latest[number] = message
                self._changed.notify_all()
        with self._changed:
            self.events[number].add("exited")
            self._changed.notify_all()

    def _wait(self, event: str, timeout: float) -> None:
        def settled() -> bool:
            return all(event in seen or "exited" in seen for seen in self.events)

        with self._changed:
            if not self._changed.wait_for(settled, timeout):
                raise TimeoutError(f"fleet workers not {event} within {timeout:.0f} s: "
                                   f"{self.counts()}")
            failed = [n for n, seen in enumerate(self.events) if event not in seen]
        if failed:
            logs = (self.workdir / f"fleet-{failed[0]}.log").read_text()[-2000:]
            raise RuntimeError(f"fleet worker(s) {failed} exited before '{event}':\n{logs}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sites", type=int, default=3400)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--keepalive", type=int, default=30)
    if argv[:1] == ["worker"]:
        parser.add_argument("--first", type=int, required=True)
        parser.add_argument("--count", type=int, required=True)
        args = parser.parse_args(argv[1:])
        Worker(args.port, args.sites, args.first, args.count, args.interval, args.rounds,
               args.keepalive).run()
        return
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workdir", default=".fleet-sim")
    args = parser.parse_args(argv)
    fleet = Fleet([args.port], args.sites, args.interval, Path(args.workdir), args.rounds,
                  keepalive=args.keepalive)
    try:
        took = fleet.start()
        fleet.go(time.time() + 0.5)
        time.sleep(args.seconds)
        counts = fleet.stop()
    finally:
        fleet.kill()
    print(json.dumps({"connect_seconds": took, **counts.__dict__}))


if __name__ == "__main__":
    main()
