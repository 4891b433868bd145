"""Augmentation, a tiny end-to-end training run, resume after a kill, tf.distribute, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import ROOT
from edgeship.cli import app
from edgeship.errors import ConfigError
from edgeship.train import TrainConfig, train

runner = CliRunner()


# --------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("preset", ["none", "light", "medium", "heavy"])
def test_augmentation_presets_eagerly_and_inside_tf_data(preset):
    from edgeship.train.augment import make_augmenter
    from edgeship.train.tfkeras import tf

    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (8, 32, 32, 3)).astype(np.float32)
    augment = make_augmenter(preset, seed=1)
    if preset == "none":
        assert augment is None
        return
    eager = augment(batch, training=True).numpy()
    mapped = next(iter(
        tf.data.Dataset.from_tensors(batch).map(lambda x: augment(x, training=True))
    )).numpy()
    for out in (eager, mapped):
        assert out.shape == batch.shape and out.dtype == np.float32
        assert np.isfinite(out).all()
        assert not np.allclose(out, batch)  # something random happened
        # Augmentations never invent a new intensity scale: brightness/contrast stay near [0, 255].
        assert out.min() > -80 and out.max() < 340
    # Inference mode is the identity: augmentation never runs at evaluation.
    np.testing.assert_allclose(augment(batch, training=False).numpy(), batch)


def test_heavier_presets_change_images_more():
    from edgeship.train.augment import make_augmenter

    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (32, 32, 32, 3)).astype(np.float32)
    change = {p: float(np.abs(make_augmenter(p, seed=2)(batch, training=True).numpy() - batch).mean())
              for p in ("light", "heavy")}
    assert change["heavy"] > change["light"]


def test_unknown_preset_names_the_choices():
    from edgeship.train.augment import make_augmenter

    with pytest.raises(ConfigError, match="none, light, medium, heavy"):
        make_augmenter("extreme")


# --------------------------------------------------------------------------- end to end


def test_tiny_run_writes_the_run_directory(tiny_run):
    for name in ("config.json", "labels.txt", "split.json", "model.h5", "history.json", "metrics.json", "metrics.md"):
        assert (tiny_run / name).is_file(), name
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["num_test"] == metrics["num_images"] == 4
    matrix = np.asarray(metrics["confusion_matrix"])
    assert matrix.shape == (4, 4) and matrix.sum() == 4
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / 4)
    assert set(metrics["per_class"]) == {"checks", "dots", "rings", "stripes"}
    assert json.loads((tiny_run / "config.json").read_text())["image_size"] == 32
    assert (tiny_run / "labels.txt").read_text().split() == ["checks", "dots", "rings", "stripes"]
    leftovers = [p for p in tiny_run.rglob("*.tmp*")]
    assert not leftovers, leftovers


def test_an_existing_run_needs_resume(tiny_run, demo_data):
    with pytest.raises(ConfigError, match="--resume"):
        train(TrainConfig.tiny(data_dir=str(demo_data), out_dir=str(tiny_run)))


def test_the_same_command_works_again_after_a_data_error(demo_data, tmp_path):
    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(demo_data / "checks", data / "checks")
    command = ["train", str(data), "--out", str(out), "--weights", "none", "--image-size", "32", "--alpha", "0.25",
               "--backbone", "mobilenet_v1", "--epochs", "1", "--batch-size", "8", "--json"]
    failed = runner.invoke(app, command)
    assert failed.exit_code == 1 and "at least two" in failed.output
    assert not (out / "config.json").exists()  # nothing recorded: the data never proved usable
    shutil.copytree(demo_data / "dots", data / "dots")
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run_dir"] == str(out)


def test_missing_weights_file_says_what_to_pass(demo_data, tmp_path):
    config = TrainConfig.tiny(data_dir=str(demo_data), out_dir=str(tmp_path / "r"), weights=str(tmp_path / "no.h5"))
    with pytest.raises(ConfigError, match="--weights imagenet"):
        train(config)


def test_imagenet_weights_load_through_the_keras_cache(demo_data, tmp_path, monkeypatch):
    """weights='imagenet' takes Keras' real path: its cache in ~/.keras/models, downloads otherwise."""
    from edgeship.weights import embedded_weights

    source = embedded_weights("mobilenet_v1", 0.25)  # the same bytes as Keras' published file
    from edgeship.train.config import MOBILENET_V1
    from edgeship.train.model import build_model
    from edgeship.train.tfkeras import keras

    (tmp_path / ".keras" / "models").mkdir(parents=True)
    (tmp_path / ".keras" / "models" / source.name).symlink_to(source)
    monkeypatch.setenv("HOME", str(tmp_path))  # tf_keras caches in ~/.keras (it reads no KERAS_HOME)
    config = TrainConfig(backbone=MOBILENET_V1, alpha=0.25, image_size=96, weights="imagenet")
    model = build_model(config, 3)
    reference = keras.applications.MobileNet(input_shape=(96, 96, 3), include_top=False, weights=str(source), alpha=0.25)
    np.testing.assert_array_equal(model.get_layer("conv1").get_weights()[0], reference.get_layer("conv1").get_weights()[0])


