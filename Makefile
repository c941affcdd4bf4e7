# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# npm is optional: without it the JS client suite and the dashboard are skipped.
NPM := $(shell command -v npm 2>/dev/null)
NODE_DEPS := $(if $(NPM),node_modules/.installed realtime/static/dashboard/index.html)

# The dashboard, built by Vite from dashboard/ (not committed; served at / by the web).
DASHBOARD := realtime/static/dashboard/index.html
DASHBOARD_SOURCES := $(shell find dashboard -type f 2>/dev/null) realtime/static/realtime-client.js

.PHONY: run test lint format clean dashboard

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "realtime needs Python 3.11 or newer (found " + sys.version.split()[0] + "); run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# The locked npm packages (socket.io-client for the JS suite, the dashboard's build tools);
# reinstalled only when the lock file changes.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

$(DASHBOARD): node_modules/.installed $(DASHBOARD_SOURCES)
	npm run build

## dashboard: build the browser dashboard (needs Node.js 20+ and npm)
dashboard: $(DASHBOARD)

## run: everything on this machine (embedded Redis unless REDIS_URL is set), with demo data
run: $(VENV)/.installed-run
ifdef NPM
	@$(MAKE) --no-print-directory dashboard || echo "make run: the dashboard did not build; / says how to build it"
else
	@echo "make run: npm not found, so no dashboard; / says how to build it (everything else works)"
endif
	$(BIN)/realtime dev

## test: lint, type-check, then the whole test suite against real Redis and real processes
test: $(VENV)/.installed-test $(NODE_DEPS) lint
	$(BIN)/pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check realtime processors tests bench
	$(BIN)/ruff format --check realtime processors tests bench
	$(BIN)/mypy

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix realtime processors tests bench
	$(BIN)/ruff format realtime processors tests bench

clean:
	rm -rf $(VENV) node_modules realtime/static/dashboard build *.egg-info .pytest_cache .mypy_cache .ruff_cache
