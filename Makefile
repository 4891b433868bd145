# Two commands on a fresh machine:  `make demo` (the whole pipeline on generated data)
# and `make test`. Both create .venv and install edgeship with its training extra first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-slow bench

$(BIN)/edgeship: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[train,dev]"
	touch $@

install: $(BIN)/edgeship

demo: install
	$(BIN)/edgeship run

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/python benchmarks/run_all.py
