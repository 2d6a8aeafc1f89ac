"""``bridgewatch-agent bandwidth``: the hand-run bandwidth test, for the person in the room.

Upload then download against the configured reflector, each with a progress bar on
stderr, then one line per direction on stdout in Vietnamese and English beside the
site's requirement, e.g.::

    Tải lên / upload: 4.8 Mbit/s  ✗ cần / needs ≥ 5 Mbit/s

The exit status is 0 only when both directions meet the requirement. The results are
kept for the link probe, which reports them as ``link_bandwidth_bits_per_second``.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from agent.config import AgentConfig
from agent.link import bandwidth, packet, results

LABELS = {"upload": "Tải lên / upload", "download": "Tải xuống / download"}
BAR_WIDTH = 30
MBIT = 1_000_000


def mbit(bits_per_second: float) -> str:
    return f"{bits_per_second / MBIT:.1f} Mbit/s"


def verdict_line(direction: str, bits_per_second: float, required_mbps: float) -> str:
    ok = bandwidth.meets(bits_per_second, required_mbps * MBIT)
    mark = "✓" if ok else "✗"
    return (f"{LABELS[direction]}: {mbit(bits_per_second)}  {mark} cần / needs "
            f"≥ {required_mbps:g} Mbit/s")


class ProgressBar:
    """One line on a terminal, redrawn in place: ``label [####....]  42%  4.7 Mbit/s``."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self.label = label
        self.stream = stream

    def __call__(self, fraction: float, bits_per_second: float) -> None:
        filled = round(fraction * BAR_WIDTH)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self.stream.write(f"\r{self.label:<22} [{bar}] {fraction:4.0%}  "
                          f"{mbit(bits_per_second):>14}")
        self.stream.flush()

    def done(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def run(config: AgentConfig, seconds: float = bandwidth.DEFAULT_SECONDS,
        out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run both tests; 0 when both pass, 1 when one fails or cannot run, 2 if unconfigured.

    ``out`` and ``err`` default to the standard streams at call time.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if config.link is None or config.link.reflector is None:
        err.write("bridgewatch-agent: link.reflector is not configured\n")
        return 2
    reflector = config.link.reflector
    required = config.link.required_bandwidth_mbps
    try:
        key = packet.load_key(reflector.key_file)
    except (OSError, ValueError) as error:
        err.write(f"bridgewatch-agent: reflector key: {error}\n")
        return 2
    measured: list[bandwidth.BandwidthResult] = []
    lines: list[str] = []
    for direction in bandwidth.DIRECTIONS:
        bar = ProgressBar(LABELS[direction], err)
        try:
            result = bandwidth.run_test(reflector.host, reflector.tcp_port, key, direction,
                                        seconds, progress=bar)
        except bandwidth.BandwidthError as error:
            lines.append(f"{LABELS[direction]}: lỗi / error: {error}")
            continue
        finally:
            bar.done()
        measured.append(result)
        lines.append(verdict_line(direction, result.bits_per_second, required))
    for line in lines:
        out.write(line + "\n")
    if measured:
        try:
            results.save(config, measured, time.time())
        except OSError as error:
            err.write(f"bridgewatch-agent: results not kept for the probe: {error}\n")
    passed = len(measured) == len(bandwidth.DIRECTIONS) and all(
        bandwidth.meets(r.bits_per_second, required * MBIT) for r in measured)
    return 0 if passed else 1
