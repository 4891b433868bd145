"""Renders every benchmarks/results/*.json into one markdown block, for the top-level README.

Each benchmark script renders its own table (``render(report)``); results written by a
script without one are taken from the ``.md`` file beside their JSON.

Usage:
    python benchmarks/render.py                # prints the block
    python benchmarks/render.py --out benchmarks/results/README.md
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from common import RESULTS

# Reading order: is the runtime as fast as the interpreter, is training fed, what shipping buys.
ORDER = ("latency", "throughput", "input_pipeline", "keras_vs_tflite", "pi_emulation")
TITLES = {
    "latency": "`edgeship bench` vs LiteRT's benchmark tool",
    "throughput": "Folder throughput: `predict` / `eval` vs invoke-only",
    "input_pipeline": "Training input pipeline vs in-memory tensors",
    "keras_vs_tflite": "Float Keras model vs the shipped TFLite variants",
    "pi_emulation": "ai-edge-litert on Raspberry Pi CPUs, emulated",
}


def render_all(folder: Path = RESULTS) -> str:
    paths = sorted(folder.glob("*.json"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else len(ORDER), p.stem))
    sections = []
    for path in paths:
        report = json.loads(path.read_text())
        name = report.get("benchmark")
        if name:
            table = importlib.import_module(name).render(report)
        elif path.with_suffix(".md").exists():
            table = path.with_suffix(".md").read_text()
        else:
            continue
        sections.append(f"### {TITLES.get(path.stem, path.stem)}\n\n{table.strip()}\n")
    return "\n".join(sections)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="Write here instead of printing.")
    args = parser.parse_args()
    block = render_all()
    if args.out:
        args.out.write_text(block)
    else:
        print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
