"""The export stage: a trained run to self-describing ``.tflite`` files, each one scored.

For every requested variant: convert, embed labels and manifest, write atomically to
``RUN/export/``, then score it with the LiteRT interpreter on the run's recorded test split,
next to the float Keras model on the same images. ``report.json`` / ``report.md`` hold the table.
QAT and post-training int8 are both built and compared on the validation split; the better one
ships as ``model_int8.tflite``, and the report says which and why.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from edgeship.errors import ConfigError
from edgeship.export.config import FILE_NAMES, FLOAT32, INT8, INT8_PTQ, ExportConfig
from edgeship.export.convert import convert
from edgeship.export.qat import calibrate_ranges, freeze_batch_norm, make_qat_model, set_input_range
from edgeship.runtime.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgeship.runtime.manifest import MEAN, STD, Manifest, embed
from edgeship.train.augment import make_augmenter
from edgeship.train.config import TrainConfig
from edgeship.train.data import Dataset, load_data
from edgeship.train.pipeline import make_dataset, normalize_tf
from edgeship.train.tfkeras import keras, tf
from edgeship.train.trainer import load_float_model

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


def _keras_predict(model: keras.Model, data: Dataset, part: str, batch_size: int) -> np.ndarray:
    ds = make_dataset(data.pixels, data.labels, data.indices[part], data.num_classes, batch_size)
    return model.predict(ds.map(lambda x, y: x), verbose=0)


def _representative(data: Dataset, config: ExportConfig):
    rng = np.random.default_rng(config.seed)
    train = data.indices["train"]
    chosen = rng.choice(train, size=min(config.representative_samples, len(train)), replace=False)

    def samples():
        for i in np.sort(chosen):
            yield [normalize_tf(data.pixels[i : i + 1]).numpy()]

    return samples


def _train_qat(float_model, data: Dataset, train_config: TrainConfig, config: ExportConfig, run_dir: Path):
    """QAT per the recipe in ``qat.py``; returns (model, {epoch: val accuracy}, best epoch)."""
    qat = make_qat_model(float_model)
    frozen = freeze_batch_norm(qat)
    set_input_range(qat)
    plain = make_dataset(data.pixels, data.labels, data.indices["train"], data.num_classes, config.batch_size,
                         training=True, seed=config.seed)
    calibrate_ranges(qat, float_model, plain, config.calibration_batches)
    set_input_range(qat)
    val_labels = data.labels[data.indices["val"]]

    def val_accuracy() -> float:
        return float(np.mean(np.argmax(_keras_predict(qat, data, "val", config.batch_size), 1) == val_labels))

    history = {0: val_accuracy()}
    best_epoch, best_weights = 0, qat.get_weights()
    logger.info("QAT: %d batch-norm layers frozen; calibrated model val accuracy %.2f %%", frozen, 100 * history[0])
    if config.qat_epochs:
        augmented = make_dataset(
            data.pixels, data.labels, data.indices["train"], data.num_classes, config.batch_size, training=True,
            augmenter=make_augmenter(train_config.augment, seed=config.seed), seed=config.seed,
        )
        steps = int(np.ceil(len(data.indices["train"]) / config.batch_size))
        schedule = keras.optimizers.schedules.CosineDecay(config.qat_learning_rate, config.qat_epochs * steps, alpha=0.1)
        qat.compile(
            optimizer=keras.optimizers.Adam(schedule),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=train_config.label_smoothing),
        )
        for epoch in range(1, config.qat_epochs + 1):
            start = time.perf_counter()
            fit = qat.fit(augmented, epochs=1, verbose=0)
            history[epoch] = val_accuracy()
            logger.info("QAT epoch %d/%d  loss %.4f  val_acc %.4f  (%.0f s)", epoch, config.qat_epochs,
                        fit.history["loss"][-1], history[epoch], time.perf_counter() - start)
            if history[epoch] > history[best_epoch]:
                best_epoch, best_weights = epoch, qat.get_weights()
    qat.set_weights(best_weights)
    set_input_range(qat)
    return qat, history, best_epoch


def _score_tflite(model_bytes: bytes, data: Dataset, part: str) -> tuple[np.ndarray, float]:
    """Top-1 predictions of a .tflite on a split with LiteRT, and the mean invoke latency in ms."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes, num_threads=2)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    pixels = data.pixels[data.indices[part]]
    predictions, seconds = [], []
    for image in pixels:
        x = (image.astype(np.float32) - MEAN) / STD
        if scale:
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.rint(x / scale + zero), info.min, info.max)
        interpreter.set_tensor(inp["index"], x[None].astype(inp["dtype"]))
        start = time.perf_counter()
        interpreter.invoke()
        seconds.append(time.perf_counter() - start)
        predictions.append(int(np.argmax(interpreter.get_tensor(out["index"])[0])))
    return np.asarray(predictions), 1000 * float(np.mean(seconds[1:] or seconds))


