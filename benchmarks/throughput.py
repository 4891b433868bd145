"""Do `edgeship predict` and `edgeship eval` run a folder of JPEGs at the interpreter's own rate?

Runs, on the same loaded model (same interpreter, same thread count) and the same flowers5
photos, interleaved in one session:

- ``invoke``: the interpreter's invoke-only rate on one fixed input (the ceiling);
- ``predict``: :func:`edgeship.runtime.classify.predict`, the loop ``edgeship predict`` runs
  (decode and resize on the prefetching worker threads, invoke on the caller's);
- ``eval``: :func:`edgeship.runtime.classify.predict_top1`, the loop ``edgeship eval`` runs;
- ``plain``: the loop a user would write: PIL open, convert, resize, set_tensor, invoke.

Each round runs every mode once over all the photos, rotating which goes first; the files are
read once before timing so that the disk does not enter the numbers. Machines are shared and
noisy, so the ratios within a round hold, not the absolute rates.

Reports images per second (median over rounds), per-image times (median, p90, p99: the gap
between consecutive results) and the ratio of each mode's rate to the invoke-only rate.
Goal: predict and eval >= 0.9 x invoke-only.

Usage:
    python benchmarks/throughput.py                      # Coral's CPU models in ../shared
    python benchmarks/throughput.py --model m.tflite --images 500 --rounds 7 --threads 1

Writes benchmarks/results/throughput.json and throughput.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from common import default_models, flower_photos, machine, machine_line, summarize, write_results
from edgeship.runtime.classify import predict, predict_top1
from edgeship.runtime.image import load_image, resize
from edgeship.runtime.model import Model, load_model
from edgeship.runtime.prefetch import default_num_workers

GOAL = 0.9
MODES = ("invoke", "predict", "eval", "plain")


def run_invoke(model: Model, paths: list[Path], fixed: np.ndarray, workers: int | None) -> list[float]:
    interpreter, clock = model.interpreter, time.perf_counter
    interpreter.set_tensor(model.interpreter.get_input_details()[0]["index"], fixed)
    times = []
    for _ in paths:
        start = clock()
        interpreter.invoke()
        times.append(clock() - start)
    return times


def run_predict(model: Model, paths: list[Path], fixed: np.ndarray, workers: int | None) -> list[float]:
    clock = time.perf_counter
    stamps = [clock()]
    for prediction in predict(model, paths, top_k=5, num_workers=workers):
        if prediction.error is not None:
            raise SystemExit(f"{prediction.path}: {prediction.error}")
        stamps.append(clock())
    return list(np.diff(stamps))


def run_eval(model: Model, paths: list[Path], fixed: np.ndarray, workers: int | None) -> list[float]:
    stamps = [time.perf_counter()]
    predict_top1([model], paths, workers, progress=lambda _: stamps.append(time.perf_counter()))
    return list(np.diff(stamps))


def run_plain(model: Model, paths: list[Path], fixed: np.ndarray, workers: int | None) -> list[float]:
    interpreter, clock = model.interpreter, time.perf_counter
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    height, width = model.input_size
    times = []
    for path in paths:
        start = clock()
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR))
        interpreter.set_tensor(input_index, model.input_tensor(pixels))
        interpreter.invoke()
        int(np.argmax(interpreter.get_tensor(output_index)))
        times.append(clock() - start)
    return times


RUNNERS: dict[str, Callable] = {"invoke": run_invoke, "predict": run_predict, "eval": run_eval, "plain": run_plain}


def stage_times(model: Model, paths: list[Path]) -> dict:
    """Single-threaded cost of each step of one image, to show what the workers must hide."""
    clock = time.perf_counter
    stages: dict[str, list[float]] = {"decode": [], "resize": [], "input_tensor": [], "invoke": []}
    for path in paths:
        start = clock()
        pixels = load_image(path)
        decoded = clock()
        resized = resize(pixels, model.input_size, model.resize_method)
        done_resize = clock()
        tensor = model.input_tensor(resized)
        fed = clock()
        model.invoke(tensor)
        stages["decode"].append(decoded - start)
        stages["resize"].append(done_resize - decoded)
        stages["input_tensor"].append(fed - done_resize)
        stages["invoke"].append(clock() - fed)
    return {name: summarize(times)["median_ms"] for name, times in stages.items()}


def measure(path: Path, photos: list[Path], args) -> dict:
    model = load_model(path, num_threads=args.threads)
    fixed = model.input_tensor(model.preprocess(photos[0]))
    warm = photos[: args.warmup]
    for runner in RUNNERS.values():
        runner(model, warm, fixed, args.workers)
    stages = stage_times(model, photos[: min(len(photos), 100)])

    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_index in range(args.rounds):
        shift = round_index % len(MODES)
        for mode in MODES[shift:] + MODES[:shift]:
            start = time.perf_counter()
            item_times = RUNNERS[mode](model, photos, fixed, args.workers)
            wall = time.perf_counter() - start
            times[mode] += item_times
            # Invoke-only counts the invokes alone, like `edgeship bench`; the others the whole pass.
            rates[mode].append(len(photos) / (sum(item_times) if mode == "invoke" else wall))
            print(f"round {round_index + 1}/{args.rounds} {path.name:36s} {mode:8s} {rates[mode][-1]:7.1f} images/s",
                  file=sys.stderr)

    row = {"model": path.name, "input_size": list(model.input_size), "threads": args.threads, "stages_ms": stages}
    for mode in MODES:
        row[mode] = {"images_per_s": statistics.median(rates[mode]), "round_images_per_s": rates[mode],
                     **summarize(times[mode])}
        if mode != "invoke":
            ratios = [rate / base for rate, base in zip(rates[mode], rates["invoke"])]
            row[mode]["ratio"] = statistics.median(ratios)
            row[mode]["round_ratios"] = ratios
    row["within_goal"] = all(row[mode]["ratio"] >= GOAL for mode in ("predict", "eval"))
    return row


def render(report: dict) -> str:
    """The markdown table of a throughput report."""
    settings = report["settings"]
    lines = [
        f"Images per second over {settings['images']} flowers5 JPEGs (227x227), {settings['threads']} interpreter "
        f"thread(s), {settings['workers']} prefetch worker(s), median of {settings['rounds']} interleaved rounds; "
        f"ratio = rate / invoke-only rate (goal for predict and eval: >= {report['goal_ratio_at_least']}).",
        f"Machine: {machine_line(report['machine'])}",
        "",
        "| model | invoke-only /s | predict /s (ratio) | eval /s (ratio) | plain PIL loop /s (ratio) "
        "| per image: decode / resize / invoke ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["results"]:
        cells = [f"{row['invoke']['images_per_s']:.1f}"]
        cells += [f"{row[mode]['images_per_s']:.1f} ({row[mode]['ratio']:.2f})" for mode in ("predict", "eval", "plain")]
        stages = row["stages_ms"]
        cells.append(f"{stages['decode']:.2f} / {stages['resize']:.2f} / {stages['invoke']:.2f}")
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _why_missed(row: dict, cores: int) -> str:
    stages = row["stages_ms"]
    prepare = stages["decode"] + stages["resize"]
    if stages["invoke"] < prepare:
        return (f"whose {stages['invoke']:.2f} ms invoke is shorter than decoding plus resizing one JPEG "
                f"({prepare:.2f} ms) on a {cores}-core machine")
    return "which the stage times do not explain"


def goal(report: dict) -> dict:
    """Where the goal stands: the claim, the goal, what was measured, met or missed."""
    rows = sorted(report["results"], key=lambda row: not row["within_goal"])
    measured = "; ".join(f"{row['predict']['ratio']:.2f} / {row['eval']['ratio']:.2f} ({row['model']})" for row in rows)
    met = [row["model"] for row in rows if row["within_goal"]]
    missed = [f"missed on {row['model']}, {_why_missed(row, report['machine']['cores'])}"
              for row in rows if not row["within_goal"]]
    verdict = "; ".join(([f"met on {', '.join(met)}"] if met else []) + missed)
    return {
        "claim": "`predict` / `eval` over a folder vs invoke-only",
        "goal": f"≥ {report['goal_ratio_at_least']}",
        "measured": measured,
        "verdict": "met" if report["all_within_goal"] else verdict,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", type=Path, default=[], help="Extra .tflite (repeatable).")
    parser.add_argument("--images", type=int, default=300, help="flowers5 photos per pass.")
    parser.add_argument("--threads", type=int, default=1, help="Interpreter threads, the same for every mode.")
    parser.add_argument("--workers", type=int, default=None, help="Prefetch threads [the runtime's default].")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=30, help="Photos each mode runs untimed first.")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    models = default_models() + args.model
    if not models:
        parser.error("No models: Coral's models are absent; pass --model PATH.")
    photos = flower_photos(args.images)
    for photo in photos:  # into the page cache, so that no mode pays for the disk
        photo.read_bytes()
    rows = [measure(path, photos, args) for path in models]
    report = {
        "description": "Images/s of edgeship predict and eval loops and of a plain PIL loop, against the "
                       "interpreter's invoke-only rate on the same model and threads; interleaved rounds.",
        "goal_ratio_at_least": GOAL,
        "settings": {"images": len(photos), "threads": args.threads, "rounds": args.rounds, "warmup": args.warmup,
                     "workers": args.workers or default_num_workers()},
        "machine": machine(),
        "results": rows,
        "all_within_goal": all(row["within_goal"] for row in rows),
    }
    markdown = render(report)
    write_results("throughput", report, markdown, args.out)
    print(markdown)
    return 0 if report["all_within_goal"] else 1


if __name__ == "__main__":
    sys.exit(main())
