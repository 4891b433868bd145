"""Does int8-mixed's agreement with the float model hold on test photos its search never saw?

For each finished training run (by default the accuracy benchmark's MobileNet v1 0.25 @128 runs,
one per seed) and each choice of ``--mixed-search-images`` (``val``: the validation split;
``train+val``: every train and validation image), exports ``int8-mixed`` into a scratch copy of
the run (its own export is left alone) and records: the agreement the search reached on its
images, the agreement on the validation split, and on the test split, which no choice ever
searches; the layers kept in float, test accuracy against float, the file size and the search's
time. Per choice: mean, standard deviation and minimum of the test agreement over the runs, and
how many runs hold the target on test.

    python benchmarks/int8_mixed_holdout.py [--runs RUN ...] [--choices val train+val] [--target 0.99]

Writes benchmarks/results/small-models/int8_mixed_holdout.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, copy_run, machine, machine_line, require_finished_runs, write_results  # noqa: E402

RUNS = [Path("runs/bench-accuracy") / f"mobilenet_v1_0.25-128-seed{seed}" for seed in (1, 2, 3, 4, 5)]
CHOICES = ("val", "train+val")
TARGET = 0.99
# Beside the README's results, not among them: benchmarks/render.py renders results/*.json only.
OUT = RESULTS / "small-models" / "int8_mixed_holdout.json"


def measure(run_dir: Path, choice: str, target: float, folder: Path) -> dict:
    """One export of int8-mixed from ``run_dir`` with its search on ``choice``."""
    from edgeship.export import ExportConfig, export

    config = ExportConfig(run_dir=str(copy_run(run_dir, folder)), formats=("int8-mixed",),
                          min_agreement=target, mixed_search_images=choice)
    report = export(config, report_page=False)
    mixed, row = report["int8-mixed"], report["variants"]["int8-mixed"]
    return {
        "run": run_dir.name, "search_images": choice, "num_search_images": mixed["num_search_images"],
        "search_agreement": mixed["search_agreement"], "val_agreement": mixed["val_agreement"],
        "test_agreement": row["agreement"], "test_delta_pp": row["delta_pp"], "size_bytes": row["size_bytes"],
        "num_float_layers": mixed["num_float_layers"], "num_layers": mixed["num_layers"],
        "float_layers": mixed["float_layers"], "reached": mixed["reached"],
        "search_seconds": report["step_seconds"].get("int8_mixed_search"),
        "num_test_images": report["num_test_images"],
    }


def summarize(rows: list[dict], target: float) -> dict:
    """Per choice: the test agreement's mean, sd and minimum, and the runs that hold the target on test."""
    summary = {}
    for choice in dict.fromkeys(row["search_images"] for row in rows):
        test = [row["test_agreement"] for row in rows if row["search_images"] == choice]
        layers = [row["num_float_layers"] for row in rows if row["search_images"] == choice]
        summary[choice] = {
            "num_runs": len(test), "test_agreement_mean": statistics.mean(test),
            "test_agreement_sd": statistics.stdev(test) if len(test) > 1 else 0.0, "test_agreement_min": min(test),
            "runs_holding_target": sum(value >= target for value in test), "float_layers_mean": statistics.mean(layers),
        }
    return summary


def render(result: dict) -> str:
    target = result["target"]
    lines = [
        f"`--formats int8-mixed --min-agreement {target}` per `--mixed-search-images` choice; the test split is "
        "never searched. Agreement = same top-1 class as the float Keras model. "
        f"{machine_line(result['machine'])}",
        "",
        "| search images | runs | test agreement, mean ± sd | min | runs ≥ target on test | float layers (mean) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for choice, s in result["summary"].items():
        lines.append(f"| {choice} | {s['num_runs']} | {100 * s['test_agreement_mean']:.2f} ± "
                     f"{100 * s['test_agreement_sd']:.2f} % | {100 * s['test_agreement_min']:.2f} % | "
                     f"{s['runs_holding_target']} of {s['num_runs']} | {s['float_layers_mean']:.1f} |")
    lines += ["", "| run | search images | images searched | search agr. | val agr. | test agr. | Δ test acc. "
              "| float layers | size | search time |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
              "| ---: |"]
    for row in result["rows"]:
        lines.append(
            f"| {row['run']} | {row['search_images']} | {row['num_search_images']} | "
            f"{100 * row['search_agreement']:.2f} % | {100 * row['val_agreement']:.2f} % | "
            f"{100 * row['test_agreement']:.2f} % | {row['test_delta_pp']:+.2f} pp | {row['num_float_layers']} of "
            f"{row['num_layers']} | {row['size_bytes'] / 1024:.0f} KiB | {row['search_seconds'] or 0:.0f} s |")
    return "\n".join(lines) + "\n"


def goal(result: dict) -> list[dict]:
    target = result["target"]
    return [{
        "claim": f"int8-mixed searched on {choice} holds --min-agreement on the unseen test split",
        "goal": f"≥ {100 * target:g} % test agreement on every run",
        "measured": (f"{100 * s['test_agreement_min']:.2f} % at worst, {s['runs_holding_target']} of "
                     f"{s['num_runs']} runs"),
        "verdict": "met" if s["runs_holding_target"] == s["num_runs"] else
                   f"missed on {s['num_runs'] - s['runs_holding_target']} run(s)",
    } for choice, s in result["summary"].items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", type=Path, default=RUNS)
    parser.add_argument("--choices", nargs="*", default=list(CHOICES), choices=CHOICES)
    parser.add_argument("--target", type=float, default=TARGET)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    require_finished_runs(args.runs)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for run in args.runs:
            for choice in args.choices:
                rows.append(measure(run, choice, args.target, Path(folder) / f"{run.name}-{choice}"))
    result = {"machine": machine(), "target": args.target, "rows": rows, "summary": summarize(rows, args.target)}
    write_results("int8_mixed_holdout", result, render(result), args.out)
    print(render(result))


if __name__ == "__main__":
    main()
