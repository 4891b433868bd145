"""int8-mixed on a tiny run: the search, its guarantees, the file in the runtime, the flag."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.errors import ConfigError
from edgeship.export.config import DEFAULT_FORMATS, FILE_NAMES, INT8_MIXED, ExportConfig
from edgeship.export.mixed_precision import Layer, search_float_layers
from edgeship.runtime.graph import is_full_integer
from edgeship.runtime.manifest import read_embedded
from edgeship.runtime.model import load_model

runner = CliRunner()

# Every validation image must keep the float model's class. The fixture's model makes every image a
# close call, which post-training int8 alone cannot keep: the search must keep a layer in float.
TARGET = 1.0


@pytest.fixture(scope="module")
def mixed_run(demo_data, tmp_path_factory):
    """A tiny run with a validation split of 20 images (the shared one has 4), exported with int8-mixed.

    Its classifier is scaled down so that the classes' probabilities differ by less than the
    int8 softmax's step (1/256) on every image, while a small bias keeps the float model's
    answer away from class 0, where int8's ties fall: close calls, whatever the training drew.
    """
    from edgeship.export import export
    from edgeship.runtime.rundir import RunDir
    from edgeship.train import TrainConfig, load_float_model, train

    out = tmp_path_factory.mktemp("mixed") / "run"
    train(TrainConfig.tiny(data_dir=str(demo_data), out_dir=str(out), epochs=2, val_fraction=0.4))
    model = load_float_model(out)
    head = model.get_layer("head_logits")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 1e-3, np.linspace(0, 1e-3, bias.size, dtype=bias.dtype)])
    model.save(RunDir(out).model_path)
    export(ExportConfig.tiny(run_dir=str(out), formats=("int8-ptq", "float32", INT8_MIXED), min_agreement=TARGET,
                             mixed_search_images="val"))
    return out


def _val_agreement(run, config: ExportConfig, float_tensors: list[str], tmp_path, parts=("val",)) -> float:
    """Re-measured from scratch: calibrate, quantize with ``float_tensors`` in float, run the file
    in LiteRT on the split ``parts``."""
    from edgeship.export import exporter
    from edgeship.export.mixed_precision import layer_sensitivity, quantize_keeping_float
    from edgeship.runtime.rundir import RunDir
    from edgeship.train import normalize_tf, predict_probabilities

    loaded = exporter._load_run(RunDir(run), config)
    data = loaded.data
    val = np.concatenate([data.indices[part] for part in parts])
    float_scores = np.concatenate([predict_probabilities(loaded.float_model, data, part, 8) for part in parts])
    representative = exporter._representative(loaded, config.representative_samples)
    calibrated, _ = layer_sensitivity(loaded.float_model, representative,
                                      lambda: ([normalize_tf(data.pixels[i : i + 1], data.normalization).numpy()] for i in val))
    path = tmp_path / "candidate.tflite"
    path.write_bytes(loaded.file_bytes(INT8_MIXED, quantize_keeping_float(calibrated, float_tensors, config.io)))
    model = load_model(path)
    top = np.asarray([np.argmax(model.classify(pixels)) for pixels in data.pixels[val]])
    return float(np.mean(top == np.argmax(float_scores, axis=1)))


def test_search_keeps_the_fewest_layers_in_float_that_reach_the_target(mixed_run, tmp_path):
    report = json.loads((mixed_run / "export" / "report.json").read_text())
    mixed = report[INT8_MIXED]
    assert 1 <= mixed["num_float_layers"] < mixed["num_layers"] and mixed["reached"]
    assert mixed["val_agreement"] == mixed["search_agreement"] >= TARGET and mixed["search_images"] == "val"
    assert mixed["float_layers"] and len(mixed["float_tensors"]) == mixed["num_float_layers"]
    # The bisection's k was measured to reach the target and its k - 1 prefix to miss it.
    ranked = [layer["tensor"] for layer in mixed["ranking"]]
    measured = {tuple(t["float_layers"]): t["agreement"] for t in mixed["trials"]}
    k = mixed["prefix_k"]
    assert measured[tuple(ranked[:k])] >= TARGET and measured[tuple(ranked[: k - 1])] < TARGET
    # Minimal, re-measured independently: any one float layer back in int8 misses the target.
    config = ExportConfig.tiny(run_dir=str(mixed_run), min_agreement=TARGET)
    assert _val_agreement(mixed_run, config, mixed["float_tensors"], tmp_path) >= TARGET
    for tensor in mixed["float_tensors"]:
        fewer = [t for t in mixed["float_tensors"] if t != tensor]
        assert _val_agreement(mixed_run, config, fewer, tmp_path) < TARGET, tensor


def test_the_report_names_the_float_layers_beside_the_other_variants(mixed_run):
    export_dir = mixed_run / "export"
    report = json.loads((export_dir / "report.json").read_text())
    row = report["variants"][INT8_MIXED]
    assert row["file"] == FILE_NAMES[INT8_MIXED] and row["size_bytes"] == (export_dir / row["file"]).stat().st_size
    assert row["mean_latency_ms"] > 0 and 0 <= row["agreement"] <= 1
    # Float weights in the kept layers: never smaller than the full-integer file.
    assert row["size_bytes"] >= report["variants"]["int8-ptq"]["size_bytes"]
    markdown = (export_dir / "report.md").read_text()
    assert "| int8-mixed |" in markdown and "| int8-ptq |" in markdown
    for name in report[INT8_MIXED]["float_layers"]:
        assert f"`{name}`" in markdown
    assert f"{report[INT8_MIXED]['num_float_layers']} of {report[INT8_MIXED]['num_layers']} layers" in markdown
    assert "Edge TPU targets never get it" in markdown
    _, manifest = read_embedded((export_dir / row["file"]).read_bytes())
    assert manifest.quantization == INT8_MIXED and manifest.extra["float_layers"] == report[INT8_MIXED]["float_layers"]


def test_the_file_classifies_raw_photos_in_the_runtime(mixed_run):
    path = mixed_run / "export" / FILE_NAMES[INT8_MIXED]
    split = json.loads((mixed_run / "split.json").read_text())
    model = load_model(path)
    assert model.interpreter.get_input_details()[0]["dtype"] == np.uint8  # raw pixels, as the int8 files
    assert model.interpreter.get_output_details()[0]["dtype"] == np.float32
    assert not is_full_integer(path)
    for rel, label in (row[:2] for row in split["test"]):
        scores = model.classify(model.preprocess(f"{split['data_root']}/{rel}"))
        assert scores.shape == (4,) and abs(float(scores.sum()) - 1) < 1e-3
    # And through every runtime command.
    for args in (["predict", str(path), split["data_root"]], ["eval", str(path), "--run", str(mixed_run)],
                 ["validate", str(path), "--run", str(mixed_run), "--max-drop", "100"],
                 ["bench", str(path), "--num-runs", "3"], ["inspect", str(path), "--edgetpu"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    assert "int8-mixed" in result.output and "DEQUANTIZE" in result.output  # inspect: the kind, and the cut


def test_min_agreement_is_checked_and_run_has_one_flag_for_gate_and_search(tiny_run, tmp_path):
    from edgeship.run_all import RunConfig, _export_config

    for bad in (0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="min_agreement"):
            ExportConfig(min_agreement=bad)
    assert ExportConfig().min_agreement == 0.99 and INT8_MIXED not in ExportConfig().formats == DEFAULT_FORMATS
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    result = runner.invoke(app, ["export", str(run), "--formats", "int8-mixed", "--min-agreement", "1.5"])
    assert result.exit_code == 1 and "min_agreement" in result.output and "Traceback" not in result.output
    help_text = runner.invoke(app, ["run", "--help"]).output
    assert len(re.findall(r"^ +--min-agreement ", help_text, re.M)) == 1 and "int8-mixed" in help_text
    assert _export_config(RunConfig(min_agreement=0.995), run).min_agreement == 0.995
    # 0 turns the gate's agreement check off; the search keeps its own target.
    assert _export_config(RunConfig(min_agreement=0.0), run).min_agreement == 0.99


def test_the_search_on_train_and_val_images_reaches_its_target_there(mixed_run, tmp_path):
    """The default: every train and validation image, the test split never."""
    from edgeship.export import export

    run = tmp_path / "run"
    shutil.copytree(mixed_run, run, ignore=shutil.ignore_patterns("export"))
    export(ExportConfig.tiny(run_dir=str(run), formats=(INT8_MIXED,), min_agreement=TARGET), report_page=False)
    mixed = json.loads((run / "export" / "report.json").read_text())[INT8_MIXED]
    split = json.loads((run / "split.json").read_text())
    assert mixed["search_images"] == "train+val" and ExportConfig().mixed_search_images == "train+val"
    assert mixed["num_search_images"] == len(split["train"]) + len(split["val"])
    assert mixed["search_agreement"] >= TARGET and mixed["reached"] and 0 <= mixed["val_agreement"] <= 1
    config = ExportConfig.tiny(run_dir=str(run), min_agreement=TARGET)
    assert _val_agreement(run, config, mixed["float_tensors"], tmp_path, ("train", "val")) >= TARGET
    markdown = (run / "export" / "report.md").read_text()
    assert f"on the train and validation images ({mixed['num_search_images']} images" in markdown


def test_mixed_search_images_is_checked_and_a_flag():
    with pytest.raises(ConfigError, match=r"`mixed_search_images` must be one of val, train\+val; received "
                                          r"mixed_search_images='test'"):
        ExportConfig(mixed_search_images="test")
    assert "--mixed-search-images" in runner.invoke(app, ["export", "--help"]).output


def _layers(count: int) -> list[Layer]:
    return [Layer(f"t{i}", "CONV_2D", 1.0, 1.0 - i / count) for i in range(count)]


def test_search_bisects_then_returns_layers_the_ranking_put_too_high():
    ranking = _layers(16)
    needed = {"t1", "t6"}  # the target holds exactly when both stay float
    calls = []

    def agreement(layers):
        calls.append(layers)
        return 1.0 if needed <= {layer.tensor for layer in layers} else 0.5

    result = search_float_layers(ranking, agreement, 0.99)
    assert {layer.tensor for layer in result.float_layers} == needed and result.reached
    assert result.prefix_k == 7  # t6 is the 7th ranked
    assert len(calls) == len({tuple(l.tensor for l in c) for c in calls})  # each set measured once
    # k = 0, a bisection over 16, one try per prefix layer, and a pass that re-checks the two kept
    assert len(calls) <= 1 + 4 + 7 + 2


def test_search_says_when_even_the_float_graph_misses():
    result = search_float_layers(_layers(8), lambda layers: 0.9, 0.99)
    assert not result.reached and len(result.float_layers) == 8 and result.agreement == 0.9
    assert search_float_layers(_layers(8), lambda layers: 1.0, 0.99).float_layers == []  # int8 alone suffices
