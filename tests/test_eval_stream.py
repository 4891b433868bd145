"""`eval --out FILE.jsonl` over a big folder: results written as they come, a killed run resumed."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from killed_run import ENV, kill_when_written
from runtime_models import write_images
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.errors import DataError
from edgeship.runtime.dataset import folder_dataset
from edgeship.runtime.evaluation import evaluate, evaluate_to_file
from edgeship.runtime.jsonl import read_done
from edgeship.runtime.model import load_model


def run(*args):
    logging.getLogger().handlers.clear()
    return CliRunner().invoke(app, [str(a) for a in args])


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _as_json(report: dict) -> dict:
    return json.loads(json.dumps(report, default=str))


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("big_eval"), per_class=1000, size=6)


def test_eval_out_writes_a_line_per_image_and_resume_gives_the_same_report(runtime_setup, tmp_path):
    models, data, _ = runtime_setup
    model, photos = load_model(models["wrong"]), folder_dataset(data)
    out = tmp_path / "eval.jsonl"
    report = evaluate_to_file(model, photos, out, top_k=2)
    assert report == evaluate(model, photos) and report["num_skipped"] == 1
    lines = _lines(out)
    assert len(lines) == 13 and sum("error" in line for line in lines) == 1
    line = next(line for line in lines if "error" not in line)
    assert line["true"] != line["predicted"] and len(line["classes"]) == 2  # "wrong" names the next class
    assert line["classes"][0]["label"] == line["predicted"]
    # Cut the file as a kill would: three whole lines and half of the fourth.
    text = out.read_text().splitlines(keepends=True)
    out.write_text("".join(text[:3]) + text[3][:15])
    result = run("eval", models["wrong"], data, "--out", out, "--resume", "--json")
    assert result.exit_code == 0, result.output
    assert len(_lines(out)) == 13 and _lines(out)[:3] == lines[:3]
    resumed = _as_json(evaluate_to_file(model, photos, out, resume=True))
    assert resumed == _as_json(report)


def test_eval_resume_refuses_a_file_it_did_not_write(runtime_setup, tmp_path):
    models, data, _ = runtime_setup
    model, photos = load_model(models["float"]), folder_dataset(data)
    out = tmp_path / "eval.jsonl"
    out.write_text('[1, 2]\n')
    with pytest.raises(DataError, match="Line 1 .* not a result edgeship wrote"):
        evaluate_to_file(model, photos, out, resume=True)
    foreign = '{"path": "elsewhere/a.png", "target": 0, "prediction": 0}\n'
    out.write_text(foreign)
    with pytest.raises(DataError, match="not this evaluation's result"):
        evaluate_to_file(model, photos, out, resume=True)
    assert out.read_text() == foreign  # refused before anything was scored into it
    # Another class recorded for one of these images: not this evaluation's either.
    evaluate_to_file(model, photos, out)
    first = json.loads(out.read_text().splitlines()[0])
    out.write_text(json.dumps({**first, "target": (first["target"] + 1) % 3}) + "\n")
    result = run("eval", models["float"], data, "--out", out, "--resume")
    assert result.exit_code == 1 and "not this evaluation's result" in result.output
    assert run("eval", models["float"], data, "--resume").exit_code == 2


def test_a_killed_eval_resumes_to_the_report_of_one_run(runtime_setup, big_folder, tmp_path):
    models, _, _ = runtime_setup
    out = tmp_path / "eval.jsonl"
    command = [sys.executable, "-m", "edgeship.cli", "eval", str(models["wrong"]), str(big_folder), "--out", str(out)]
    kill_when_written(command, out, 4000)
    total = 3001  # 1000 per class and the corrupt JPEG
    done = len(read_done(out))
    assert 0 < done < total
    result = subprocess.run(command + ["--resume", "--json"], env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    paths = [line["path"] for line in _lines(out)]
    assert len(paths) == len(set(paths)) == total
    model = load_model(str(models["wrong"]))
    assert json.loads(result.stdout) == _as_json(evaluate(model, folder_dataset(big_folder)))
