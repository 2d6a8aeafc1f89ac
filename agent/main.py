"""``bridgewatch-agent``: the daemon (``run``), a one-shot ``sample``, the hand-run
``bandwidth`` test against the reflector, and ``simulate``.

``run`` loops: wait for the scheduler's next slot, run the probes that are due, write
one telemetry message to the spool, and wake the publisher, which sends it when it can.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from agent import __version__, wire
from agent.config import AgentConfig, load_config
from agent.probes import REGISTRY, ProbeContext, collect_reports, enabled_probes
from agent.probes import link as link_probe
from agent.publisher import Publisher
from agent.scheduler import Scheduler
from agent.spool import Spool

log = logging.getLogger("agent")

SHED_ERROR = "metrics dropped: telemetry message over the wire size limit"


def telemetry_payload(config: AgentConfig, epoch: int, seq: int, floor: int, ts: float,
                      reports: dict[str, wire.ProbeReport]) -> bytes:
    """Encode one telemetry message, shedding the largest probes' rows if it is too big."""
    reports = dict(reports)
    while True:
        payload = wire.encode(wire.Telemetry(config.province, config.site, epoch, seq, floor,
                                             ts, reports))
        if len(payload) <= wire.MAX_PAYLOAD_BYTES:
            return payload
        name = max(reports, key=lambda n: sum(len(rows) for rows in reports[n].metrics.values()))
        big = reports[name]
        if not big.metrics:
            raise ValueError(f"telemetry is {len(payload)} bytes even without metrics")
        log.error("probe %s: %s", name, SHED_ERROR)
        reports[name] = wire.ProbeReport(False, big.duration_seconds, big.interval_seconds,
                                         SHED_ERROR)


def store(config: AgentConfig, spool: Spool, topic: str, ts: float,
          reports: dict[str, wire.ProbeReport]) -> None:
    """Spool one telemetry message; a spool failure is logged loudly, never fatal."""
    def build(seq: int, floor: int) -> bytes:
        return telemetry_payload(config, spool.epoch, seq, floor, ts, reports)

    try:
        spool.append(topic, build)
    except (sqlite3.Error, ValueError) as err:
        log.error("sample not stored in the spool: %s", err)


def run(config: AgentConfig) -> int:
    """The daemon; returns when SIGTERM/SIGINT arrives, after a clean publisher stop."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):  # SIGBREAK: Ctrl+Break on Windows
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)

    sc = config.spool
    try:
        spool = Spool(sc.path, sc.max_messages, sc.max_age_seconds, sc.max_bytes)
    except sqlite3.OperationalError as err:  # locked: another agent is using this spool
        log.critical("cannot use spool %s: %s", sc.path, err)
        return 1
    intervals = enabled_probes(config)
    ctx = ProbeContext(config, spool_stats=spool.stats)
    topic = wire.topic(config.prefix, config.province, config.site, wire.Kind.TELEMETRY)
    scheduler = Scheduler(intervals, time.monotonic())
    publisher = Publisher(config, spool)
    publisher.start()
    log.info("agent %s for %s/%s: probes %s, spool epoch %d", __version__, config.province,
             config.site, ", ".join(f"{n}@{i:g}s" for n, i in intervals.items()), spool.epoch)
    try:
        while not stop.is_set():
            due = scheduler.due(time.monotonic())
            if due:
                reports = collect_reports([REGISTRY[n] for n in due], ctx, intervals)
                store(config, spool, topic, ctx.clock(), reports)
                publisher.wake()
            stop.wait(max(0.0, scheduler.next_wakeup() - time.monotonic()))
    finally:
        link_probe.shutdown()
        publisher.stop()
        spool.close()
    return 0


def sample(config: AgentConfig) -> int:
    """Run every enabled probe once and print the telemetry (not spooled, not sent).

    The message is a valid wire message (epoch = now in ms, seq 1). Exit status 1 when a
    probe failed, so the command doubles as a quick local check.
    """
    intervals = enabled_probes(config)
    ctx = ProbeContext(config)
    try:
        reports = collect_reports([REGISTRY[n] for n in intervals], ctx, intervals)
    finally:
        link_probe.shutdown()
    ts = ctx.clock()
    payload = telemetry_payload(config, int(ts * 1000), 1, 1, ts, reports)
    sys.stdout.write(payload.decode() + "\n")
    for name, report in reports.items():
        if not report.ok:
            log.error("probe %s failed: %s", name, report.error)
    return 0 if all(r.ok for r in reports.values()) else 1


def _seconds(text: str) -> float:
    """An argparse type: a test length from 0.5 to 60 seconds."""
    value = float(text)
    if not 0.5 <= value <= 60:
        raise argparse.ArgumentTypeError("must be from 0.5 to 60 seconds")
    return value


def build_parser(with_simulate: bool) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser = argparse.ArgumentParser(prog="bridgewatch-agent",
                                     description="BridgeWatch agent for one bridge PC.")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("run", "run the agent daemon"),
                        ("sample", "run every enabled probe once and print the telemetry")):
        p = sub.add_parser(name, parents=[common], help=help_)
        p.add_argument("--config", required=True, help="agent YAML configuration")
    p = sub.add_parser("bandwidth", parents=[common],
                       help="test upload and download against the reflector")
    p.add_argument("--config", required=True, help="agent YAML configuration")
    p.add_argument("--seconds", type=_seconds, default=5.0,
                   help="length of each direction's test (default 5)")
    simulate = sub.add_parser("simulate", parents=[common], help="simulate a fleet of agents")
    if with_simulate:
        # Imported only when asked for, so the daemon never pays for it.
        module = importlib.import_module("agent.simulate")
        module.add_arguments(simulate)
        simulate.set_defaults(simulate=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    wants_simulate = bool(argv) and argv[0] == "simulate"
    if wants_simulate and importlib.util.find_spec("agent.simulate") is None:
        print("bridgewatch-agent: simulate is not available in this build", file=sys.stderr)
        return 2
    args = build_parser(wants_simulate).parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "simulate":
        return int(args.simulate(args) or 0)
    try:
        config = load_config(args.config)
    except (OSError, ValueError) as err:
        print(f"bridgewatch-agent: bad configuration {args.config}: {err}", file=sys.stderr)
        return 2
    if args.command == "bandwidth":
        # Imported only when asked for: the daemon never runs it.
        from agent.link import check

        return check.run(config, args.seconds)
    return run(config) if args.command == "run" else sample(config)


if __name__ == "__main__":
    sys.exit(main())
