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
	$(BIN)/pip install --quiet -e ".[phone]" || echo "MediaPipe Tasks did not install: its tests will skip"
	touch $@

install: $(BIN)/edgeship

# Keras downloads ImageNet weights on first use. Offline, a developer checkout next to the
# shared data seeds Keras' cache with the same file, so the demo takes the real code path.
SEED_WEIGHTS := ../shared/weights/mobilenet_2_5_224_tf_no_top.h5
KERAS_CACHE := $(HOME)/.keras/models

demo: install
	@if [ -f $(SEED_WEIGHTS) ] && [ ! -f $(KERAS_CACHE)/$(notdir $(SEED_WEIGHTS)) ]; then \
		mkdir -p $(KERAS_CACHE) && cp $(SEED_WEIGHTS) $(KERAS_CACHE)/; fi
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
	$(BIN)/python benchmarks/render.py
