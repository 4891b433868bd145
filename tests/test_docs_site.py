"""The documentation site builds with ``mkdocs build --strict`` (a broken link, anchor or API
reference fails it), makes no request outside itself, and the README links into it by relative
paths that exist, so that they work on GitHub too."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

# A link, script, stylesheet, image or frame that a browser would fetch from elsewhere.
EXTERNAL_FETCH = re.compile(r"<(?:script|link|img|iframe|source|video|audio)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.I)
EXTERNAL_CSS = re.compile(r"url\(\s*['\"]?(?:https?:)?//|@import\s+['\"]?(?:url\()?\s*['\"]?(?:https?:)?//", re.I)
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _needs_mkdocs() -> None:
    """Skips without MkDocs; in CI, where `make test` installs the docs extra, fails instead."""
    if importlib.util.find_spec("mkdocs") and importlib.util.find_spec("mkdocstrings_handlers"):
        return
    reason = 'MkDocs is not installed (pip install -e ".[docs]")'
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; `make test` installs it, so in CI this is a failure, not a skip")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    _needs_mkdocs()
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_the_site_builds_strictly_with_every_page(site):
    for page in ("index", "train", "export", "qat", "runtime", "ci", "edgetpu", "benchmarks", "api/runtime"):
        assert (site / f"{page}.html").is_file(), page
    assert 'src="report_page.png"' in (site / "report.html").read_text(encoding="utf-8")


def test_the_api_reference_is_generated_from_the_docstrings(site):
    runtime = (site / "api" / "runtime.html").read_text(encoding="utf-8")
    for name in ("load_model", "validate", "bench_matrix", "paired_difference_ci", "device.parse_device"):
        assert f'id="edgeship.runtime.{name}"' in runtime, name
    # A doctest outside an Examples: section renders as highlighted code, not as prose.
    assert '<span class="gp">&gt;&gt;&gt; </span>' in runtime


def test_the_site_makes_no_external_request(site):
    offenders = []
    for path in site.rglob("*"):
        if path.suffix in (".html", ".css") and path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            if EXTERNAL_FETCH.search(text) or EXTERNAL_CSS.search(text):
                offenders.append(str(path.relative_to(site)))
    assert not offenders, offenders


def test_readme_links_into_the_docs_by_relative_paths_that_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = [link for link in MARKDOWN_LINK.findall(text) if not link.startswith(("http://", "https://", "#"))]
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        assert not link.startswith("/"), link
        assert (ROOT / link.split("#")[0]).exists(), link


def test_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


def test_doctest_fences_leave_examples_sections_to_griffe():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        from griffe_doctests import fence_doctests
    finally:
        sys.path.remove(str(ROOT / "docs"))
    text = "Text.\n\nExample:\n    >>> f(x)[0]  # doctest: +SKIP\n    1\n\nMore.\n\nExamples:\n    >>> g()\n"
    assert fence_doctests(text) == (
        "Text.\n\nExample:\n    ```pycon\n    >>> f(x)[0]\n    1\n    ```\n\nMore.\n\nExamples:\n    >>> g()\n"
    )
