"""Link measurement error against known delay, jitter and loss, beside smokeping_prober.

A number is only as good as its error bar, so the agent's link measurement is run on the
emulated WAN of ``deploy.wan``, where the truth is known per packet: the relay logs the
delay (plus its own release lateness) it applied to every packet in each direction, and a
packet dropped by the loss rule never reaches the relay. In each case, in the same run,
on the same path and at the same packet rate:

- ours: ``python -m agent.link.measure --json`` at the site against
  ``python -m collector.reflector`` at the central site (UDP, TWAMP-light);
- ``prometheus-smokeping-prober --privileged`` at the site pinging central (ICMP echo,
  answered by the kernel), its histogram and counters scraped over HTTP in the site.

Errors are measured means minus the truth over the same packets. The truth is the
injected delay; the base path (veths, two relay passes, the far end's turnaround) is taken
from the first case, with no delay, for each prober on its own, so "error" is how well a
prober tracks what the WAN did, and the base row shows each prober's constant offset.
Loss: the injected figure is the probes whose request or reply the rule dropped (they
are missing from the relay log), against each prober's own count. A scrape counts a ping
still on its way as lost, so those are left out of smokeping's figures; and
smokeping_prober 0.6.1 never counts one reply of a run (its count stays at requests - 1
even once every reply has passed the relay), so its loss reads one packet high.

Then the CPU cost of continuous probing: the agent's ``link`` probe session
(``bench.link_load``) at 1 packet/s to three targets (the reflector over UDP and two
ICMP targets), collected every 10 s as the agent does, for ``--cpu-seconds``, in % of one
core against the 0.5 % goal.

    .venv/bin/python -m bench.link_bench [--seconds 60] [--interval 0.2] [--cpu-seconds 60]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from deploy.localstack import MissingPrerequisite, Process, find_binary, wait_until
from deploy.wan import SITE_GW, Wan, relay_accuracy, start_reflector

UDP_PORT, TCP_PORT, SMOKEPING_PORT = 8620, 8621, 9374
CPU_GOAL_PERCENT = 0.5
CPU_TARGETS_INTERVAL = 1.0
RFC3550_GAIN = 1 / 16
SAMPLE = re.compile(r'^(\w+)\{([^}]*)\}\s+(\S+)$')
# Prints the wall-clock time of the request first: replies the relay passed after it were
# still in flight for the scrape (the relay log's "t" is on the same clock).
SCRAPE = ("import sys, time, urllib.request\n"
          "at = time.time()\n"
          "body = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()\n"
          "sys.stdout.write(f'{at}\\n{body}')")


@dataclass(frozen=True)
class Case:
    name: str
    delay: float  # seconds, each way
    jitter: float  # +- seconds, uniform, each way
    loss: float  # ratio, each way


CASES = (
    Case("no delay (base path)", 0.0, 0.0, 0.0),
    Case("10 ms each way", 0.010, 0.0, 0.0),
    Case("30 ms ±5 ms each way", 0.030, 0.005, 0.0),
    Case("50 ms ±10 ms each way, 1 % loss each way", 0.050, 0.010, 0.01),
)


@dataclass
class Figures:
    """One prober in one case: what it measured and the truth for the same packets."""

    sent: int
    received: int
    rtt_mean: float | None
    injected_mean: float | None  # mean applied RTT delay over the probes that came back
    injected_lost: int
    in_flight: int = 0  # smokeping only: left out, see smokeping()
    jitter: dict[str, float | None] | None = None  # ours only: measured
    jitter_truth: dict[str, float | None] | None = None


def rfc3550(values: Sequence[float]) -> float | None:
    """RFC 3550 §6.4.1's running estimator over consecutive values (as agent.link.stats
    defines it, re-implemented here so the truth does not come from the code under test)."""
    if len(values) < 2:
        return None
    jitter = 0.0
    for before, after in itertools.pairwise(values):
        jitter += (abs(after - before) - jitter) * RFC3550_GAIN
    return jitter


def mean_abs_diff(by_seq: dict[int, float]) -> float | None:
    """Mean |delta| over pairs of consecutive sequence numbers that both have a value."""
    diffs = [abs(by_seq[s + 1] - by_seq[s]) for s in by_seq if s + 1 in by_seq]
    return statistics.fmean(diffs) if diffs else None


def scrape(wan: Wan, host: str) -> tuple[float, dict[str, float]]:
    """smokeping_prober's samples for ``host``, read over HTTP inside the site namespace,
    and the wall-clock time of the read."""
    at, text = wan.check([sys.executable, "-c", SCRAPE,
                          f"http://127.0.0.1:{SMOKEPING_PORT}/metrics"]).split("\n", 1)
    samples = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and f'host="{host}"' in match[2] and "le=" not in match[2]:
            samples[match[1]] = float(match[3])
    return float(at), samples


def start_smokeping(wan: Wan, work: Path, interval: float) -> Process:
    # Its own (empty) config: the packaged one adds a localhost target we do not want.
    config = work / "smokeping.yml"
    config.write_text("targets: []\n")
    proc = wan.run("site", [find_binary("prometheus-smokeping-prober"), "--privileged",
                            f"--config.file={config}", "-i", f"{int(interval * 1000)}ms",
                            f"--web.listen-address=127.0.0.1:{SMOKEPING_PORT}",
                            wan.central_ip], work / "smokeping.log")
    wait_until(lambda: not proc.running or scrape(wan, wan.central_ip)[1], 30,
               "smokeping_prober's metrics")
    if not proc.running:
        raise RuntimeError(f"smokeping_prober exited:\n{proc.log()}")
    return proc


def ours(wan: Wan, key_file: Path, count: int, interval: float, since: int) -> Figures:
    result = json.loads(wan.check([
        sys.executable, "-m", "agent.link.measure", "--host", wan.central_ip,
        "--port", str(UDP_PORT), "--key-file", str(key_file), "--count", str(count),
        "--interval", str(interval), "--json"], timeout=count * interval + 60))
    up = wan.applied_delays("up", b"BWL1", since)
    down = wan.applied_delays("down", b"BWL1", since)
    injected = {seq: up[seq] + down[seq] for seq in up if seq in down}
    got = [seq for seq, _ in result["rtts"] if seq in injected]
    return Figures(
        sent=result["sent"], received=result["received"], rtt_mean=result["rtt"]["mean"],
        injected_mean=statistics.fmean(injected[s] for s in got) if got else None,
        injected_lost=result["sent"] - len(injected),
        jitter=result["jitter"],
        jitter_truth={"rfc3550": rfc3550([injected[s] for s in got]),
                      "mean_abs_diff": mean_abs_diff({s: injected[s] for s in got})})


def smokeping(scraped_at: float, samples: dict[str, float],
              entries: list[dict[str, Any]]) -> Figures:
    """A scrape counts a request still on its way as lost: the pings whose reply the relay
    passed after the scrape are left out of both sides (``in_flight``)."""
    requests = int(samples.get("smokeping_requests_total", 0))
    count = int(samples.get("smokeping_response_duration_seconds_count", 0))
    held: dict[str, dict[tuple[int, int], dict[str, Any]]] = {"up": {}, "down": {}}
    for e in entries:
        if e["proto"] == "icmp" and e.get("icmp_type") in (0, 8):
            held[e["dir"]][(e["icmp_id"], e["icmp_seq"])] = e
    answered = {k: e for k, e in held["down"].items() if k in held["up"] and k[1] < requests}
    in_flight = sum(e["t"] >= scraped_at for e in answered.values())
    injected = [_applied(held["up"][k]) + _applied(e) for k, e in answered.items()
                if e["t"] < scraped_at]
    sent = requests - in_flight
    return Figures(
        sent=sent, received=count, in_flight=in_flight,
        rtt_mean=samples["smokeping_response_duration_seconds_sum"] / count if count else None,
        injected_mean=statistics.fmean(injected) if injected else None,
        injected_lost=sent - len(injected))


def _applied(entry: dict[str, Any]) -> float:
    """What a packet gained over the base path (as Wan.applied_delays counts it)."""
    return entry["delay"] + entry["overshoot"] if entry["delay"] > 0 else 0.0


def run_case(wan: Wan, work: Path, key_file: Path, case: Case, seconds: float,
             interval: float) -> tuple[Figures, Figures]:
    for direction in ("up", "down"):
        wan.set_delay(direction, case.delay, case.jitter, seed=1)
        wan.set_loss(direction, case.loss)
    since = len(wan.relay_log())
    probe = start_smokeping(wan, work, interval)
    try:
        our = ours(wan, key_file, round(seconds / interval), interval, since)
        scraped_at, samples = scrape(wan, wan.central_ip)
    finally:
        probe.stop()
    return our, smokeping(scraped_at, samples, wan.relay_log()[since:])


def continuous_cpu(wan: Wan, work: Path, key_file: Path, seconds: float) -> tuple[float, str]:
    """% of one core used by the agent's link session probing three targets at 1 Hz."""
    proc = wan.run("site", [sys.executable, "-m", "bench.link_load", "--reflector",
                            wan.central_ip, "--udp-port", str(UDP_PORT), "--key-file",
                            str(key_file), "--icmp", wan.central_ip, "--icmp", SITE_GW,
                            "--interval", str(CPU_TARGETS_INTERVAL)], work / "load.log")
    try:
        wait_until(lambda: "started" in proc.log() or not proc.running, 60, "link probing")
        assert proc.proc is not None
        me = psutil.Process(proc.proc.pid)  # `ip netns exec` execs: this is the python
        cpu0, t0 = sum(me.cpu_times()[:2]), time.monotonic()
        time.sleep(seconds)
        percent = 100 * (sum(me.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
    finally:
        proc.stop()
    return percent, proc.log().strip().splitlines()[-1]


def ms(value: float | None) -> str:
    return "     -" if value is None else f"{value * 1e3:+7.3f}"


def error(measured: float | None, truth: float | None, base: float | None = 0.0) -> float | None:
    if measured is None or truth is None or base is None:
        return None
    return measured - base - truth


def report(case: Case, our: Figures, sp: Figures, base: tuple[Figures, Figures]) -> None:
    print(f"\n{case.name}")
    print(f"  injected mean RTT delay  ours {ms(our.injected_mean)} ms "
          f"  smokeping {ms(sp.injected_mean)} ms")
    if case.delay == 0:
        print(f"  base path mean RTT       ours {ms(our.rtt_mean)} ms   "
              f"smokeping {ms(sp.rtt_mean)} ms (subtracted from the cases below)")
    else:
        our_error = error(our.rtt_mean, our.injected_mean, base[0].rtt_mean)
        sp_error = error(sp.rtt_mean, sp.injected_mean, base[1].rtt_mean)
        print(f"  mean RTT error           ours {ms(our_error)} ms   smokeping {ms(sp_error)} ms")
    assert our.jitter is not None and our.jitter_truth is not None
    for kind in ("rfc3550", "mean_abs_diff"):
        print(f"  jitter {kind:14}  ours {ms(our.jitter[kind])} ms, truth "
              f"{ms(our.jitter_truth[kind])} ms, error "
              f"{ms(error(our.jitter[kind], our.jitter_truth[kind]))} ms   smokeping: none")
    for name, f in (("ours", our), ("smokeping", sp)):
        print(f"  loss {name:10}  injected {f.injected_lost:3d}/{f.sent} "
              f"({100 * f.injected_lost / max(f.sent, 1):5.2f} %), measured "
              f"{f.sent - f.received:3d}/{f.sent} "
              f"({100 * (f.sent - f.received) / max(f.sent, 1):5.2f} %)"
              + (f", {f.in_flight} in flight at the scrape left out" if f.in_flight else ""))


def check_prerequisites() -> None:
    find_binary("prometheus-smokeping-prober")
    for module in ("agent.link.measure", "collector.reflector", "agent.probes.link"):
        if importlib.util.find_spec(module) is None:
            raise MissingPrerequisite(f"{module} is not there yet (the link-quality code)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each case")
    parser.add_argument("--interval", type=float, default=0.2, help="packet interval, both")
    parser.add_argument("--cpu-seconds", type=float, default=60.0,
                        help="length of the continuous-probing CPU measurement")
    args = parser.parse_args()
    try:
        check_prerequisites()
        return run(args)
    except MissingPrerequisite as err:
        print(f"link_bench: {err}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bw-linkbench-") as tmp:
        work = Path(tmp)
        key_file = work / "reflector.key"
        key_file.write_text(secrets.token_hex(32) + "\n")
        with Wan(work / "wan") as wan:
            start_reflector(wan, work, key_file)
            print(f"link measurement vs the emulated WAN: {args.seconds:g} s a case, a packet "
                  f"every {args.interval:g} s from each prober (relay: {wan.relay_policy})")
            base: tuple[Figures, Figures] | None = None
            for case in CASES:
                figures = run_case(wan, work, key_file, case, args.seconds, args.interval)
                base = base or figures
                report(case, *figures, base)
            accuracy = relay_accuracy(wan.relay_log())
            for direction in ("up", "down"):
                wan.set_delay(direction, 0.010)
                wan.set_loss(direction, 0.0)
            cpu, last = continuous_cpu(wan, work, key_file, args.cpu_seconds)
    print(f"\nrelay release overshoot over {accuracy['packets']:.0f} held packets: "
          f"p50 {accuracy['p50'] * 1e6:.1f} us, p99 {accuracy['p99'] * 1e6:.1f} us, "
          f"max {accuracy['max'] * 1e6:.1f} us")
    print(f"continuous probing, 3 targets at {1 / CPU_TARGETS_INTERVAL:g} packet/s for "
          f"{args.cpu_seconds:g} s: {cpu:.2f} % of one core (goal {CPU_GOAL_PERCENT} %); "
          f"last collection: {last}")
    within = cpu <= CPU_GOAL_PERCENT
    print(f"SUMMARY link probing CPU {cpu:.2f} % of a core; goal {CPU_GOAL_PERCENT} %: "
          f"{'OK' if within else 'OVER'}")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
