"""The last bandwidth test, kept on disk between ``bridgewatch-agent bandwidth`` and the probe.

The test runs on demand in another process than the daemon; a small JSON file next to the
spool hands its result over, so the next telemetry carries it
(``link_bandwidth_bits_per_second``). Written atomically (rename), so the probe never
reads half a file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.link import bandwidth

FILE_NAME = "link-bandwidth.json"


def path_for(config: AgentConfig) -> Path:
    return config.spool.path.parent / FILE_NAME


def save(config: AgentConfig, results: list[bandwidth.BandwidthResult], ts: float) -> None:
    body = {"ts": ts, "bits_per_second": {r.direction: r.bits_per_second for r in results}}
    path = path_for(config)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body), encoding="utf-8")
    tmp.replace(path)


def load(config: AgentConfig) -> tuple[float, dict[str, float]] | None:
    """(unix time, bits/s per direction) of the last test; None if none was kept.

    ValueError when the file is there but is not one this module wrote.
    """
    path = path_for(config)
    try:
        body: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ValueError(f"bandwidth results {path}: {err}") from None
    try:
        ts = float(body["ts"])
        rates = {str(d): float(bps) for d, bps in body["bits_per_second"].items()
                 if d in bandwidth.DIRECTIONS}
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"bandwidth results {path}: not as the agent writes them ({err})"
                         ) from None
    if not math.isfinite(ts) or not all(math.isfinite(v) and v >= 0 for v in rates.values()):
        raise ValueError(f"bandwidth results {path}: a value is not a finite number")
    return ts, rates
