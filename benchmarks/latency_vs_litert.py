"""Does `edgeship bench` measure what LiteRT's own benchmark measures?

Runs `edgeship bench` and `ai_edge_litert.tools.benchmark_litert_model` (LiteRT's Python port
of its C++ benchmark tool) on the same models with the same thread count, warm-up and run
counts, interleaved in one session: each round runs both tools on every model, alternating
which goes first, each in a fresh process. Machines are shared and noisy, so only the ratio
measured within one session is meaningful, not the absolute times.

Reports, per model, the ratio of edgeship's median to LiteRT's median (median over rounds
of each tool's per-run median). Goal: <= 1.02.

Usage:
    python benchmarks/latency_vs_litert.py                 # Coral's CPU models in ../shared
    python benchmarks/latency_vs_litert.py --model m.tflite --threads 2 --rounds 7

Writes benchmarks/results/latency.json and latency.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORAL = ROOT.parent / "shared" / "external" / "coral"
RESULTS = Path(__file__).resolve().parent / "results"
GOAL = 1.02


def default_models() -> list[Path]:
    if not CORAL.exists():
        return []
    return sorted(p for p in CORAL.glob("*.tflite") if not p.stem.endswith("_edgetpu"))


def run_edgeship(model: Path, threads: int, runs: int, warmup: int) -> float:
    command = [sys.executable, "-m", "edgeship.cli", "bench", str(model), "--json",
               "--threads", str(threads), "--num-runs", str(runs), "--num-warmup-runs", str(warmup)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)["results"][0]["median_ms"]


def run_litert(model: Path, threads: int, runs: int, warmup: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model", "--model", str(model),
                   "--num_threads", str(threads), "--num_runs", str(runs), "--warmup_runs", str(warmup),
                   "--result_json", str(out)]
        subprocess.run(command, capture_output=True, text=True, check=True)
        # LiteRT rounds its report to 0.01 ms.
        return json.loads(out.read_text())["latency"]["median_ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", type=Path, default=[], help="Extra .tflite (repeatable).")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200, help="Timed runs per tool per round.")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "latency.json")
    args = parser.parse_args()

    models = default_models() + args.model
    if not models:
        parser.error(f"No models: {CORAL} is absent; pass --model PATH.")
    tools = {"edgeship": run_edgeship, "litert": run_litert}
    samples: dict[str, dict[str, list[float]]] = {str(m): {name: [] for name in tools} for m in models}
    for round_index in range(args.rounds):
        order = list(tools) if round_index % 2 == 0 else list(reversed(tools))
        for model in models:
            for name in order:
                median = tools[name](model, args.threads, args.runs, args.warmup)
                samples[str(model)][name].append(median)
                print(f"round {round_index + 1}/{args.rounds} {model.name:40s} {name:9s} {median:.3f} ms",
                      file=sys.stderr)

    rows = []
    for model in models:
        ours, theirs = samples[str(model)]["edgeship"], samples[str(model)]["litert"]
        ratio = statistics.median(ours) / statistics.median(theirs)
        rows.append({
            "model": model.name,
            "edgeship_median_ms": statistics.median(ours),
            "litert_median_ms": statistics.median(theirs),
            "ratio": ratio,
            "per_round_ratios": [a / b for a, b in zip(ours, theirs)],
            "edgeship_round_medians_ms": ours,
            "litert_round_medians_ms": theirs,
            "within_goal": ratio <= GOAL,
        })
    report = {
        "description": "Median invoke latency: `edgeship bench` vs ai_edge_litert.tools.benchmark_litert_model, "
                       "same models and threads, interleaved rounds in one session.",
        "goal_ratio_at_most": GOAL,
        "settings": {"threads": args.threads, "runs": args.runs, "warmup": args.warmup, "rounds": args.rounds},
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version(), "ai_edge_litert": version("ai-edge-litert")},
        "results": rows,
        "max_ratio": max(row["ratio"] for row in rows),
        "all_within_goal": all(row["within_goal"] for row in rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"Median invoke latency, {args.threads} thread(s), {args.runs} runs x {args.rounds} interleaved rounds "
        f"({report['machine']['processor']}, {report['machine']['cpu_count']} cores).",
        "",
        "| model | edgeship ms | LiteRT benchmark ms | ratio |",
        "| --- | ---: | ---: | ---: |",
    ] + [
        f"| {r['model']} | {r['edgeship_median_ms']:.3f} | {r['litert_median_ms']:.3f} | {r['ratio']:.3f} |"
        for r in rows
    ]
    markdown = "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)
    return 0 if report["all_within_goal"] else 1


if __name__ == "__main__":
    sys.exit(main())
