"""The Python snippets of the README and of every documentation page run, in order, as a reader
would paste them.

Each file's snippets run in a fresh folder holding generated ``photos/`` of class sub-folders,
with the stage configs swapped for their documented smoke-test variants (``TrainConfig.tiny``,
``ExportConfig.tiny``: a narrow MobileNet v1 from random initialisation, one epoch) so that the
whole documentation runs in a few minutes; everything else is the snippet's own code.

The README starts from the photos alone, as its reader does. A page starts where a reader of the
train and export pages stands: ``runs/flowers`` is the session's tiny exported run (trained once,
shared with the other tests), with its ``.tflite`` files and a ``photo.jpg`` beside it; a page
that trains into ``runs/flowers`` itself starts from the photos alone.

Only ```` ```python ```` blocks run. A snippet that cannot run here (it needs an Edge TPU, a phone
or a device over ssh) would be fenced ```` ```py ```` instead; there is none so far.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

SNIPPET = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
TINY = {"TrainConfig(": "TrainConfig.tiny(", "ExportConfig(": "ExportConfig.tiny("}
TRAINS_THE_RUN = 'out_dir="runs/flowers"'


def snippets(path: Path) -> list[str]:
    return SNIPPET.findall(path.read_text(encoding="utf-8"))


def _nav_pages(nav) -> list[str]:
    """The pages of mkdocs.yml's nav, in reading order."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return [page for item in nav for page in _nav_pages(item)]


def doc_pages() -> list[Path]:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    return [ROOT / "docs" / page for page in _nav_pages(config["nav"])]


def _tiny(code: str) -> str:
    for name, tiny in TINY.items():
        code = re.sub(rf"(?<![.\w]){re.escape(name)}", tiny, code)
    return code.replace("image_size=160", "image_size=32")


def _run_in_order(path: Path) -> None:
    namespace: dict = {}
    for index, code in enumerate(snippets(path), 1):
        where = f"{path.relative_to(ROOT)} snippet {index}"
        try:
            exec(compile(_tiny(code), where, "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - name the snippet that broke
            pytest.fail(f"{where} failed: {e!r}\n{code}")


def test_every_page_of_the_nav_exists_and_every_page_is_in_the_nav():
    pages = doc_pages()
    assert all(page.exists() for page in pages), [str(page) for page in pages if not page.exists()]
    on_disk = {path for path in (ROOT / "docs").rglob("*.md")}
    assert on_disk == set(pages), on_disk ^ set(pages)


def test_the_docs_have_python_snippets_for_every_stage():
    text = "\n".join(code for path in [ROOT / "README.md", *doc_pages()] for code in snippets(path))
    for entry in ("run(RunConfig(", "train(TrainConfig(", "export(ExportConfig(", "load_model(", "validate(",
                  "write_report_page(", "bench_matrix(", "predict_mapping("):
        assert entry in text, entry
    assert "run(RunConfig(" in "\n".join(snippets(ROOT / "README.md"))


def test_readme_python_snippets_run_in_order(demo_data, tmp_path, monkeypatch):
    shutil.copytree(demo_data, tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    _run_in_order(ROOT / "README.md")


@pytest.mark.parametrize("page", [page for page in doc_pages() if snippets(page)], ids=lambda page: page.name)
def test_page_python_snippets_run_in_order(page, demo_data, tiny_export, tmp_path, monkeypatch):
    shutil.copytree(demo_data, tmp_path / "photos")
    if TRAINS_THE_RUN not in page.read_text(encoding="utf-8"):
        run = tmp_path / "runs" / "flowers"
        shutil.copytree(tiny_export.parent, run, symlinks=True)  # `export` stays the run's own link
        for model in (run / "export").glob("*.tflite"):
            shutil.copy(model, tmp_path / model.name)
        shutil.copy(next((tmp_path / "photos").rglob("*.png")), tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    _run_in_order(page)
