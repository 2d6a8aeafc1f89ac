"""Running a fuzz target: under atheris (the ``fuzz_*.py`` harnesses), or replaying a corpus.

``INCLUDE`` is what each target's harness instruments for coverage; this module imports
nothing of the project at the top, so the instrumented modules are imported (and so
instrumented) only inside ``atheris.instrument_imports``. ``bench.fuzz_bench`` replays the
corpus a fuzz run ended with, plainly and instrumented: the ratio is what the
instrumentation costs per input.

    .venv/bin/python -m tests.fuzz.harness TARGET CORPUS_DIR [--instrumented] [--seconds 3]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

INCLUDE = {
    "wire": ["agent", "collector", "tests.fuzz"],
    "schedule": ["collector.schedule", "collector.readiness.store", "tests.fuzz"],
    "api": ["collector", "tests.fuzz"],
}


def target(name: str, instrumented: bool) -> Callable[[bytes], None]:
    """A fresh target, its modules instrumented for coverage if asked."""
    if instrumented:
        import atheris

        with atheris.instrument_imports(include=INCLUDE[name]):
            from tests.fuzz.targets import TARGETS
    else:
        from tests.fuzz.targets import TARGETS
    return TARGETS[name]()


def fuzz_main(name: str) -> None:
    """A harness's body: fuzz ``name`` with libFuzzer's flags from the command line."""
    import atheris

    one = target(name, instrumented=True)
    logging.disable(logging.WARNING)  # refusals are logged: noise at this rate
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=sorted(INCLUDE))
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--instrumented", action="store_true")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    one = target(args.target, args.instrumented)
    inputs = [p.read_bytes() for p in sorted(args.corpus.iterdir())]
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        for data in inputs:
            one(data)
        done += len(inputs)
    print(f"{done / (time.perf_counter() - started):.1f}")


if __name__ == "__main__":
    main()
