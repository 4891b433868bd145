"""Does exporting all five variants take longer than training the model did?

For each backbone of the accuracy benchmark and each seed, trains a fresh run on flowers5 with
edgeship's defaults, then exports the five default variants from it, one after the other in the
same process, so that both are timed on the same machine in the same minutes (the machine is
shared: the ratio holds, the absolute times do not). Training includes decoding the photos;
export includes loading the run. The export report's ``step_seconds`` say where its time went.

    python benchmarks/export_time.py [--models mobilenet_v1_0.25@160 ...] [--seeds 1]

Writes benchmarks/results/export_time.json and export_time.md.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import MODELS, training_arguments  # noqa: E402
from common import machine, machine_line, write_results  # noqa: E402

RUNS_DIR = Path("runs") / "bench-time"
# The export report's steps, in the order they run, and how the table names them.
STEPS = {
    "load": "load the run",
    "convert_float_model": "convert float16, dynamic, float32, int8-ptq",
    "qat": "QAT",
    "convert_qat_model": "convert QAT int8",
    "choose_int8": "choose int8",
    "write_and_score": "write and score",
}


def measure(name: str, seed: int, data: Path, weights_dir: Path, runs_dir: Path) -> dict:
    """Trains a fresh run and exports it; returns both times and the export's steps."""
    from edgeship.export import ExportConfig, export
    from edgeship.train import TrainConfig, train

    spec = MODELS[name]
    run_dir = runs_dir / f"{name.replace('@', '-')}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    weights = str(weights_dir / spec["weights_file"]) if spec["weights_file"] else "imagenet"
    config = TrainConfig(data_dir=str(data), out_dir=str(run_dir), backbone=spec["backbone"], alpha=spec["alpha"],
                         image_size=spec["image_size"], weights=weights, seed=seed)
    start = time.perf_counter()
    train(config)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    report = export(ExportConfig(run_dir=str(run_dir)))
    export_seconds = time.perf_counter() - start
    return {"model": name, "seed": seed, "train_seconds": round(train_seconds, 1),
            "export_seconds": round(export_seconds, 1), "export_over_train": round(export_seconds / train_seconds, 3),
            "step_seconds": report["step_seconds"], "int8_source": report.get("int8_source")}


def render(result: dict) -> str:
    rows = result["rows"]
    lines = [
        f"Train a fresh run on flowers5 with the defaults, then export the five default variants, one after the "
        f"other in one process, per backbone and seed. {machine_line(result['machine'])}",
        "",
        "| model | seed | train | export | export / train |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(f"| {r['model']} | {r['seed']} | {r['train_seconds']:.0f} s | {r['export_seconds']:.0f} s | "
          f"**{r['export_over_train']:.2f}** |" for r in rows),
        "",
        "Where the export's time went (seconds, from its report):",
        "",
        "| model | seed | " + " | ".join(STEPS.values()) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in STEPS) + " |",
        *(f"| {r['model']} | {r['seed']} | " + " | ".join(f"{r['step_seconds'].get(step, 0):.1f}" for step in STEPS)
          + " |" for r in rows),
    ]
    missed = [r for r in rows if r["export_over_train"] > 1]
    if missed:
        lines += [""] + [
            f"{r['model']}, seed {r['seed']}: export took {r['export_over_train']:.2f}× training. QAT (building the "
            f"quantized model, calibrating it, and its epochs over every layer through fake quantization) was "
            f"{r['step_seconds'].get('qat', 0):.0f} s of the {r['export_seconds']:.0f} s; training fits the head, then "
            "the top quarter of the backbone." for r in missed]
    return "\n".join(lines) + "\n"


def goal(result: dict) -> list[dict]:
    """Export of all five variants against training, per backbone."""
    out = []
    for name in dict.fromkeys(r["model"] for r in result["rows"]):
        ratios = [r["export_over_train"] for r in result["rows"] if r["model"] == name]
        worst = max(ratios)
        out.append({
            "claim": f"export of all five variants vs training ({name}, {len(ratios)} seed{'s' * (len(ratios) > 1)})",
            "goal": "export time ≤ training time",
            "measured": "export / train " + ", ".join(f"{r:.2f}" for r in ratios)
                        + (f" (median {statistics.median(ratios):.2f})" if len(ratios) > 2 else ""),
            "verdict": "met" if worst <= 1 else f"missed: export takes up to {worst:.2f}× training",
        })
    return out


def main() -> None:
    args = training_arguments(__doc__.splitlines()[0], RUNS_DIR, [1])
    rows = [measure(name, seed, args.data, args.weights_dir, args.runs_dir)
            for seed in args.seeds for name in args.models]
    result = {"benchmark": "export_time", "machine": machine(), "seeds": args.seeds, "rows": rows}
    write_results("export_time", result, render(result))
    print(render(result))


if __name__ == "__main__":
    main()
