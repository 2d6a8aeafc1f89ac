"""Atheris harness: the collector's HTTP API (the in-process Api), fed raw HTTP requests.

The input and what must hold are in ``targets.api_target``; seeds in ``seeds``;
the body is ``harness.fuzz_main``.

    .venv/bin/python -m tests.fuzz.fuzz_api -runs=5000 CORPUS_DIR
"""

from tests.fuzz.harness import fuzz_main

if __name__ == "__main__":
    fuzz_main("api")