# --------------------------------------------------------------------------- resume and distribution


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_a_killed_run_resumes_where_it_stopped(demo_data, tmp_path):
    out = tmp_path / "run"
    code = f"""
        from edgeship.train import TrainConfig, train
        train(TrainConfig.tiny(data_dir={str(demo_data)!r}, out_dir={str(out)!r}, epochs=10, fine_tune_epochs=0,
                               patience=10, image_size=64))
    """
    proc = subprocess.Popen(_python(code), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    backup = out / "checkpoints" / "phase1"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if (out / "checkpoints" / "best.json").exists() and backup.exists() and any(backup.rglob("*.index")):
                record = json.loads((out / "checkpoints" / "best.json").read_text())
                if record["epoch"] >= 1:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, "training ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not (out / "model.h5").exists() and not (out / "metrics.json").exists()

    result = train(TrainConfig.tiny(data_dir=str(demo_data), out_dir=str(out)), resume=True)
    history = json.loads((out / "history.json").read_text())["phase1"]
    # BackupAndRestore continued from the last finished epoch, not from epoch 1.
    assert 0 < len(history["loss"]) < 10
    assert result.model_path.is_file()
    # The recorded config, not the new flags, was used.
    assert json.loads((out / "config.json").read_text())["epochs"] == 10


@pytest.mark.slow  # a minute or more of training: `make test-slow`
def test_mirrored_strategy_on_two_logical_cpus(demo_data, tmp_path):
    out = tmp_path / "run"
    code = f"""
        from edgeship.train.tfkeras import tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from edgeship.train import TrainConfig, train
        train(TrainConfig.tiny(data_dir={str(demo_data)!r}, out_dir={str(out)!r}, strategy="mirrored"))
    """
    done = subprocess.run(_python(code), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == "mirrored" and metrics["num_replicas"] == 2


@pytest.mark.slow  # a minute or more of training: `make test-slow`
def test_deterministic_runs_give_the_same_model_and_files_bit_for_bit(demo_data, tmp_path):
    """Without --deterministic, two runs of this very command differ in their weights (parallel
    augmentation and kernels sum in varying order); each run is its own process, as a user's is.
    The export is seeded by the run's seed: the two runs' files are the same bytes."""
    from edgeship.train import load_float_model

    flags = ["--backbone", "mobilenet_v1", "--alpha", "0.25", "--image-size", "32", "--weights", "none",
             "--batch-size", "8", "--epochs", "2", "--fine-tune-epochs", "1", "--augment", "light", "--deterministic"]
    tiny_export = ["--formats", "int8,float32", "--qat-epochs", "2", "--qat-batch-size", "8",
                   "--calibration-batches", "2", "--representative-samples", "16"]
    for name in ("a", "b"):
        for command in (["train", str(demo_data), "--out", str(tmp_path / name), *flags],
                        ["export", str(tmp_path / name), *tiny_export]):
            done = subprocess.run([sys.executable, "-m", "edgeship.cli", *command], cwd=ROOT, capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "a" / "config.json").read_text())["deterministic"] is True
    weights = [load_float_model(tmp_path / name).get_weights() for name in ("a", "b")]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    for file in ("model_int8.tflite", "model_float32.tflite"):
        assert (tmp_path / "a" / "export" / file).read_bytes() == (tmp_path / "b" / "export" / file).read_bytes()


# --------------------------------------------------------------------------- CLI


def test_cli_train_maps_flags_onto_the_config(demo_data, tmp_path):
    config_file = tmp_path / "train.toml"
    config_file.write_text("[train]\nepochs = 1\nfine_tune_epochs = 0\nalpha = 0.35\nbatch_size = 16\n")
    out = tmp_path / "cli-run"
    result = runner.invoke(app, [
        "train", str(demo_data), "--out", str(out), "--config", str(config_file), "--weights", "none",
        "--image-size", "32", "--augment", "none", "--batch-size", "8",
    ])
    assert result.exit_code == 0, result.output
    assert "float test accuracy" in result.output
    saved = json.loads((out / "config.json").read_text())
    assert (saved["epochs"], saved["image_size"], saved["batch_size"], saved["augment"]) == (1, 32, 8, "none")


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path / "nowhere"), "--weights", "none", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "Data folder not found" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["train", str(tmp_path), "--backbone", "resnet"])
    assert result.exit_code == 1 and "backbone" in result.output
