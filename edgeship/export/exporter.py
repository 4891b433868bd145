"""The export stage: a trained run to self-describing ``.tflite`` files, each one scored.

It reads top to bottom as its steps: load the run (its recorded split, checked against the
files, and the float model), convert every requested variant, build the int8 candidates and
choose one (``int8_choice.py``; the QAT recipe is ``qat.py``), then write each file with standard
TFLite Metadata, its labels and manifest, and score it once, with the LiteRT runtime, on the test split next to the
float Keras model. The report and every model's test predictions go beside the files, so that
``edgeship run`` gates on them without scoring again. Everything is written to a fresh staging
folder that becomes ``RUN/export/`` in one atomic step (``RunDir.publish_export``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeship.edgetpu.reporting import compile_variant, variant_mapping
from edgeship.export.config import (EDGETPU, FILE_NAMES, FLOAT32, FULL_INTEGER, INT8, INT8_MIXED, INT8_PTQ, INT16X8,
                                    INT16X8_MANIFEST, SEARCH_VAL, ExportConfig)
from edgeship.export.convert import convert, convert_variants
from edgeship.export.int8_choice import choose_int8, probability_distance
from edgeship.export.mixed_precision import build_int8_mixed
from edgeship.export.qat import fit_qat
from edgeship.export.report import render_markdown
from edgeship.progress import progress
from edgeship.runtime.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgeship.runtime.manifest import Manifest
from edgeship.runtime.rundir import RunDir
from edgeship.runtime.metadata_writer import embed_with_metadata
from edgeship.runtime.report_page import write_report_page_or_warn
from edgeship.train import DecodedSplit, TrainConfig, load_data, load_float_model, load_run_config, normalize_tf
from edgeship.train import predict_probabilities

__all__ = ["ExportResult", "export"]

logger = logging.getLogger(__name__)

# The QAT file when post-training int8 ships instead: scored, reported, not written.
_QAT_NOT_SHIPPED = "int8-qat"


class ExportResult(dict):
    """The report (a dict) with the export directory as ``.export_dir``."""

    export_dir: Path


@dataclass
class _Run:
    """What every step reads: the run's config, its decoded split, the float model and its scores."""

    train_config: TrainConfig
    data: DecodedSplit
    float_model: object
    float_test: np.ndarray     # class probabilities on the test split
    float_val: np.ndarray      # ... and on the validation split
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each step, for the report

    def timed(self, step: str):
        """Adds the block's wall time to ``seconds[step]``."""
        return _timed(self.seconds, step)

    @property
    def float_test_accuracy(self) -> float:
        return float(np.mean(np.argmax(self.float_test, axis=1) == self.data.labels[self.data.indices["test"]]))

    def manifest(self, kind: str, **extra) -> Manifest:
        config = self.train_config
        mean, std = self.data.normalization  # the backbone's, as training fed it
        return Manifest(
            labels=tuple(self.data.split.classes), image_size=(config.image_size, config.image_size),
            resize_method=config.resize_method, mean=mean, std=std, quantization=kind,
            backbone=f"{config.backbone}_{config.alpha:g}", float_test_accuracy=self.float_test_accuracy,
            split_digest=self.data.split.digest, extra=extra,
        )

    def file_bytes(self, kind: str, flatbuffer: bytes, **extra) -> bytes:
        """The model file: the flatbuffer with standard TFLite Metadata, and its labels and
        manifest embedded (``metadata_writer.embed_with_metadata``)."""
        return embed_with_metadata(flatbuffer, self.manifest(kind, **extra))


@contextlib.contextmanager
def _timed(seconds: dict[str, float], step: str):
    """Adds the block's wall time to ``seconds[step]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[step] = round(seconds.get(step, 0.0) + time.perf_counter() - start, 2)


def _load_run(run: RunDir, config: ExportConfig) -> _Run:
    train_config = load_run_config(run.path)
    run.read_metrics()  # a finished run, or a clear error
    data = load_data(run.path, train_config)
    float_model = load_float_model(run.path)
    float_test = predict_probabilities(float_model, data, "test", config.qat_batch_size)
    float_val = predict_probabilities(float_model, data, "val", config.qat_batch_size)
    return _Run(train_config, data, float_model, float_test, float_val)


def _inputs(data: DecodedSplit, indices: np.ndarray):
    """A generator function of ``[one normalised image]`` lists, as TensorFlow's quantizer takes them."""
    def samples():
        for i in indices:
            yield [normalize_tf(data.pixels[i : i + 1], data.normalization).numpy()]

    return samples


