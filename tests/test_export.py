"""The export stage on a tiny run: every variant converts, runs in LiteRT, describes itself."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.errors import ConfigError
from edgeship.export.config import FILE_NAMES, ExportConfig
from edgeship.runtime.gate_report import GateReports
from edgeship.runtime.graph import is_full_integer, read_graph
from edgeship.runtime.manifest import read_embedded
from edgeship.runtime.model import load_model
from edgeship.train import TrainConfig

runner = CliRunner()


def test_every_variant_converts_and_runs_in_litert(tiny_export, tiny_run):
    split = json.loads((tiny_run / "split.json").read_text())
    rel, label = split["test"][0][:2]
    image = f"{split['data_root']}/{rel}"  # the recorded data root
    for kind, name in FILE_NAMES.items():
        model = load_model(tiny_export / name)
        scores = model.classify(model.preprocess(image))
        assert scores.shape == (4,) and np.isfinite(scores).all(), kind
        assert abs(float(scores.sum()) - 1.0) < 0.05, kind  # softmax survives every conversion


def test_full_integer_models_have_no_float_tensor_on_any_op(tiny_export):
    for kind in ("int8", "int8-ptq"):
        path = tiny_export / FILE_NAMES[kind]
        assert is_full_integer(path), kind
        graph = read_graph(path)
        assert not graph.is_edgetpu_compiled
    for kind in ("float32", "float16", "dynamic"):
        assert not is_full_integer(tiny_export / FILE_NAMES[kind]), kind


def test_uint8_input_takes_raw_pixels_exactly(tiny_export):
    model = load_model(tiny_export / FILE_NAMES["int8"])
    detail = model.interpreter.get_input_details()[0]
    assert detail["dtype"] == np.uint8
    scale, zero_point = detail["quantization"]
    assert scale == pytest.approx(1 / 128, rel=1e-6) and zero_point == 128
    pixels = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    np.testing.assert_array_equal(model.input_tensor(pixels)[0], pixels)  # fed as they are


def test_labels_and_manifest_read_back_from_the_file_alone(tiny_export, tiny_run):
    digest = json.loads((tiny_run / "split.json").read_text())["digest"]
    float_accuracy = json.loads((tiny_export / "report.json").read_text())["float_keras"]["test_accuracy"]
    for kind, name in FILE_NAMES.items():
        labels, manifest = read_embedded((tiny_export / name).read_bytes())
        assert labels == ["checks", "dots", "rings", "stripes"]
        assert manifest.quantization == kind
        assert manifest.image_size == (32, 32) and manifest.resize_method == TrainConfig().resize_method
        assert (manifest.mean, manifest.std) == (128.0, 128.0)
        assert manifest.backbone == "mobilenet_v1_0.25"
        assert manifest.split_digest == digest
        assert manifest.float_test_accuracy == pytest.approx(float_accuracy)
    _, int8 = read_embedded((tiny_export / FILE_NAMES["int8"]).read_bytes())
    assert int8.extra["int8_source"] in ("qat", "ptq") and "validation split" in int8.extra["int8_choice_reason"]


def test_report_scores_every_variant_against_the_float_model(tiny_export):
    report = json.loads((tiny_export / "report.json").read_text())
    predictions = {k: np.asarray(v) for k, v in json.loads((tiny_export / "predictions.json").read_text()).items()}
    assert set(report["variants"]) == set(FILE_NAMES) and len(predictions["targets"]) == report["num_test_images"]
    for kind, row in report["variants"].items():
        # The report's numbers are the recorded predictions' (what `run` gates on).
        assert row["test_accuracy"] == pytest.approx(np.mean(predictions[kind] == predictions["targets"]))
        assert row["agreement"] == pytest.approx(np.mean(predictions[kind] == predictions["float_keras"]))
        assert row["size_bytes"] == (tiny_export / row["file"]).stat().st_size
        assert row["mean_latency_ms"] > 0
    assert report["variants"]["float32"]["agreement"] >= 0.75  # the same network, in another runtime
    assert report["int8_source"] in ("qat", "ptq") and "0" in report["qat_history_val"]
    distances = {kind: row["probability_distance"] for kind, row in report["variants"].items()}
    # float32 differs from Keras by float rounding only; int8 by its quantization steps (small on
    # this random-init model's near-uniform outputs, so compared with float32's, not with a constant).
    assert all(0 <= d <= 1 for d in distances.values()) and distances["float32"] < 1e-3
    assert distances["float32"] < distances["int8-ptq"]
    # QAT's own test score is on record whichever file ships, and no extra file is left
    assert ("qat_test" in report) == (report["int8_source"] == "ptq")
    assert sorted(p.name for p in tiny_export.glob("*.tflite")) == sorted(FILE_NAMES.values())
    markdown = (tiny_export / "report.md").read_text()
    assert "| int8 |" in markdown and "int8 choice" in markdown
    # where the time went: every step that ran, within the whole
    steps = report["step_seconds"]
    assert set(steps) == {"load", "convert_float_model", "qat", "convert_qat_model", "choose_int8",
                          "int8_mixed_search", "write_and_score"}
    assert all(v > 0 for v in steps.values()) and sum(steps.values()) <= report["export_seconds"] + 0.1
    assert "convert float model" in markdown and "write and score" in markdown
    # export/ points at one complete version; no staging folder is left behind
    assert tiny_export.is_symlink() and [p.name for p in tiny_export.parent.glob(".export-*")] == [
        tiny_export.resolve().name]


@pytest.mark.slow  # a minute or more of training: `make test-slow`
def test_one_inference_graph_converts_as_the_keras_entry_point_does(tiny_run):
    """The converted file of the saved inference function is TensorFlow's own conversion of the
    Keras model: the same signature (input and output names) and the same outputs."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeship.export.convert import _configure, _run, convert_variants
    from edgeship.train import load_float_model
    from edgeship.train.tfkeras import tf

    model = load_float_model(tiny_run)
    images = np.random.default_rng(0).uniform(-1, 1, (4, *model.input_shape[1:])).astype(np.float32)
    ours = convert_variants(model, ["float32", "float16"])
    for kind, flatbuffer in ours.items():
        theirs = _run(_configure(tf.lite.TFLiteConverter.from_keras_model(model), kind, None, "uint8"), kind)
        runners = [Interpreter(model_content=f).get_signature_runner() for f in (flatbuffer, theirs)]
        outputs = [[r(**{model.input_names[0]: image[None]}) for image in images] for r in runners]
        assert list(outputs[0][0]) == list(outputs[1][0]) == model.output_names
        np.testing.assert_array_equal(np.stack([o[model.output_names[0]] for o in outputs[0]]),
                                      np.stack([o[model.output_names[0]] for o in outputs[1]]))


