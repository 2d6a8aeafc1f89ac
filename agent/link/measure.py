"""One-shot link measurement against a reflector, for tests, benches and people.

::

    python -m agent.link.measure --host H --port P --key-file F --count N --interval S \\
        [--size B] [--timeout T] [--bandwidth upload|download --seconds S --tcp-port P] \\
        [--json]

With ``--json`` it prints exactly one JSON object (all times in seconds, as floats;
``null`` where there is nothing to measure, e.g. RTTs when every packet was lost)::

    {"method": "udp-reflector", "timestamps": "kernel" | "user",
     "sent": N, "received": N, "lost": N, "duplicates": N, "reordered": N, "late": N,
     "invalid": {"<reason>": N, ...},
     "rtt": {"min", "p50", "p90", "p99", "max", "mean"},
     "rtts": [[seq, rtt], ...],                       # received, in arrival order
     "jitter": {"rfc3550", "mean_abs_diff"},
     "r_factor": R, "mos": MOS,
     "bandwidth": {"direction", "bits_per_second", "bytes", "seconds"}}   # with --bandwidth

``late`` is a subset of ``lost`` (replies that came after ``--timeout``); ``invalid``
counts replies refused (garbage, bad MAC, ...) by reason. Definitions: ``agent.link.stats``.
Exit status: 0 when it ran, 1 when the name did not resolve or the bandwidth test
failed (the JSON is still printed), 2 for bad arguments or key.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from agent.link import bandwidth, packet, prober, udp
from agent.link.prober import Measurement


def to_json(measurement: Measurement) -> dict[str, Any]:
    """The measurement as the documented JSON object (without ``bandwidth``)."""
    c, window = measurement.counters, measurement.window
    s = window.stats
    rtt = dict.fromkeys(("min", "p50", "p90", "p99", "max", "mean"))
    if s.rtt is not None:
        rtt.update(min=s.rtt[0.0], p50=s.rtt[0.5], p90=s.rtt[0.9], p99=s.rtt[0.99],
                   max=s.rtt[1.0], mean=s.rtt_mean)
    return {
        "method": measurement.method,
        "timestamps": measurement.timestamps,
        "sent": c.sent, "received": c.received, "lost": c.lost,
        "duplicates": c.duplicates, "reordered": c.reordered, "late": c.late,
        "invalid": c.invalid,
        "rtt": rtt,
        "rtts": [[seq, value] for seq, value in window.events],
        "jitter": {"rfc3550": s.jitter_rfc3550, "mean_abs_diff": s.jitter_mean_abs_diff},
        "r_factor": s.r_factor,
        "mos": s.mos,
    }


def _text(result: dict[str, Any]) -> str:
    """A few lines for a person (the default without ``--json``)."""
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.3f} ms"

    r = result["rtt"]
    lines = [
        f"{result['method']} ({result['timestamps']} timestamps): sent {result['sent']}, "
        f"received {result['received']}, lost {result['lost']} (late {result['late']}), "
        f"duplicates {result['duplicates']}, reordered {result['reordered']}",
        f"RTT min {ms(r['min'])}  p50 {ms(r['p50'])}  p90 {ms(r['p90'])}  "
        f"p99 {ms(r['p99'])}  max {ms(r['max'])}",
        f"jitter RFC 3550 {ms(result['jitter']['rfc3550'])}  "
        f"mean |ΔRTT| {ms(result['jitter']['mean_abs_diff'])}",
    ]
    if result["r_factor"] is not None:
        lines.append(f"R {result['r_factor']:.1f}  MOS {result['mos']:.2f}")
    bw = result.get("bandwidth")
    if bw:
        lines.append(f"{bw['direction']}: {bw['bits_per_second'] / 1e6:.2f} Mbit/s "
                     f"({bw['bytes']} bytes in {bw['seconds']:.2f} s)")
    return "\n".join(lines)


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError("must be > 0")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agent.link.measure",
                                     description="Measure the link to a BridgeWatch reflector.")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=udp.DEFAULT_PORT, help="UDP echo port")
    parser.add_argument("--key-file", required=True, help="the reflector's shared key")
    parser.add_argument("--count", type=_positive(int), default=10)
    parser.add_argument("--interval", type=_positive(float), default=prober.DEFAULT_INTERVAL,
                        help="seconds between packets")
    parser.add_argument("--size", type=int, default=packet.DEFAULT_SIZE,
                        help=f"packet size in bytes ({packet.MIN_SIZE}-{packet.MAX_SIZE})")
    parser.add_argument("--timeout", type=_positive(float), default=prober.DEFAULT_TIMEOUT,
                        help="seconds after which a packet is lost")
    parser.add_argument("--bandwidth", choices=bandwidth.DIRECTIONS,
                        help="also run a bandwidth test in this direction")
    parser.add_argument("--seconds", type=_positive(float), default=bandwidth.DEFAULT_SECONDS,
                        help="length of the bandwidth test")
    parser.add_argument("--tcp-port", type=int, default=bandwidth.DEFAULT_PORT,
                        help="the reflector's bandwidth port")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        key = packet.load_key(args.key_file)
        packet.check_size(args.size)
    except (OSError, ValueError) as err:
        parser.error(str(err))
    measurement = udp.UdpProber(args.host, args.port, key=key, size=args.size,
                                timeout=args.timeout).measure(args.count, args.interval)
    result = to_json(measurement)
    status = 0 if measurement.resolved else 1
    if not measurement.resolved:
        print(f"measure: cannot resolve {args.host}", file=sys.stderr)
    if args.bandwidth:
        try:
            bw = bandwidth.run_test(args.host, args.tcp_port, key, args.bandwidth, args.seconds)
            result["bandwidth"] = {"direction": bw.direction,
                                   "bits_per_second": bw.bits_per_second,
                                   "bytes": bw.bytes, "seconds": bw.seconds}
        except bandwidth.BandwidthError as err:
            print(f"measure: bandwidth test failed: {err}", file=sys.stderr)
            result["bandwidth"] = None
            status = 1
    print(json.dumps(result) if args.json else _text(result))
    return status


if __name__ == "__main__":
    sys.exit(main())