def export(config: ExportConfig) -> ExportResult:
    """Exports every variant in ``config.formats`` from ``config.run_dir``; returns the report.

    Example:
        >>> report = export(ExportConfig(run_dir="runs/flowers"))   # doctest: +SKIP
        >>> report["variants"]["int8"]["test_accuracy"]             # doctest: +SKIP
    """
    start_time = time.perf_counter()
    run_dir = Path(config.run_dir)
    train_config, train_metrics = _load_run(run_dir)
    out_dir = run_dir / "export"
    data = load_data(run_dir, train_config)
    labels = data.split.classes
    float_model = load_float_model(run_dir)
    test_labels = data.labels[data.indices["test"]]
    val_labels = data.labels[data.indices["val"]]
    float_test = np.argmax(_keras_predict(float_model, data, "test", config.batch_size), 1)
    float_val = np.argmax(_keras_predict(float_model, data, "val", config.batch_size), 1)
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
        qat, history, best_epoch = _train_qat(float_model, data, train_config, config, run_dir)
        logger.info("Converting int8 (QAT) ...")
        qat_bytes = convert(qat, INT8, representative=representative, io=config.io)
        qat_val, _ = _score_tflite(qat_bytes, data, "val")
        ptq_val, _ = _score_tflite(built[INT8_PTQ], data, "val")
        qat_val_acc, ptq_val_acc = float(np.mean(qat_val == val_labels)), float(np.mean(ptq_val == val_labels))
        use_qat = qat_val_acc >= ptq_val_acc
        reason = (
            f"QAT int8 {100 * qat_val_acc:.2f} % vs post-training int8 {100 * ptq_val_acc:.2f} % on the "
            f"validation split ({len(val_labels)} images): shipping "
            + ("QAT." if use_qat else "post-training int8, because QAT fell short of it.")
        )
        logger.info(reason)
        notes.update(
            int8_source="qat" if use_qat else "ptq", int8_choice_reason=reason,
            qat_val_accuracy=qat_val_acc, ptq_val_accuracy=ptq_val_acc,
            qat_history_val_accuracy={str(k): v for k, v in history.items()}, qat_best_epoch=best_epoch,
        )
        built[INT8] = qat_bytes if use_qat else built[INT8_PTQ]

    variants: dict[str, dict] = {}
    for kind in wanted:
        extra = {k: notes[k] for k in ("int8_source", "int8_choice_reason")} if kind == INT8 and notes else {}
        data_bytes = embed(built[kind], labels, manifest(kind, **extra))
        path = atomic_write_bytes(out_dir / FILE_NAMES[kind], data_bytes)
        predictions, latency_ms = _score_tflite(data_bytes, data, "test")
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
    report.export_dir = out_dir
    atomic_write_json(out_dir / "report.json", dict(report))
    atomic_write_text(out_dir / "report.md", render_markdown(report))
    return report


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
        history = report.get("qat_history_val_accuracy", {})
        if history:
            lines.append(
                "QAT validation accuracy by epoch (0 = calibrated, before any step): "
                + ", ".join(f"{k}: {100 * v:.2f} %" for k, v in history.items())
            )
    lines += ["", f"Export took {report['export_seconds']:.0f} s."]
    return "\n".join(lines) + "\n"
