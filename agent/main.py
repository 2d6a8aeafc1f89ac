"""``bridgewatch-agent``: the daemon (``run``), a one-shot ``sample``, the hand-run
``bandwidth`` test against the reflector, the technician's readiness ``check``, and
``simulate``.

``run`` loops: wait for the scheduler's next slot, run the probes that are due, write
one telemetry message to the spool, and wake the publisher, which sends it when it can.
A ``run-test`` command from the collector runs the full readiness test on a thread of
its own (``agent.readiness.runner``) and spools its result the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import logging
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agent import __version__, wire
from agent.config import AgentConfig, load_config
from agent.probes import REGISTRY, ProbeContext, collect_reports, enabled_probes
from agent.probes import link as link_probe
from agent.publisher import Publisher
from agent.readiness import runner as readiness
from agent.readiness.fulltest import FullTest, Progress, run_full_test
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
    tests = readiness.Runner(config, spool, wake=lambda: publisher.wake())
    publisher = Publisher(config, spool, handlers={readiness.COMMAND: tests.submit})
    tests.start()
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
        tests.stop()
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


_STAGES = {
    "vi": {"link": "Đang đo đường truyền tới máy chủ phản hồi ({seconds:g} s)...",
           "room": "Đang kiểm tra thiết bị phòng họp...",
           "recorded": "Đã lưu kết quả {test_id} để gửi về trung tâm (seq {seq}).",
           "not_recorded": "Không lưu được kết quả để gửi về trung tâm: {error}"},
    "en": {"link": "Measuring the link to the reflector ({seconds:g} s)...",
           "room": "Checking the room...",
           "recorded": "Result {test_id} queued for the collector (seq {seq}).",
           "not_recorded": "Result not queued for the collector: {error}"},
}


def readiness_check(config: AgentConfig, args: argparse.Namespace) -> int:
    """The technician's full test: checklist on stdout, 0 only when the bridge is ready.

    Unless ``--no-publish`` the result is appended to the agent's spool (trigger
    ``technician``), which the running agent, or the next one to start, sends. Two
    processes share the spool safely: SQLite (WAL) serialises writers, and ``seq`` is
    read and advanced inside the appending transaction, so it never repeats; the epoch is
    the spool's own.
    """
    # Imported only when asked for: the daemon never prints a checklist.
    from agent.link.check import LABELS, ProgressBar
    from agent.readiness import checklist

    words = _STAGES[args.lang]

    class Terminal(Progress):
        def stage(self, name: str, seconds: float | None = None) -> None:
            sys.stderr.write(words[name].format(seconds=seconds or 0) + "\n")
            sys.stderr.flush()

        @contextlib.contextmanager
        def bandwidth(self, direction: str) -> Iterator[ProgressBar]:
            bar = ProgressBar(LABELS[direction], sys.stderr)
            try:
                yield bar
            finally:
                bar.done()

    test_id = readiness.local_test_id(args.session)
    test = run_full_test(config, args.session_seconds, Terminal())
    recorded: bool | None = None
    if not args.no_publish:
        recorded = _record_local(config, test, test_id, words)
    if args.json:
        body = checklist.to_json(test, test_id=test_id, trigger=readiness.LOCAL_TRIGGER,
                                 province=config.province, site=config.site, lang=args.lang,
                                 recorded=recorded)
        sys.stdout.write(json.dumps(body, ensure_ascii=False) + "\n")
    else:
        where = f"{config.province}/{config.site}"
        sys.stdout.write("\n".join(checklist.render(test, test_id, where, args.lang)) + "\n")
    return 0 if test.passed else 1


def _record_local(config: AgentConfig, test: FullTest, test_id: str, words: dict[str, str]) -> bool:
    """Append a technician's result to the spool; False (and say why) when it cannot."""
    sc = config.spool
    try:
        spool = Spool(sc.path, sc.max_messages, sc.max_age_seconds, sc.max_bytes)
        try:
            if not Path(spool.path).exists():  # the spool fell back to memory: nobody sends it
                raise OSError(f"spool {spool.path} cannot be created")
            seq = readiness.record(config, spool, test, test_id, readiness.LOCAL_TRIGGER)
        finally:
            spool.close()
    except (sqlite3.Error, OSError, ValueError) as err:
        sys.stderr.write(words["not_recorded"].format(error=err) + "\n")
        return False
    sys.stderr.write(words["recorded"].format(test_id=test_id, seq=seq) + "\n")
    return True


def _session_seconds(text: str) -> float:
    """An argparse type: a session length the collector could also order (60 s to 24 h)."""
    value = float(text)
    if not readiness.MIN_SESSION_SECONDS <= value <= readiness.MAX_SESSION_SECONDS:
        raise argparse.ArgumentTypeError("must be from 60 to 86400 seconds")
    return value


def _session_id(text: str) -> str:
    """An argparse type: a session id (a slug of at most 40 characters)."""
    if not wire.is_slug(text) or len(text) > 40:
        raise argparse.ArgumentTypeError("must be a session id (lowercase letters, digits, "
                                         "'-'; at most 40 characters)")
    return text


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
    p = sub.add_parser("check", parents=[common],
                       help="run the full readiness test now and print the checklist")
    p.add_argument("--config", required=True, help="agent YAML configuration")
    p.add_argument("--lang", choices=["vi", "en"], default="vi",
                   help="checklist language (default vi: Vietnamese)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.add_argument("--session-seconds", type=_session_seconds, default=None,
                   help="session length to judge against (default: session.length_seconds)")
    p.add_argument("--session", type=_session_id, default=None,
                   help="session id: the result's test_id becomes <session>/local/<nonce>")
    p.add_argument("--no-publish", action="store_true",
                   help="do not queue the result for the collector")
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
    if args.command == "check":
        return readiness_check(config, args)
    return run(config) if args.command == "run" else sample(config)


if __name__ == "__main__":
    sys.exit(main())
