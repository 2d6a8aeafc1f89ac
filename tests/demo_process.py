"""Starting ``python -m deploy.demo`` from a test as a person would, on free ports, so a
test's demo never collides with a developer's running one (or another test's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from deploy.localstack import free_port

ROOT = Path(__file__).resolve().parents[1]


def start_demo(workdir: Path, seconds: float, prometheus_port: int,
               output: Path) -> subprocess.Popen[bytes]:
    """The demo in the background for ``seconds``, every flaky site steady, its console
    in ``output``; the caller reaches it through ``prometheus_port``."""
    with output.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "deploy.demo", "--seconds", str(seconds),
             "--workdir", str(workdir), "--flaky", "0",
             "--broker-port", str(free_port()), "--collector-port", str(free_port()),
             "--prometheus-port", str(prometheus_port), "--reflector-port", str(free_port()),
             "--alertmanager-port", str(free_port())],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
