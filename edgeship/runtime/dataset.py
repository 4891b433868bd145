"""Which images to score, with their true class: a folder of class folders, or a run's test split.

Example:
    >>> data = folder_dataset("photos/")  # doctest: +SKIP
    >>> data.classes, len(data.samples)    # doctest: +SKIP
    (['daisy', 'roses'], 120)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edgeship.errors import DataError
from edgeship.runtime.image import IMAGE_EXTENSIONS, is_image_file
from edgeship.runtime.rundir import RunDir

__all__ = ["Dataset", "class_folders", "folder_dataset", "images_under", "list_image_files", "match_classes", "run_dataset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    """Image paths with true class indices into ``classes``."""

    classes: tuple[str, ...]
    samples: tuple[tuple[Path, int], ...]
    source: str
    digest: str | None = None   # the run split's digest, when the images come from one

    @property
    def paths(self) -> list[Path]:
        return [path for path, _ in self.samples]

    @property
    def targets(self) -> list[int]:
        return [target for _, target in self.samples]


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def images_under(folder: Path) -> list[Path]:
    """Every image file below ``folder`` (by extension, any case), sorted; hidden files and
    folders (a name starting with ``.``) are left out. Training and evaluation both list with it."""
    return sorted(p for p in folder.rglob("*") if is_image_file(p) and p.is_file() and not _hidden(p, folder))


def class_folders(root: Path) -> list[Path]:
    """The class sub-folders of ``root``, sorted by name, hidden ones left out."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_image_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, and every image under each folder (recursively, sorted).

    Raises:
        DataError: a path does not exist, or nothing is left to read.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = images_under(path)
            if not found:
                logger.warning("No images (%s) under %s", ", ".join(IMAGE_EXTENSIONS), path)
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise DataError(f"Image not found: {path}. Pass image files or folders of images.")
    if not files:
        raise DataError(f"No images to read in {', '.join(map(str, paths))}.")
    return files


def folder_dataset(root: str | os.PathLike) -> Dataset:
    """One sub-folder per class, images anywhere below it.

    Raises:
        DataError: the folder is missing or holds no class folder with images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Data folder not found: {root}. Expected one sub-folder per class, e.g. {root}/cat/*.jpg.")
    classes, samples = [], []
    for folder in class_folders(root):
        images = images_under(folder)
        if images:
            samples.extend((path, len(classes)) for path in images)
            classes.append(folder.name)
    if not samples:
        raise DataError(f"{root} has no class folders with images; expected {root}/<class>/<image>.")
    return Dataset(tuple(classes), tuple(samples), str(root))


def run_dataset(run_dir: str | os.PathLike, part: str = "test") -> Dataset:
    """The images of one part of the split a training run recorded, checked against the
    content digests recorded with it.

    Raises:
        DataError: no readable split in ``run_dir``, the part is empty, or its files changed.
    """
    run = RunDir(run_dir)
    split = run.read_split()
    samples = tuple(split.samples(part))
    if not samples:
        raise DataError(f"The {part} split recorded in {run.split_path} is empty.")
    run.verify_split(split, (part,))
    return Dataset(tuple(split.classes), samples, f"{run_dir} ({part} split)", split.digest or None)


def _key(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


def match_classes(classes: Sequence[str], labels: Sequence[str] | None) -> list[int]:
    """The model output index of each class name: exact match first, then ignoring case,
    ``_``, ``-`` and extra spaces; a label ``"a, b"`` also matches its first name ``a``.

    Raises:
        DataError: the model has no labels, or a class matches none of them.

    Example:
        >>> match_classes(["egyptian_cat"], ["background", "Egyptian cat"])
        [1]
    """
    if not labels:
        raise DataError("The model carries no labels to match the class folders against; pass --labels FILE.")
    exact = {label: i for i, label in reversed(list(enumerate(labels)))}
    loose: dict[str, int] = {}
    for i, label in enumerate(labels):
        loose.setdefault(_key(label), i)
    for i, label in enumerate(labels):
        loose.setdefault(_key(label.split(",")[0]), i)
    indices, unmatched = [], []
    for name in classes:
        index = exact.get(name, loose.get(_key(name)))
        if index is None:
            unmatched.append(name)
        indices.append(index)
    if unmatched:
        sample = ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else "")
        raise DataError(
            f"Class folder(s) {', '.join(unmatched)} match no label of the model ({sample}). "
            "Name each folder after one of the model's labels, or pass --labels FILE."
        )
    return indices
