"""Every docstring example in the package runs, in a folder that holds the files they name.

The examples speak of ``model_int8.tflite``, ``runs/flowers``, ``photos/`` and Coral's models as a
user's folder would hold them; the fixture below lays out exactly that (the session's tiny
trained and exported run, generated photos, the vendored Coral files), so that an example shows
what really comes back. The few that cannot run here (a long training, ssh to a device, the Edge
TPU compiler) are written as plain code blocks, not as ``>>>`` examples, and the README's and the
documentation pages' snippets run those paths instead.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import shutil
from pathlib import Path

import pytest

import edgeship
from conftest import CORAL

MODULES = sorted(info.name for info in pkgutil.walk_packages(edgeship.__path__, "edgeship."))
EDGETPU_DATA = Path(__file__).resolve().parent / "data" / "edgetpu"


@pytest.fixture(scope="session")
def example_folder(tmp_path_factory, tiny_run, tiny_export, demo_data) -> Path:
    """A user's folder: an exported run, its int8 and float files, photos, Coral's models and cat."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("examples")
    # Hard links, as on the machine that trained it: the run's pixel array stays the decode cache's
    # own file, which is what lets eval and validate read it (edgeship.runtime.dataset).
    shutil.copytree(tiny_run, folder / "runs" / "flowers", symlinks=True, copy_function=os.link,
                    ignore=shutil.ignore_patterns(".lock"))
    for name in ("model_int8.tflite", "model_float32.tflite"):
        shutil.copy(tiny_export / name, folder / name)
    shutil.copytree(demo_data, folder / "photos")
    for name in ("mobilenet_v1_0.25_128_quant.tflite", "mobilenet_v1_0.5_160_quant.tflite",
                 "mobilenet_v1_0.25_128_quant_edgetpu.tflite", "cat.bmp", "imagenet_labels.txt"):
        shutil.copy(CORAL / name, folder / name)
    shutil.copy(EDGETPU_DATA / "deeplabv3_mnv2_dm05_pascal_quant.tflite", folder)
    Image.open(CORAL / "cat.bmp").convert("RGB").save(folder / "cat.jpg", quality=95)
    return folder


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, example_folder, monkeypatch):
    monkeypatch.chdir(example_folder)
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    examples = sum(len(test.examples) for test in finder.find(module))
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
    assert result.attempted == examples, f"{name}: {examples - result.attempted} example(s) did not run"


def test_no_example_is_skipped():
    """An example either runs or is written as a plain code block: a skipped one can only fail on
    import, so it would show code nobody checks."""
    skipped = [f"{path.relative_to(Path(edgeship.__file__).parent)}:{number}"
               for path in sorted(Path(edgeship.__file__).parent.rglob("*.py"))
               for number, line in enumerate(path.read_text().splitlines(), 1)
               if "doctest: +SKIP" in line]
    assert not skipped, f"skipped docstring examples: {', '.join(skipped)}"
