# Two commands on a fresh machine:  `make demo` (the whole pipeline on generated data)
# and `make test`. Both create .venv and install edgeship with its training extra first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-slow bench

$(BIN)/edgeship: pyproject.toml
	@echo "Installing edgeship[train,dev] into $(VENV) (a minute or two) ..."
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --upgrade pip
	@# The build backend's notes about editable installs are for packagers, not for a first run.
	@PYTHONWARNINGS=ignore $(BIN)/pip install --quiet -e ".[train,dev]"
	@touch $@

install: $(BIN)/edgeship

# Offline, the demo's ImageNet weights come from the copy shipped in edgeship/weights.
demo: install
	$(BIN)/edgeship run

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/python benchmarks/latency_vs_litert.py --rounds 9
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/input_pipeline.py --rounds 7
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/keras_vs_tflite.py --run runs/bench-accuracy/mobilenet_v2_1.0
	$(BIN)/python benchmarks/render.py --readme
