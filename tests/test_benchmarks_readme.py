"""The benchmark numbers of the README (its goals table) and of docs/benchmarks.md (every table)
are the ones in benchmarks/results/*.json, and every result says where and when it was measured.
Reads JSON and renders markdown: no TensorFlow, no timing."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from conftest import benchmark_module

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
RESULTS = BENCHMARKS / "results"
PAGE = ROOT / "docs" / "benchmarks.md"


@pytest.fixture(scope="module")
def render():
    """benchmarks/render.py, imported as the scripts import each other (their folder on sys.path)."""
    with benchmark_module("render") as module:
        yield module


def test_readme_block_is_the_goals_table_the_results_render(render):
    block = render.current_block((ROOT / "README.md").read_text())
    assert block == render.readme_block(), "README.md is out of date: run `python benchmarks/render.py --readme`"
    goals = render.goals_table(render.load_reports())
    assert goals and goals in block
    assert "\n#" not in block, "the README's block is the goals table alone; the detailed tables go to docs/"


def test_benchmarks_page_block_is_every_table_the_results_render(render):
    block = render.current_block(PAGE.read_text(), PAGE.name)
    assert block == render.page_block(), "docs/benchmarks.md is out of date: run `python benchmarks/render.py --readme`"
    assert render.goals_table(render.load_reports()) in block
    for name, report in render.load_reports().items():
        module = render.importlib.import_module(render.SECTIONS[name][0])
        assert f"## {render.SECTIONS[name][1]}\n\n{module.render(report).strip()}\n" in block, name


def test_check_passes_on_the_committed_files(render):
    assert render._stale() == []


def test_every_result_renders_its_markdown_file(render):
    reports = render.load_reports()
    assert set(reports) == {path.stem for path in RESULTS.glob("*.json")}
    for name, report in reports.items():
        module = render.importlib.import_module(render.SECTIONS[name][0])
        assert report["benchmark"] == name
        assert (RESULTS / f"{name}.md").read_text() == module.render(report), f"results/{name}.md is stale"


def test_every_result_records_its_machine_and_date(render):
    from common import MACHINE_KEYS

    for name, report in render.load_reports().items():
        info = report["machine"]
        assert set(MACHINE_KEYS) <= set(info), f"results/{name}.json lacks {set(MACHINE_KEYS) - set(info)}"
        # A package absent from the measuring environment is recorded as None; these never are.
        missing = [key for key in ("cpu", "python", "numpy", "ai-edge-litert", "date") if not info[key]]
        assert not missing, f"results/{name}.json records no {', '.join(missing)}"
        assert isinstance(info["cores"], int) and info["cores"] > 0
        datetime.date.fromisoformat(info["date"])


def test_goal_rows_say_met_or_missed(render):
    table = render.goals_table(render.load_reports())
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows, "no benchmark states a goal"
    assert all(row[-1].startswith(("met", "missed")) for row in rows), table