# Every tensor of a QAT model has its range from fake quantization, so calibration cannot change
# its int8 file (byte-identical from 1 sample and from 256 on every backbone; a test holds it):
# TensorFlow only insists on some samples.
QAT_REPRESENTATIVE_SAMPLES = 8


def _representative(run: _Run, samples: int):
    """``samples`` train images drawn with the run's seed, as TensorFlow's quantizer takes them."""
    train = run.data.indices["train"]
    rng = np.random.default_rng(run.train_config.seed)
    return _inputs(run.data, np.sort(rng.choice(train, size=min(samples, len(train)), replace=False)))


def _convert_variants(run: _Run, config: ExportConfig, staging: Path) -> tuple[dict[str, bytes], dict]:
    """Every requested flatbuffer; for int8, QAT and post-training int8 are both built and the
    one :func:`choose_int8` picks on the validation split ships."""
    # edgetpu compiles int8 afterwards; int8-mixed is searched afterwards (_int8_mixed)
    wanted = [kind for kind in config.formats if kind not in (EDGETPU, INT8_MIXED)]
    representative = _representative(run, config.representative_samples)
    plain = [k for k in wanted if k not in FULL_INTEGER] + ([INT8_PTQ] if set(FULL_INTEGER) & set(wanted) else [])
    logger.info("Converting %s ...", ", ".join(plain))
    with progress(None, f"converting {', '.join(plain)}"), run.timed("convert_float_model"):
        built = convert_variants(run.float_model, plain, representative=representative, io=config.io)
    if INT8 not in wanted:
        return built, {}
    with run.timed("qat"):
        qat, history, best_epoch = fit_qat(run.float_model, run.float_val, run.data, config, run.train_config.seed)
    logger.info("Converting int8 (QAT) ...")
    with progress(None, "converting int8 (QAT)"), run.timed("convert_qat_model"):
        qat_bytes = convert(qat, INT8, representative=_representative(run, QAT_REPRESENTATIVE_SAMPLES),
                            io=config.io)
    candidates = {}
    with run.timed("choose_int8"):
        for name, candidate in (("qat", qat_bytes), ("ptq", built[INT8_PTQ])):
            path = atomic_write_bytes(staging / f".candidate_{name}.tflite", run.file_bytes(INT8, candidate))
            candidates[name] = _score_tflite(path, run.data, "val")[0]
            path.unlink()
    choice = choose_int8(candidates["qat"], candidates["ptq"], run.data.labels[run.data.indices["val"]], run.float_val)
    use_qat, reason = choice.pop("use_qat"), choice.pop("reason")
    logger.info(reason)
    built[INT8] = qat_bytes if use_qat else built[INT8_PTQ]
    if not use_qat:  # scored on test too, so that QAT's own result is on record
        built[_QAT_NOT_SHIPPED] = qat_bytes
    notes = dict(int8_source="qat" if use_qat else "ptq", int8_choice_reason=reason, **choice,
                 qat_history_val={str(k): v for k, v in history.items()}, qat_best_epoch=best_epoch)
    return built, notes


