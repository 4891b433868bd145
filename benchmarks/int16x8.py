"""16-bit activations (int16x8) against int8 and float32: fidelity, size and speed.

Exports ``int8``, ``int8-ptq``, ``dynamic``, ``int16x8`` and ``float32`` from each finished training run (by default the
accuracy benchmark's MobileNet v1 0.25 @128, seed 1) into a scratch copy of the run (its own
export is left alone). Per variant, on the test split: top-1 agreement with the float Keras
model, accuracy change against it, probability distance, file size; and the median invoke time
with 1 and 2 threads, timed side by side in interleaved rounds with the runtime's own bench.
Which kernels run int16x8 is seen in two more timings of each file, at 1 thread: with LiteRT's
default op resolver (XNNPACK applied where it takes the graph) and without its default
delegates (the built-in kernels alone). A file that XNNPACK runs gets slower without it; one
it does not take stays the same.

    python benchmarks/int16x8.py [--runs RUN ...] [--rounds 5]

Writes benchmarks/results/small-models/int16x8.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, copy_run, machine, machine_line, require_finished_runs, write_results  # noqa: E402

RUNS = [Path("runs/bench-accuracy/mobilenet_v1_0.25-128-seed1")]
# int8-ptq and dynamic beside them: post-training int8 weights with 8-bit and with float
# activations, which tell whether int16x8's error is its weights' or its activations'.
KINDS = ("int8", "int8-ptq", "dynamic", "int16x8", "float32")
THREADS = (1, 2)
ROUNDS = 5
NUM_INVOKES = 50
# Beside the README's results, not among them: benchmarks/render.py renders results/*.json only.
OUT = RESULTS / "small-models" / "int16x8.json"


def _resolver_median_ms(path: Path, with_default_delegates: bool) -> float:
    """Median invoke time at 1 thread, with or without LiteRT's default delegates (XNNPACK)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgeship.runtime.bench import fixed_input

    resolver = OpResolverType.AUTO if with_default_delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_path=str(path), num_threads=1, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], fixed_input(detail, np.random.default_rng(0)))
    for _ in range(10):
        interpreter.invoke()
    times = []
    for _ in range(NUM_INVOKES):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _timings(paths: dict[str, Path], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Per variant, interleaved: the runtime bench's median at each thread count, and the resolver pair."""
    from edgeship.runtime.bench import BenchConfig, benchmark

    keys = [f"threads_{n}" for n in THREADS] + ["xnnpack_on_1", "xnnpack_off_1"]
    times = {kind: {key: [] for key in keys} for kind in paths}
    for _ in range(rounds):
        for kind, path in paths.items():
            for threads in THREADS:
                config = BenchConfig(num_runs=NUM_INVOKES, num_warmup_runs=10, num_threads=threads)
                times[kind][f"threads_{threads}"].append(benchmark(path, config)["median_ms"])
            times[kind]["xnnpack_on_1"].append(_resolver_median_ms(path, True))
            times[kind]["xnnpack_off_1"].append(_resolver_median_ms(path, False))
    return times


def measure_run(run_dir: Path, folder: Path, rounds: int) -> dict:
    from edgeship.export import ExportConfig, export

    report = export(ExportConfig(run_dir=str(copy_run(run_dir, folder)), formats=KINDS), report_page=False)
    paths = {kind: folder / "export" / report["variants"][kind]["file"] for kind in KINDS}
    times = _timings(paths, rounds)
    variants = {}
    for kind in KINDS:
        row = report["variants"][kind]
        variants[kind] = {
            "test_accuracy": row["test_accuracy"], "delta_pp": row["delta_pp"], "agreement": row["agreement"],
            "probability_distance": row["probability_distance"], "size_bytes": row["size_bytes"],
            **{f"median_ms_{key}": statistics.median(values) for key, values in times[kind].items()},
        }
    return {"run": run_dir.name, "num_test_images": report["num_test_images"],
            "float_test_accuracy": report["float_keras"]["test_accuracy"], "int8_source": report.get("int8_source"),
            "int16x8_note": report.get("int16x8_note"), "variants": variants}


def render(result: dict) -> str:
    lines = [
        f"`--formats {','.join(KINDS)}` on flowers5 runs, scored on the test split against the float Keras model. "
        f"Times: medians of {result['rounds']} interleaved rounds of {NUM_INVOKES} invokes with the runtime's bench; "
        "the last two columns at 1 thread with LiteRT's default op resolver (XNNPACK where it takes the graph) and "
        f"without its default delegates. {machine_line(result['machine'])}",
        "",
        "| run | variant | agreement | Δ accuracy | probability distance | size | 1 thread | 2 threads | "
        "default resolver | no default delegates |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        for i, (kind, v) in enumerate(row["variants"].items()):
            lines.append(
                f"| {row['run'] if i == 0 else ''} | {kind} | {100 * v['agreement']:.2f} % | {v['delta_pp']:+.2f} pp | "
                f"{v['probability_distance']:.4f} | {v['size_bytes'] / 1024:.0f} KiB | "
                f"{v['median_ms_threads_1']:.2f} ms | {v['median_ms_threads_2']:.2f} ms | "
                f"{v['median_ms_xnnpack_on_1']:.2f} ms | "
                f"{v['median_ms_xnnpack_off_1']:.2f} ms |")
    return "\n".join(lines) + "\n"


def goal(result: dict) -> list[dict]:
    """Evidence, not a goal: whether 16-bit activations buy fidelity here, and what they cost in time."""
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", type=Path, default=RUNS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    require_finished_runs(args.runs)
    with tempfile.TemporaryDirectory() as folder:
        rows = [measure_run(run, Path(folder) / run.name, args.rounds) for run in args.runs]
    result = {"machine": machine(), "rounds": args.rounds, "rows": rows}
    write_results("int16x8", result, render(result), args.out)
    print(render(result))


if __name__ == "__main__":
    main()
