"""The run directory's one owner: split digests that name changed files, the lock, the export swap,
and configs whose damage or typos end in a clear error before any work."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.errors import ConfigError, DataError, RunBusyError
from edgeship.runtime.dataset import run_dataset
from edgeship.runtime.rundir import RunDir
from edgeship.train.config import load_run_config

from runtime_models import write_images, write_models, write_run

runner = CliRunner()


@pytest.fixture()
def recorded(tmp_path):
    data = write_images(tmp_path / "data", per_class=3)
    (data / "red" / "corrupt.jpg").unlink()
    models = write_models(tmp_path / "models")
    return write_run(tmp_path / "run", data, models["float"]), data, models


def test_a_changed_or_missing_image_is_named_by_eval_and_validate(recorded):
    run, data, models = recorded
    assert len(run_dataset(run).samples) == 9
    (data / "green" / "green_1.png").write_bytes((data / "green" / "green_0.png").read_bytes())
    (data / "blue" / "blue_2.png").unlink()
    with pytest.raises(DataError, match=r"1 missing or unreadable \(blue/blue_2.png\); 1 changed since training "
                                        r"\(green/green_1.png\)"):
        run_dataset(run)
    for command in (["eval", str(models["float"]), "--run", str(run)],
                    ["validate", str(models["uint8"]), "--run", str(run)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1 and "green/green_1.png" in result.output, result.output
        assert "Traceback" not in result.output


def test_damaged_and_stale_configs_are_clear_errors(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    with pytest.raises(ConfigError, match="No config.json.*edgeship train"):
        load_run_config(run.path)
    run.config_path.write_text('{"epochs": 3,')
    with pytest.raises(ConfigError, match="config.json is damaged"):
        load_run_config(run.path)
    run.config_path.write_text(json.dumps({"epochs": 3, "warmup": 2}))
    with pytest.raises(ConfigError, match="Unknown field.*warmup.*train a new run"):
        load_run_config(run.path)
    run.config_path.write_text(json.dumps({"epochs": "x"}))
    with pytest.raises(ConfigError, match="`epochs`.*whole number"):
        load_run_config(run.path)


def test_a_second_holder_of_a_run_is_refused_and_a_dead_one_blocks_nothing(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.lock("export"):
        with pytest.raises(RunBusyError, match=f"in use \\(export by process {os.getpid()}\\)"):
            with run.lock("train"):
                pass
        result = runner.invoke(app, ["export", str(run.path)])
        assert result.exit_code == 1 and "in use" in result.output, result.output
    with run.lock("train"):  # released on exit, as the kernel does for a killed holder
        pass


def test_publishing_an_export_is_one_rename_and_old_versions_go(tmp_path):
    run = RunDir(tmp_path / "run")
    first = run.new_export_staging()
    (first / "report.json").write_text("1")
    run.publish_export(first)
    assert (run.export_dir / "report.json").read_text() == "1"
    abandoned = run.new_export_staging()  # a killed export's staging folder
    (abandoned / "model.tflite").write_text("half")
    second = run.new_export_staging()
    assert not abandoned.exists()  # cleaned up by the next export, which holds the lock
    (second / "report.json").write_text("2")
    run.publish_export(second)
    assert (run.export_dir / "report.json").read_text() == "2" and not first.exists()
    assert sorted(p.name for p in run.path.iterdir()) == sorted(["export", second.name])


def test_an_older_plain_export_folder_is_replaced(tmp_path):
    run = RunDir(tmp_path / "run")
    run.export_dir.mkdir(parents=True)
    (run.export_dir / "report.json").write_text("old")
    staging = run.new_export_staging()
    (staging / "report.json").write_text("new")
    run.publish_export(staging)
    assert run.export_dir.is_symlink() and (run.export_dir / "report.json").read_text() == "new"
    assert len(list(run.path.glob(".export-*"))) == 1


def test_config_file_typos_are_errors_before_any_work(tmp_path):
    config = tmp_path / "edgeship.toml"
    config.write_text("[export]\nqat_epohcs = 2\n")
    result = runner.invoke(app, ["export", str(tmp_path / "run"), "--config", str(config)])
    assert result.exit_code == 1 and "qat_epohcs" in result.output and "[export]" in result.output
    config.write_text("[trian]\nepochs = 2\n")
    result = runner.invoke(app, ["run", str(tmp_path), "--config", str(config)])
    assert result.exit_code == 1 and "[trian]" in result.output
    config.write_text("[run]\nmax_drop = 1.0\n")
    result = runner.invoke(app, ["run", str(tmp_path), "--config", str(config), "--formats", "float16"])
    assert result.exit_code == 1 and "add int8 to --formats" in result.output


def test_exit_codes_tell_usage_errors_from_runtime_errors(tmp_path):
    usage = runner.invoke(app, ["validate"])
    assert usage.exit_code == 2
    usage = runner.invoke(app, ["bench", "m.tflite", "--num-runs", "many"])
    assert usage.exit_code == 2
    missing = runner.invoke(app, ["inspect", str(tmp_path / "missing.tflite")])
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    assert "3 the quantized model failed the quality gate" in runner.invoke(app, ["--help"]).output


def test_run_refuses_flags_that_contradict_the_recorded_run(tiny_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out, symlinks=True)
    data_root = RunDir(out).read_split().data_root
    result = runner.invoke(app, ["run", data_root, "--out", str(out), "--image-size", "64", "--epochs", "2"])
    assert result.exit_code == 1 and "image_size=32" in result.output and "image_size=64" in result.output
    assert "epochs" not in result.output.split("asks for")[1]  # epochs=2 is what the run recorded


def test_either_gate_option_turns_the_gate_on_with_validate_defaults():
    from edgeship.run_all import RunConfig
    from edgeship.runtime.validation import ValidationGate

    assert RunConfig().gate is None
    assert RunConfig(min_agreement=0.9).gate == ValidationGate(max_drop=ValidationGate().max_drop, min_agreement=0.9)
    assert RunConfig(max_drop=0.5).gate.min_agreement == ValidationGate().min_agreement
