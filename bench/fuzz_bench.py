"""Fuzzing figures: inputs run and executions per second for each fuzz target.

Each target (``tests/fuzz``) is fuzzed by its atheris harness for a fixed number of inputs
from its seeds (inputs, exec/s as libFuzzer counts them, edges covered, corpus kept);
then the corpus it ended with is replayed without libFuzzer, plainly and with the
harness's coverage instrumentation, each in a process of its own: their ratio is what
the instrumentation costs per input. Printed, one line per target.

    .venv/bin/python -m bench.fuzz_bench [--runs wire=100000 schedule=20000 api=50000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.fuzz.run import ROOT, fuzz

DEFAULT_RUNS = {"wire": 100_000, "schedule": 20_000, "api": 50_000}


def replay_rate(target: str, corpus: Path, instrumented: bool) -> float:
    """Inputs per second of the target over ``corpus``, in a process of its own."""
    command = [sys.executable, "-m", "tests.fuzz.harness", target, str(corpus)]
    done = subprocess.run(command + (["--instrumented"] if instrumented else []), cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=[], metavar="TARGET=N")
    args = parser.parse_args()
    runs = DEFAULT_RUNS | {k: int(v) for k, v in (item.split("=") for item in args.runs)}
    print(f"{'target':9} {'inputs':>8} {'s':>4} {'exec/s':>7} {'cov':>5} {'corpus':>6} "
          f"{'replay/s':>9} {'instr/s':>8} {'instr/plain':>11} crashes")
    for target, count in runs.items():
        with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as tmp:
            result = fuzz(target, count, Path(tmp))
            plain = replay_rate(target, Path(tmp) / "corpus", instrumented=False)
            instrumented = replay_rate(target, Path(tmp) / "corpus", instrumented=True)
        print(f"{target:9} {result.runs:>8} {result.seconds:>4} {result.execs_per_second:>7} "
              f"{result.coverage:>5} {result.corpus:>6} {plain:>9.0f} {instrumented:>8.0f} "
              f"{instrumented / plain:>11.2f} {len(result.artefacts)}"
              + ("" if result.returncode == 0 else f"  (exit {result.returncode})"))


if __name__ == "__main__":
    main()
