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
from typing import Callable, Iterator, Sequence

import numpy as np

from edgeship.errors import DataError
from edgeship.runtime.classify import get_classes, model_inputs, predict_top1
from edgeship.runtime.dataset import Dataset, match_classes
from edgeship.runtime.files import atomic_path, atomic_write_json, atomic_write_text, display_path
from edgeship.runtime.jsonl import JsonLines, read_lines
from edgeship.runtime.metrics import classification_report, matrix_report, report_markdown
from edgeship.runtime.model import Model
from edgeship.runtime.plot import confusion_image
from edgeship.runtime.prefetch import prefetch

__all__ = ["OTHER_CLASS", "dataset_report", "eval_markdown", "evaluate", "evaluate_to_file", "score_models",
           "write_report"]

logger = logging.getLogger(__name__)

OTHER_CLASS = "(other)"


def _check_digest(model: Model, data: Dataset) -> None:
    recorded = model.manifest.split_digest if model.manifest is not None else None
    if recorded and data.digest and recorded != data.digest:
        logger.warning(
            "%s was exported from a different split (digest %s) than these images (%s): scores are not "
            "comparable with its recorded float accuracy.", model.path, recorded[:12], data.digest[:12],
        )


def _check_readable(data: Dataset, any_readable: bool, errors: dict[str, str]) -> None:
    if not any_readable:
        raise DataError(f"None of the {len(data.samples)} images in {data.source} could be read.")
    if errors:
        logger.warning("%d of %d images could not be read and were skipped.", len(errors), len(data.samples))


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
    _check_readable(data, bool(readable.any()), errors)
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
    return _describe(dataset_report(data, targets, predictions[0]), model, data, errors)


def _describe(report: dict, model: Model, data: Dataset, errors: dict[str, str]) -> dict:
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


def evaluate_to_file(
    model: Model,
    data: Dataset,
    out: str | os.PathLike,
    resume: bool = False,
    top_k: int = 5,
    num_workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """:func:`evaluate` for big folders: each image's result goes to ``out`` as a JSON line as it
    comes, and the report is counted from the file's lines at the end, so memory stays flat.

    A line holds ``path``, the true class (``true``; ``target``, its index), the predicted class
    (``predicted``; ``prediction``, its index, ``len(data.classes)`` for a label outside them)
    and the ``top_k`` ``classes`` with scores, or ``error`` for an unreadable image. With
    ``resume`` the images the file holds are not scored again (a stopped run continues, a line
    cut off by a kill is dropped) and the report is the one an uninterrupted run gives.

    Raises:
        DataError: as :func:`evaluate`; or a line of ``out`` edgeship did not write, or one about
            another evaluation's images.

    Example:
        >>> from edgeship.runtime.dataset import folder_dataset
        >>> from edgeship.runtime.model import load_model
        >>> model, photos = load_model("model_int8.tflite"), folder_dataset("photos/")
        >>> report = evaluate_to_file(model, photos, "eval.jsonl")
        >>> report == evaluate(model, photos), report == evaluate_to_file(model, photos, "eval.jsonl", resume=True)
        (True, True)
    """
    outputs = match_classes(data.classes, model.labels)
    _check_digest(model, data)
    order = {display_path(path): (i, target) for i, (path, target) in enumerate(data.samples)}
    # Checked before any scoring: a file of another evaluation stops at once, not after the rest.
    done = {path for path, _ in _results(data, out, order)} if resume else set()
    todo = [i for i, path in enumerate(data.paths) if display_path(path) not in done]
    position = {output: i for i, output in enumerate(outputs)}
    labels = [model.label(i) for i in range(model.num_classes)]
    with JsonLines(out, append=resume) as lines:
        for i, tensors, error in prefetch(todo, model_inputs([model], data.paths, data.pixels), num_workers):
            path, target = data.samples[i]
            record = {"path": display_path(path), "true": data.classes[target], "target": target}
            if error is not None:
                record["error"] = str(error)
                logger.warning("Skipped: %s", error)
            else:
                record.update(_prediction(data.classes, position, labels, model.invoke(tensors[0]), top_k))
            lines.write(record)
            if progress is not None:
                progress(1)
    report, errors = _report_from_lines(data, out, order)
    return _describe(report, model, data, errors)


def _prediction(classes: Sequence[str], position: dict[int, int], labels: list[str], scores: np.ndarray,
                top_k: int) -> dict:
    """The predicted class as :func:`score_models` counts it (``position``: the class of each
    matched model output), and the ``top_k`` classes."""
    top = int(np.argmax(scores))
    prediction = position.get(top, len(classes))
    return {
        "predicted": classes[prediction] if top in position else labels[top],
        "prediction": prediction,
        "classes": [c._asdict() for c in get_classes(scores, top_k, -np.inf, labels)],
    }


def _results(data: Dataset, out: str | os.PathLike, order: dict[str, tuple[int, int]]) -> Iterator[tuple[str, dict]]:
    """``(path, line)`` of every whole line of ``out``, each checked to be this evaluation's
    result on one of its images, once (``order``: index and class of each image by path)."""
    seen = set()
    for record in read_lines(out):
        path = str(record["path"])
        if not _is_result(record, order.get(path), len(data.classes)) or path in seen:
            raise DataError(f"{display_path(out)} holds a line about {path} that is not this evaluation's result "
                            f"on {data.source}. Pass another --out, or drop --resume to start it afresh.")
        seen.add(path)
        yield path, record


def _report_from_lines(data: Dataset, out: str | os.PathLike,
                       order: dict[str, tuple[int, int]]) -> tuple[dict, dict[str, str]]:
    """The classification report and the unreadable images, counted from the lines of ``out``."""
    num_classes = len(data.classes)
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    errors = {}
    for path, record in _results(data, out, order):
        if "error" in record:
            errors[path] = str(record["error"])
        else:
            matrix[order[path][1], record["prediction"]] += 1
    _check_readable(data, bool(matrix.any()), errors)
    labels = list(data.classes)
    if matrix[:, num_classes].any():
        labels.append(OTHER_CLASS)
    else:
        matrix = matrix[:num_classes, :num_classes]
    return matrix_report(matrix, labels), dict(sorted(errors.items(), key=lambda item: order[item[0]][0]))


def _is_result(record: dict, sample: tuple[int, int] | None, num_classes: int) -> bool:
    """Whether a line is a result on this image (its true class) with a prediction in range."""
    if sample is None or type(record.get("target")) is not int or record["target"] != sample[1]:
        return False
    prediction = record.get("prediction")
    return "error" in record or (type(prediction) is int and 0 <= prediction <= num_classes)


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
