"""Atheris harness: the schedule importers, YAML and iCalendar, into a SQLite store.

The input and what must hold are in ``targets.schedule_target``; seeds in ``seeds``;
the body is ``harness.fuzz_main``.

    .venv/bin/python -m tests.fuzz.fuzz_schedule -runs=3000 CORPUS_DIR
"""

from tests.fuzz.harness import fuzz_main

if __name__ == "__main__":
    fuzz_main("schedule")
