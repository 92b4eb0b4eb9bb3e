# AwaitHuman — the two commands: `make run` and `make test`. Both set everything up first and are
# safe to run again.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000
# Twisted listens with a backlog of 50 unless told otherwise: a burst of agents connecting at
# once would overflow it and see connections reset without an answer.
DAPHNE_ENDPOINT ?= tcp:port=$(PORT):interface=$(HOST):backlog=1024
# Links printed by seed_demo and put in e-mails point at this server unless told otherwise.
AWAITHUMAN_BASE_URL ?= http://$(HOST):$(PORT)

# `make test` leaves out the tests marked slow (minutes of real waiting, on purpose) and the browser
# tests (headless Chromium: two fifths of the suite's CPU); `make test-browser` runs those, and CI
# runs both. `make test PYTEST_ARGS=` runs everything.
PYTEST_ARGS ?= -m "not slow and not browser"
# pytest-xdist workers: one per core by default; PYTEST_WORKERS=0 runs the suite in one process.
PYTEST_WORKERS ?= auto

.PHONY: run prod test test-browser setup migrate lint typecheck mypy-baseline format bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "AwaitHuman needs Python 3.11 or newer (found " + sys.version.split()[0] + "); set PYTHON=python3.11"'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml sdk/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet -e './sdk[receipts,pydantic,openai,anthropic,langchain,mcp]'
	@touch $(STAMP)

setup: $(STAMP)

migrate: setup
	$(BIN)/python manage.py migrate --noinput

run: migrate
	AWAITHUMAN_BASE_URL=$(AWAITHUMAN_BASE_URL) $(BIN)/python manage.py seed_demo
	AWAITHUMAN_BASE_URL=$(AWAITHUMAN_BASE_URL) $(BIN)/daphne -e $(DAPHNE_ENDPOINT) awaithuman.asgi:application

# Production on this machine: WEB web processes (ports PORT, PORT+1, …), a worker and beat,
# against DATABASE_URL and REDIS_URL, after migrate and collectstatic (README "Production").
WEB ?= 2
METRICS_DIR ?= $(CURDIR)/.prometheus-multiproc
prod: setup
	@test -n "$$DATABASE_URL" -a -n "$$REDIS_URL" || \
		{ echo "make prod needs DATABASE_URL and REDIS_URL (README: Run modes)" >&2; exit 1; }
	$(BIN)/awaithuman migrate
	$(BIN)/awaithuman manage collectstatic --noinput --verbosity 0
	rm -rf $(METRICS_DIR) && mkdir -p $(METRICS_DIR)
	PATH=$(CURDIR)/$(BIN):$$PATH PROMETHEUS_MULTIPROC_DIR=$(METRICS_DIR) \
		$(BIN)/honcho start --no-colour -f Procfile -p $(PORT) -c web=$(WEB),worker=1,beat=1

test: setup
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# The browser tests: Debian's chromium (/usr/bin/chromium) driven by Playwright, never a download.
test-browser: setup
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m browser

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@$(MAKE) --no-print-directory typecheck

# mypy (django-stubs, DRF stubs; [tool.mypy] in pyproject.toml) against mypy-baseline.txt, the
# committed list of errors not fixed yet: an error not on it fails, and so does one fixed but
# still listed (`make mypy-baseline` drops it), so the list only shrinks. mypy exits 1 while the
# list is not empty; anything else (2: a crash or a bad config) fails here, not as a clean run.
MYPY_OUTPUT := .mypy_cache/last-run.txt
typecheck: setup
	@mkdir -p .mypy_cache
	$(BIN)/mypy > $(MYPY_OUTPUT) || test $$? -eq 1 || { cat $(MYPY_OUTPUT); exit 2; }
	$(BIN)/mypy-baseline filter < $(MYPY_OUTPUT)

# Rewrite mypy-baseline.txt from a fresh run (after fixing errors, or after a merge). Not
# incremental: mypy's cache can keep an import error that a changed [tool.mypy] override lifted.
mypy-baseline: setup
	@mkdir -p .mypy_cache
	$(BIN)/mypy --no-incremental > $(MYPY_OUTPUT) || test $$? -eq 1 || { cat $(MYPY_OUTPUT); exit 2; }
	$(BIN)/mypy-baseline sync < $(MYPY_OUTPUT)

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Every benchmark, on the machine's PostgreSQL and Redis; results in bench/RESULTS*.md.
bench: setup
	$(BIN)/python -m bench
	$(BIN)/python -m bench.policy_engine
	$(BIN)/python -m bench.queue_page
	$(BIN)/python -m bench.queue_fanout
	$(BIN)/python -m bench.notification_fanout
	$(BIN)/python -m bench.embedded_burst
	$(BIN)/python -m bench.metrics_overhead
	$(BIN)/python -m bench.compliance
	$(BIN)/python -m bench.insights
	$(BIN)/python -m bench.suggestions
	$(BIN)/python -m bench.history

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .mypy_cache .pytest-db-*.sqlite3* .prometheus-multiproc
