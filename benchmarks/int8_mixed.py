"""What does `int8-mixed` keep in float to reach its agreement target, and what does that cost?

Exports finished training runs (by default the accuracy benchmark's MobileNet v1 0.25 @160 runs,
one per seed) with ``int8``, ``int8-mixed`` and ``float32``, each into a scratch copy of the run so
that its own export is left alone. Per run: how many layers the search kept in float and which,
the agreement with the float model it reached on validation (the search's target) and on test
(never seen by the search), test accuracy, file size, and the median invoke time of the three
files timed side by side (interleaved rounds, 1 thread).

    python benchmarks/int8_mixed.py [--runs runs/bench-accuracy/mobilenet_v1_0.25-160-seed1 ...]

Writes benchmarks/results/int8_mixed.json and int8_mixed.md.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import copy_run, machine, machine_line, write_results  # noqa: E402

RUNS = [Path("runs/bench-accuracy") / f"mobilenet_v1_0.25-160-seed{seed}" for seed in (1, 2, 3)]
KINDS = ("int8", "int8-mixed", "float32")
TARGET = 0.99
ROUNDS = 5


def measure_run(run_dir: Path, folder: Path) -> dict:
    from edgeship.export import ExportConfig, export
    from edgeship.runtime.bench import BenchConfig, benchmark

    report = export(ExportConfig(run_dir=str(copy_run(run_dir, folder)), formats=KINDS, min_agreement=TARGET))
    mixed = report["int8-mixed"]
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    config = BenchConfig(num_runs=50, num_warmup_runs=10, num_threads=1)
    for _ in range(ROUNDS):
        for kind in KINDS:
            times[kind].append(benchmark(folder / "export" / report["variants"][kind]["file"], config)["median_ms"])
    return {
        "run": run_dir.name,
        "float_layers": mixed["float_layers"], "num_float_layers": mixed["num_float_layers"],
        "num_layers": mixed["num_layers"], "val_agreement": mixed["val_agreement"], "target": mixed["target"],
        "variants": {kind: {"test_accuracy": report["variants"][kind]["test_accuracy"],
                            "agreement": report["variants"][kind]["agreement"],
                            "size_bytes": report["variants"][kind]["size_bytes"],
                            "median_ms": statistics.median(times[kind])} for kind in KINDS},
    }


def render(result: dict) -> str:
    lines = [
        f"`--formats int8,int8-mixed,float32 --min-agreement {result['target']}` on flowers5 runs; the search sees "
        "the validation split only, the test split is scored after. Agreement = same top-1 class as the float Keras "
        f"model; times are medians of {ROUNDS} interleaved rounds of 50 invokes, 1 thread. "
        f"{machine_line(result['machine'])}",
        "",
        "| run | float layers | val agreement | variant | test accuracy | test agreement | size | invoke |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        for i, kind in enumerate(KINDS):
            v = row["variants"][kind]
            head = (f"| {row['run']} | {row['num_float_layers']} of {row['num_layers']} | "
                    f"{100 * row['val_agreement']:.2f} % |") if i == 0 else "| | | |"
            lines.append(f"{head} {kind} | {100 * v['test_accuracy']:.2f} % | {100 * v['agreement']:.2f} % | "
                         f"{v['size_bytes'] / 1024:.0f} KiB | {v['median_ms']:.2f} ms |")
    first = result["rows"][0]
    lines += ["", f"Layers kept in float on {first['run']}: " + ", ".join(f"`{n}`" for n in first["float_layers"]) + "."]
    return "\n".join(lines) + "\n"


def goal(result: dict) -> list[dict]:
    reached = [row["val_agreement"] >= row["target"] for row in result["rows"]]
    return [{
        "claim": "int8-mixed reaches --min-agreement on validation (MobileNet v1 0.25 @160, flowers5)",
        "goal": f"≥ {100 * result['target']:.0f} % agreement with the fewest float layers the search finds",
        "measured": ", ".join(f"{100 * r['val_agreement']:.2f} % with {r['num_float_layers']} of {r['num_layers']} "
                              "layers float" for r in result["rows"]),
        "verdict": "met" if all(reached) else f"missed on {reached.count(False)} run(s)",
    }]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", type=Path, default=RUNS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("edgeship").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as folder:
        rows = [measure_run(run, Path(folder) / run.name) for run in args.runs]
    result = {"benchmark": "int8_mixed", "machine": machine(), "target": TARGET, "rows": rows}
    write_results("int8_mixed", result, render(result))
    print(render(result))


if __name__ == "__main__":
    main()
