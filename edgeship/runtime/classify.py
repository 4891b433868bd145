"""Classification over a model's scores, for single images and whole folders.

Example:
    >>> import numpy as np
    >>> get_classes(np.array([0.1, 0.7, 0.2]), top_k=2, labels=["cat", "dog", "fox"])
    [Class(id=1, label='dog', score=0.7), Class(id=2, label='fox', score=0.2)]
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Iterator, NamedTuple, Sequence

import numpy as np

from edgeship.errors import ConfigError
from edgeship.runtime.dataset import list_image_files
from edgeship.runtime.files import display_path
from edgeship.runtime.image import load_image
from edgeship.runtime.model import Model
from edgeship.runtime.prefetch import prefetch

__all__ = ["Class", "Prediction", "get_classes", "model_inputs", "predict", "predict_top1"]

logger = logging.getLogger(__name__)


class Class(NamedTuple):
    """One class of a result: output index, label and score."""

    id: int
    label: str
    score: float


@dataclass
class Prediction:
    """The classes of one image, or why it could not be read."""

    path: str
    classes: list[Class] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "classes": [c._asdict() for c in self.classes]}


def get_classes(
    scores: np.ndarray,
    top_k: int = 1,
    score_threshold: float = 0.0,
    labels: Sequence[str] | None = None,
) -> list[Class]:
    """The ``top_k`` classes with a score ``>= score_threshold``, best first (ties: lower index).

    Args:
        scores: one float score per class.
        top_k: at most this many classes.
        score_threshold: inclusive lower bound on the score.
        labels: label of each output index; missing or empty labels show the index.
    """
    if top_k < 1:
        raise ConfigError(f"top_k must be at least 1; received {top_k}.")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")[:top_k]
    classes = []
    for index in order:
        index = int(index)
        score = float(scores[index])
        if score < score_threshold:
            break
        label = labels[index] if labels is not None and index < len(labels) and labels[index] else str(index)
        classes.append(Class(index, label, score))
    return classes


def predict(
    model: Model,
    paths: Sequence[str | os.PathLike],
    top_k: int = 5,
    score_threshold: float = 0.0,
    num_workers: int | None = None,
    skip: Collection[str] = (),
) -> Iterator[Prediction]:
    """Classifies image files and folders of images, decoding ahead on worker threads.

    Unreadable images give a :class:`Prediction` with ``error`` set rather than stopping the run.
    Results come one at a time, so a folder of any size runs in flat memory. ``skip`` holds
    the ``path`` of results already had (a resumed run): those files are not read again.

    Example:
        >>> from edgeship.runtime.model import load_model
        >>> model = load_model("mobilenet_v1_0.5_160_quant.tflite", labels="imagenet_labels.txt")
        >>> [p.classes[0].label for p in predict(model, ["cat.bmp"], top_k=1)]
        ['Egyptian cat']
    """
    files = list_image_files(paths)
    if skip:
        files = [path for path in files if display_path(path) not in skip]
    labels = [model.label(i) for i in range(model.num_classes)]
    for path, tensor, error in prefetch(files, lambda p: model.input_tensor(model.preprocess(p)), num_workers):
        if error is not None:
            yield Prediction(display_path(path), error=str(error))
            continue
        yield Prediction(display_path(path), get_classes(model.invoke(tensor), top_k, score_threshold, labels))


def model_inputs(models: Sequence[Model], paths: Sequence[Path], pixels=None) -> Callable[[int], list[np.ndarray]]:
    """The input tensor of each model for image ``i`` of ``paths``, one decode for all models.

    ``pixels`` (a :class:`edgeship.runtime.dataset.RunPixels`, the images' rows of a run's
    array) is read instead of the file when every model fits it; otherwise each file is decoded.
    Pure: safe to call from worker threads.
    """
    if pixels is not None and not all(pixels.fits(model) for model in models):
        logger.info("Decoding the images: a model's input size or resize method differs from the run's (%dx%d, %s)",
                    *pixels.size, pixels.resize_method)
        pixels = None
    if pixels is not None and len(pixels.rows) != len(paths):
        raise ValueError(f"{len(pixels.rows)} rows of pixels for {len(paths)} images")

    def prepare(i: int) -> list[np.ndarray]:
        image = np.array(pixels.rows[i]) if pixels is not None else load_image(paths[i])
        return [model.input_tensor(model.preprocess(image)) for model in models]

    return prepare


def predict_top1(
    models: Sequence[Model],
    paths: Sequence[Path],
    num_workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    pixels=None,
) -> tuple[np.ndarray, dict[str, str]]:
    """Top-1 output index of each model on each image, decoding each image once for all models
    (or reading its row of ``pixels``, see :func:`model_inputs`).

    Returns:
        ``(predictions, errors)``: an int array ``(len(models), len(paths))`` with -1 where an
        image could not be read, and the reason per unreadable path.
    """
    predictions = np.full((len(models), len(paths)), -1, dtype=np.int64)
    errors: dict[str, str] = {}
    prepare = model_inputs(models, paths, pixels)
    for i, tensors, error in prefetch(range(len(paths)), prepare, num_workers):
        if error is not None:
            errors[display_path(paths[i])] = str(error)
            logger.warning("Skipped: %s", error)
        else:
            for m, (model, tensor) in enumerate(zip(models, tensors)):
                predictions[m, i] = int(np.argmax(model.invoke(tensor)))
        if progress is not None:
            progress(1)
    return predictions, errors
