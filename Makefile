# The two commands a new user runs (see README):
#   make demo   set up ./venv and run the main job on the dev stack
#   make test   set up ./venv, then run the static checks (ruff, mypy) and the test suite
# and, for maintainers:
#   make bench  run the benchmark scripts in bench/ at small sizes (a smoke run, not figures)
#
# PYTHON is the interpreter the virtualenv is made from and VENV its directory, so one
# checkout can hold one virtualenv per Python version (.ci/run: PYTHON=... VENV=venv310).
PYTHON ?= python3
VENV ?= venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Small sizes: `make bench` checks that the scripts run end to end.  For figures, run a
# script with its defaults (see its --help), or override these, e.g.
#   make bench BENCH_PLAN_ARGS= BENCH_API_ARGS= BENCH_PROXY_ARGS= BENCH_ASYNC_ARGS= BENCH_ROUTING_ARGS=
BENCH_PLAN_ARGS ?= --sizes 10 --render-size 10
BENCH_API_ARGS ?= --seconds 2 --rounds 1 --connections 4
BENCH_PROXY_ARGS ?= --seconds 1 --concurrency 1,8
BENCH_ASYNC_ARGS ?= --tasks 100 --concurrency 1,8
BENCH_ROUTING_ARGS ?= --quick

# The suite on two worker processes (pytest-xdist), the cores of the development and CI machines.
# worksteal hands out single tests by index: schemathesis gives its cases one node id, which the
# file- and group-based modes (loadfile, loadgroup) would collapse into a single test.
# `make pytest PYTEST_ARGS=` runs it in one process.
PYTEST_ARGS ?= -n 2 --dist worksteal

.PHONY: demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m sgp_infra demo --stack dev

# Static checks first, then the suite (`make -k test` runs the suite even when a check fails).
test: lint typecheck pytest

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy sgp_infra

# The suite in parallel, then the tests marked `exclusive` (latency bounds under attack) alone.
# PYTHONDONTWRITEBYTECODE is unset for them: with it, every process recompiles every module and
# pytest's assertion rewrites (seconds per process).
pytest: $(STAMP)
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -q $(PYTEST_ARGS) -m "not exclusive"
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -q -m exclusive

bench: $(STAMP)
	$(PY) bench/bench_plan.py $(BENCH_PLAN_ARGS)
	$(PY) bench/bench_api.py $(BENCH_API_ARGS)
	$(PY) bench/bench_proxy.py $(BENCH_PROXY_ARGS)
	$(PY) bench/bench_async.py $(BENCH_ASYNC_ARGS)
	$(PY) bench/bench_routing.py $(BENCH_ROUTING_ARGS)

clean:
	rm -rf $(VENV) rendered .pytest_cache .hypothesis .mypy_cache .ruff_cache
