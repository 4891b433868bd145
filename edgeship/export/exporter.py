"""The export stage: a trained run to self-describing ``.tflite`` files, each one scored.

For every requested variant: convert, embed TFLite Metadata, labels and manifest, write atomically to
``RUN/export/``, then score it with the LiteRT interpreter on the run's recorded test split,
next to the float Keras model on the same images. ``report.json`` / ``report.md`` hold the table.
QAT and post-training int8 are both built and compared on the validation split; the better one
ships as ``model_int8.tflite``, and the report says which and why.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from edgeship.errors import ConfigError
from edgeship.export.config import FILE_NAMES, INT8, INT8_PTQ, ExportConfig
from edgeship.export.convert import convert
from edgeship.export.qat import (
    calibrate_ranges, freeze_batch_norm, logit_distance, make_qat_model, rounding_noise, set_input_range,
)
from edgeship.runtime.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgeship.runtime.manifest import MEAN, STD, Manifest, embed
from edgeship.runtime.tflite_metadata import embed_with_metadata
from edgeship.runtime.validation import paired_difference_ci
from edgeship.train.config import TrainConfig
from edgeship.train.data import Dataset, load_data
from edgeship.train.tfdata import make_dataset, normalize_tf
from edgeship.train.tfkeras import keras, tf
from edgeship.train.trainer import load_float_model, predict_classes, predict_probabilities

__all__ = ["ExportResult", "export"]

logger = logging.getLogger(__name__)


class ExportResult(dict):
    """The report (a dict) with the export directory as ``.export_dir``."""

    export_dir: Path


def _load_run(run_dir: Path) -> tuple[TrainConfig, dict]:
    try:
        train_config = TrainConfig(**json.loads((run_dir / "config.json").read_text()))
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except FileNotFoundError as e:
        raise ConfigError(
            f"{run_dir} is not a finished training run ({Path(e.filename).name} is missing). "
            f"Run `edgeship train DATA --out {run_dir}` first."
        ) from e
    return train_config, metrics


def _representative(data: Dataset, config: ExportConfig):
    rng = np.random.default_rng(config.seed)
    train = data.indices["train"]
    chosen = rng.choice(train, size=min(config.representative_samples, len(train)), replace=False)

    def samples():
        for i in np.sort(chosen):
            yield [normalize_tf(data.pixels[i : i + 1]).numpy()]

    return samples


def _train_qat(float_model, float_val: np.ndarray, data: Dataset, config: ExportConfig):
    """QAT per the recipe in ``qat.py``; returns (model, per-epoch validation scores, best epoch).

    The quantized model learns to reproduce the float model's logits on the train images
    (squared error of centred log-probabilities, :func:`logit_distance`), not the labels: QAT's
    job is to keep the float model's decisions on the int8 grid, including the close calls
    that decide agreement, not to keep training it. The float model's logits are computed
    once. The epoch kept is the one closest to the float model's logits on the validation split
    (a smooth measure; agreement on a few hundred images moves in steps of whole images), the
    calibrated model before any step included. ``float_val`` holds the float model's
    validation probabilities.
    """
    qat = make_qat_model(float_model)
    frozen = freeze_batch_norm(qat)
    set_input_range(qat)
    train = data.indices["train"]
    plain = make_dataset(data.pixels, data.labels, train, data.num_classes, config.batch_size, training=True,
                         seed=config.seed)
    calibrate_ranges(qat, float_model, plain, config.calibration_batches)
    set_input_range(qat)
    val_labels = data.labels[data.indices["val"]]

    def score() -> dict:
        probabilities = predict_probabilities(qat, data, "val", config.batch_size)
        predicted = np.argmax(probabilities, axis=1)
        return {"accuracy": float(np.mean(predicted == val_labels)),
                "agreement": float(np.mean(predicted == np.argmax(float_val, axis=1))),
                "logit_distance": float(logit_distance(probabilities, float_val))}

    history = {0: score()}
    best_epoch, best_weights = 0, qat.get_weights()
    logger.info("QAT: %d batch-norm layers frozen; calibrated model: val accuracy %.2f %%, agreement %.2f %%",
                frozen, 100 * history[0]["accuracy"], 100 * history[0]["agreement"])
    if config.qat_epochs:
        teacher = predict_probabilities(float_model, data, "train", config.batch_size)
        steps = int(np.ceil(len(train) / config.batch_size))
        schedule = keras.optimizers.schedules.CosineDecay(config.qat_learning_rate, config.qat_epochs * steps, alpha=0.1)
        optimizer = keras.optimizers.Adam(schedule)

        @tf.function
        def train_step(x, target):
            with tf.GradientTape() as tape:
                loss = logit_distance(qat(x, training=True), target)
            variables = qat.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        rng = np.random.default_rng(config.seed)
        with rounding_noise(qat, config.qat_noise) as noisy:
            logger.info("QAT: rounding noise of %g step(s) on %d batch-norm outputs", config.qat_noise, noisy)
            for epoch in range(1, config.qat_epochs + 1):
                start = time.perf_counter()
                order = rng.permutation(len(train))
                losses = []
                for first in range(0, len(order), config.batch_size):
                    rows = np.sort(order[first : first + config.batch_size])  # sorted: sequential reads of the cache
                    losses.append(float(train_step(normalize_tf(data.pixels[train[rows]]), teacher[rows])))
                history[epoch] = score()
                logger.info("QAT epoch %d/%d  logit distance train %.4f val %.4f  val_acc %.4f  agreement %.4f  (%.0f s)",
                            epoch, config.qat_epochs, np.mean(losses), history[epoch]["logit_distance"],
                            history[epoch]["accuracy"], history[epoch]["agreement"], time.perf_counter() - start)
                if history[epoch]["logit_distance"] < history[best_epoch]["logit_distance"]:
                    best_epoch, best_weights = epoch, qat.get_weights()
    qat.set_weights(best_weights)
    set_input_range(qat)
    return qat, history, best_epoch


def choose_int8(qat: np.ndarray, ptq: np.ndarray, labels: np.ndarray, float_scores: np.ndarray) -> dict:
    """Which int8 file ships, from both candidates' validation class scores, and why.

    The more accurate one ships when the paired 95 % interval of the accuracy difference
    excludes zero. Otherwise the accuracies differ by a few images either way, which chance
    alone moves on a split of a few hundred (two quantized copies of one float model differ
    only on its close calls), and the one closer to the float model ships: the lower mean
    total-variation distance between its class probabilities and the float model's, a smooth
    measure where top-1 agreement moves in steps of whole images. QAT wins a tie.
    """
    float_top = np.argmax(float_scores, axis=1)
    values, right = {}, {}
    for name, scores in (("qat", qat), ("ptq", ptq)):
        top = np.argmax(scores, axis=1)
        right[name] = top == labels
        values[f"{name}_val_accuracy"] = float(np.mean(right[name]))
        values[f"{name}_val_agreement"] = float(np.mean(top == float_top))
        values[f"{name}_val_distance"] = float(np.mean(0.5 * np.abs(scores - float_scores).sum(axis=1)))
    low, high = paired_difference_ci(right["qat"], right["ptq"])
    values["qat_minus_ptq_val_ci_pp"] = [100 * low, 100 * high]
    summary = (
        f"On the validation split ({len(labels)} images), QAT int8: {100 * values['qat_val_accuracy']:.2f} % accuracy, "
        f"{100 * values['qat_val_agreement']:.2f} % agreement with float, distance {values['qat_val_distance']:.4f}; "
        f"post-training int8: {100 * values['ptq_val_accuracy']:.2f} %, {100 * values['ptq_val_agreement']:.2f} %, "
        f"{values['ptq_val_distance']:.4f}. Accuracy, QAT minus post-training: 95 % interval "
        f"[{100 * low:+.2f}, {100 * high:+.2f}] pp."
    )
    if high < 0:
        use_qat, why = False, "Shipping post-training int8: it is more accurate beyond chance, and QAT fell short of it."
    elif low > 0:
        use_qat, why = True, "Shipping QAT: it is more accurate beyond chance."
    else:
        use_qat = values["qat_val_distance"] <= values["ptq_val_distance"]
        why = ("The accuracies are equal within chance; shipping the one closer to the float model's probabilities: "
               + ("QAT." if use_qat else "post-training int8, because QAT is further from them."))
    return {"use_qat": use_qat, "reason": f"{summary} {why}", **values}


def _score_tflite(path: Path, data: Dataset, part: str) -> tuple[np.ndarray, float]:
    """Class scores of a .tflite for every image of a split part, through the device runtime,
    and the mean latency of one classification in ms. The cached pixels are the runtime's own
    preprocessing."""
    from edgeship.runtime.model import load_model

    model = load_model(path, num_threads=2)
    scores, seconds = [], []
    for image in data.pixels[data.indices[part]]:
        start = time.perf_counter()
        scores.append(model.classify(np.asarray(image)))
        seconds.append(time.perf_counter() - start)
    return np.asarray(scores, np.float32), 1000 * float(np.mean(seconds[1:] or seconds))


def export(config: ExportConfig) -> ExportResult:
    """Exports every variant in ``config.formats`` from ``config.run_dir``; returns the report.

    Example:
        >>> report = export(ExportConfig(run_dir="runs/flowers"))   # doctest: +SKIP
        >>> report["variants"]["int8"]["test_accuracy"]             # doctest: +SKIP
    """
    start_time = time.perf_counter()
    run_dir = Path(config.run_dir)
    train_config, train_metrics = _load_run(run_dir)
    final_dir = run_dir / "export"
    # Everything is written to a staging folder that replaces export/ only once complete, so
    # an interrupted export leaves no file under a final name (and no mix of two exports).
    out_dir = run_dir / ".export.partial"
    shutil.rmtree(out_dir, ignore_errors=True)
    data = load_data(run_dir, train_config)
    labels = data.split.classes
    float_model = load_float_model(run_dir)
    test_labels = data.labels[data.indices["test"]]
    val_labels = data.labels[data.indices["val"]]
    float_test = predict_classes(float_model, data, "test", config.batch_size)
    float_val_probabilities = predict_probabilities(float_model, data, "val", config.batch_size)
    float_val = np.argmax(float_val_probabilities, axis=1)
    float_accuracy = float(np.mean(float_test == test_labels))

    def manifest(kind: str, **extra) -> Manifest:
        return Manifest(
            labels=tuple(labels), image_size=(train_config.image_size, train_config.image_size),
            resize_method=train_config.resize_method, mean=MEAN, std=STD, quantization=kind,
            backbone=f"{train_config.backbone}_{train_config.alpha:g}", float_test_accuracy=float_accuracy,
            split_digest=data.split.digest, extra=extra,
        )

    wanted = list(config.formats)
    built: dict[str, bytes] = {}
    representative = _representative(data, config)
    notes: dict[str, object] = {}
    for kind in [k for k in wanted if k not in (INT8, INT8_PTQ)] + ([INT8_PTQ] if {INT8, INT8_PTQ} & set(wanted) else []):
        logger.info("Converting %s ...", kind)
        built[kind] = convert(float_model, kind, representative=representative, io=config.io)
    if INT8 in wanted:
        qat, history, best_epoch = _train_qat(float_model, float_val_probabilities, data, config)
        logger.info("Converting int8 (QAT) ...")
        qat_bytes = convert(qat, INT8, representative=representative, io=config.io)
        candidates = {}
        for name, candidate in (("qat", qat_bytes), ("ptq", built[INT8_PTQ])):
            path = atomic_write_bytes(out_dir / f".candidate_{name}.tflite", embed(candidate, labels, manifest(INT8)))
            candidates[name] = _score_tflite(path, data, "val")[0]
            path.unlink()
        choice = choose_int8(candidates["qat"], candidates["ptq"], val_labels, float_val_probabilities)
        use_qat, reason = choice.pop("use_qat"), choice.pop("reason")
        logger.info(reason)
        notes.update(
            int8_source="qat" if use_qat else "ptq", int8_choice_reason=reason, **choice,
            qat_history_val={str(k): v for k, v in history.items()}, qat_best_epoch=best_epoch,
        )
        built[INT8] = qat_bytes if use_qat else built[INT8_PTQ]

    variants: dict[str, dict] = {}
    for kind in wanted:
        extra = {k: notes[k] for k in ("int8_source", "int8_choice_reason")} if kind == INT8 and notes else {}
        data_bytes = embed_with_metadata(built[kind], manifest(kind, **extra))
        path = atomic_write_bytes(out_dir / FILE_NAMES[kind], data_bytes)
        scores, latency_ms = _score_tflite(path, data, "test")
        predictions = np.argmax(scores, axis=1)
        accuracy = float(np.mean(predictions == test_labels))
        variants[kind] = {
            "file": path.name,
            "size_bytes": len(data_bytes),
            "test_accuracy": accuracy,
            "delta_pp": 100 * (accuracy - float_accuracy),
            "agreement": float(np.mean(predictions == float_test)),
            "mean_latency_ms": latency_ms,
        }
        logger.info("%-9s test accuracy %.2f %%  agreement %.2f %%  %.1f KiB  %.2f ms", kind, 100 * accuracy,
                    100 * variants[kind]["agreement"], len(data_bytes) / 1024, latency_ms)

    report = ExportResult(
        run_dir=str(run_dir),
        split_digest=data.split.digest,
        num_test_images=int(len(test_labels)),
        float_keras={"test_accuracy": float_accuracy, "val_accuracy": float(np.mean(float_val == val_labels)),
                     "train_metrics_accuracy": train_metrics.get("accuracy")},
        variants=variants,
        config=config.to_dict(),
        export_seconds=round(time.perf_counter() - start_time, 1),
        **notes,
    )
    report.export_dir = final_dir
    atomic_write_json(out_dir / "report.json", dict(report))
    atomic_write_text(out_dir / "report.md", render_markdown(report))
    _replace_dir(out_dir, final_dir)
    logger.info("Exported %d variant(s) to %s in %.0f s", len(variants), final_dir, report["export_seconds"])
    return report


def _replace_dir(staging: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def render_markdown(report: dict) -> str:
    """The export report as a markdown table."""
    float_accuracy = report["float_keras"]["test_accuracy"]
    lines = [
        f"# Export report: {Path(report['run_dir']).name}",
        "",
        f"Test split: {report['num_test_images']} images (digest `{report['split_digest'][:12]}`). "
        f"Float Keras model: **{100 * float_accuracy:.2f} %**.",
        "",
        "| variant | file | accuracy | Δ vs float (pp) | agreement with float | size | mean latency |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, row in report["variants"].items():
        lines.append(
            f"| {kind} | {row['file']} | {100 * row['test_accuracy']:.2f} % | {row['delta_pp']:+.2f} | "
            f"{100 * row['agreement']:.2f} % | {row['size_bytes'] / 1024:.0f} KiB | {row['mean_latency_ms']:.2f} ms |"
        )
    if "int8_choice_reason" in report:
        lines += ["", f"**int8 choice.** {report['int8_choice_reason']}"]
        history = report.get("qat_history_val", {})
        if history:
            lines.append(
                "QAT on the validation split by epoch (0 = calibrated, before any step), accuracy / agreement "
                "with float: " + ", ".join(
                    f"{k}: {100 * v['accuracy']:.2f} / {100 * v['agreement']:.2f} %" for k, v in history.items()
                ) + f"; kept epoch {report.get('qat_best_epoch')}."
            )
    lines += ["", f"Export took {report['export_seconds']:.0f} s."]
    return "\n".join(lines) + "\n"
