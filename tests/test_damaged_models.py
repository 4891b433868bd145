"""Damaged model files end in a result or a clear error: never a traceback, a signal or a hang."""

from __future__ import annotations

import json
import logging
import os
import selectors
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.errors import ModelFormatError
from edgeship.export.config import FILE_NAMES
from edgeship.runtime.graph import parse_graph
from edgeship.runtime.manifest import MANIFEST_NAME, Manifest, embed, read_embedded, strip_embedded

from model_mutations import KINDS, mutate, structure_positions
from runtime_models import LABELS, colour_model, edited_colour_model, write_images, write_models

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CORAL_MODEL = ROOT.parent / "shared" / "external" / "coral" / "mobilenet_v1_0.25_128_quant.tflite"
NUM_MUTATIONS = 300
MODEL_TIMEOUT = 20.0  # seconds for one model's inspect + predict; the slowest take ~0.1 s


def run(*args):
    logging.getLogger().handlers.clear()
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def colour(tmp_path_factory) -> tuple[dict[str, Path], Path]:
    root = tmp_path_factory.mktemp("damaged")
    return write_models(root / "models"), write_images(root / "data") / "red" / "red_0.png"


def _run_worker(paths: list[Path], image: Path) -> dict[str, list[str]]:
    """Problems by model path; a crashed or hung worker is restarted after the model that did it."""
    problems: dict[str, list[str]] = {}
    remaining = [str(p) for p in paths]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), "TF_CPP_MIN_LOG_LEVEL": "3"}
    while remaining:
        worker = subprocess.Popen(
            [sys.executable, str(TESTS / "mutation_worker.py"), str(image)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT,
        )
        worker.stdin.write("".join(p + "\n" for p in remaining))
        worker.stdin.close()
        current, finished = None, set()
        with selectors.DefaultSelector() as selector:
            selector.register(worker.stdout, selectors.EVENT_READ)
            while True:
                if not selector.select(timeout=MODEL_TIMEOUT * (3 if current is None else 1)):
                    problems[current or "worker start"] = [f"no answer within {MODEL_TIMEOUT:.0f} s (a hang)"]
                    break
                line = worker.stdout.readline()
                if not line:
                    if current is not None:
                        problems[current] = [f"the process died with exit code {worker.wait()} (a crash)"]
                    break
                record = json.loads(line)
                if "start" in record:
                    current = record["start"]
                else:
                    finished.add(current)
                    if record["problems"]:
                        problems[current] = record["problems"]
                    current = None
        worker.kill()
        worker.wait()
        done = finished | set(problems)
        if current is None and not (set(remaining) - done):
            break
        remaining = [p for p in remaining if p not in done]
    return problems


def _base_models(colour_models: dict[str, Path], tiny_export: Path) -> list[Path]:
    bases = [colour_models["float"], colour_models["uint8"], tiny_export / FILE_NAMES["int8"],
             tiny_export / FILE_NAMES["float16"]]
    return bases + ([CORAL_MODEL] if CORAL_MODEL.exists() else [])


def test_mutated_models_end_in_a_result_or_a_clear_error(colour, tiny_export, tmp_path):
    models, image = colour
    bases = _base_models(models, tiny_export)
    contents = [base.read_bytes() for base in bases]
    positions = [structure_positions(data) for data in contents]
    paths, kinds = [], {}
    for seed in range(NUM_MUTATIONS):
        which = seed % len(bases)
        kind, damaged = mutate(contents[which], seed, positions[which])
        paths.append(tmp_path / f"m{seed:03d}_{kind}_{bases[which].stem}.tflite")
        paths[-1].write_bytes(damaged)
        kinds[kind] = kinds.get(kind, 0) + 1
    assert len(kinds) == len(KINDS) and min(kinds.values()) >= NUM_MUTATIONS // 20, kinds  # every kind of damage is exercised
    problems = _run_worker(paths, image)
    assert not problems, json.dumps(problems, indent=1)[:4000]


def _damage(data: bytes, how: str) -> bytes:
    """One named kind of damage to the appended archive of an edgeship model."""
    start = len(strip_embedded(data))
    data = bytearray(data)
    if how == "bad crc":  # of every member, as a damaged disk sector would leave them
        central = data.find(b"PK\x01\x02", start)
        while central >= 0:
            data[central + 16] ^= 0xFF
            central = data.find(b"PK\x01\x02", central + 4)
    elif how == "cut central directory":
        del data[data.find(b"PK\x01\x02", start) + 20 :]
    elif how == "damaged local header":
        data[data.rfind(b"PK\x03\x04") + 30] ^= 0xFF  # the name of the manifest, the last member
    elif how == "malformed manifest":
        return strip_embedded(bytes(data)) + _archive({MANIFEST_NAME: '{"labels": ["a", "b"', "labels.txt": "x\n"})
    elif how == "manifest of wrong types":
        text = json.dumps({"labels": [1, 2, 3], "image_size": [8, 8], "mean": "128", "std": 0})
        return strip_embedded(bytes(data)) + _archive({MANIFEST_NAME: text})
    elif how == "deflated bomb":
        return strip_embedded(bytes(data)) + _archive({"labels.txt": "\n" * (20 << 20)}, zipfile.ZIP_DEFLATED)
    return bytes(data)


def _archive(members: dict[str, str], compression: int = zipfile.ZIP_STORED) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


@pytest.mark.parametrize("how", ["bad crc", "cut central directory", "damaged local header", "malformed manifest",
                                 "manifest of wrong types", "deflated bomb"])
def test_damaged_archive_warns_and_the_model_still_runs(colour, tmp_path, how):
    models, image = colour
    path = tmp_path / "damaged.tflite"
    path.write_bytes(_damage(models["float"].read_bytes(), how))
    for args in (["predict", path, image, "--json"], ["inspect", path]):
        result = run(*args)
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output
        assert "damaged.tflite" in result.output and "damaged" in result.output and "--labels" in result.output
    result = run("predict", path, image, "--json", "--labels", tmp_path / "labels.txt")
    assert result.exit_code == 1 and "labels.txt" in result.output  # the hint's flag exists and is checked
    (tmp_path / "labels.txt").write_text("\n".join(LABELS))
    result = run("predict", path, image, "--json", "--labels", tmp_path / "labels.txt", "--top-k", 1)
    assert json.loads(result.stdout)["predictions"][0]["classes"][0]["label"] == "red"


def test_read_embedded_keeps_what_is_readable():
    model = colour_model(8 * __import__("numpy").eye(3))
    labels, manifest = read_embedded(embed(model, LABELS, Manifest(labels=tuple(LABELS), image_size=(8, 8))))
    assert labels == LABELS and manifest.image_size == (8, 8)
    text = embed(model, LABELS)[: -1] + b"\x00"  # the end record's comment length: still read
    assert read_embedded(text)[0] == LABELS
    both = strip_embedded(embed(model, LABELS)) + _archive({MANIFEST_NAME: "{", "labels.txt": "cat\ndog\n"})
    assert read_embedded(both) == (["cat", "dog"], None)  # the label file survives a broken manifest
    assert read_embedded(model) == (None, None)  # a bare flatbuffer is no damage


def test_the_same_model_embeds_to_the_same_bytes_at_any_time(monkeypatch):
    import time
    import zipfile

    model = colour_model(8 * __import__("numpy").eye(3))
    manifest = Manifest(labels=tuple(LABELS), image_size=(8, 8))
    first = embed(model, LABELS, manifest)
    later = time.localtime(time.time() + 3600)
    monkeypatch.setattr(zipfile.time, "localtime", lambda *_: later)  # what a zip member is dated by
    assert embed(model, LABELS, manifest) == first


def _set_tensor(index, **fields):
    def edit(model):
        for name, value in fields.items():
            setattr(model.subgraphs[0].tensors[index], name, value)
    return edit


@pytest.mark.parametrize("edit, phrase", [
    (lambda m: setattr(m.subgraphs[0].operators[1], "inputs", [2, -1, 4]), "lacks a required input"),
    (_set_tensor(5, shape=[1, 2**31 - 1]), "GiB (a damaged shape?)"),
    (_set_tensor(3, shape=[3, 4]), "needs 48 bytes; its buffer holds 36"),
    (_set_tensor(0, shape=[1, 8, 2**22, 3]), "takes more than 16,777,216 values"),
    (_set_tensor(3, buffer=40), "names buffer 40"),
    (_set_tensor(2, shape=[1, -3]), "has the shape [1, -3]"),
    (_set_tensor(6, name=b"sc\xffores"), "not UTF-8"),
    (lambda m: setattr(m.subgraphs[0].operators[0], "outputs", [70]), "uses tensor 70"),
    (lambda m: setattr(m.subgraphs[0].operators[2], "opcodeIndex", 9), "op code 9 of 3"),
    (lambda m: setattr(m.subgraphs[0], "outputs", [12]), "output 12 names no tensor"),
], ids=["omitted weights", "huge shape", "buffer size", "huge input", "buffer index", "negative dim", "name",
        "op output", "op code", "graph output"])
def test_graph_check_refuses_what_litert_trusts(tmp_path, edit, phrase):
    data = edited_colour_model(edit)
    with pytest.raises(ModelFormatError, match="corrupt") as error:
        parse_graph(data, "edited.tflite")
    assert phrase in str(error.value)
    path = tmp_path / "edited.tflite"
    path.write_bytes(data)
    result = run("inspect", path)
    assert result.exit_code == 1 and result.output.startswith("error: ") and phrase in result.output


def test_graph_check_accepts_every_real_model():
    shared = ROOT.parent / "shared" / "external"
    paths = sorted(shared.glob("*/*.tflite")) if shared.exists() else []
    for path in paths:
        assert parse_graph(path.read_bytes(), path.name).ops, path


@pytest.mark.parametrize("command", ["predict", "bench"])
def test_what_litert_refuses_only_at_run_time_is_a_clear_error(colour, tmp_path, command):
    _, image = colour
    path = tmp_path / "no_weights.tflite"
    path.write_bytes(edited_colour_model(_set_tensor(3, buffer=0)))  # the dense layer's weights lose their data
    args = {"predict": (path, image), "bench": (path, "--num-runs", 1)}[command]
    result = run(command, *args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"LiteRT cannot run {path}: Input tensor 3 lacks data" in result.output


def test_weights_that_hold_a_zip_signature_are_no_damaged_archive(caplog):
    import numpy as np

    weights = np.frombuffer(b"PK\x03\x04" + bytes(32), dtype=np.float32)[:9].reshape(3, 3)
    model = colour_model(weights)  # a bare flatbuffer with "PK\3\4" among its weights
    assert b"PK\x03\x04" in model
    assert read_embedded(model, "bare.tflite") == (None, None)
    assert "damaged" not in caplog.text
