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

from model_mutations import mutate, structure_positions
from runtime_models import LABELS, colour_model, write_images, write_models

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CORAL_MODEL = ROOT.parent / "shared" / "external" / "coral" / "mobilenet_v1_0.25_128_quant.tflite"
NUM_MUTATIONS = 320
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
    assert min(kinds.values()) >= NUM_MUTATIONS // 10, kinds  # every kind of damage is exercised
    problems = _run_worker(paths, image)
    assert not problems, json.dumps(problems, indent=1)[:4000]
