"""The runtime commands end to end through the CLI, and the promise that they never load TensorFlow."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeship.cli import app

from conftest import CORAL, CORAL_RESIZE, coral_cases


def run(*args):
    # The CLI configures logging once per process; each CliRunner call brings fresh streams.
    logging.getLogger().handlers.clear()
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_clean_failure(result, *phrases, exit_code=1):
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    for phrase in phrases:
        assert phrase in result.output


@pytest.fixture()
def setup(runtime_setup):
    return runtime_setup


@pytest.mark.parametrize("case", coral_cases())
def test_predict_coral_cases(case):
    result = run("predict", CORAL / case["model"], CORAL / case["image"], "--top-k", case["top_k"],
                 "--resize", CORAL_RESIZE[case["upstream_resize_mode"]], "--json")
    assert result.exit_code == 0, result.output
    [prediction] = json.loads(result.stdout)["predictions"]
    found = [c for c in prediction["classes"] if c["id"] == case["expected_label_index"]]
    assert found and found[0]["label"] == case["expected_label"], prediction
    score = found[0]["score"]
    assert score >= case["min_score"] if case["min_score_inclusive"] else score > case["min_score"]


def test_predict_table_and_threshold():
    result = run("predict", CORAL / "mobilenet_v1_0.5_160_quant.tflite", CORAL / "cat.bmp", "--score-threshold", "0.2")
    assert result.exit_code == 0, result.output
    assert "Egyptian cat" in result.stdout and "tiger cat" in result.stdout and "tabby" not in result.stdout


@pytest.mark.parametrize("model, args, phrases", [
    ("mobilenet_v1_0.25_128_quant_edgetpu.tflite", (), ("compiled for the Edge TPU", "--device usb")),
    ("invalid_models/model_invoking_error.tflite", (), ("fake-op-double",)),
    ("mobilenet_v1_0.25_128_quant_edgetpu.tflite", ("--device", "usb"), ("libedgetpu", "--device cpu")),
    ("cat.bmp", (), ("not a TFLite model",)),
])
def test_predict_errors_are_one_clear_line(model, args, phrases):
    import ctypes

    if "usb" in args:
        try:
            ctypes.CDLL("libedgetpu.so.1")
            pytest.skip("libedgetpu is installed here")
        except OSError:
            pass
    assert_clean_failure(run("predict", CORAL / model, CORAL / "cat.bmp", *args), *phrases)


@pytest.mark.parametrize("content, phrase", [
    (None, "not found"), (b"", "empty"), (b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(64), "JPEG image"),
    ("cut", "truncated"),
])
@pytest.mark.parametrize("command", ["predict", "inspect", "bench"])
def test_broken_model_files_exit_non_zero_without_traceback(setup, tmp_path, content, phrase, command):
    models, data, _ = setup
    path = tmp_path / "model.tflite"
    if content == "cut":
        path.write_bytes(models["float"].read_bytes()[:300])
    elif content is not None:
        path.write_bytes(content)
    args = {"predict": (path, data / "red"), "inspect": (path,), "bench": (path, "--num-runs", 1)}[command]
    assert_clean_failure(run(command, *args), phrase)


def test_predict_folder_reports_unreadable_images(setup):
    models, data, _ = setup
    result = run("predict", models["uint8"], data, "--top-k", 1, "--json")
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.stdout)["predictions"]
    assert len(predictions) == 13 and sum("error" in p for p in predictions) == 1
    assert all(p["classes"][0]["label"] == Path(p["path"]).parent.name for p in predictions if "error" not in p)
    assert_clean_failure(run("predict", models["uint8"], data / "red" / "corrupt.jpg"), "could be read")
    assert_clean_failure(run("predict", models["uint8"], data / "absent.png"), "Image not found")


def test_eval_folder_writes_json_markdown_and_plot(setup, tmp_path):
    models, data, _ = setup
    result = run("eval", models["float"], data, "--out", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["accuracy"] == 1.0 and report["num_skipped"] == 1
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"eval.json", "eval.md", "confusion.png"}
    markdown = run("eval", models["float"], data)
    assert markdown.exit_code == 0 and "Accuracy **100.00 %** on 12 images" in markdown.stdout


def test_eval_run_uses_its_split_and_writes_beside_it(setup):
    models, _, run_dir = setup
    result = run("eval", models["uint8"], "--run", run_dir)
    assert result.exit_code == 0, result.output
    assert (run_dir / "eval" / "colour_uint8" / "eval.json").exists()
    assert_clean_failure(run("eval", models["uint8"]), "DATA_DIR", exit_code=2)  # usage error


def test_validate_exit_codes(setup):
    models, data, run_dir = setup
    passed = run("validate", models["uint8"], "--run", run_dir, "--json")
    assert passed.exit_code == 0, passed.output
    result = json.loads(passed.stdout)
    assert result["passed"] and result["agreement"] == 1.0 and result["baseline"].endswith("model_float32.tflite")
    assert {"accuracy", "baseline_accuracy", "difference_pp", "ci_pp", "ci_method"} <= result.keys()

    failed = run("validate", models["wrong"], data, "--baseline", models["float"], "--max-drop", 2)
    assert failed.exit_code == 3, failed.output
    assert "FAILED" in failed.stdout and "validation failed: accuracy dropped 100.00 pp" in failed.output
    agreement = run("validate", models["uint8"], data, "--baseline", models["wrong"], "--max-drop", 100,
                    "--min-agreement", 0.5)
    assert agreement.exit_code == 3 and "agreement 0.00 %" in agreement.output
    assert_clean_failure(run("validate", models["uint8"], data), "--baseline", exit_code=2)  # usage error
    assert_clean_failure(run("validate", models["uint8"], data, "--baseline", data / "nope.tflite"), "not found")


def test_validate_writes_junit_and_summaries_for_ci(setup, tmp_path, monkeypatch):
    import xml.etree.ElementTree as ET

    models, data, _ = setup
    step_summary = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    failed = run("validate", models["wrong"], data, "--baseline", models["float"], "--max-drop", 2,
                 "--max-class-drop", 5, "--junit", tmp_path / "ci" / "gate.xml", "--summary", tmp_path / "gate.md")
    assert failed.exit_code == 3, failed.output
    assert "McNemar exact p = 0.000488" in failed.stdout and "class  baseline recall %" in failed.stdout
    suite = ET.parse(tmp_path / "ci" / "gate.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("4", "4") and float(suite.get("time")) > 0
    assert suite.get("name") == "edgeship gate: colour_wrong.tflite vs colour_float.tflite"
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["gate.max_class_drop"] == "5.0" and properties["num_images"] == "12"
    markdown = (tmp_path / "gate.md").read_text(encoding="utf-8")
    assert markdown.startswith("### ❌ edgeship gate failed")
    assert "| recall drop: red | 100.00 pp | ≤ 5 pp |" in markdown
    assert step_summary.read_text(encoding="utf-8") == markdown + "\n"

    passed = run("validate", models["uint8"], data, "--baseline", models["float"], "--no-step-summary")
    assert passed.exit_code == 0, passed.output
    assert step_summary.read_text(encoding="utf-8") == markdown + "\n"  # --no-step-summary: untouched
    unwritable = run("validate", models["uint8"], data, "--baseline", models["float"], "--junit", data / "red" /
                     "corrupt.jpg" / "gate.xml")
    assert_clean_failure(unwritable, "Cannot write the gate's report", "writable folder")


def test_bench_json_fields_side_by_side(setup):
    models, _, _ = setup
    result = run("bench", models["float"], models["uint8"], "--num-runs", 20, "--num-warmup-runs", 2, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["config"]["num_runs"] == 20 and report["config"]["num_threads"] is None
    assert [Path(r["model"]).name for r in report["results"]] == ["colour_float.tflite", "colour_uint8.tflite"]
    for row in report["results"]:
        for key in ("median_ms", "mean_ms", "std_ms", "p90_ms", "p99_ms", "init_ms", "first_inference_ms",
                    "size_bytes", "peak_memory_mb"):
            assert row[key] is not None and row[key] >= 0, key
        assert row["min_ms"] <= row["median_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
    table = run("bench", models["float"], models["custom"], "--num-runs", 5)
    assert table.exit_code == 1 and "colour_float.tflite" in table.stdout and "fake-op-double" in table.stdout


def test_inspect_fields():
    cpu = run("inspect", CORAL / "mobilenet_v1_0.25_128_quant.tflite", "--json")
    assert cpu.exit_code == 0, cpu.output
    info = json.loads(cpu.stdout)
    assert info["full_integer"] and not info["edgetpu_compiled"]
    assert info["inputs"][0]["dtype"] == "uint8" and info["inputs"][0]["shape"] == [1, 128, 128, 3]
    assert info["inputs"][0]["quantization"] == {"scale": [0.0078125], "zero_point": [128]}
    assert info["op_counts"]["DEPTHWISE_CONV_2D"] == 13 and info["labels"]["count"] == 1001
    assert info["input_feed"]["description"] == "raw uint8 pixels" and info["manifest"] is None
    tpu = json.loads(run("inspect", CORAL / "mobilenet_v1_0.25_128_quant_edgetpu.tflite", "--json").stdout)
    assert tpu["edgetpu_compiled"] and tpu["custom_ops"] == ["edgetpu-custom-op"]
    text = run("inspect", CORAL / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")
    assert "compiled for the Edge TPU: yes" in text.stdout


def test_inspect_shows_our_manifest(setup):
    models, _, _ = setup
    info = json.loads(run("inspect", models["float"], "--json").stdout)
    assert info["manifest"]["labels"] == ["red", "green", "blue"] and info["labels"]["source"] == "manifest"
    assert not info["full_integer"] and info["num_float_tensors"] > 0


def test_runtime_commands_never_import_tensorflow(setup):
    models, data, run_dir = setup
    script = f"""
import sys
import edgeship.runtime
from typer.testing import CliRunner
from edgeship.cli import app
runner = CliRunner()
for args in (["inspect", {str(models["float"])!r}],
             ["inspect", {str(models["uint8"])!r}, "--edgetpu"],
             ["doctor"],
             ["predict", {str(models["uint8"])!r}, {str(data)!r}],
             ["eval", {str(models["float"])!r}, {str(data)!r}],
             ["validate", {str(models["uint8"])!r}, "--run", {str(run_dir)!r}],
             ["bench", {str(models["float"])!r}, "--num-runs", "2"]):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "keras"))
print("LOADED", loaded)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED []" in result.stdout, result.stdout[-2000:]


def test_the_cli_has_exactly_its_documented_commands():
    from typer.main import get_command

    names = set(get_command(app).commands)
    assert names == {"train", "export", "run", "report", "predict", "eval", "validate", "bench", "profile", "inspect",
                     "compile", "doctor", "cache"}
