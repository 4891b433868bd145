"""Does fine-tuning the whole backbone give a small model whose int8 keeps its decisions?

For each small backbone of the accuracy benchmark, over its seeds: the runs of ``accuracy.py``
(edgeship's defaults, phase 2 trains the top quarter of the backbone) beside runs trained with
``--fine-tune-fraction 1`` (phase 2 trains all of it), each exported with the defaults. Reports,
as mean and spread over the seeds, on the test split: float accuracy, the shipped int8's change
against float, its agreement and probability distance, and post-training int8's agreement. (Each
run's training seconds are kept in the JSON; the runs were not trained side by side.)

    python benchmarks/fine_tune_depth.py [--models mobilenet_v1_0.25@160] [--seeds 1 2 3 4 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import RUNS_DIR, SEEDS, run_row, spread, train_and_export, training_arguments  # noqa: E402
from common import machine, machine_line, write_results  # noqa: E402

SMALL = ("mobilenet_v1_0.25@128", "mobilenet_v1_0.25@160")
FRACTIONS = {0.25: RUNS_DIR, 1.0: Path("runs") / "bench-fine-tune"}  # the default's runs are accuracy.py's


def summarize(rows: list[dict]) -> dict:
    """Mean and spread over the seeds of one model and fraction."""
    shipped = [r["scores"]["int8 shipped"] for r in rows]
    return {
        "float_accuracy": spread([r["scores"]["float"]["test_accuracy"] for r in rows]),
        "delta_pp": spread([s["delta_pp"] for s in shipped]),
        "agreement": spread([s["agreement"] for s in shipped]),
        "probability_distance": spread([s["probability_distance"] for s in shipped]),
        "ptq_agreement": spread([r["scores"]["int8-ptq"]["agreement"] for r in rows]),
        "train_seconds": spread([r["train_seconds"] for r in rows]),
    }


def render(result: dict) -> str:
    lines = [
        f"flowers5, {len(result['seeds'])} seeds (the accuracy benchmark's splits), edgeship's defaults but for "
        "`--fine-tune-fraction`, the share of the backbone that phase 2 trains; mean ± standard deviation over the "
        "seeds, on the test split. Agreement and distance: the shipped int8 against the float Keras model. "
        + machine_line(result["machine"]),
        "",
        "| model | fine-tuned | float accuracy | shipped int8 Δ | agreement | distance | post-training int8 agreement |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["summary"]:
        s = row["scores"]
        lines.append(
            f"| {row['model']} | {100 * row['fraction']:.0f} % of the backbone{' (default)' if row['default'] else ''} "
            f"| {100 * s['float_accuracy'][0]:.2f} ± {100 * s['float_accuracy'][1]:.2f} % "
            f"| {s['delta_pp'][0]:+.2f} ± {s['delta_pp'][1]:.2f} pp "
            f"| {100 * s['agreement'][0]:.2f} ± {100 * s['agreement'][1]:.2f} % "
            f"| {s['probability_distance'][0]:.4f} | {100 * s['ptq_agreement'][0]:.2f} % |"
        )
    return "\n".join(lines) + "\n"


def goal(result: dict) -> list[dict]:
    return []  # no goal of its own: evidence for the small-model paragraph of the README


def main() -> None:
    args = training_arguments(__doc__.splitlines()[0], RUNS_DIR, list(SEEDS))
    from edgeship.train import TrainConfig

    default = TrainConfig.__dataclass_fields__["fine_tune_fraction"].default
    summary = []
    for name in [m for m in args.models if m in SMALL] or list(SMALL):
        for fraction, runs_dir in FRACTIONS.items():
            overrides = {} if fraction == default else {"fine_tune_fraction": fraction}
            rows = [run_row(name, seed, train_and_export(name, seed, args.data, args.weights_dir, runs_dir,
                                                         **overrides)) for seed in args.seeds]
            summary.append({"model": name, "fraction": fraction, "default": fraction == default,
                            "seeds": args.seeds, "scores": summarize(rows)})
    result = {"benchmark": "fine_tune_depth", "machine": machine(), "seeds": args.seeds, "summary": summary}
    write_results("fine_tune_depth", result, render(result))
    print(render(result))


if __name__ == "__main__":
    main()
