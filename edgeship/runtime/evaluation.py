"""Score a model on labelled images: accuracy, per-class precision / recall / F1, confusion matrix.

The report is computed by :mod:`edgeship.runtime.metrics` (the train stage uses the same code),
over the classes present in the data. A prediction of a model label outside those classes
counts as wrong and appears in an extra ``(other)`` column.

Example:
    >>> from edgeship.runtime.dataset import folder_dataset
    >>> from edgeship.runtime.model import load_model
    >>> report = evaluate(load_model("model_int8.tflite"), folder_dataset("photos/"))
    >>> sorted(write_report(report, "reports/int8"))
    ['json', 'markdown', 'plot']
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgeship.errors import DataError
from edgeship.runtime.classify import predict_top1
from edgeship.runtime.dataset import Dataset, match_classes
from edgeship.runtime.files import atomic_path, atomic_write_json, atomic_write_text
from edgeship.runtime.metrics import classification_report, report_markdown
from edgeship.runtime.model import Model
from edgeship.runtime.plot import confusion_image

__all__ = ["OTHER_CLASS", "dataset_report", "eval_markdown", "evaluate", "score_models", "write_report"]

logger = logging.getLogger(__name__)

OTHER_CLASS = "(other)"


def _check_digest(model: Model, data: Dataset) -> None:
    recorded = model.manifest.split_digest if model.manifest is not None else None
    if recorded and data.digest and recorded != data.digest:
        logger.warning(
            "%s was exported from a different split (digest %s) than these images (%s): scores are not "
            "comparable with its recorded float accuracy.", model.path, recorded[:12], data.digest[:12],
        )


def score_models(
    models: Sequence[Model],
    data: Dataset,
    num_workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[list[str]], dict[str, str]]:
    """Runs every model on the same readable images.

    Returns:
        ``(targets, predictions, predicted_labels, errors)``: true class index per readable
        image; per model, the predicted class index (``len(data.classes)`` for a label outside
        the data's classes); per model, the predicted label text; and the unreadable images.

    Raises:
        DataError: a class matches no label of a model, or no image could be read.
    """
    outputs = [match_classes(data.classes, model.labels) for model in models]
    for model in models:
        _check_digest(model, data)
    raw, errors = predict_top1(models, data.paths, num_workers, progress, data.pixels)
    readable = raw[0] >= 0
    if not readable.any():
        raise DataError(f"None of the {len(data.samples)} images in {data.source} could be read.")
    if errors:
        logger.warning("%d of %d images could not be read and were skipped.", len(errors), len(data.samples))
    targets = np.asarray(data.targets, dtype=np.int64)[readable]
    predictions, texts = [], []
    for model, class_outputs, row in zip(models, outputs, raw):
        position = {output: i for i, output in enumerate(class_outputs)}
        row = row[readable]
        predictions.append(np.array([position.get(int(o), len(data.classes)) for o in row], dtype=np.int64))
        texts.append([data.classes[position[int(o)]] if int(o) in position else model.label(int(o)) for o in row])
    return targets, np.stack(predictions), texts, errors


def dataset_report(data: Dataset, targets: np.ndarray, predictions: np.ndarray) -> dict:
    labels = list(data.classes)
    if (predictions == len(labels)).any():
        labels.append(OTHER_CLASS)
    return classification_report(targets.tolist(), predictions.tolist(), labels)


def evaluate(
    model: Model,
    data: Dataset,
    num_workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Accuracy, per-class precision / recall / F1 and the confusion matrix of ``model`` on ``data``.

    Unreadable images are skipped, counted in ``num_skipped`` and listed in ``skipped``.

    Example:
        >>> from edgeship.runtime.dataset import run_dataset
        >>> from edgeship.runtime.model import load_model
        >>> report = evaluate(load_model("model_int8.tflite"), run_dataset("runs/flowers"))
        >>> 0 <= report["accuracy"] <= 1, report["num_skipped"]
        (True, 0)
    """
    targets, predictions, _, errors = score_models([model], data, num_workers, progress)
    report = dataset_report(data, targets, predictions[0])
    report.update(
        model=model.path,
        data=data.source,
        split_digest=data.digest,
        num_skipped=len(errors),
        skipped=errors,
        resize_method=model.resize_method,
        input_feed=model.feed.describe(),
    )
    return report


def eval_markdown(report: dict, title: str) -> str:
    """:func:`edgeship.runtime.metrics.report_markdown` plus the data source and skipped images."""
    markdown = report_markdown(report, title)
    markdown += f"\nImages from {report.get('data', '?')}, resized {report.get('resize_method', '?')}."
    if report.get("num_skipped"):
        markdown += f" {report['num_skipped']} unreadable image(s) skipped."
    return markdown + "\n"


def write_report(report: dict, out_dir: str | os.PathLike, title: str | None = None) -> dict[str, Path]:
    """Writes ``eval.json``, ``eval.md`` and ``confusion.png`` into ``out_dir`` (atomically).

    Returns:
        The written paths by kind (``json``, ``markdown``, ``plot``).
    """
    out_dir = Path(out_dir)
    title = title or f"Evaluation of {Path(report.get('model', 'model')).name}"
    paths = {"json": out_dir / "eval.json", "markdown": out_dir / "eval.md", "plot": out_dir / "confusion.png"}
    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["markdown"], eval_markdown(report, title))
    with atomic_path(paths["plot"], suffix=".png") as tmp:
        confusion_image(report["confusion_matrix"], report["labels"], title).save(tmp, format="PNG")
    return paths
