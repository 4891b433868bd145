"""The report page: written from a real tiny export, loaded from disk in headless Chromium.

The browser checks what a reader of a CI artifact relies on: the page renders without errors,
asks the network for nothing, shows every photo whose class int8 changed (up to the cap) and
fits a phone's width. The tiny run's int8 agrees with float on every image, so a copy of it
records a different int8 top-1 on half of the test images: the page generator runs unmocked on
it, through the real exported models.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import missing_system_program
from edgeship.cli import app
from edgeship.runtime.classify import Class
from edgeship.runtime.report_page import GALLERY_CAP, Photo, find_disagreements, sort_by_margin, write_report_page
from edgeship.runtime.rundir import RunDir, Split

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
HOSTILE = "<script>alert(1)</script> & co"


# --------------------------------------------------------------------------- pure parts


def _photo(index: int, scores: list[float] | None) -> Photo:
    top = [Class(i, str(i), s) for i, s in enumerate(scores)] if scores else []
    return Photo(index, f"{index}.jpg", 0, 0, 1, float_top=top)


def test_photos_sort_by_the_float_models_margin_unscored_last():
    photos = [_photo(0, [0.9, 0.1]), _photo(1, None), _photo(2, [0.5, 0.45]), _photo(3, [0.6, 0.2])]
    assert [p.index for p in sort_by_margin(photos)] == [2, 3, 0, 1]
    assert sort_by_margin(photos)[0].margin == pytest.approx(0.05)


def test_disagreements_are_the_images_where_int8_and_float_top1_differ():
    split = Split("/data", ["a", "b"], test=[("a/1.jpg", 0, ""), ("a/2.jpg", 0, ""), ("b/3.jpg", 1, "")])
    predictions = {"targets": np.array([0, 0, 1]), "float_keras": np.array([0, 1, 1]), "int8": np.array([0, 0, 0])}
    photos = find_disagreements(predictions, split)
    assert [(p.index, p.path, p.float_class, p.int8_class) for p in photos] == [(1, "a/2.jpg", 1, 0),
                                                                                (2, "b/3.jpg", 1, 0)]


# --------------------------------------------------------------------------- runs


def _copy_run(tiny_export: Path, destination: Path) -> Path:
    shutil.copytree(tiny_export.parent, destination, symlinks=True)  # ``export`` is a link to its version
    return destination


@pytest.fixture(scope="module")
def disagreeing_run(tiny_export, tmp_path_factory) -> Path:
    """A copy of the tiny run whose recorded int8 top-1 differs from float on every other test
    image, with a class name written to break a careless page."""
    run = RunDir(_copy_run(tiny_export, tmp_path_factory.mktemp("report") / "run"))
    predictions = json.loads(run.predictions_path.read_text())
    num_classes = len(run.read_split().classes)
    predictions["int8"] = [(f + 1) % num_classes if i % 2 == 0 else f
                           for i, f in enumerate(predictions["float_keras"])]
    run.predictions_path.write_text(json.dumps(predictions))
    split = json.loads(run.split_path.read_text())
    split["classes"][1] = HOSTILE
    run.split_path.write_text(json.dumps(split))
    # As benchmarks/layer_drift.py leaves it in a run it measured.
    run.layer_drift_path.write_text(json.dumps({
        "run": "run", "images": 16, "layers": ["conv1_relu", "head_logits"], "close_calls": 0.25,
        "variants": {"int8": {"agreement": 0.9375, "drift": {"conv1_relu": 0.02, "head_logits": 0.14}}}}))
    write_report_page(run.path)
    return run.path


def _num_disagreements(run: Path) -> int:
    predictions = json.loads(RunDir(run).predictions_path.read_text())
    return sum(a != b for a, b in zip(predictions["int8"], predictions["float_keras"]))


def test_export_writes_the_page_and_the_disagreements_beside_it(tiny_export):
    run = RunDir(tiny_export.parent)
    assert run.report_page_path.is_file()
    listed = json.loads(run.disagreements_path.read_text())
    assert listed["num_disagreements"] == _num_disagreements(run.path) == len(listed["photos"])


def test_labels_from_files_are_escaped(disagreeing_run):
    page = RunDir(disagreeing_run).report_page_path.read_text()
    assert "<script" not in page
    assert html.escape(HOSTILE) in page


def test_cap_keeps_the_page_small_and_the_json_lists_every_photo(disagreeing_run):
    total = _num_disagreements(disagreeing_run)
    assert total >= 2
    page = write_report_page(disagreeing_run, max_photos=1).read_text()
    assert page.count('class="thumb"') == 1
    assert f"Showing the 1 closest of {total}; {total - 1} more" in page
    listed = json.loads(RunDir(disagreeing_run).disagreements_path.read_text())
    assert len(listed["photos"]) == total and all(len(p["float_top"]) == 3 for p in listed["photos"])
    margins = [p["margin"] for p in listed["photos"]]
    assert margins == sorted(margins)
    write_report_page(disagreeing_run)  # back to the default for the browser tests


def test_cli_writes_the_page(disagreeing_run):
    result = CliRunner().invoke(app, ["report", str(disagreeing_run), "--max-photos", str(GALLERY_CAP)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("report.html")


def test_cli_says_to_export_first(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export", ".export-*", "report*"))
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 1 and "edgeship export" in result.output


def test_damaged_predictions_say_how_to_fix(disagreeing_run, tmp_path):
    run = RunDir(_copy_run(disagreeing_run / "export", tmp_path / "run"))
    predictions = json.loads(run.predictions_path.read_text())
    predictions["int8"] = predictions["int8"][:-1]
    run.predictions_path.write_text(json.dumps(predictions))
    result = CliRunner().invoke(app, ["report", str(run.path)])
    assert result.exit_code == 1 and "edgeship export" in result.output and "'int8'" in result.output


def test_without_the_float32_file_the_photos_are_listed_in_split_order(disagreeing_run, tmp_path):
    run = RunDir(_copy_run(disagreeing_run / "export", tmp_path / "run"))
    (run.export_dir / "model_float32.tflite").unlink()
    page = write_report_page(run.path).read_text()
    assert "No loadable model_float32.tflite" in page
    listed = json.loads(run.disagreements_path.read_text())["photos"]
    assert [p["index"] for p in listed] == sorted(p["index"] for p in listed)
    assert all(len(p["int8_top"]) == 3 and not p["float_top"] for p in listed)


# --------------------------------------------------------------------------- in a browser


@pytest.fixture(scope="module")
def browser():
    try:
        import playwright.sync_api as playwright
    except ImportError:
        missing_system_program("playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        missing_system_program(f"{CHROMIUM} is absent: install Debian's chromium package (apt-get install chromium)")
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _open(browser, page_path: Path, width: int = 1100):
    """The page loaded from disk, with every network request and console error it caused."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    requests, errors = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_path.as_uri())
    assert requests == [page_path.as_uri()], "the page asked the network for more than itself"
    assert errors == []
    return page


