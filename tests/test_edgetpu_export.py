"""edgeship's own full-integer exports are predicted fully mapped, and `export --formats
int8,edgetpu` compiles them (with the stand-in compiler of test_edgetpu_compile)."""

from __future__ import annotations

import json

import pytest

from edgeship.edgetpu.mapping import predict_mapping
from edgeship.export.config import FILE_NAMES, FULL_INTEGER
from edgeship.runtime.graph import read_graph
from edgeship.runtime.manifest import read_embedded
from test_edgetpu_compile import standin_compiler  # noqa: F401  (a fixture)


def _assert_fully_mapped(path, runtime: int) -> None:
    report = predict_mapping(path)
    assert report.compilable and not report.problems, report.problems
    assert report.on_cpu == {} and report.on_edgetpu == len(read_graph(path).ops)
    assert report.min_runtime_version == runtime


def test_uint8_exports_are_predicted_fully_mapped_and_reported(tiny_export):
    report = json.loads((tiny_export / "report.json").read_text())
    for kind in FULL_INTEGER:
        # TensorFlow 2 quantizes the body to int8 and wraps it in uint8 QUANTIZE ops: runtime 13.
        _assert_fully_mapped(tiny_export / FILE_NAMES[kind], runtime=13)
        assert report["variants"][kind]["edgetpu"]["compilable"] is True
        assert report["variants"][kind]["edgetpu"]["on_cpu"] == {}
    assert "edgetpu" not in report["variants"]["float16"]
    assert "## Edge TPU" in (tiny_export / "report.md").read_text()


def test_int8_io_export_is_fully_mapped_and_compiled_in_export(tiny_run, standin_compiler):
    from edgeship.export import ExportConfig, export

    report = export(ExportConfig.tiny(run_dir=str(tiny_run), formats=("int8", "edgetpu"), io="int8", qat_epochs=0))
    out = tiny_run / "export"
    assert read_graph(out / FILE_NAMES["int8"]).input_tensors()[0].dtype == "int8"
    _assert_fully_mapped(out / FILE_NAMES["int8"], runtime=13)
    compiled = report["edgetpu"]
    assert compiled["file"] == "model_int8_edgetpu.tflite" and compiled["agrees"], compiled
    assert read_embedded((out / compiled["file"]).read_bytes())[0] == report.get("labels", read_embedded(
        (out / FILE_NAMES["int8"]).read_bytes())[0])
    assert (out / compiled["log"]).exists()


@pytest.mark.slow
def test_mobilenet_v2_export_is_predicted_fully_mapped(demo_data, tmp_path):
    from edgeship.export import ExportConfig, export
    from edgeship.train import TrainConfig, train

    run = tmp_path / "v2"
    train(TrainConfig.tiny(data_dir=str(demo_data), out_dir=str(run), backbone="mobilenet_v2", alpha=0.35,
                           epochs=1, fine_tune_epochs=0))
    for io in ("uint8", "int8"):
        export(ExportConfig.tiny(run_dir=str(run), formats=("int8-ptq",), io=io))
        _assert_fully_mapped(run / "export" / FILE_NAMES["int8-ptq"], runtime=13)
