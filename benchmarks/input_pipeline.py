"""Does edgeship's tf.data pipeline keep the training step fed?

Decodes a few hundred flowers5 photos once with edgeship's own data code (the uint8 cache
training reads), builds a MobileNetV2 alpha 1.0 at 160 px with its backbone frozen (phase 1 of
training), and fits it, interleaved in one session, from:

- ``pipeline``: :func:`edgeship.train.tfdata.make_dataset` exactly as training calls it
  (shuffle, gather from the cache, augmentation preset ``light``, normalisation, class weights,
  prefetch);
- ``memory``: the same training images already normalised to float32, with the same one-hot
  labels and sample weights, from ``tf.data.Dataset.from_tensor_slices(...).batch().prefetch()``
  (no augmentation, nothing left to compute: the ceiling).

Both feed the same compiled model through ``model.fit``. Each round fits one epoch from each,
alternating which goes first, after a warm-up epoch of each. Reports training steps per second
(epoch steps / epoch time, the epoch start included) and per-step times (median, p90, p99).
Goal: pipeline >= 0.95 x memory.

Usage:
    python benchmarks/input_pipeline.py
    python benchmarks/input_pipeline.py --images 480 --rounds 5 --batch-size 32

Writes benchmarks/results/input_pipeline.json and input_pipeline.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import FLOWERS, flower_photos, machine, machine_line, summarize, write_results

GOAL = 0.95
SIDES = ("pipeline", "memory")
WEIGHTS = FLOWERS.parent.parent / "weights" / "mobilenet_v2_1.0_224_no_top.h5"


def decode_photos(count: int, image_size: int, run_dir: Path):
    """The decode-once cache of ``count`` flowers5 photos, by edgeship's own data code."""
    from edgeship.train.config import TrainConfig
    from edgeship.train.data import prepare_data

    data_dir = run_dir / "photos"
    for photo in flower_photos(count):
        link = data_dir / photo.parent.name / photo.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(photo)
    config = TrainConfig(data_dir=str(data_dir), out_dir=str(run_dir), image_size=image_size,
                         weights=str(WEIGHTS) if WEIGHTS.exists() else "none")
    return config, prepare_data(config, run_dir)


class _StepTimes:
    """Keras callback: the time of each epoch and the gap between consecutive steps."""

    def __init__(self, keras):
        outer = self

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                outer.epoch_start = outer.last = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                now = time.perf_counter()
                outer.steps.append(now - outer.last)
                outer.last = now

            def on_epoch_end(self, epoch, logs=None):
                outer.epochs.append(time.perf_counter() - outer.epoch_start)

        self.callback = Callback()
        self.steps: list[float] = []
        self.epochs: list[float] = []


def feeds(data, config, batch_size: int) -> dict:
    """The two feeds of the same training images: edgeship's pipeline and in-memory tensors."""
    from edgeship.train.augment import make_augmenter
    from edgeship.train.tfdata import class_weights, make_dataset, normalize_tf
    from edgeship.train.tfkeras import tf

    train_index = data.indices["train"]
    weights = class_weights(data.labels[train_index], data.num_classes)
    pipeline = make_dataset(
        data.pixels, data.labels, train_index, data.num_classes, batch_size, normalization=data.normalization,
        training=True, augmenter=make_augmenter("light", seed=config.seed), weights=weights, seed=config.seed,
    )
    pixels = normalize_tf(data.pixels[train_index], data.normalization).numpy()
    onehot = tf.one_hot(data.labels[train_index], data.num_classes).numpy()
    memory = tf.data.Dataset.from_tensor_slices((pixels, onehot, weights[data.labels[train_index]]))
    return {"pipeline": pipeline, "memory": memory.batch(batch_size).prefetch(tf.data.AUTOTUNE)}


def phase1_model(config, num_classes: int):
    """The model compiled as training's phase 1 compiles it: the head trains, the backbone is frozen."""
    from edgeship.train.model import build_model, set_trainable
    from edgeship.train.tfkeras import keras

    keras.utils.set_random_seed(config.seed)
    model = build_model(config, num_classes)
    set_trainable(model, 0.0)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        weighted_metrics=[],
    )
    return model


