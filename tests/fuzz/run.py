"""Run one fuzz harness in a subprocess for a fixed number of inputs, and read its figures.

A fresh corpus directory gets the target's seeds (libFuzzer adds what it finds there),
crash, timeout and OOM files go to their own directory, and libFuzzer's last lines give
the inputs run, the time and the executions per second.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import seeds

ROOT = Path(__file__).parents[2]
HERE = Path(__file__).parent
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_STATS = re.compile(r"#\d+\s+DONE\s+cov: (\d+) ft: \d+ corp: (\d+)/\S+ .*exec/s: (\d+)")


@dataclass(frozen=True)
class FuzzRun:
    target: str
    returncode: int
    runs: int  # inputs run, as libFuzzer counts them (0 when it did not finish)
    seconds: int
    execs_per_second: int
    coverage: int  # edges of the instrumented modules covered
    corpus: int  # inputs kept for new coverage, seeds included
    artefacts: tuple[Path, ...]  # crash-*, timeout-*, oom-*, leak-*: a bug each
    output: str

    def summary(self) -> str:
        return (f"fuzz {self.target}: {self.runs} inputs in {self.seconds} s, "
                f"{self.execs_per_second} exec/s, coverage {self.coverage} edges, "
                f"corpus {self.corpus}, artefacts {len(self.artefacts)}, rc {self.returncode}")


def fuzz(target: str, runs: int, workdir: Path, seed: int = 1) -> FuzzRun:
    """Fuzz ``target`` for ``runs`` inputs from its seeds (a fixed libFuzzer seed)."""
    corpus, artefacts = workdir / "corpus", workdir / "artefacts"
    seeds.write(target, corpus)
    artefacts.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", f"tests.fuzz.fuzz_{target}", f"-runs={runs}",
               f"-seed={seed}", f"-dict={HERE / f'{target}.dict'}", "-timeout=60",
               "-rss_limit_mb=2048", f"-artifact_prefix={artefacts}/", str(corpus)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    finished, stats = _DONE.search(output), _STATS.search(output)
    return FuzzRun(
        target, done.returncode,
        int(finished[1]) if finished else 0, int(finished[2]) if finished else 0,
        int(stats[3]) if stats else 0, int(stats[1]) if stats else 0,
        int(stats[2]) if stats else 0, tuple(sorted(artefacts.iterdir())), output)
