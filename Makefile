# One entry point for humans and CI. `make test` is the README's test command.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv tools asyncapi test unit integration lint bench demo soak

$(BIN)/segstream: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/segstream

# Debian's prometheus package: promtool runs the alerting rules' unit tests, the prometheus
# server scrapes a real worker in tests/integration/test_prometheus.py. node and npm run the
# official AsyncAPI parser on docs/asyncapi.yaml (tests/unit/test_asyncapi.py). Debian's
# docker-compose (v1) validates docker-compose.yml (`config -q`; no Docker engine needed).
# Chromium and its driver run the marketers' page in a real headless browser
# (tests/integration/test_marketing_page.py).
APT_NEEDS := $(if $(shell command -v promtool),,prometheus) \
	$(if $(shell command -v prometheus),,prometheus) \
	$(if $(shell command -v node),,nodejs) $(if $(shell command -v npm),,npm) \
	$(if $(shell command -v docker-compose),,docker-compose) \
	$(if $(shell command -v chromium),,chromium) $(if $(shell command -v chromedriver),,chromium-driver)
ASYNCAPI := tools/asyncapi

tools: $(ASYNCAPI)/node_modules/.package-lock.json
	@test -z "$(strip $(APT_NEEDS))" || { apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(sort $(APT_NEEDS)) >/dev/null; }

# @asyncapi/parser, pinned by package-lock.json, in a project-local node_modules (not in git)
$(ASYNCAPI)/node_modules/.package-lock.json: $(ASYNCAPI)/package.json $(ASYNCAPI)/package-lock.json
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }
	cd $(ASYNCAPI) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

# regenerate docs/asyncapi.yaml from the pydantic contracts
asyncapi: venv
	$(BIN)/python -m segstream.asyncapi

lint: venv
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy

unit: venv tools
	$(BIN)/pytest tests/unit -q

integration: venv tools
	$(BIN)/pytest tests/integration -q

test: lint tools
	$(BIN)/pytest -q

# the long fault-injection profile (not part of `make test`); SOAK_ARGS overrides its options,
# e.g. make soak SOAK_ARGS="--events 20000 --runs 2"
SOAK_ARGS ?= --customers 3000 --events 60000 --runs 4 --kills 4
soak: venv
	$(BIN)/python -m tests.faults.soak $(SOAK_ARGS)

bench: venv
	$(BIN)/python -m bench.run

demo: venv
	$(BIN)/segstream worker --demo
