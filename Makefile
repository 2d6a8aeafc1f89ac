# Entry points for people and CI; every target first makes the machine ready (idempotent).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: bootstrap demo test bench bench-national lint

bootstrap:
	bash scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m deploy.demo

test: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

# Every bench/*_bench.py in turn, as a module (the other bench/*.py are their helpers),
# but the national one: ~15 min and ~10 GB of RAM at 20,000 bridges (make bench-national).
bench: bootstrap
	@set -e; benches="$(filter-out national_bench,$(basename $(notdir $(wildcard bench/*_bench.py))))"; \
	if [ -z "$$benches" ]; then echo "no benchmarks in bench/"; fi; \
	for b in $$benches; do echo "== bench/$$b.py"; $(PY) -m bench.$$b; done

bench-national: bootstrap
	$(PY) -m bench.national_bench

lint: bootstrap
	$(VENV)/bin/ruff check .
