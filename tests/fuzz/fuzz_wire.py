"""Atheris harness: the wire decoder and the collector's intake (FleetState).

The input and what must hold are in ``targets.wire_target``; seeds in ``seeds``;
the body is ``harness.fuzz_main``.

    .venv/bin/python -m tests.fuzz.fuzz_wire -runs=20000 CORPUS_DIR
"""

from tests.fuzz.harness import fuzz_main

if __name__ == "__main__":
    fuzz_main("wire")
