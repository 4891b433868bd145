"""edgeship's own full-integer exports are predicted fully mapped, and the export report
carries the Edge TPU mapping and, with the edgetpu format, the compile (with the stand-in
compiler of test_edgetpu_compile)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgeship.edgetpu.mapping import predict_mapping
from edgeship.edgetpu.reporting import compile_variant, markdown_lines
from edgeship.errors import ConfigError
from edgeship.export.config import FILE_NAMES, FULL_INTEGER, ExportConfig
from edgeship.runtime.graph import read_graph
from edgeship.runtime.manifest import read_embedded
from test_edgetpu_compile import labelled_model  # noqa: F401  (a fixture)


def _assert_fully_mapped(path: Path, runtime: int) -> None:
    report = predict_mapping(path)
    assert report.compilable and not report.problems, report.problems
    assert report.on_cpu == {} and report.on_edgetpu == len(read_graph(path).ops)
    assert report.min_runtime_version == runtime


def _copy_run(run: Path, tmp_path: Path) -> Path:
    """A private copy of the shared run, so that exporting it leaves the shared export alone."""
    return Path(shutil.copytree(run, tmp_path / run.name, ignore=shutil.ignore_patterns("export")))


def test_uint8_exports_are_predicted_fully_mapped_and_reported(tiny_export):
    report = json.loads((tiny_export / "report.json").read_text())
    for kind in FULL_INTEGER:
        # TensorFlow 2 quantizes the body to int8 and wraps it in uint8 QUANTIZE ops: runtime 13.
        _assert_fully_mapped(tiny_export / FILE_NAMES[kind], runtime=13)
        assert report["variants"][kind]["edgetpu"]["compilable"] is True
        assert report["variants"][kind]["edgetpu"]["on_cpu"] == {}
    assert "edgetpu" not in report["variants"]["float16"]
    assert "## Edge TPU" in (tiny_export / "report.md").read_text()


def test_int8_io_export_is_predicted_fully_mapped(tiny_run, tmp_path):
    from edgeship.export import export

    run = _copy_run(tiny_run, tmp_path)
    export(ExportConfig.tiny(run_dir=str(run), formats=("int8-ptq",), io="int8"))
    path = run / "export" / FILE_NAMES["int8-ptq"]
    assert read_graph(path).input_tensors()[0].dtype == "int8"
    _assert_fully_mapped(path, runtime=13)


def test_the_edgetpu_format_needs_int8():
    with pytest.raises(ConfigError, match="add int8"):
        ExportConfig(formats=("int8-ptq", "edgetpu"))
    assert ExportConfig(formats=("int8", "edgetpu")).formats == ("int8", "edgetpu")


def test_compile_variant_records_the_compile_for_the_report(standin_compiler, labelled_model):
    compiled = compile_variant(labelled_model)
    assert compiled["file"] == "model_int8_edgetpu.tflite" and compiled["agrees"]
    assert (labelled_model.parent / compiled["log"]).exists()
    lines = markdown_lines({"variants": {}, "edgetpu": compiled})
    assert any("the prediction agrees" in line for line in lines)


def test_compile_variant_without_compiler_records_where_to_get_it(labelled_model, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    compiled = compile_variant(labelled_model)
    assert compiled["compiler_missing"] and "x86-64 Linux" in compiled["error"] and compiled["file"] is None


@pytest.mark.slow
def test_export_with_edgetpu_format_compiles_int8(tiny_run, tmp_path, standin_compiler):
    from edgeship.export import export

    run = _copy_run(tiny_run, tmp_path)
    report = export(ExportConfig.tiny(run_dir=str(run), formats=("int8", "edgetpu"), qat_epochs=0))
    out = run / "export"
    compiled = report["edgetpu"]
    assert compiled["file"] == "model_int8_edgetpu.tflite" and compiled["agrees"], compiled
    assert read_embedded((out / compiled["file"]).read_bytes())[0] == read_embedded((out / FILE_NAMES["int8"]).read_bytes())[0]
    assert "edgetpu: model_int8_edgetpu.tflite" in (out / "report.md").read_text()


@pytest.mark.slow
def test_mobilenet_v2_export_is_predicted_fully_mapped(demo_data, tmp_path):
    from edgeship.export import export
    from edgeship.train import TrainConfig, train

    run = tmp_path / "v2"
    train(TrainConfig.tiny(data_dir=str(demo_data), out_dir=str(run), backbone="mobilenet_v2", alpha=0.35,
                           epochs=1, fine_tune_epochs=0))
    for io in ("uint8", "int8"):
        export(ExportConfig.tiny(run_dir=str(run), formats=("int8-ptq",), io=io))
        _assert_fully_mapped(run / "export" / FILE_NAMES["int8-ptq"], runtime=13)
