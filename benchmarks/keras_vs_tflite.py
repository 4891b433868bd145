"""How much faster is the shipped .tflite than the float Keras model it came from?

Times batch-1 inference, on the same CPU and the same number of threads, of a run's float
Keras model (``model.h5``) and of every TFLite variant in its ``export/`` folder
(``model_int8``, ``model_int8_ptq``, ``model_fp16``, ``model_dynamic``, ``model_float32``):

- ``keras tf.function``: the model traced once into a graph, called on a ready tensor (the
  fastest way TensorFlow runs it);
- ``keras model(x)``: the eager call most scripts make;
- each ``.tflite``: ``invoke()`` alone, as ``edgeship bench`` and LiteRT's benchmark time it.

TensorFlow's intra- and inter-op pools and each interpreter get ``--threads`` threads. All run
in one process on the same image, interleaved: each round times every variant, rotating the
order, after a warm-up. Reports per variant the median, p90 and p99 latency (over all runs)
and the speedup over ``keras tf.function`` (median over rounds of the per-round ratio).

Without ``--run``, a tiny run is made first (demo data, MobileNetV2 alpha 0.35 at 96 px, one
epoch, then export): the numbers then show the mechanics, not a real model's latency.

Usage:
    python benchmarks/keras_vs_tflite.py --run runs/flowers
    python benchmarks/keras_vs_tflite.py                     # makes a tiny run in a temporary folder

Writes benchmarks/results/keras_vs_tflite.json and keras_vs_tflite.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from accuracy import RUNS_DIR
from common import machine, machine_line, summarize, write_results

VARIANTS = ("model_int8", "model_int8_ptq", "model_fp16", "model_dynamic", "model_float32")
KERAS_GRAPH = "keras tf.function"
KERAS_EAGER = "keras model(x)"
# What `make bench` measures: the accuracy benchmark's MobileNetV2 1.0 run (160 px, flowers5).
BENCH_RUN = RUNS_DIR / "mobilenet_v2_1.0-160-seed1"


def make_tiny_run(folder: Path, exported: bool = True) -> Path:
    """A seconds-to-minutes run: demo data, MobileNetV2 alpha 0.35 at 96 px, one epoch, exported
    unless ``exported`` is false."""
    from edgeship.demo import make_demo_data
    from edgeship.export import ExportConfig, export
    from edgeship.train import TrainConfig, train

    data = make_demo_data(folder / "demo", images_per_class=24, image_size=96)
    result = train(TrainConfig(data_dir=str(data), out_dir=str(folder / "run"), alpha=0.35, image_size=96,
                               weights="none", epochs=1, fine_tune_epochs=0, batch_size=16))
    if exported:
        export(ExportConfig.tiny(run_dir=str(result.run_dir)))
    return result.run_dir


def _timed(call, runs: int) -> list[float]:
    clock = time.perf_counter
    times = []
    for _ in range(runs):
        start = clock()
        call()
        times.append(clock() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=None, help="Run directory with model.h5 and export/*.tflite.")
    parser.add_argument("--threads", type=int, default=1, help="Threads for TensorFlow and every interpreter.")
    parser.add_argument("--runs", type=int, default=50, help="Timed inferences per variant per round.")
    parser.add_argument("--warmup", type=int, default=10, help="Untimed inferences per variant per round.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from edgeship.train.tfkeras import tf

    # Before TensorFlow runs its first op: the pools cannot be resized afterwards.
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    with tempfile.TemporaryDirectory() as folder:
        run_dir = args.run or make_tiny_run(Path(folder))
        report = measure(run_dir, args, tiny=args.run is None)
    markdown = render(report)
    write_results("keras_vs_tflite", report, markdown, args.out)
    print(markdown)
    return 0


def measure(run_dir: Path, args, tiny: bool) -> dict:
    from edgeship.runtime.image import normalize
    from edgeship.runtime.manifest import MEAN, STD
    from edgeship.runtime.model import load_model
    from edgeship.train.tfkeras import tf
    from edgeship.train.trainer import load_float_model

    keras_model = load_float_model(run_dir)
    paths = [run_dir / "export" / f"{name}.tflite" for name in VARIANTS]
    paths = [path for path in paths if path.exists()]
    if not paths:
        raise SystemExit(f"No exported .tflite in {run_dir / 'export'}: run `edgeship export` on it first.")
    models = {path.stem: load_model(path, num_threads=args.threads) for path in paths}
    sizes = {path.stem: path.stat().st_size for path in paths}
    sizes[KERAS_GRAPH] = sizes[KERAS_EAGER] = (run_dir / "model.h5").stat().st_size
    height, width = next(iter(models.values())).input_size
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)

    image = tf.constant(normalize(pixels, MEAN, STD)[None])
    graph = tf.function(lambda x: keras_model(x, training=False))
    calls = {
        KERAS_GRAPH: lambda: graph(image),
        KERAS_EAGER: lambda: keras_model(image, training=False),
    }
    for name, model in models.items():
        model.interpreter.set_tensor(model.interpreter.get_input_details()[0]["index"], model.input_tensor(pixels))
        calls[name] = model.interpreter.invoke

    names = list(calls)
    samples: dict[str, list[list[float]]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            _timed(calls[name], args.warmup)
            samples[name].append(_timed(calls[name], args.runs))
            print(f"round {round_index + 1}/{args.rounds} {name:18s} {1000 * np.median(samples[name][-1]):8.3f} ms",
                  file=sys.stderr)

    baseline = [np.median(times) for times in samples[KERAS_GRAPH]]
    rows = []
    for name in names:
        medians = [np.median(times) for times in samples[name]]
        speedups = [float(base / median) for base, median in zip(baseline, medians)]
        rows.append({
            "variant": name,
            "size_bytes": sizes[name],
            **summarize([t for times in samples[name] for t in times]),
            "speedup_vs_keras": statistics.median(speedups),
            "round_speedups": speedups,
        })
    return {
        "description": "Batch-1 latency of the float Keras model vs each exported TFLite variant, same CPU and "
                       "threads, interleaved rounds in one process.",
        "run_dir": str(run_dir),
        "tiny_run": tiny,
        "model": keras_model.name,
        "input_size": [height, width],
        "settings": {"threads": args.threads, "runs": args.runs, "warmup": args.warmup, "rounds": args.rounds},
        "machine": machine(),
        "results": rows,
    }


def _which_run(report: dict) -> str:
    """Which run the report measured, and whether `make bench` measures the same one."""
    if report["tiny_run"]:
        return "Measured on a tiny demo run: the numbers show the mechanics, not a real model's latency."
    run_dir = Path(report["run_dir"])
    if run_dir.parts[-len(BENCH_RUN.parts):] == BENCH_RUN.parts:
        return f"Measured on the accuracy benchmark's MobileNetV2 run, `{BENCH_RUN}`, as `make bench` does."
    return (f"Measured on run `{run_dir.name}` (`{run_dir}`), a run made outside the benchmarks; `make bench` "
            f"re-measures it on the accuracy benchmark's MobileNetV2 run, `{BENCH_RUN}` (same configuration: "
            "MobileNetV2 1.0 at 160 px on flowers5).")


def render(report: dict) -> str:
    """The markdown table of a Keras-vs-TFLite report."""
    settings = report["settings"]
    height, width = report["input_size"]
    lines = [
        _which_run(report),
        "",
        f"Batch-1 latency of {report['model']} ({height}x{width}), {settings['threads']} thread(s), "
        f"{settings['runs']} runs x {settings['rounds']} interleaved rounds; speedup = Keras tf.function median / "
        "variant median.",
        f"Machine: {machine_line(report['machine'])}",
        "",
        "| variant | size MB | median ms | p90 ms | p99 ms | speedup vs Keras |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["results"]:
        size = f"{row['size_bytes'] / 1e6:.2f}" if row["size_bytes"] else ""
        lines.append(f"| {row['variant']} | {size} | {row['median_ms']:.2f} | {row['p90_ms']:.2f} | "
                     f"{row['p99_ms']:.2f} | {row['speedup_vs_keras']:.2f}x |")
    return "\n".join(lines) + "\n"



def goal(report: dict) -> None:
    """No goal: the benchmark reports the speedup that shipping a .tflite buys, whatever it is."""
    return None


if __name__ == "__main__":
    sys.exit(main())
