"""Shared fixtures: generated data, one tiny trained run per session, vendored Coral files.

The default suite needs nothing outside the clone: third-party models and the test image are
vendored in ``tests/data/coral``, the ImageNet weights come from the package's embedded copy,
and photos are generated. Only the ``slow`` real-photo runs read ``../shared``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["EDGESHIP_NO_DOWNLOAD"] = "1"  # weights="imagenet" never reaches the network in tests
# The decode cache of the whole suite (its subprocesses too) is a temporary folder, never ~/.cache.
_CACHE = tempfile.mkdtemp(prefix="edgeship-test-cache-")
os.environ["EDGESHIP_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FLOWERS = SHARED / "data" / "flowers5"
WEIGHTS = SHARED / "weights"
CORAL = Path(__file__).resolve().parent / "data" / "coral"  # vendored, Apache-2.0


# How Google's own Coral tests resize for each case in cases.json.
CORAL_RESIZE = {"tf_half_pixel_bilinear": "bilinear", "pil_nearest": "nearest"}


def missing_system_program(reason: str) -> None:
    """Skips a test whose system program (sshd, Chromium) is missing; in CI, where .ci/run
    installs them, fails instead, so that a broken install step cannot pass as green."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (.ci/run installs it; in CI this is a failure, not a skip)")
    pytest.skip(reason)


def needs_shared(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is absent (the project's shared data folder)")


def coral_cases() -> list:
    """Google's Coral test expectations, one pytest parameter each."""
    return [pytest.param(case, id=case["id"]) for case in json.loads((CORAL / "cases.json").read_text())["cases"]]


@pytest.fixture(scope="session")
def runtime_setup(tmp_path_factory):
    """Tiny flatbuffer-built models, three colour classes of images, and a run directory over them."""
    from runtime_models import write_images, write_models, write_run

    root = tmp_path_factory.mktemp("runtime")
    models = write_models(root / "models")
    data = write_images(root / "data")
    return models, data, write_run(root / "run", data, models["float"])


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """Four generated classes, 12 images each, 40 px: enough for a split with every class scored."""
    from edgeship.demo import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("demo"), images_per_class=12, image_size=40, seed=1)


@pytest.fixture(scope="session")
def tiny_run(demo_data, tmp_path_factory) -> Path:
    """A finished run of a 32-px MobileNet v1 (alpha 0.25, random init), shared by the session."""
    from edgeship.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(TrainConfig.tiny(data_dir=str(demo_data), out_dir=str(out), epochs=2))
    return out


@pytest.fixture(scope="session")
def tiny_export(tiny_run) -> Path:
    """The tiny run exported to every variant, the opt-in int8-mixed included."""
    from edgeship.export import FORMATS, ExportConfig, export

    export(ExportConfig.tiny(run_dir=str(tiny_run), formats=FORMATS))
    return tiny_run / "export"


@pytest.fixture
def standin_compiler(tmp_path, monkeypatch) -> Path:
    """Puts a stand-in ``edgetpu_compiler`` (tests/edgetpu_standin.py) first on PATH; returns
    the file it records its arguments in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "edgetpu_compiler"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).with_name('edgetpu_standin.py')} \"$@\"\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    args = tmp_path / "compiler_args.json"
    monkeypatch.setenv("EDGETPU_STANDIN_ARGS", str(args))
    return args


def assert_backbone_matches(model, reference) -> int:
    """Asserts that every weighted backbone layer of ``model`` holds ``reference``'s layer of the
    same name's weights; returns how many layers were compared."""
    import numpy as np

    from edgeship.train.model import HEAD_LAYERS

    compared = 0
    for layer in model.layers:
        if layer.weights and layer.name not in HEAD_LAYERS:
            for ours, theirs in zip(layer.get_weights(), reference.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(ours, theirs)
            compared += 1
    return compared


@contextlib.contextmanager
def benchmark_module(name: str):
    """A script of benchmarks/ imported as the scripts import each other (their folder on sys.path)."""
    import importlib

    folder = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, folder)
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(folder)