def test_int8_io_and_an_interrupted_export_leaves_the_previous_one_intact(tiny_export, tiny_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {p.name: p.read_bytes() for p in (run / "export").iterdir()}

    import edgeship.export.convert as convert
    import edgeship.export.exporter as exporter

    real_run = convert._run
    calls = []

    def convert_then_die(converter, kind):
        calls.append(kind)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed mid-export, between two variants
        return real_run(converter, kind)

    monkeypatch.setattr(convert, "_run", convert_then_die)
    with pytest.raises(KeyboardInterrupt):
        exporter.export(ExportConfig.tiny(run_dir=str(run), formats=("float16", "int8-ptq")))
    after = {p.name: p.read_bytes() for p in (run / "export").iterdir()}
    assert after == before  # nothing half-written or mixed under the final names
    monkeypatch.setattr(convert, "_run", real_run)

    exporter.export(ExportConfig.tiny(run_dir=str(run), formats=("int8-ptq",), io="int8"))
    assert sorted(p.name for p in (run / "export").iterdir()) == [
        "model_int8_ptq.tflite", "predictions.json", "report.json", "report.md"]
    model = load_model(run / "export" / "model_int8_ptq.tflite")
    assert model.interpreter.get_input_details()[0]["dtype"] == np.int8
    assert is_full_integer(run / "export" / "model_int8_ptq.tflite")


def test_export_config_names_bad_values():
    with pytest.raises(ConfigError, match="int4"):
        ExportConfig(formats=("int4",))
    with pytest.raises(ConfigError, match="io"):
        ExportConfig(io="float")


def test_cli_export_and_a_missing_run(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    result = runner.invoke(app, ["export", str(run), "--formats", "float16", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert list(report["variants"]) == ["float16"]
    result = runner.invoke(app, ["export", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "edgeship train" in result.output and "Traceback" not in result.output


# --------------------------------------------------------------------------- the QAT recipe


def test_calibrated_qat_model_starts_where_the_float_model_is(tiny_run):
    """Per-channel depthwise kernels and calibrated ranges: the quantized model tracks the float one
    before any training step; tfmot's defaults do not."""
    import tensorflow_model_optimization as tfmot

    from edgeship.export.qat import calibrate_ranges, disable_dropout, freeze_batch_norm, make_qat_model, set_input_range
    from edgeship.train import load_float_model, make_dataset
    from edgeship.train.config import MOBILENET_V1, input_normalization
    from edgeship.train.tfkeras import keras

    normalization = input_normalization(MOBILENET_V1)
    float_model = load_float_model(tiny_run)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, 16)
    data = make_dataset(pixels, labels, np.arange(16), 4, 8, normalization=normalization)
    x = next(iter(data))[0]
    reference = float_model(x, training=False).numpy()

    default = tfmot.quantization.keras.quantize_model(keras.models.clone_model(float_model))
    default.set_weights(default.get_weights())  # fresh tfmot model, untouched ranges
    ours = make_qat_model(float_model)
    assert freeze_batch_norm(ours) > 10
    set_input_range(ours, normalization)
    assert calibrate_ranges(ours, float_model, data, num_batches=2) > 10
    depthwise = [l for l in ours.layers if isinstance(getattr(l, "layer", None), keras.layers.DepthwiseConv2D)][0]
    channels = depthwise.layer.depthwise_kernel.shape[2]
    assert [v.shape[0] for v in depthwise.non_trainable_weights if "kernel_min" in v.name] == [channels]
    # tfmot's default shares one range across a depthwise layer's channels (its "per axis" is the
    # depth multiplier, of size 1): the cause per-channel quantization fixes.
    default_depthwise = [l for l in default.layers
                         if isinstance(getattr(l, "layer", None), keras.layers.DepthwiseConv2D)][0]
    assert [v.shape[0] for v in default_depthwise.non_trainable_weights if "kernel_min" in v.name] != [channels]
    error = np.abs(ours(x, training=False).numpy() - reference).max()
    assert error < 0.05, error
    # A training pass is the inference network: batch norm frozen, dropout dropping nothing
    # (before, a training pass was a thinned network).
    thinned = ours(x, training=True).numpy()
    assert disable_dropout(ours) == 1
    np.testing.assert_allclose(ours(x, training=True).numpy(), ours(x, training=False).numpy(), atol=1e-6)
    assert np.abs(thinned - ours(x, training=False).numpy()).max() > 1e-4


def test_run_takes_a_trained_run_through_export_validate_and_bench(tiny_run, tmp_path):
    from edgeship.run_all import RunConfig, render_summary, run

    out = tmp_path / "run"
    shutil.copytree(tiny_run, out, ignore=shutil.ignore_patterns("export"))
    data_root = json.loads((out / "split.json").read_text())["data_root"]
    summary = run(RunConfig(
        train=TrainConfig.tiny(data_dir=data_root, out_dir=str(out), epochs=2),
        export=ExportConfig.tiny(formats=("int8", "float32")),
        max_drop=100.0, max_class_drop=100.0, bench_runs=5,
        reports=GateReports(junit=str(tmp_path / "gate.xml"), summary=str(tmp_path / "gate.md"), no_step_summary=True),
    ))
    assert set(summary["variants"]) == {"int8", "float32"}
    int8 = summary["variants"]["int8"]
    assert int8["median_ms"] > 0
    # The gate reads the export's own scores: its accuracy is the export's test accuracy.
    assert summary["gate"]["passed"] and summary["gate"]["accuracy"] == pytest.approx(int8["test_accuracy"])
    table = render_summary(summary)
    assert "| int8 |" in table and "| float32 |" in table
    assert json.loads((out / "summary.json").read_text())["variants"]["int8"]["file"] == "model_int8.tflite"
    # validate's reports, from the export's own scores: one test case per class of the split
    classes = json.loads((out / "split.json").read_text())["classes"]
    cases = [case.get("name") for case in ET.parse(tmp_path / "gate.xml").getroot().iter("testcase")]
    assert cases == ["accuracy drop"] + [f"recall drop: {name}" for name in classes]
    assert (tmp_path / "gate.md").read_text().startswith("### ✅ edgeship gate passed: model_int8.tflite vs model.h5")


def test_int8_choice_needs_evidence_beyond_chance_before_dropping_qat():
    from edgeship.export.int8_choice import choose_int8

    labels = np.zeros(200, int)
    float_scores = np.tile([0.7, 0.3], (200, 1))
    qat = float_scores.copy()
    qat[:4] = [0.45, 0.55]  # QAT misses 4 close calls, staying near the float probabilities elsewhere
    ptq = np.tile([0.9, 0.1], (200, 1))
    ptq[4:6] = [0.4, 0.6]  # post-training misses only 2, but moves every probability
    choice = choose_int8(qat, ptq, labels, float_scores)
    low, high = choice["qat_minus_ptq_val_ci_pp"]
    assert low < 0 < high  # one percentage point in 200 images: within chance
    assert choice["qat_val_distance"] < choice["ptq_val_distance"] and choice["use_qat"]
    assert "equal within chance" in choice["reason"] and choice["qat_val_accuracy"] == 0.98

    qat[:40] = [0.45, 0.55]  # 20 pp worse: beyond chance, post-training ships however close QAT is
    far = choose_int8(qat, ptq, labels, float_scores)
    assert not far["use_qat"] and far["qat_minus_ptq_val_ci_pp"][1] < 0 and "beyond chance" in far["reason"]


def test_logit_distance_sees_logits_through_the_softmax():
    from edgeship.export.qat import logit_distance

    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], np.float32)

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    assert float(logit_distance(softmax(logits), softmax(logits + 5.0))) < 1e-10  # a constant shift is invisible
    shifted = logits.copy()
    shifted[:, 0] += 0.3
    # centred logits differ by (0.2, -0.1, -0.1) per row: mean square 0.02
    assert abs(float(logit_distance(softmax(shifted), softmax(logits))) - 0.02) < 1e-5
    shifted[1, 0] += 0.3  # the second row now differs by (0.4, -0.2, -0.2): 0.08
    np.testing.assert_allclose(logit_distance(softmax(shifted), softmax(logits), per_image=True).numpy(), [0.02, 0.08],
                               atol=1e-5)


def test_qat_epochs_after_the_first_revisit_the_images_furthest_from_float():
    from edgeship.export.qat import _epoch_pools, _furthest

    assert _epoch_pools(1000, ExportConfig(qat_epochs=3, qat_focus=0.5)) == [1000, 500, 500]
    assert _epoch_pools(1000, ExportConfig(qat_epochs=3, qat_focus=1.0)) == [1000, 1000, 1000]
    assert _epoch_pools(3, ExportConfig(qat_epochs=2, qat_focus=0.1)) == [3, 1]  # never an empty epoch
    distances = np.array([0.1, 0.9, 0.0, 0.5, 0.5, 0.2], np.float32)
    np.testing.assert_array_equal(_furthest(distances, 3), [1, 3, 4])
    np.testing.assert_array_equal(_furthest(np.zeros(4, np.float32), 4), np.arange(4))  # the first epoch: all
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="qat_focus"):
            ExportConfig(qat_focus=bad)


def test_qat_int8_file_does_not_depend_on_its_calibration_samples(tiny_run):
    """Every tensor's range comes from fake quantization: the export converts QAT with a few samples."""
    from edgeship.export import exporter
    from edgeship.export.convert import convert
    from edgeship.export.qat import _calibrated_qat_model
    from edgeship.runtime.rundir import RunDir

    config = ExportConfig.tiny(run_dir=str(tiny_run), representative_samples=64)
    run = exporter._load_run(RunDir(tiny_run), config)
    qat = _calibrated_qat_model(run.float_model, run.data, config, seed=0)
    files = [convert(qat, "int8", representative=exporter._representative(run, samples), io="uint8")
             for samples in (exporter.QAT_REPRESENTATIVE_SAMPLES, config.representative_samples)]
    assert files[0] == files[1]


@pytest.mark.slow  # a minute or more of training: `make test-slow`
def test_qat_with_focus_runs_every_epoch_and_keeps_the_closest(tiny_run):
    from edgeship.export.qat import fit_qat
    from edgeship.train import load_data, load_float_model, load_run_config, predict_probabilities

    data = load_data(tiny_run, load_run_config(tiny_run))
    float_model = load_float_model(tiny_run)
    float_val = predict_probabilities(float_model, data, "val", 8)
    config = ExportConfig.tiny(qat_epochs=3, qat_focus=0.5)
    qat, history, best = fit_qat(float_model, float_val, data, config, seed=0)
    assert sorted(history) == [0, 1, 2, 3] and best > 0
    assert history[best]["logit_distance"] == min(row["logit_distance"] for row in history.values())

    # The seed fixes the batches and the rounding noise: the same run exports the same model.
    again, history_again, _ = fit_qat(float_model, float_val, data, config, seed=0)
    assert history_again == history
    for a, b in zip(qat.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    other = fit_qat(float_model, float_val, data, config, seed=1)[1]
    assert other[best] != history[best]


def test_rounding_noise_perturbs_training_passes_only_and_is_undone(tiny_run):
    from edgeship.export.qat import freeze_batch_norm, make_qat_model, rounding_noise
    from edgeship.train.trainer import load_float_model

    from edgeship.train.tfkeras import keras

    model = make_qat_model(load_float_model(tiny_run))
    batch_norms = freeze_batch_norm(model)
    for layer in model.layers:  # no dropout: any difference below comes from the noise
        if isinstance(getattr(layer, "layer", layer), keras.layers.Dropout):
            getattr(layer, "layer", layer).rate = 0.0
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    weights = model.get_weights()

    def run(training: bool) -> np.ndarray:
        model.set_weights(weights)  # a training pass also moves tfmot's activation ranges
        return model(x, training=training).numpy()

    clean, clean_inference = run(True), run(False)
    with rounding_noise(model, 1.0) as noisy:
        assert noisy == batch_norms  # every batch norm feeds a quantized tensor whose step is known
        first, second, inference = run(True), run(True), run(False)
    assert not np.allclose(first, second) and not np.allclose(first, clean)
    np.testing.assert_allclose(inference, clean_inference, atol=1e-6)
    np.testing.assert_allclose(run(True), clean, atol=1e-6)  # undone on exit


def test_rounding_noise_gives_every_value_its_own_uniform_draw_one_step_wide(tiny_run):
    from edgeship.export.qat import _fed_range, freeze_batch_norm, make_qat_model, rounding_noise
    from edgeship.train.trainer import load_float_model

    from edgeship.train.tfkeras import keras, tf

    model = make_qat_model(load_float_model(tiny_run))
    freeze_batch_norm(model)  # a frozen batch norm normalises alike in training: the difference is the noise
    wrapper = max((l for l in model.layers if isinstance(getattr(l, "layer", None), keras.layers.BatchNormalization)),
                  key=lambda l: np.prod(l.output_shape[1:]))  # the largest: the bank is sized for it
    low, high = _fed_range(wrapper)
    low.assign(tf.fill(low.shape, -1.0))
    high.assign(tf.fill(high.shape, 1.55))  # a step of 0.01
    inner = wrapper.layer
    x = tf.constant(np.random.default_rng(0).normal(size=(4, *inner.output_shape[1:])).astype(np.float32))
    with rounding_noise(model, 1.0, batch_size=4):
        noise = [(inner(x, training=True) - inner(x, training=False)).numpy() / 0.01 for _ in range(2)]
        with pytest.raises(tf.errors.InvalidArgumentError, match="batches of up to 8 images"):
            inner(tf.concat([x, x, x[:1]], axis=0), training=True)
    values = noise[0].ravel()
    assert np.all(np.abs(values) <= 0.5 + 1e-3)  # one step wide, centred
    assert abs(values.mean()) < 0.02 and abs(values.std() - 12 ** -0.5) < 0.02  # uniform
    per_image = noise[0].reshape(4, -1)
    assert abs(np.corrcoef(per_image[0], per_image[1])[0, 1]) < 0.1  # each image its own draw
    assert abs(np.corrcoef(values, noise[1].ravel())[0, 1]) < 0.1  # and each call
