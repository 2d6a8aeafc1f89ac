"""Continuous link probing as the agent does it, run in the site namespace for
bench.link_bench's CPU figure.

The agent's ``link`` probe (``agent.probes.link.LinkSession``) with the reflector and the
given ICMP targets, at the given packet interval, collected every ``--collect-every``
seconds as the agent's probe loop would. Prints one JSON line once probing runs and one
after each collection (packets sent and received per target), so the bench can see the
probers did their work while it was counting their CPU. Runs until killed.

    python -m bench.link_load --reflector 198.18.2.2 --udp-port 8620 --key-file K \\
        --icmp 198.18.2.2 --icmp 198.18.1.1 [--interval 1] [--collect-every 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from agent.config import LinkConfig, LinkTarget, ReflectorEndpoint
from agent.probes.link import LinkSession


def counts(session: LinkSession) -> dict[str, list[int]]:
    return {name: [p.counters().sent, p.counters().received]
            for name, p in session.probers.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.link_load",
                                     description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--reflector", required=True, help="reflector host")
    parser.add_argument("--udp-port", type=int, required=True)
    parser.add_argument("--key-file", type=Path, required=True)
    parser.add_argument("--icmp", action="append", default=[], help="an ICMP target host")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between packets")
    parser.add_argument("--collect-every", type=float, default=10.0,
                        help="the agent's probe interval")
    args = parser.parse_args(argv)
    config = LinkConfig(
        reflector=ReflectorEndpoint(args.reflector, args.key_file, args.udp_port),
        targets=tuple(LinkTarget(f"icmp-{i}", host, "icmp")
                      for i, host in enumerate(args.icmp, 1)),
        packet_interval_seconds=args.interval)
    session = LinkSession(config)
    session.ensure_started()
    print(json.dumps({"started": sorted(session.probers), "errors": session.setup_errors}),
          flush=True)
    while True:
        time.sleep(args.collect_every)
        _, errors = session.collect()
        print(json.dumps({"counts": counts(session), "errors": errors}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