def test_page_renders_offline_with_its_sections(browser, tiny_export, tmp_path):
    run = RunDir(tiny_export.parent)
    page = _open(browser, run.report_page_path)
    for section in ("variants", "photos", "classes", "edgetpu", "details"):
        assert page.locator(f"details#{section}").count() == 1, section
    assert page.locator("#variants svg").count() == 2  # accuracy against latency, and against size
    assert page.locator("#variants tbody tr").count() == len(json.loads(run.report_path.read_text())["variants"])
    assert page.locator("script").count() == 0
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    page.close()


def test_every_changed_photo_is_shown_closest_call_first(browser, disagreeing_run, tmp_path):
    page = _open(browser, RunDir(disagreeing_run).report_page_path)
    expected = min(_num_disagreements(disagreeing_run), GALLERY_CAP)
    thumbnails = page.locator("#photos img.thumb")
    assert thumbnails.count() == page.locator("#photos figure.photo").count() == expected
    assert page.evaluate("[...document.querySelectorAll('#photos img.thumb')].every(i => i.naturalWidth > 0)")
    assert page.locator("#photos figure.photo").first.locator("ol").count() == 2  # float's and int8's top-3
    assert page.locator("script").count() == 0 and HOSTILE in page.inner_text("#classes")
    assert page.locator("#drift tbody tr").count() == 3  # two layers and the agreement
    page.screenshot(path=str(tmp_path / "report_disagreements.png"), full_page=True)
    page.close()


def test_page_fits_a_phone(browser, disagreeing_run, tmp_path):
    page = _open(browser, RunDir(disagreeing_run).report_page_path, width=390)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(tmp_path / "report_phone.png"), full_page=True)
    page.close()


def test_page_says_when_the_photos_are_gone(browser, disagreeing_run, tmp_path):
    run = RunDir(_copy_run(disagreeing_run / "export", tmp_path / "run"))
    split = json.loads(run.split_path.read_text())
    split["data_root"] = str(tmp_path / "moved")
    run.split_path.write_text(json.dumps(split))
    page = _open(browser, write_report_page(run.path))
    assert page.locator("#photos img.thumb").count() == 0
    assert page.locator("#photos figure.photo").count() == _num_disagreements(run.path)
    assert "no longer in" in page.inner_text("#photos")
    page.close()
