"""int16x8: TFLite's 16x8 quantization as an opt-in variant, on the session's tiny export: int16
activations with float input and output, self-describing, fed by the runtime, scored in the
report, and never for the Edge TPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.errors import CompileError
from edgeship.export.config import DEFAULT_FORMATS, FILE_NAMES, FLOAT32, INT16X8, ExportConfig
from edgeship.runtime.graph import is_full_integer, read_graph
from edgeship.runtime.model import load_model

runner = CliRunner()


def test_it_is_opt_in_and_a_known_format():
    assert INT16X8 not in DEFAULT_FORMATS and INT16X8 not in ExportConfig().formats
    assert ExportConfig(formats=(INT16X8,)).formats == (INT16X8,)
    assert FILE_NAMES[INT16X8] == "model_int16x8.tflite"


def test_activations_are_int16_and_the_input_and_output_float(tiny_export):
    path = tiny_export / FILE_NAMES[INT16X8]
    graph = read_graph(path)
    assert graph.input_tensors()[0].dtype == "float32" and graph.output_tensors()[0].dtype == "float32"
    convolutions = [op for op in graph.ops if op.name == "CONV_2D"]
    assert convolutions and all(graph.tensors[op.inputs[0]].dtype == "int16" for op in convolutions)
    assert all(graph.tensors[op.inputs[1]].dtype == "int8" for op in convolutions)  # weights stay 8-bit
    assert not is_full_integer(path.read_bytes())
    manifest = load_model(path).manifest
    assert manifest.quantization == INT16X8
    assert manifest.extra == {"activations": "int16", "weights": "int8", "input_type": "float32",
                              "output_type": "float32", "edgetpu_compatible": False}


def test_the_runtime_feeds_normalised_floats_and_scores_near_float32(tiny_export, demo_data):
    from edgeship.runtime.image import preprocess

    wide, plain = (load_model(tiny_export / FILE_NAMES[kind]) for kind in (INT16X8, FLOAT32))
    assert wide.feed.describe() == "(pixel - 128) / 128"
    photos = [preprocess(p, (32, 32)) for p in sorted(demo_data.glob("*/*.png"))[:12]]
    wide_scores = np.asarray([wide.classify(p) for p in photos])
    plain_scores = np.asarray([plain.classify(p) for p in photos])
    np.testing.assert_allclose(wide_scores.sum(axis=1), 1.0, atol=1e-3)
    # 16-bit activations: probabilities within a few 1e-4 of float's (int8's differ by ~1e-2 here).
    np.testing.assert_allclose(wide_scores, plain_scores, atol=2e-3)
    assert not np.array_equal(wide_scores, plain_scores)  # it is quantized, not the float file again


def test_the_report_scores_it_and_says_it_is_not_for_the_edge_tpu(tiny_export):
    report = json.loads((tiny_export / "report.json").read_text())
    row = report["variants"][INT16X8]
    assert row["file"] == FILE_NAMES[INT16X8] and 0 <= row["agreement"] <= 1 and row["size_bytes"] > 0
    assert row["edgetpu"]["compilable"] is False and row["edgetpu"]["on_edgetpu"] == 0
    assert any("16-bit activations" in problem for problem in row["edgetpu"]["problems"])
    note = report["int16x8_note"]
    assert "never compiled for it" in note
    faster = row["mean_latency_ms"] <= report["variants"][FLOAT32]["mean_latency_ms"]
    assert ("as fast as float32" in note) if faster else ("SLOWER than float32" in note)
    markdown = (tiny_export / "report.md").read_text()
    assert f"| {INT16X8} | {FILE_NAMES[INT16X8]} |" in markdown and "**int16x8.**" in markdown
    assert "int16x8: not compilable: 16-bit activations" in markdown


def test_the_edge_tpu_compile_is_refused_before_the_compiler_runs(tiny_export, standin_compiler):
    from edgeship.edgetpu.compiler import compile_model

    with pytest.raises(CompileError, match="16-bit activations.*Compile the int8 variant"):
        compile_model(tiny_export / FILE_NAMES[INT16X8])
    result = runner.invoke(app, ["compile", str(tiny_export / FILE_NAMES[INT16X8])])
    assert result.exit_code not in (0, 2) and "16-bit activations" in result.output
    assert "Traceback" not in result.output
    assert not standin_compiler.exists()  # the stand-in compiler was never called


def test_the_note_without_float32_says_how_to_compare():
    from edgeship.export.exporter import _int16x8_note

    note = _int16x8_note({INT16X8: {"mean_latency_ms": 2.0}})
    assert "not measured" in note and "edgeship bench model_int16x8.tflite model_float32.tflite" in note
    assert "3.0x SLOWER" in _int16x8_note({INT16X8: {"mean_latency_ms": 3.0}, FLOAT32: {"mean_latency_ms": 1.0}})


def test_predict_eval_and_validate_run_it(tiny_export, tiny_run, demo_data, tmp_path):
    path = str(tiny_export / FILE_NAMES[INT16X8])
    image = str(sorted(demo_data.glob("*/*.png"))[0])
    predicted = runner.invoke(app, ["predict", path, image, "--json"])
    assert predicted.exit_code == 0, predicted.output
    evaluated = runner.invoke(app, ["eval", path, "--run", str(tiny_run), "--out", str(tmp_path / "eval")])
    assert evaluated.exit_code == 0, evaluated.output
    validated = runner.invoke(app, ["validate", path, "--run", str(tiny_run), "--max-drop", "100", "--json"])
    assert validated.exit_code == 0, validated.output
    result = json.loads(validated.stdout)
    assert result["baseline"].endswith(FILE_NAMES[FLOAT32]) and result["passed"]
