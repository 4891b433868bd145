"""`eval --run` / `validate --run` read the run's decoded pixels when they fit, else decode."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from runtime_models import SIZE

from edgeship.runtime.dataset import run_dataset
from edgeship.runtime.decode_cache import DecodeCache
from edgeship.runtime.evaluation import evaluate, evaluate_to_file
from edgeship.runtime.image import RESIZE_BILINEAR, RESIZE_NEAREST, preprocess
from edgeship.runtime.model import load_model
from edgeship.runtime.rundir import RunDir
from edgeship.runtime.validation import ValidationGate, validate


def _write_pixels(run_dir: Path, size: int, method: str, edit=None, kept: bool = True) -> Path:
    """The run's config and pixel array as training writes them (``edit`` changes the rows), kept
    in this machine's decode cache as training keeps it, unless ``kept`` is False."""
    run = RunDir(run_dir)
    split = run.read_split()
    run.write_config({"image_size": size, "resize_method": method})
    rows = np.stack([preprocess(path, (size, size), method) for name in ("train", "val", "test")
                     for path, _ in split.samples(name)])
    pixels_path, labels_path = run.pixels_paths(size, method)
    pixels_path.parent.mkdir(exist_ok=True)
    np.save(pixels_path, edit(rows) if edit else rows)
    np.save(labels_path, split.labels())
    run.write_pixels_record(split.digest, size, method)
    if kept:
        DecodeCache().keep_array(pixels_path, split.digests(), (size, size), method,
                                 zlib.crc32(pixels_path.read_bytes()))
    return pixels_path


@pytest.fixture
def run_copy(runtime_setup, tmp_path) -> Path:
    _, _, run_dir = runtime_setup
    return Path(shutil.copytree(run_dir, tmp_path / "run", symlinks=True))


@pytest.fixture
def model(runtime_setup):
    models, _, _ = runtime_setup
    return load_model(models["float"])


def _decoded(data):
    return dataclasses.replace(data, pixels=None)


def test_the_report_is_the_same_from_the_array_as_from_decoding(run_copy, model):
    _write_pixels(run_copy, SIZE, model.resize_method)
    data = run_dataset(run_copy)
    assert data.pixels is not None and data.pixels.rows.shape == (len(data.samples), SIZE, SIZE, 3)
    assert isinstance(data.pixels.rows, np.memmap)
    from_array, decoded = evaluate(model, data), evaluate(model, _decoded(data))
    assert from_array == decoded and decoded["accuracy"] == 1.0
    baseline = load_model(run_copy / "export" / "model_float32.tflite")
    gate = ValidationGate(max_drop=100.0)
    first, second = validate(model, baseline, data, gate), validate(model, baseline, _decoded(data), gate)
    first.pop("seconds"), second.pop("seconds")
    assert first == second


def test_the_rows_are_what_is_scored(run_copy, model, tmp_path):
    # Every row turned green: a model reading the array says green for every image.
    _write_pixels(run_copy, SIZE, model.resize_method, edit=lambda rows: np.broadcast_to(
        np.array([30, 190, 50], np.uint8), rows.shape).copy())
    report = evaluate(model, run_dataset(run_copy))
    assert report["confusion_matrix"] == [[0, 4, 0], [0, 4, 0], [0, 4, 0]]
    assert evaluate_to_file(model, run_dataset(run_copy), tmp_path / "eval.jsonl") == report  # streamed too


@pytest.mark.parametrize("damage", ["truncated", "shape", "labels", "dtype", "digest"])
def test_a_damaged_or_mismatched_array_is_decoded_with_a_warning(run_copy, model, damage, caplog):
    pixels_path = _write_pixels(run_copy, SIZE, model.resize_method)
    labels_path = RunDir(run_copy).pixels_paths(SIZE, model.resize_method)[1]
    if damage == "truncated":
        pixels_path.write_bytes(pixels_path.read_bytes()[:-100])
    elif damage == "shape":
        np.save(pixels_path, np.load(pixels_path)[:-1])
    elif damage == "labels":
        np.save(labels_path, np.roll(np.load(labels_path), 1))
    elif damage == "digest":  # written for another split of the same images and classes
        RunDir(run_copy).write_pixels_record("f" * 64, SIZE, model.resize_method)
    else:
        np.save(pixels_path, np.load(pixels_path).astype(np.float32))
    with caplog.at_level(logging.WARNING):
        data = run_dataset(run_copy)
    assert data.pixels is None
    assert "cannot be used" in caplog.text and "decoding the images instead" in caplog.text
    assert evaluate(model, data)["accuracy"] == 1.0


@pytest.mark.parametrize("size, method", [(2 * SIZE, None), (SIZE, "other")])
def test_a_model_of_another_input_size_or_resize_decodes(run_copy, model, size, method):
    # The run's array at another size (or resize method), filled with garbage: the model must not read it.
    if method == "other":
        method = RESIZE_NEAREST if model.resize_method != RESIZE_NEAREST else RESIZE_BILINEAR
    _write_pixels(run_copy, size, method or model.resize_method, edit=np.zeros_like)
    data = run_dataset(run_copy)
    assert data.pixels is not None and not data.pixels.fits(model)
    assert evaluate(model, data) == evaluate(model, _decoded(data))
    assert evaluate(model, data)["accuracy"] == 1.0


def test_an_array_the_run_brought_with_it_is_never_read(run_copy, model, caplog):
    # A pull request's run with pixels made to pass the gate: valid in every other respect.
    _write_pixels(run_copy, SIZE, model.resize_method, edit=np.zeros_like, kept=False)
    with caplog.at_level(logging.INFO):
        data = run_dataset(run_copy)
    assert data.pixels is None and "not decoded by this machine's decode cache" in caplog.text
    assert evaluate(model, data)["accuracy"] == 1.0


def test_a_run_without_config_or_array_decodes(run_copy, model):
    assert run_dataset(run_copy).pixels is None
    RunDir(run_copy).config_path.write_text(json.dumps({"image_size": "huge", "resize_method": "bilinear"}))
    assert run_dataset(run_copy).pixels is None


def test_eval_run_on_the_command_line_reads_the_array(runtime_setup, run_copy):
    from typer.testing import CliRunner

    from edgeship.cli import app

    models, _, _ = runtime_setup
    method = load_model(models["float"]).resize_method
    logging.getLogger().handlers.clear()
    _write_pixels(run_copy, SIZE, method, edit=lambda rows: rows[:, :, :, ::-1].copy())  # red and blue swapped
    result = CliRunner().invoke(app, ["eval", str(models["float"]), "--run", str(run_copy), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(RunDir(run_copy).eval_dir("colour_float").joinpath("eval.json").read_text())
    assert report["per_class"]["green"]["recall"] == 1.0 and report["per_class"]["red"]["recall"] == 0.0


def test_eval_run_with_the_array_and_a_stream_never_loads_tensorflow(runtime_setup, run_copy, tmp_path):
    import subprocess
    import sys

    models, _, _ = runtime_setup
    _write_pixels(run_copy, SIZE, load_model(models["float"]).resize_method)
    out = tmp_path / "eval.jsonl"
    script = f"""
import sys
from typer.testing import CliRunner
from edgeship.cli import app
result = CliRunner().invoke(app, ["eval", {str(models["float"])!r}, "--run", {str(run_copy)!r}, "--out", {str(out)!r}])
assert result.exit_code == 0, result.output
print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "keras")))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED []" in result.stdout, result.stdout[-2000:]
    assert len(out.read_text().splitlines()) == 12
