# Pockity: `make run` serves the embedded default (SQLite + local disk); `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test bench lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/pockity serve

test: $(STAMP)
	scripts/test $(PYTEST_ARGS)

bench: $(STAMP)
	scripts/ensure-postgres
	$(BIN)/python bench/run.py

lint: $(STAMP)
	$(BIN)/ruff check src tests migrations bench scripts/error_codes.py
	$(BIN)/ruff format --check src tests migrations bench scripts/error_codes.py
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