def fit_rounds(model, datasets: dict, rounds: int) -> tuple[dict[str, list[float]], dict[str, _StepTimes]]:
    """Steps/s of one epoch from each feed per round, alternating which goes first, after a warm-up."""
    from edgeship.train.tfkeras import keras

    timers = {side: _StepTimes(keras) for side in SIDES}
    for side in SIDES:  # warm-up: tracing, the first fill of every buffer
        model.fit(datasets[side], epochs=1, verbose=0)
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    for round_index in range(rounds):
        for side in SIDES if round_index % 2 == 0 else tuple(reversed(SIDES)):
            timer = timers[side]
            first_step = len(timer.steps)
            model.fit(datasets[side], epochs=1, verbose=0, callbacks=[timer.callback])
            steps = len(timer.steps) - first_step
            rates[side].append(steps / timer.epochs[-1])
            print(f"round {round_index + 1}/{rounds} {side:8s} {rates[side][-1]:.3f} steps/s ({steps} steps)",
                  file=sys.stderr)
    return rates, timers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=480, help="flowers5 photos decoded (80 %% train).")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        config, data = decode_photos(args.images, args.image_size, Path(folder) / "run")
        model = phase1_model(config, data.num_classes)
        rates, timers = fit_rounds(model, feeds(data, config, args.batch_size), args.rounds)
        num_train = len(data.indices["train"])

    ratios = [a / b for a, b in zip(rates["pipeline"], rates["memory"])]
    report = {
        "description": "Training steps/s of MobileNetV2 (frozen backbone) fed by edgeship's make_dataset (augment "
                       "'light') vs pre-normalised in-memory float tensors; interleaved epochs.",
        "goal_ratio_at_least": GOAL,
        "settings": {"images": args.images, "train_images": num_train, "image_size": args.image_size,
                     "batch_size": args.batch_size, "rounds": args.rounds, "backbone": "mobilenet_v2", "alpha": 1.0,
                     "weights": config.weights, "augment": "light"},
        "machine": machine(),
        "results": {side: {"steps_per_s": statistics.median(rates[side]), "round_steps_per_s": rates[side],
                           # Each epoch's first step also waits for its iterator to fill.
                           "step": summarize(timers[side].steps),
                           "epoch_s": timers[side].epochs}
                    for side in SIDES},
        "ratio": statistics.median(ratios),
        "round_ratios": ratios,
    }
    report["within_goal"] = report["ratio"] >= GOAL
    markdown = render(report)
    write_results("input_pipeline", report, markdown, args.out)
    print(markdown)
    return 0 if report["within_goal"] else 1


def render(report: dict) -> str:
    """The markdown table of an input-pipeline report."""
    settings = report["settings"]
    lines = [
        f"Training steps per second, MobileNetV2 alpha {settings['alpha']:g} at {settings['image_size']} px, backbone "
        f"frozen, batch {settings['batch_size']}, {settings['train_images']} flowers5 training images, median of "
        f"{settings['rounds']} interleaved epochs per feed (goal: ratio >= {report['goal_ratio_at_least']}).",
        f"Machine: {machine_line(report['machine'])}",
        "",
        "| feed | steps/s | step median ms | p90 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    names = {"pipeline": "edgeship make_dataset (augment light)", "memory": "in-memory float tensors"}
    for side, row in report["results"].items():
        step = row["step"]
        lines.append(f"| {names[side]} | {row['steps_per_s']:.3f} | {step['median_ms']:.0f} | {step['p90_ms']:.0f} "
                     f"| {step['p99_ms']:.0f} |")
    lines.append(f"| **ratio** | **{report['ratio']:.3f}** | | | |")
    return "\n".join(lines) + "\n"



def goal(report: dict) -> dict:
    """Where the goal stands: the claim, the goal, what was measured, met or missed."""
    missed = (f"missed: the augmentation's CPU time competes with the training step for the same "
              f"{report['machine']['cores']} cores (profiled in benchmarks/README.md)")
    return {
        "claim": "training input pipeline vs in-memory tensors",
        "goal": f"≥ {report['goal_ratio_at_least']}",
        "measured": f"{report['ratio']:.3f}",
        "verdict": "met" if report["within_goal"] else missed,
    }


if __name__ == "__main__":
    sys.exit(main())