def _score_tflite(path: Path, data: DecodedSplit, part: str,
                  indices: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Class scores of a .tflite for every image of a split part (or of ``indices``, named
    ``part``), through the device runtime, and the mean latency of one classification in ms.
    The cached pixels are the runtime's own preprocessing."""
    from edgeship.runtime.model import load_model

    model = load_model(path, num_threads=2)
    indices = data.indices[part] if indices is None else indices
    scores, seconds = [], []
    with progress(len(indices), f"scoring {path.name.lstrip('.')} on {part}") as update:
        for row in indices:  # one row at a time from the memory map: memory stays flat
            image = np.asarray(data.pixels[row])
            start = time.perf_counter()
            scores.append(model.classify(image))
            seconds.append(time.perf_counter() - start)
            update()
    return np.asarray(scores, np.float32), 1000 * float(np.mean(seconds[1:] or seconds))


def _write_and_score(run: _Run, built: dict[str, bytes], notes: dict, config: ExportConfig, staging: Path):
    """Writes each variant's file and scores it once on the test split; returns its report
    rows and the top-1 predictions of every model. When post-training int8 ships, the QAT
    file is scored too and its row goes to ``notes["qat_test"]``, not to disk."""
    targets = run.data.labels[run.data.indices["test"]]
    float_top = np.argmax(run.float_test, axis=1)
    predictions = {"targets": targets.tolist(), "float_keras": float_top.tolist()}
    variants: dict[str, dict] = {}
    kinds = [k for k in config.formats if k != EDGETPU] + [_QAT_NOT_SHIPPED] * (_QAT_NOT_SHIPPED in built)
    for kind in kinds:
        extra = {k: notes[k] for k in ("int8_source", "int8_choice_reason")} if kind == INT8 and notes else {}
        if kind == INT8_MIXED:
            extra = {k: notes[INT8_MIXED][k] for k in ("float_layers", "search_images", "search_agreement",
                                                       "val_agreement", "target")}
        if kind == INT16X8:
            extra = dict(INT16X8_MANIFEST)
        data_bytes = run.file_bytes(INT8 if kind == _QAT_NOT_SHIPPED else kind, built[kind], **extra)
        path = atomic_write_bytes(staging / FILE_NAMES.get(kind, f".{kind}.tflite"), data_bytes)
        scores, latency_ms = _score_tflite(path, run.data, "test")
        top = np.argmax(scores, axis=1)
        accuracy = float(np.mean(top == targets))
        row = {
            "file": path.name, "size_bytes": len(data_bytes), "test_accuracy": accuracy,
            "delta_pp": 100 * (accuracy - run.float_test_accuracy), "agreement": float(np.mean(top == float_top)),
            "probability_distance": probability_distance(scores, run.float_test), "mean_latency_ms": latency_ms,
        }
        if kind == _QAT_NOT_SHIPPED:
            path.unlink()
            notes["qat_test"] = {k: v for k, v in row.items() if k != "file"}
            continue
        predictions[kind] = top.tolist()
        variants[kind] = row
        # int8-mixed: the mapping shows where its float ops cut it; int16x8: why it never compiles
        if kind in FULL_INTEGER + (INT8_MIXED, INT16X8):
            variants[kind]["edgetpu"] = variant_mapping(data_bytes, path.name)
        logger.info("%-9s test accuracy %.2f %%  agreement %.2f %%  %.1f KiB  %.2f ms", kind, 100 * accuracy,
                    100 * variants[kind]["agreement"], len(data_bytes) / 1024, latency_ms)
    return variants, predictions


def _int16x8_note(variants: dict[str, dict]) -> str:
    """What the 16x8 file costs in time, from the scoring's own latencies on this machine."""
    if INT16X8 not in variants:
        return ""
    edgetpu = "It is a CPU variant: the Edge TPU runs 8-bit activations only, so it is never compiled for it."
    if FLOAT32 not in variants:
        return (f"{edgetpu} Its speed against float32 was not measured in this export (float32 was not exported): "
                f"`edgeship bench {FILE_NAMES[INT16X8]} {FILE_NAMES[FLOAT32]}` compares them.")
    wide, plain = variants[INT16X8]["mean_latency_ms"], variants[FLOAT32]["mean_latency_ms"]
    if wide <= plain:
        return f"{edgetpu} On this machine it ran as fast as float32 or faster ({wide:.2f} ms vs {plain:.2f} ms)."
    return (f"{edgetpu} On this machine it is {wide / plain:.1f}x SLOWER than float32 ({wide:.2f} ms vs {plain:.2f} ms "
            "per image, 2 threads, the test split's scoring): LiteRT runs 16x8 with its built-in kernels, not "
            "XNNPACK, and a second thread does not help it (docs/small-models.md).")


def _search_images(run: _Run, config: ExportConfig) -> tuple[np.ndarray, np.ndarray]:
    """The indices int8-mixed's search uses (``config.mixed_search_images``) and the float
    model's top-1 class on each; never a test image."""
    indices = run.data.indices
    if config.mixed_search_images == SEARCH_VAL:
        return indices["val"], np.argmax(run.float_val, axis=1)
    float_train = predict_probabilities(run.float_model, run.data, "train", config.qat_batch_size)
    return (np.concatenate([indices["train"], indices["val"]]),
            np.argmax(np.concatenate([float_train, run.float_val]), axis=1))


def _mixed_agreement(run: _Run, staging: Path, flatbuffer: bytes, part: str, indices: np.ndarray,
                     float_top: np.ndarray) -> float:
    """A candidate int8-mixed flatbuffer's top-1 agreement with the float model on ``indices``,
    scored as the shipped file is run."""
    path = atomic_write_bytes(staging / ".candidate_mixed.tflite", run.file_bytes(INT8_MIXED, flatbuffer))
    top = np.argmax(_score_tflite(path, run.data, part, indices)[0], axis=1)
    path.unlink()
    return float(np.mean(top == float_top))


def _int8_mixed(run: _Run, config: ExportConfig, staging: Path) -> tuple[bytes, dict]:
    """The int8-mixed search (``mixed_precision.py``) on the search images, and the chosen file's
    agreement on the validation split alone, as the report has always stated it."""
    data, name = run.data, config.mixed_search_images
    search, float_top = _search_images(run, config)
    model, notes = build_int8_mixed(
        run.float_model, _representative(run, config.representative_samples), _inputs(data, search),
        lambda flatbuffer: _mixed_agreement(run, staging, flatbuffer, name, search, float_top),
        config.min_agreement, config.io)
    val_agreement = notes["search_agreement"] if name == SEARCH_VAL else _mixed_agreement(
        run, staging, model, "val", data.indices["val"], np.argmax(run.float_val, axis=1))
    return model, {**notes, "search_images": name, "num_search_images": len(search), "val_agreement": val_agreement}


def export(config: ExportConfig, *, report_page: bool = True) -> ExportResult:
    """Exports every variant in ``config.formats`` from ``config.run_dir``; returns the report.

    ``report_page=False`` leaves ``RUN/report.html`` to the caller (``edgeship run`` writes it
    once, after its gate and bench).

    Raises:
        ConfigError: the run is not a finished training run, or its config is damaged.
        DataError: the run's images changed since training (the files are named).
        RunBusyError: another process is training or exporting the same run.

    Example (minutes of QAT; the README's and the export page's snippets run it)::

        report = export(ExportConfig(run_dir="runs/flowers"))
        report["variants"]["int8"]["test_accuracy"]
    """
    start = time.perf_counter()
    run_dir = RunDir(config.run_dir)
    with run_dir.lock("export"):
        seconds: dict[str, float] = {}
        with _timed(seconds, "load"):
            run = _load_run(run_dir, config)
        run.seconds = seconds
        staging = run_dir.new_export_staging()
        built, notes = _convert_variants(run, config, staging)
        if INT8_MIXED in config.formats:
            with run.timed("int8_mixed_search"):
                built[INT8_MIXED], notes[INT8_MIXED] = _int8_mixed(run, config, staging)
        with run.timed("write_and_score"):
            variants, predictions = _write_and_score(run, built, notes, config, staging)
        val_labels = run.data.labels[run.data.indices["val"]]
        report = ExportResult(
            run_dir=str(run_dir.path), split_digest=run.data.split.digest, num_test_images=len(predictions["targets"]),
            float_keras={"test_accuracy": run.float_test_accuracy,
                         "val_accuracy": float(np.mean(np.argmax(run.float_val, axis=1) == val_labels))},
            variants=variants, config=config.to_dict(), **notes,
        )
        if INT16X8 in variants:
            report["int16x8_note"] = _int16x8_note(variants)
        if EDGETPU in config.formats:
            with run.timed("edgetpu_compile"):
                report["edgetpu"] = compile_variant(staging / FILE_NAMES[INT8])
        report.update(export_seconds=round(time.perf_counter() - start, 1), step_seconds=run.seconds)
        report.export_dir = run_dir.export_dir
        atomic_write_json(staging / run_dir.report_path.name, dict(report))
        atomic_write_text(staging / run_dir.report_markdown_path.name, render_markdown(report))
        atomic_write_json(staging / run_dir.predictions_path.name, predictions)
        run_dir.publish_export(staging)
    logger.info("Exported %d variant(s) to %s in %.0f s", len(variants), run_dir.export_dir, report["export_seconds"])
    if report_page:
        write_report_page_or_warn(run_dir.path)  # after the lock: the page reads the published export
    return report
