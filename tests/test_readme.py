"""The README's Python snippets run, in order, as a reader would paste them.

They run in a folder holding generated ``photos/`` of class sub-folders, with the stage configs
swapped for their documented smoke-test variants (``TrainConfig.tiny``, ``ExportConfig.tiny``:
a narrow MobileNet v1 from random initialisation, one epoch) so that the whole README runs in
about a minute; everything else is the snippet's own code.
"""

from __future__ import annotations

import re
import shutil

import pytest

from conftest import ROOT

SNIPPET = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
TINY = {"TrainConfig(": "TrainConfig.tiny(", "ExportConfig(": "ExportConfig.tiny("}


def readme_snippets() -> list[str]:
    return SNIPPET.findall((ROOT / "README.md").read_text(encoding="utf-8"))


def _tiny(code: str) -> str:
    for name, tiny in TINY.items():
        code = re.sub(rf"(?<![.\w]){re.escape(name)}", tiny, code)
    return code.replace("image_size=160", "image_size=32")


def test_the_readme_has_python_snippets_for_every_stage():
    text = "\n".join(readme_snippets())
    for entry in ("run(RunConfig(", "train(TrainConfig(", "export(ExportConfig(", "load_model(", "validate("):
        assert entry in text, entry


def test_readme_python_snippets_run_in_order(demo_data, tmp_path, monkeypatch):
    shutil.copytree(demo_data, tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for index, code in enumerate(readme_snippets()):
        if "load_model(\"model_int8.tflite\")" in code:  # the runtime snippet: files beside the reader
            for path in (tmp_path / "runs" / "flowers" / "export").glob("*.tflite"):
                shutil.copy(path, tmp_path / path.name)
            shutil.copy(next((tmp_path / "photos").rglob("*.png")), tmp_path / "photo.jpg")
        try:
            exec(compile(_tiny(code), f"README snippet {index + 1}", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - name the snippet that broke
            pytest.fail(f"README snippet {index + 1} failed: {e!r}\n{code}")
