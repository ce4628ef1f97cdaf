# One entry point for humans and CI. `make test` is the README's test command.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv tools test unit integration lint bench demo soak

$(BIN)/segstream: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/segstream

# promtool runs the alerting rules' unit tests (Debian's prometheus package)
tools:
	@command -v promtool >/dev/null || { apt-get update -qq && apt-get install -y -qq prometheus >/dev/null; }

lint: venv
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy

unit: venv
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
