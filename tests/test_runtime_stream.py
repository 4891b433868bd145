"""`predict --out` over a big folder: results written as they come, a killed run resumed."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.errors import DataError
from edgeship.runtime.jsonl import read_done
from killed_run import ENV, kill_when_written


def run(*args):
    logging.getLogger().handlers.clear()
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(0)
    for index in range(4000):
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(root / f"{index:05d}.png")
    return root


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_predict_out_writes_json_lines_and_resume_skips_what_is_done(runtime_setup, tmp_path):
    models, data, _ = runtime_setup
    out = tmp_path / "predictions.jsonl"
    result = run("predict", models["float"], data, "--out", out, "--top-k", "1")
    assert result.exit_code == 0, result.output
    lines = _lines(out)
    assert len(lines) == 13 and "13 image(s) classified" in result.stdout
    assert sum("error" in line for line in lines) == 1  # the corrupt JPEG, named in its line
    # Cut the file as a kill would: two whole lines and half of the third.
    text = out.read_text().splitlines(keepends=True)
    out.write_text("".join(text[:2]) + text[2][:10])
    result = run("predict", models["float"], data, "--out", out, "--top-k", "1", "--resume")
    assert result.exit_code == 0, result.output
    again = _lines(out)
    assert sorted(line["path"] for line in again) == sorted(line["path"] for line in lines)
    assert again[:2] == lines[:2] and "11 image(s) classified" in result.stdout
    assert run("predict", models["float"], data, "--resume").exit_code == 2


def test_a_foreign_output_file_is_not_resumed(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"path": "a.jpg"}\n[1, 2]\n')
    with pytest.raises(DataError, match="Line 2 .* not a result edgeship wrote"):
        read_done(out)
    out.write_bytes(b"x" * (2 << 20))
    with pytest.raises(DataError, match="longer than"):
        read_done(out)


def test_a_killed_predict_resumes_where_it_stopped(runtime_setup, folder, tmp_path):
    models, _, _ = runtime_setup
    out = tmp_path / "predictions.jsonl"
    command = [sys.executable, "-m", "edgeship.cli", "predict", str(models["float"]), str(folder), "--out", str(out)]
    kill_when_written(command, out, 2000)
    done = len(read_done(out))
    assert 0 < done < 4000
    result = subprocess.run(command + ["--resume"], env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    paths = [line["path"] for line in _lines(out)]
    assert len(paths) == len(set(paths)) == 4000
    assert f"{4000 - done} image(s) classified" in result.stdout
