# The two commands of the README: `make run` and `make test`. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench redis browser fmt clean compiled test-compiled test-corpus

## setup.py builds the native walkers (Cython) in place: reinstall when they change.
$(STAMP): pyproject.toml setup.py router/core/_speedups.pyx destinations/_speedups.pyx \
		consent/_speedups.pyx native/sha256.h native/hmac.pxi
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

redis:
	@scripts/ensure-redis.sh

## chromium, node/npm and the browser SDKs of tests/e2e/browser (ROUTER_SKIP_BROWSER_TESTS=1: none)
browser:
	@scripts/ensure-browser.sh

## Run the router for real: local Redis (unless ROUTER_REDIS_URL is set), config/router.yaml,
## on the compiled build when gcc and python3-dev are there (ROUTER_BUILD=pure: never).
run: $(STAMP) redis
	@MAKE="$(MAKE)" VENV="$(VENV)" scripts/run.sh

## Everything CI checks: format, lint, types, then the whole test suite on a real Redis.
test: $(STAMP) redis browser lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) redis browser
	$(BIN)/pytest

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) redis
	$(BIN)/python -m bench

## build/compiled/, a copy of the tree with the pure core compiled by mypyc (needs gcc and
## python3-dev). The source tree stays pure Python. `make compiled` always builds; the stamp
## below rebuilds only when what `router serve` loads from the copy changed (make run, bench):
## the packages' files (tracked or new; `find` without git) and the build script.
COMPILED := build/compiled/.built
PACKAGE_FILES := $(wildcard $(shell { [ -e .git ] && git ls-files --cached --others \
  --exclude-standard router consent destinations; } 2>/dev/null || find router consent \
  destinations -name __pycache__ -prune -o -type f ! -name '*.so' ! -name '*.c' -print))

compiled: $(STAMP)
	@PYTHON="$(BIN)/python" scripts/build-compiled.sh

$(COMPILED): $(STAMP) scripts/build-compiled.sh $(PACKAGE_FILES)
	@PYTHON="$(BIN)/python" scripts/build-compiled.sh

## The corpus comparing both builds' outputs (CI runs it).
test-corpus: compiled
	ROUTER_REQUIRE_COMPILED=1 $(BIN)/pytest tests/integration/test_compiled_build.py

## The whole suite on the compiled build, then the corpus.
test-compiled: compiled redis browser
	@for built in node_modules build; do \
	  if [ -d tests/e2e/browser/$$built ]; then \
	    ln -sfn "$(CURDIR)/tests/e2e/browser/$$built" build/compiled/tests/e2e/browser/$$built; fi; \
	done
	cd build/compiled && ../../$(BIN)/pytest
	ROUTER_REQUIRE_COMPILED=1 $(BIN)/pytest tests/integration/test_compiled_build.py

clean:
	rm -rf $(VENV) .run build .pytest_cache .mypy_cache .ruff_cache tests/e2e/browser/node_modules tests/e2e/browser/build
