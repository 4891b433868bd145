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

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import CORAL, default_models, machine_line, ratio_arguments, ratio_goal, ratio_report, write_results

GOAL = 1.02


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


TOOLS = {"edgeship": run_edgeship, "litert": run_litert}


def measure(models: list[Path], args) -> dict[str, dict[str, list[float]]]:
    """Each tool's median per round and model; rounds alternate which tool goes first."""
    samples: dict[str, dict[str, list[float]]] = {str(m): {name: [] for name in TOOLS} for m in models}
    for round_index in range(args.rounds):
        order = list(TOOLS) if round_index % 2 == 0 else list(reversed(TOOLS))
        for model in models:
            for name in order:
                median = TOOLS[name](model, args.threads, args.runs, args.warmup)
                samples[str(model)][name].append(median)
                print(f"round {round_index + 1}/{args.rounds} {model.name:40s} {name:9s} {median:.3f} ms",
                      file=sys.stderr)
    return samples


def summary_row(model: Path, ours: list[float], theirs: list[float]) -> dict:
    ratio = statistics.median(ours) / statistics.median(theirs)
    return {
        "model": model.name,
        "edgeship_median_ms": statistics.median(ours),
        "litert_median_ms": statistics.median(theirs),
        "ratio": ratio,
        "per_round_ratios": [a / b for a, b in zip(ours, theirs)],
        "edgeship_round_medians_ms": ours,
        "litert_round_medians_ms": theirs,
        "within_goal": ratio <= GOAL,
    }


def render(report: dict) -> str:
    """The markdown table of a latency report."""
    settings = report["settings"]
    lines = [
        f"Median invoke latency, {settings['threads']} thread(s), {settings['runs']} runs x {settings['rounds']} "
        f"interleaved rounds; ratio = edgeship median / LiteRT median (goal: <= {report['goal_ratio_at_most']}; "
        "LiteRT's tool reports its median to 0.01 ms).",
        f"Machine: {machine_line(report['machine'])}",
        "",
        "| model | edgeship ms | LiteRT benchmark ms | ratio |",
        "| --- | ---: | ---: | ---: |",
    ] + [
        f"| {r['model']} | {r['edgeship_median_ms']:.3f} | {r['litert_median_ms']:.3f} | {r['ratio']:.3f} |"
        for r in report["results"]
    ]
    return "\n".join(lines) + "\n"


def goal(report: dict) -> dict:
    """Where the goal stands: the claim, the goal, what was measured, met or missed."""
    return ratio_goal(report, "`edgeship bench` median vs LiteRT's own benchmark tool")


def main() -> int:
    parser = ratio_arguments(__doc__, rounds=5, runs_help="Timed runs per tool per round.")
    args = parser.parse_args()

    models = default_models() + args.model
    if not models:
        parser.error(f"No models: {CORAL} is absent; pass --model PATH.")
    samples = measure(models, args)
    rows = [summary_row(m, samples[str(m)]["edgeship"], samples[str(m)]["litert"]) for m in models]
    report = ratio_report("Median invoke latency: `edgeship bench` vs ai_edge_litert.tools.benchmark_litert_model, "
                          "same models and threads, interleaved rounds in one session.", args, rows, GOAL)
    markdown = render(report)
    write_results("latency", report, markdown, args.out)
    print(markdown)
    return 0 if report["all_within_goal"] else 1


if __name__ == "__main__":
    sys.exit(main())
