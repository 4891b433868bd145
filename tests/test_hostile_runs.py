"""Run directories, weights files and working directories from someone else are data.

Each test builds what a hostile pull request or a shared folder could hand a user (a
``model.h5`` whose ``Lambda`` layer carries code, a ``.lock`` linked to the user's files, an
``eval`` folder linked elsewhere, a split that names ``/etc/hostname``, a cloned repository
with its own ``edgeship/`` package, a model file named like an option) and checks that
edgeship runs none of it, writes nowhere else, and ends with exit 1 and a message.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.errors import ConfigError, DataError
from edgeship.runtime.rundir import RunDir

runner = CliRunner()
MARKER_VARIABLE = "EDGESHIP_TEST_MARKER"


def _copy_run(tiny_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy, symlinks=True)
    return copy


def _payload(x):
    # Writes the marker named in the environment when called: proof that the layer's code ran.
    import os as _os

    marker = _os.environ.get("EDGESHIP_TEST_MARKER")
    if marker:
        open(marker, "w").write("the model file's code ran")
    return x


def _plant_lambda(run: Path) -> None:
    """Replaces ``run/model.h5`` with the same network and trained weights plus a Lambda layer."""
    from edgeship.train import load_float_model
    from edgeship.train.tfkeras import keras

    honest = load_float_model(run)
    hostile = keras.Model(honest.input, keras.layers.Lambda(_payload, name="payload")(honest.output))
    (run / "model.h5").unlink()
    hostile.save(str(run / "model.h5"), include_optimizer=False)


def test_a_lambda_in_model_h5_runs_on_keras_load_but_never_in_export(tiny_run, tmp_path, monkeypatch):
    from edgeship.train.tfkeras import keras

    run = _copy_run(tiny_run, tmp_path)
    _plant_lambda(run)
    export_before = os.readlink(run / "export") if (run / "export").is_symlink() else None
    marker = tmp_path / "marker"
    monkeypatch.setenv(MARKER_VARIABLE, str(marker))
    keras.models.load_model(str(run / "model.h5"), compile=False)  # what export did before
    assert marker.exists(), "the planted layer must be live for this test to mean anything"
    marker.unlink()

    result = runner.invoke(app, ["export", str(run)])
    assert result.exit_code == 1, result.output
    assert "model.h5" in result.output and "Lambda 'payload'" in result.output
    assert "Traceback" not in result.output
    assert not marker.exists()
    assert (os.readlink(run / "export") if (run / "export").is_symlink() else None) == export_before


def test_resume_reads_best_weights_as_arrays_of_checked_shape(tiny_run, tmp_path):
    """A checkpoint whose arrays declare 40 GB is refused before anything is read."""
    import h5py

    from edgeship.train.h5weights import load_h5_weights
    from edgeship.train import load_float_model

    model = load_float_model(tiny_run)
    names = [layer.name for layer in model.layers if layer.weights]
    path = tmp_path / "best.h5"
    with h5py.File(path, "w") as file:
        file.attrs["layer_names"] = names
        for name in names:
            group = file.create_group(name)
            weights = [w.name for w in model.get_layer(name).weights]
            group.attrs["weight_names"] = weights
            for weight in weights:  # chunked and compressed: declared, never written
                group.create_dataset(weight, shape=(100_000, 100_000), dtype="f4", chunks=(64, 64),
                                     compression="gzip")
    with pytest.raises(ConfigError, match=r"has shape \(100000, 100000\); the model expects"):
        load_h5_weights(model, path)


def test_weights_reached_through_an_external_link_are_refused(tiny_run, tmp_path):
    import h5py

    from edgeship.train.h5weights import load_h5_weights
    from edgeship.train import load_float_model

    model = load_float_model(tiny_run)
    shutil.copyfile(tiny_run / "model.h5", tmp_path / "elsewhere.h5")
    with h5py.File(tmp_path / "linked.h5", "w") as file:
        file["model_weights"] = h5py.ExternalLink(str(tmp_path / "elsewhere.h5"), "/model_weights")
    with pytest.raises(ConfigError, match="ExternalLink, which edgeship does not follow"):
        load_h5_weights(model, tmp_path / "linked.h5")


def test_a_linked_lock_file_is_refused_and_its_target_kept(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's notes")
    (run / ".lock").unlink(missing_ok=True)
    (run / ".lock").symlink_to(victim)
    for command in (["export", str(run)], ["train", "--resume", "--out", str(run)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1, result.output
        assert ".lock" in result.output and "symbolic links" in result.output
    assert victim.read_text() == "the user's notes"


def test_a_hard_linked_lock_file_is_refused_and_its_target_kept(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's notes")
    (run / ".lock").unlink(missing_ok=True)
    os.link(victim, run / ".lock")
    result = runner.invoke(app, ["export", str(run)])
    assert result.exit_code == 1, result.output
    assert "hard link" in result.output
    assert victim.read_text() == "the user's notes"


@pytest.mark.parametrize("link", ["eval", "cache", "checkpoints", "checkpoints/phase1", "export", ".export-0123456789ab",
                                  "config.json", "split.json"])
def test_every_folder_edgeship_writes_refuses_a_link_it_did_not_make(runtime_setup, tmp_path, link):
    _, _, source = runtime_setup
    run = RunDir(tmp_path / "run")
    shutil.copytree(source, run.path, symlinks=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = run.path / link
    if target.exists() or target.is_symlink():
        shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(outside, target_is_directory=True)
    with pytest.raises(DataError, match=f"{link} -> {outside}"):
        with run.lock("export"):
            pass
    with pytest.raises(DataError, match="symbolic links edgeship did not make"):
        run.eval_output_dir("model")
    assert list(outside.iterdir()) == []


def test_eval_run_writes_nothing_through_a_linked_eval_folder(runtime_setup, tmp_path):
    models, _, source = runtime_setup
    run = tmp_path / "run"
    shutil.copytree(source, run, symlinks=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (run / "eval").symlink_to(outside, target_is_directory=True)
    result = runner.invoke(app, ["eval", str(models["float"]), "--run", str(run)])
    assert result.exit_code == 1, result.output
    assert "eval -> " in result.output and "Traceback" not in result.output
    assert list(outside.iterdir()) == []


def test_the_export_link_edgeship_made_is_accepted(tiny_run, tiny_export, tmp_path):
    run = RunDir(_copy_run(tiny_run, tmp_path))
    assert run.export_dir.is_symlink()
    run.check_links()  # its own export link, to a .export-* folder beside it
    shutil.move(run.path / os.readlink(run.export_dir), tmp_path / "moved")
    run.export_dir.unlink()
    run.export_dir.symlink_to(tmp_path / "moved", target_is_directory=True)  # now it leads outside
    with pytest.raises(DataError, match="export -> "):
        run.check_links()


@pytest.mark.parametrize("entry", ["/etc/hostname", "../../../../etc/hostname", "red/../../outside.png", ""])
def test_split_entries_outside_the_data_root_are_refused(runtime_setup, tmp_path, entry):
    models, _, source = runtime_setup
    run = tmp_path / "run"
    shutil.copytree(source, run, symlinks=True)
    split = json.loads((run / "split.json").read_text())
    split["test"][0][0] = entry
    (run / "split.json").write_text(json.dumps(split))
    for command in (["eval", str(models["float"]), "--run", str(run)],
                    ["validate", str(models["float"]), "--run", str(run), "--baseline", str(models["float"])]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1, result.output
        assert "leave the data root" in result.output and repr(entry) in result.output


def test_doctor_imports_only_the_installed_package(tmp_path):
    """A cloned repository's ``edgeship/`` in the working directory is never imported."""
    planted = tmp_path / "clone" / "edgeship"
    (planted / "edgetpu").mkdir(parents=True)
    marker = tmp_path / "marker"
    code = f"open({str(marker)!r}, 'w').write('planted code ran')\n"
    for module in ("__init__.py", "edgetpu/__init__.py", "edgetpu/probe.py"):
        (planted / module).write_text(code)
    command = Path(sys.executable).with_name("edgeship")
    done = subprocess.run([str(command), "doctor", "--json"], cwd=planted.parent, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["libedgetpu"] is not None
    assert not marker.exists()


def test_a_model_named_like_an_option_reaches_the_compiler_as_a_file(standin_compiler, tmp_path, monkeypatch):
    import edgetpu_models as models

    monkeypatch.chdir(tmp_path)
    (tmp_path / "--out_dir=x.tflite").write_bytes(models.chain(middle="RELU"))
    result = runner.invoke(app, ["compile", "./--out_dir=x.tflite"])
    assert result.exit_code == 0, result.output
    passed = json.loads(standin_compiler.read_text())
    assert passed[-1] == str(tmp_path / "--out_dir=x.tflite")
    assert (tmp_path / "--out_dir=x_edgetpu.tflite").exists() and not (tmp_path / "x.tflite").exists()


def test_a_run_record_that_is_a_fifo_or_huge_is_refused_without_reading_it(runtime_setup, tmp_path):
    models, _, source = runtime_setup
    run = tmp_path / "run"
    shutil.copytree(source, run, symlinks=True)
    (run / "split.json").unlink()
    os.mkfifo(run / "split.json")  # opening it for reading would block forever
    result = runner.invoke(app, ["eval", str(models["float"]), "--run", str(run)])
    assert result.exit_code == 1 and "not a regular file" in result.output, result.output
    (run / "split.json").unlink()
    with open(run / "split.json", "wb") as file:  # sparse: 2 GiB declared, nothing stored
        file.truncate(2 << 30)
    result = runner.invoke(app, ["eval", str(models["float"]), "--run", str(run)])
    assert result.exit_code == 1 and "more than the" in result.output, result.output


@pytest.mark.parametrize("content", ["/dev/zero", "huge"])
def test_a_config_file_is_read_within_a_bound(tmp_path, content):
    config = tmp_path / "edgeship.toml"
    if content == "huge":
        config.write_text("[train]\n" + "# padding\n" * 200_000)
    else:
        config.symlink_to(content)  # a path the user typed may be a link; its size still counts
    result = runner.invoke(app, ["train", str(tmp_path), "--config", str(config)])
    assert result.exit_code == 1 and "is not valid TOML" in result.output, result.output


def test_a_fifo_among_the_recorded_images_is_named_not_waited_on(runtime_setup, tmp_path):
    models, data, source = runtime_setup
    run, root = tmp_path / "run", tmp_path / "data"
    shutil.copytree(source, run, symlinks=True)
    shutil.copytree(data, root)
    split = json.loads((run / "split.json").read_text())
    split["data_root"] = str(root)
    (run / "split.json").write_text(json.dumps(split))
    fifo = root / split["test"][0][0]
    fifo.unlink()
    os.mkfifo(fifo)
    result = runner.invoke(app, ["eval", str(models["float"]), "--run", str(run)])
    assert result.exit_code == 1 and "missing or unreadable" in result.output, result.output


def test_weights_named_as_keras_3_names_them_load_in_keras_order(tmp_path):
    """Keras 3 writes a depthwise kernel as ``layer/kernel`` (tf_keras: ``depthwise_kernel``), as in
    Keras' published MobileNetV2 no-top file: such a layer is paired in order, as Keras pairs it."""
    import h5py
    import numpy as np

    from edgeship.train.h5weights import load_h5_weights
    from edgeship.train.tfkeras import keras

    def network():
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.DepthwiseConv2D(3, name="dw")(inputs)
        return keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(x))

    saved = network()
    saved.get_layer("dw").set_weights([np.random.default_rng(0).normal(size=(3, 3, 3, 1)).astype("f4"),
                                       np.arange(3, dtype="f4")])
    path = tmp_path / "weights.h5"
    saved.save_weights(str(path))
    with h5py.File(path, "r+") as file:
        layer = file["dw"]
        layer.move("dw/depthwise_kernel:0", "dw/kernel")
        layer.move("dw/bias:0", "dw/bias")
        layer.attrs["weight_names"] = ["dw/kernel", "dw/bias"]
    loaded = network()
    load_h5_weights(loaded, path)
    for mine, theirs in zip(loaded.get_weights(), saved.get_weights()):
        assert np.array_equal(mine, theirs)
