"""A WAN between a bridge site and the central server, emulated with namespaces on this PC.

Link-quality code has to be judged against a link whose delay, jitter, loss and bandwidth
are known exactly, and netem is not available on these kernels. So the emulator is built
from what every Debian machine has: three network namespaces (site, wan, central), two
veth pairs, ``tc tbf`` for the bandwidth, nftables ``numgen`` for the loss and a user-space
delay line on a TUN device (``deploy.wan_relay``) for delay and jitter::

    site 198.18.1.2 --veth-- [site0  wan  central0] --veth-- central 198.18.2.2
                                  \\     |     /
                                   tun0 <-> relay (delay, jitter, packet log)

Addresses are in 198.18.0.0/15 (RFC 2544, benchmarking), so they can never collide with a
real network. In wan, the main table routes both subnets into tun0 and ``iif tun0`` is
policy-routed through table 100, which holds the real veth routes: every forwarded packet
passes through the relay exactly once, also with zero delay, so the base path is the same
whatever the settings. The wan router's own packets (``iif lo``) use table 100 directly.
"up" is site -> central, "down" is central -> site.

- Loss: ``numgen random mod 1000 < N drop`` in wan's forward chain, per direction, on the
  way into the relay (a dropped packet never shows in the relay log); named counters
  count what was dropped.
- Bandwidth: tbf on wan's egress of that direction (central0 up, site0 down), after the
  relay. ``burst`` is the larger of 2 ms at the rate and 4 full frames: tokens for the
  dequeue lateness of a busy host, so the cap is not undercut, yet small enough that the
  short-term rate stays near the cap. ``latency`` (queue) is 100 ms: CUBIC backs off to
  0.7 of its window on a loss, so the link stays busy only if the queue holds at least
  0.43 of the bandwidth-delay product, which 100 ms does for RTTs up to ~230 ms. A bulk
  TCP transfer then gets the cap minus header overhead (1448 payload bytes per 1514-byte
  frame: 95.6 %).

    with Wan(workdir) as wan:
        wan.set_delay("up", 0.020, jitter_seconds=0.005, seed=1)
        echo = wan.run("central", [sys.executable, "-m", "deploy.wan_traffic", ...], log)
        print(wan.check([sys.executable, "-m", "deploy.wan_traffic", "udp-ping", ...]))
        entries = wan.relay_log()

Everything (namespaces and with them the veths and tun0, the relay, every process started
with ``run``) is torn down on exit, also when building or the body failed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import psutil

from deploy.localstack import MissingPrerequisite, Process, find_binary, wait_until

Ns = Literal["site", "wan", "central"]
Direction = Literal["up", "down"]
NAMESPACES: tuple[Ns, ...] = ("site", "wan", "central")
DIRECTIONS: tuple[Direction, ...] = ("up", "down")
REPO = Path(__file__).resolve().parents[1]

SITE_NET, SITE_GW, SITE_IP = "198.18.1.0/24", "198.18.1.1", "198.18.1.2"
CENTRAL_NET, CENTRAL_GW, CENTRAL_IP = "198.18.2.0/24", "198.18.2.1", "198.18.2.2"
RELAY_TABLE = 100
# Per direction: the wan interface packets come in on, and the one they leave by.
INGRESS = {"up": "site0", "down": "central0"}
EGRESS = {"up": "central0", "down": "site0"}
FRAME_BYTES = 1514
TBF_LATENCY = "100ms"
RELAY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
STALE = re.compile(r"^bw-(\d+)-[0-9a-f]{4}-(?:site|wan|central)\b")  # see Wan.id
SEQ_OFFSET = 8  # a probe's u32 seq in its UDP payload (BWL1: magic, flags, 3 pad bytes)


class Wan:
    """Three namespaces with a shaped, delayed, lossy path between site and central."""

    site_ip = SITE_IP
    central_ip = CENTRAL_IP

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        # The creator's pid in every name: a leftover namespace says whose it was (and
        # whether its owner still runs), and a test can tell its own from a neighbour's.
        self.id = f"{os.getpid()}-{secrets.token_hex(2)}"
        self.names: dict[Ns, str] = {ns: f"bw-{self.id}-{ns}" for ns in NAMESPACES}
        self.relay_log_path = self.workdir / "relay.jsonl"
        self.env = {**os.environ,
                    "PYTHONPATH": os.pathsep.join(
                        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        self._processes: list[Process] = []
        self._relay: subprocess.Popen[bytes] | None = None
        self._shaped: set[Direction] = set()
        self._loss: dict[Direction, int] = {"up": 0, "down": 0}
        self._created: list[str] = []
        self._ip = self._tc = self._nft = self._sysctl = ""
        self.relay_policy = ""  # the scheduling the relay obtained, for reports

    # -- life cycle -----------------------------------------------------------------

    def __enter__(self) -> Wan:
        self._check_prerequisites()
        self._remove_stale()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _check_prerequisites(self) -> None:
        if os.geteuid() != 0:
            raise MissingPrerequisite("the WAN emulator needs root (network namespaces, tc, "
                                      "nftables, /dev/net/tun)")
        self._ip, self._tc = find_binary("ip"), find_binary("tc")
        self._nft, self._sysctl = find_binary("nft"), find_binary("sysctl")
        if not os.path.exists("/dev/net/tun"):
            raise MissingPrerequisite("/dev/net/tun is missing (modprobe tun)")

    def _build(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        names = self.names
        for ns in NAMESPACES:
            self._sh([self._ip, "netns", "add", names[ns]])
            self._created.append(names[ns])
            # No IPv6 (router solicitations would wander into tun0), no reverse-path filter:
            # in wan a packet enters by a veth whose subnet is routed into tun0.
            self._sysctl_set(ns, "net.ipv6.conf.all.disable_ipv6=1",
                             "net.ipv6.conf.default.disable_ipv6=1",
                             "net.ipv4.conf.all.rp_filter=0",
                             "net.ipv4.conf.default.rp_filter=0")
            self._ipn(ns, "link", "set", "lo", "up")
        self._sysctl_set("wan", "net.ipv4.ip_forward=1")
        for end, gw, addr, iface in (("site", SITE_GW, SITE_IP, "site0"),
                                     ("central", CENTRAL_GW, CENTRAL_IP, "central0")):
            self._ipn("wan", "link", "add", iface, "type", "veth",
                      "peer", "name", "wan0", "netns", names[end])
            self._ipn(end, "addr", "add", f"{addr}/24", "dev", "wan0")
            self._ipn(end, "link", "set", "wan0", "up")
            self._ipn(end, "route", "add", "default", "via", gw)
            # noprefixroute: the subnet must go to tun0 in the main table, not to the veth.
            self._ipn("wan", "addr", "add", f"{gw}/24", "dev", iface, "noprefixroute")
            self._ipn("wan", "link", "set", iface, "up")
        self._ipn("wan", "tuntap", "add", "dev", "tun0", "mode", "tun")
        self._start_relay()
        self._ipn("wan", "link", "set", "tun0", "up")
        for net, iface, gw in ((SITE_NET, "site0", SITE_GW), (CENTRAL_NET, "central0",
                                                               CENTRAL_GW)):
            self._ipn("wan", "route", "add", net, "dev", "tun0")
            self._ipn("wan", "route", "add", net, "dev", iface, "src", gw,
                      "table", str(RELAY_TABLE))
        self._ipn("wan", "rule", "add", "iif", "tun0", "lookup", str(RELAY_TABLE),
                  "priority", "100")
        # The wan router's own packets (a ping to a gateway answered) skip the relay: the
        # first hop is on the site's LAN, not across the WAN.
        self._ipn("wan", "rule", "add", "iif", "lo", "lookup", str(RELAY_TABLE),
                  "priority", "101")
        self._nft_apply("table inet bw {\n"
                        + "".join(f"  counter drop_{d} {{}}\n" for d in DIRECTIONS)
                        + "  chain forward { type filter hook forward priority filter; "
                          "policy accept; }\n}\n")

    def _start_relay(self) -> None:
        log = open(self.workdir / "relay.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self._relay = subprocess.Popen(
                [self._ip, "netns", "exec", self.names["wan"], sys.executable,
                 "-m", "deploy.wan_relay", "--tun", "tun0", "--up-net", CENTRAL_NET,
                 "--log", str(self.relay_log_path)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=self.env,
                start_new_session=True)
        finally:
            log.close()
        ready = self._relay_reply()
        if not ready.get("ready"):
            raise RuntimeError(f"relay did not start: {ready}")
        self.relay_policy = str(ready.get("policy"))

    def _remove_stale(self) -> None:
        """Delete the namespaces of emulators whose creator is dead (killed with SIGKILL,
        say, before it could tear down), so one hard kill does not leak them for good."""
        listing = self._sh([self._ip, "netns", "list"])
        for line in listing.splitlines():
            match = STALE.match(line)
            if match and not psutil.pid_exists(int(match[1])):
                self._delete_namespace(match[0])

    def _delete_namespace(self, name: str) -> str | None:
        """Kill what still runs in it, delete it; the error text if that failed."""
        # A process left in the namespace (one started behind our back) would keep it
        # alive after `ip netns del`.
        pids = subprocess.run([self._ip, "netns", "pids", name], capture_output=True,
                              text=True, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        done = subprocess.run([self._ip, "netns", "del", name], capture_output=True,
                              text=True, check=False)
        return None if done.returncode == 0 else f"{name}: {done.stderr.strip()}"

    def close(self) -> None:
        """Stop every process and delete the namespaces; safe to call twice."""
        for proc in self._processes:
            proc.stop(timeout=STOP_TIMEOUT)
        self._processes.clear()
        if self._relay is not None:
            self._stop_relay(self._relay)
            self._relay = None
        failures = [failure for name in reversed(self._created)
                    if (failure := self._delete_namespace(name)) is not None]
        self._created.clear()
        if failures:
            raise RuntimeError(f"could not delete namespaces: {failures}")

    @staticmethod
    def _stop_relay(relay: subprocess.Popen[bytes]) -> None:
        for stream in (relay.stdin, relay.stdout):
            if stream is not None:
                stream.close()  # EOF on its control pipe is the relay's signal to stop
        try:
            relay.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()

    # -- commands -------------------------------------------------------------------

    def _sh(self, argv: Sequence[str], input_text: str | None = None) -> str:
        done = subprocess.run(list(argv), input=input_text, capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): "
                               f"{done.stderr.strip()}")
        return done.stdout

    def _ipn(self, ns: Ns, *args: str) -> str:
        return self._sh([self._ip, "-n", self.names[ns], *args])

    def _exec_argv(self, ns: Ns, argv: Sequence[str]) -> list[str]:
        return [self._ip, "netns", "exec", self.names[ns], *argv]

    def _sysctl_set(self, ns: Ns, *settings: str) -> None:
        self._sh(self._exec_argv(ns, [self._sysctl, "-q", "-w", *settings]))

    def _nft_apply(self, script: str) -> None:
        self._sh(self._exec_argv("wan", [self._nft, "-f", "-"]), input_text=script)

    def run(self, ns: Ns, argv: Sequence[str], log: Path) -> Process:
        """Start a long-running program in a namespace; it is stopped at teardown.

        PYTHONPATH includes this repository, so ``python -m deploy...`` (or the agent's
        modules) work in there whatever the working directory.
        """
        proc = Process(self._exec_argv(ns, argv), log, env=self.env)
        self._processes.append(proc)
        proc.start()
        return proc

    def check(self, argv: Sequence[str], ns: Ns = "site", timeout: float = 120.0) -> str:
        """Run a short command in a namespace (the site by default: probes run there) and
        return its stdout; raise with its stderr when it fails."""
        done = subprocess.run(self._exec_argv(ns, argv), capture_output=True, text=True,
                              env=self.env, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {ns} failed ({done.returncode}):\n"
                               f"{done.stderr}{done.stdout}")
        return done.stdout

    # -- shaping --------------------------------------------------------------------

    def set_bandwidth(self, direction: Direction, mbit: float | None) -> None:
        """Cap one direction at ``mbit`` Mbit/s (tbf, L2 bytes), or lift the cap (None)."""
        iface = EGRESS[_direction(direction)]
        if mbit is None:
            if direction in self._shaped:
                self._sh([self._tc, "-n", self.names["wan"], "qdisc", "del", "dev", iface,
                          "root"])
                self._shaped.discard(direction)
            return
        if mbit <= 0:
            raise ValueError(f"bandwidth must be positive, got {mbit}")
        burst = max(int(mbit * 1e6 / 8 * 0.002), 4 * FRAME_BYTES)
        self._sh([self._tc, "-n", self.names["wan"], "qdisc", "replace", "dev", iface,
                  "root", "tbf", "rate", f"{mbit}mbit", "burst", str(burst),
                  "latency", TBF_LATENCY])
        self._shaped.add(direction)

    def set_loss(self, direction: Direction, ratio: float) -> None:
        """Drop ``ratio`` (0..1, in steps of 0.001) of one direction's packets at random."""
        per_mille = round(ratio * 1000)
        if not 0 <= per_mille <= 1000 or not math.isclose(per_mille, ratio * 1000,
                                                           abs_tol=1e-6):
            raise ValueError(f"loss ratio must be in [0, 1] in steps of 0.001, got {ratio}")
        self._loss[_direction(direction)] = per_mille
        # All of it (a link down) is a plain drop: nft refuses "mod 1000 < 1000".
        rules = "".join(
            f'add rule inet bw forward iifname "{INGRESS[d]}" oifname "tun0" '
            + (f"numgen random mod 1000 < {n} " if n < 1000 else "")
            + f'counter name "drop_{d}" drop\n'
            for d, n in self._loss.items() if n > 0)
        self._nft_apply("flush chain inet bw forward\n" + rules)

    def dropped(self, direction: Direction) -> int:
        """Packets of that direction the loss rule has dropped so far."""
        out = self._sh(self._exec_argv("wan", [self._nft, "-j", "list", "counter", "inet",
                                               "bw", f"drop_{_direction(direction)}"]))
        for item in json.loads(out)["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise RuntimeError(f"no counter in nft output: {out}")

    def set_delay(self, direction: Direction, seconds: float, jitter_seconds: float = 0.0,
                  seed: int = 0) -> None:
        """Hold each packet of a direction ``seconds`` + uniform(-jitter, +jitter).

        The jitter may not exceed the delay: clipping at zero would skew the stated
        distribution. Packets can overtake each other when the jitter exceeds their
        spacing, as on a real multi-path WAN. ``seed`` makes the sample sequence repeat.
        """
        if seconds < 0 or not 0 <= jitter_seconds <= seconds:
            raise ValueError(f"need 0 <= jitter ({jitter_seconds}) <= delay ({seconds})")
        reply = self._relay_request({"op": "set", "dir": _direction(direction),
                                     "delay": seconds, "jitter": jitter_seconds,
                                     "seed": seed})
        if not reply.get("ok"):
            raise RuntimeError(f"relay refused the delay: {reply}")

    # -- relay ----------------------------------------------------------------------

    def relay_log(self) -> list[dict[str, Any]]:
        """Every packet the relay has passed so far (see deploy.wan_relay for the fields)."""
        self._relay_request({"op": "flush"})
        with open(self.relay_log_path) as log:
            return [json.loads(line) for line in log]

    def applied_delays(self, direction: Direction, magic: bytes = b"BWL1",
                       since: int = 0) -> dict[int, float]:
        """seq -> seconds the relay held that probe on its way ``direction``: the delay it
        drew plus its release overshoot, i.e. what the probe's RTT gained over the
        zero-delay base path. Probes are UDP payloads starting with ``magic`` and carrying
        a u32 seq at bytes 8..12 (the agent's BWL1 layout). Only log entries from index
        ``since`` on count (``len(wan.relay_log())`` taken before a run); a seq seen twice
        there (a prober run again) maps to its latest packet."""
        wanted = _direction(direction)
        applied: dict[int, float] = {}
        for entry in self.relay_log()[since:]:
            seq = probe_seq(entry, magic)
            if seq is not None and entry["dir"] == wanted:
                # A packet passed straight through gained nothing over the base path.
                held = entry["delay"] > 0
                applied[seq] = entry["delay"] + entry["overshoot"] if held else 0.0
        return applied

    def _relay_request(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._relay is None or self._relay.stdin is None:
            raise RuntimeError("the relay is not running")
        self._relay.stdin.write((json.dumps(request) + "\n").encode())
        self._relay.stdin.flush()
        return self._relay_reply()

    def _relay_reply(self) -> dict[str, Any]:
        assert self._relay is not None and self._relay.stdout is not None
        line = _readline(self._relay.stdout, RELAY_TIMEOUT)
        if not line:
            log = (self.workdir / "relay.log").read_text(errors="replace")
            raise RuntimeError(f"the relay exited or hung; its log:\n{log}")
        return json.loads(line)


def _direction(direction: str) -> Direction:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    return direction  # type: ignore[return-value]


def _readline(stream: IO[bytes], timeout: float) -> bytes:
    """One line from a pipe, or b"" after ``timeout`` s or on EOF (a hung child must not
    hang the test)."""
    fd, line = stream.fileno(), b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return b""
        chunk = os.read(fd, 1)
        if not chunk:
            return b""
        line += chunk
    return line


def probe_seq(entry: dict[str, Any], magic: bytes) -> int | None:
    """The seq of a relay log entry whose UDP payload starts with ``magic``, else None."""
    payload = entry.get("payload", "")
    if len(payload) < 2 * (SEQ_OFFSET + 4) or not payload.startswith(magic.hex()):
        return None
    return int(payload[2 * SEQ_OFFSET:2 * SEQ_OFFSET + 8], 16)


def relay_accuracy(entries: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Release overshoot of the packets the relay actually held (delay > 0), in seconds."""
    late = sorted(e["overshoot"] for e in entries if e["delay"] > 0)
    if not late:
        return {"packets": 0}
    return {"packets": len(late), "p50": _quantile(late, 0.50), "p99": _quantile(late, 0.99),
            "max": late[-1]}


def _quantile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_reflector(wan: Wan, workdir: Path, key_file: Path, udp_port: int = 8620,
                    tcp_port: int = 8621) -> Process:
    """The real ``bridgewatch-reflector`` at the central site, started as an operator would."""
    config = workdir / "reflector.yaml"
    config.write_text(json.dumps({  # JSON is valid YAML
        "listen": "0.0.0.0", "udp_port": udp_port, "tcp_port": tcp_port,
        "key_file": str(key_file), "rate_limit_pps": 1000}))
    process = wan.run("central", [sys.executable, "-m", "collector.reflector", "--config",
                                  str(config)], workdir / "reflector.log")
    wait_until(lambda: "listening" in process.log().lower() or not process.running, 30,
               "the reflector to listen")
    if not process.running:
        raise RuntimeError(f"the reflector exited:\n{process.log()}")
    return process
