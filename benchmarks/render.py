"""Renders every benchmarks/results/*.json into the README's goals table and the benchmarks page.

The README's block is where each goal stands (every benchmark module's ``goal(report)``); the
block of docs/benchmarks.md is the same table, then each benchmark's table (its
``render(report)``) in reading order. In both files the block sits between the two markers
``BEGIN`` and ``END`` below; nothing else of either file is touched.

Usage:
    python benchmarks/render.py              # prints the benchmarks page's block
    python benchmarks/render.py --readme     # rewrites both blocks and every results/<name>.md
    python benchmarks/render.py --check      # exit 1 when either block differs from the JSON
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from common import RESULTS, ROOT

README = ROOT / "README.md"
PAGE = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- benchmarks: begin (python benchmarks/render.py --readme) -->"
END = "<!-- benchmarks: end -->"

# Reading order: is the runtime as fast as the interpreter, is training fed, what shipping costs
# in accuracy, what it buys in speed. Result name -> (module that wrote it, section title).
SECTIONS = {
    "latency": ("latency_vs_litert", "`edgeship bench` vs LiteRT's benchmark tool"),
    "throughput": ("throughput", "Folder throughput: `predict` / `eval` vs invoke-only"),
    "input_pipeline": ("input_pipeline", "Training input pipeline vs in-memory tensors"),
    "dataset_scale": ("dataset_scale", "Data sets that grow: preparation time, memory and the decode cache"),
    "accuracy": ("accuracy", "Shipped int8 vs float on real photos, over seeds and backbones"),
    "fine_tune_depth": ("fine_tune_depth", "Small models: fine-tuning the whole backbone"),
    "qat_recipe": ("qat_recipe", "QAT settings: how close each converted int8 model stays to the float model"),
    "export_time": ("export_time", "Export time against training time"),
    "convert_time": ("convert_time", "Export: converting from the inference function, saved once"),
    "int8_mixed": ("int8_mixed", "int8-mixed: the float layers it keeps and what they cost"),
    "layer_drift": ("layer_drift", "Where quantization drifts from the float model, layer by layer"),
    "keras_vs_tflite": ("keras_vs_tflite", "Float Keras model vs the shipped TFLite variants"),
    "edgetpu_mapping": ("edgetpu_mapping", "Edge TPU mapping: predicted offline vs Google's compiler"),
    "pi_emulation": ("pi_emulation", "ai-edge-litert on Raspberry Pi CPUs, emulated"),
    "remote_bench": ("remote_bench", "`edgeship bench` over ssh vs here"),
    "profile_sum": ("profile_sum", "`edgeship profile`: per-op times vs the whole model"),
}


def load_reports(folder: Path = RESULTS) -> dict[str, dict]:
    """Every results JSON of ``folder`` by benchmark name, in reading order."""
    reports = {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}
    unknown = sorted(set(reports) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"No benchmark module renders {', '.join(unknown)}: add it to SECTIONS in render.py.")
    return {name: reports[name] for name in SECTIONS if name in reports}


def _module(name: str):
    return importlib.import_module(SECTIONS[name][0])


def goals_table(reports: dict[str, dict]) -> str:
    """Where every goal stands, one row per claim, from each module's ``goal(report)``."""
    rows = []
    for name, report in reports.items():
        goal = _module(name).goal(report)
        rows += [goal] if isinstance(goal, dict) else goal or []
    if not rows:
        return ""
    lines = ["Where the goals stand, plainly:", "", "| claim | goal | measured | |", "| --- | --- | --- | --- |"]
    lines += [f"| {row['claim']} | {row['goal']} | {row['measured']} | {row['verdict']} |" for row in rows]
    return "\n".join(lines) + "\n"


def render_all(folder: Path = RESULTS) -> str:
    """The goals table, then every benchmark's section (a level-2 heading each, under the page's title)."""
    reports = load_reports(folder)
    sections = [goals_table(reports)]
    for name, report in reports.items():
        sections.append(f"## {SECTIONS[name][1]}\n\n{_module(name).render(report).strip()}\n")
    return "\n".join(section for section in sections if section)


def readme_block(folder: Path = RESULTS) -> str:
    """The README's block: the goals table alone, since the README is the front page."""
    return f"{BEGIN}\n{goals_table(load_reports(folder))}{END}"


def page_block(folder: Path = RESULTS) -> str:
    """docs/benchmarks.md's block: the goals table and every benchmark's table."""
    return f"{BEGIN}\n{render_all(folder)}{END}"


def current_block(text: str, name: str = "README.md") -> str:
    """The block of a file's text, markers included."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{name} lacks the markers {BEGIN!r} ... {END!r}.")
    return text[start : end + len(END)]


def _stale(readme: Path = README, page: Path = PAGE, folder: Path = RESULTS) -> list[Path]:
    """The files whose block differs from what the JSON renders now."""
    wanted = {readme: readme_block(folder), page: page_block(folder)}
    return [path for path, block in wanted.items() if current_block(path.read_text(), path.name) != block]


def write_readme(readme: Path = README, page: Path = PAGE, folder: Path = RESULTS) -> None:
    """Replaces both blocks, and each results/<name>.md, by what the JSON renders now."""
    for path, block in ((readme, readme_block(folder)), (page, page_block(folder))):
        text = path.read_text()
        path.write_text(text.replace(current_block(text, path.name), block))
    for name, report in load_reports(folder).items():
        (folder / f"{name}.md").write_text(_module(name).render(report))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--readme", action="store_true",
                        help="Rewrite the blocks of README.md and docs/benchmarks.md, and results/*.md.")
    action.add_argument("--check", action="store_true", help="Exit 1 when either block is out of date.")
    args = parser.parse_args()
    if args.readme:
        write_readme()
    elif args.check:
        stale = _stale()
        if stale:
            print(f"The benchmark block of {', '.join(path.name for path in stale)} differs from "
                  "benchmarks/results: run `python benchmarks/render.py --readme`.", file=sys.stderr)
            return 1
    else:
        print(render_all())
    return 0


if __name__ == "__main__":
    sys.exit(main())
