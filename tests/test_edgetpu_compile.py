"""Compiling for the Edge TPU: with a stand-in ``edgetpu_compiler`` on PATH (our own script,
tests/edgetpu_standin.py; Google's compiler cannot be installed here), without any compiler,
and with the real one where it is installed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edgetpu_models as models
from conftest import CORAL, needs_shared
from edgeship.cli import app
from edgeship.edgetpu.compiler import compile_model, parse_compiler_log
from edgeship.errors import EXIT_COMPILER_NOT_FOUND, CompilerNotFoundError
from edgeship.runtime.graph import read_graph
from edgeship.runtime.manifest import Manifest, embed, read_embedded

LABELS = ["a", "b", "c", "d"]


@pytest.fixture
def labelled_model(tmp_path) -> Path:
    path = tmp_path / "model_int8.tflite"
    manifest = Manifest(labels=tuple(LABELS), image_size=(8, 8), quantization="int8")
    path.write_bytes(embed(models.chain(middle="RELU"), LABELS, manifest))
    return path


def test_compile_writes_model_with_labels_and_log_and_agrees(standin_compiler, labelled_model):
    result = CliRunner().invoke(app, ["compile", str(labelled_model), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    output = labelled_model.with_name("model_int8_edgetpu.tflite")
    assert report["output"] == str(output) and read_graph(output).is_edgetpu_compiled
    labels, manifest = read_embedded(output.read_bytes())
    assert labels == LABELS and manifest.quantization == "int8"
    assert "Mapped to Edge TPU" in Path(report["log"]).read_text()
    assert report["agrees"] and report["disagreements"] == []
    assert report["actual"]["on_edgetpu"] == report["predicted"]["on_edgetpu"] == 3
    assert {"operator": "RELU", "count": 1, "status": "Mapped to Edge TPU"} in report["actual"]["rows"]


def test_min_runtime_version_is_passed_to_the_compiler(standin_compiler, labelled_model, tmp_path):
    compile_model(labelled_model, out_dir=tmp_path / "out", min_runtime_version=13)
    args = json.loads(standin_compiler.read_text())
    assert args[args.index("--min_runtime_version") + 1] == "13"
    assert (tmp_path / "out" / "model_int8_edgetpu.tflite").exists()


def test_a_disagreement_is_shown_side_by_side(standin_compiler, labelled_model, monkeypatch):
    monkeypatch.setenv("EDGETPU_STANDIN_CPU_OPS", "RELU")
    result = CliRunner().invoke(app, ["compile", str(labelled_model)])
    assert result.exit_code == 0, result.output
    assert "RELU on the CPU" in result.stdout and "<- differs" in result.stdout
    assert "The prediction disagrees with the compiler" in result.stdout
    assert "ops on the Edge TPU: predicted 3, compiler 2" in result.stdout


def test_a_refusal_is_a_clear_error(standin_compiler, labelled_model, monkeypatch):
    monkeypatch.setenv("EDGETPU_STANDIN_FAIL", "1")
    result = CliRunner().invoke(app, ["compile", str(labelled_model)])
    assert result.exit_code == 1
    assert "refused" in result.output and "Model not quantized" in result.output and "--edgetpu" in result.output
    assert "Traceback" not in result.output


def test_without_the_compiler_exit_4_with_where_to_get_it_and_the_prediction(labelled_model, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = CliRunner().invoke(app, ["compile", str(labelled_model)])
    assert result.exit_code == EXIT_COMPILER_NOT_FOUND == CompilerNotFoundError.exit_code == 4
    assert "x86-64 Linux" in result.output and "coral.ai/docs/edgetpu/compiler" in result.output
    assert "predicted offline" in result.stdout and "3 op(s) on the Edge TPU" in result.stdout
    assert not labelled_model.with_name("model_int8_edgetpu.tflite").exists()


def test_bad_min_runtime_version_names_the_choices(labelled_model):
    result = CliRunner().invoke(app, ["compile", str(labelled_model), "-m", "9"])
    assert result.exit_code == 1 and "10, 11, 12, 13, 14" in result.output


def test_parse_a_compiler_log_in_the_documented_layout():
    log = """Edge TPU Compiler version 16.0.384591198
Model compiled successfully in 1150 ms.
Number of Edge TPU subgraphs: 1
Total number of operations: 72
Number of operations that will run on Edge TPU: 64
Number of operations that will run on CPU: 8

Operator                       Count      Status

ADD                            10         Mapped to Edge TPU
RESIZE_BILINEAR                2          More than one subgraph is not supported
RESIZE_BILINEAR                1          Operation is otherwise supported, but not mapped due to some unspecified limitation
CONV_2D                        55         Mapped to Edge TPU
ARG_MAX                        1          Operation is working on an unsupported data type
Compilation child process completed within timeout period.
"""
    parsed = parse_compiler_log(log)
    assert parsed["compiler_version"] == "16.0.384591198"
    assert parsed["on_edgetpu"] == 64 and parsed["num_on_cpu"] == 8 and parsed["num_ops"] == 72
    assert parsed["on_cpu"] == {"RESIZE_BILINEAR": 3, "ARG_MAX": 1}
    assert len(parsed["rows"]) == 5


@pytest.mark.edgetpu_compiler
@pytest.mark.skipif(shutil.which("edgetpu_compiler") is None, reason="edgetpu_compiler is not installed")
@needs_shared(CORAL)
def test_the_real_compiler_agrees_with_the_prediction(tmp_path):
    source = tmp_path / "mobilenet_v1_0.25_128_quant.tflite"
    shutil.copy(CORAL / source.name, source)
    result = compile_model(source)
    assert result["agrees"], result["disagreements"]
    assert read_graph(result["output"]).is_edgetpu_compiled
