# gridflex: `make demo` runs the whole system on simulated assets, `make test` checks it.
# Both bootstrap what they need: uv (via pip when missing), .venv from uv.lock, Mosquitto.

PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.synced
UV      = $(shell PYTHON=$(PYTHON) sh scripts/ensure-uv.sh)
DEMO_ARGS ?=

.PHONY: setup demo test lint typecheck pytest bench contract clean

setup: $(STAMP)

$(STAMP): pyproject.toml uv.lock
	UV_PYTHON=$(PYTHON) $(UV) sync --frozen
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/gridflex demo $(DEMO_ARGS)

test: setup
	sh scripts/ensure-mosquitto.sh
	sh scripts/ensure-chromium.sh
	$(MAKE) lint typecheck pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup
	$(VENV)/bin/pytest -n 2 --dist loadfile --durations=15

bench: setup
	sh scripts/ensure-mosquitto.sh
	$(VENV)/bin/python bench/poll.py

contract: setup
	$(VENV)/bin/gridflex contract export --out docs

clean:
	rm -rf $(VENV) .bootstrap .pytest_cache .mypy_cache .ruff_cache
