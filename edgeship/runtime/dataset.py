"""Which images to score, with their true class: a folder of class folders, or a run's test split.

Example:
    >>> data = folder_dataset("photos/")
    >>> data.classes, len(data.samples)
    (('checks', 'dots', 'rings', 'stripes'), 48)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeship.errors import DataError, EdgeshipError
from edgeship.runtime.files import display_path
from edgeship.runtime.image import IMAGE_EXTENSIONS, RESIZE_METHODS, is_image_file
from edgeship.runtime.decode_cache import DecodeCache
from edgeship.runtime.rundir import RunDir, Split

__all__ = ["Dataset", "RunPixels", "class_folders", "find_images", "folder_dataset", "list_image_files",
           "match_classes", "run_dataset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPixels:
    """The decoded pixels of a dataset's images, one row each in its order, from a run's array.

    Training decoded them with the runtime's own preprocessing at ``size`` and
    ``resize_method``: for a model of that input size and resize method a row is exactly what
    decoding the file again would give, so scoring reads the row instead.
    """

    rows: np.ndarray             # (N, H, W, 3) uint8, a read-only memory map
    size: tuple[int, int]
    resize_method: str

    def fits(self, model) -> bool:
        """Whether ``model`` sees these rows as they are (same input size and resize method)."""
        return tuple(model.input_size) == self.size and model.resize_method == self.resize_method


@dataclass(frozen=True)
class Dataset:
    """Image paths with true class indices into ``classes``."""

    classes: tuple[str, ...]
    samples: tuple[tuple[Path, int], ...]
    source: str
    digest: str | None = None   # the run split's digest, when the images come from one
    pixels: RunPixels | None = field(default=None, compare=False, repr=False)  # the run's decoded rows

    @property
    def paths(self) -> list[Path]:
        return [path for path, _ in self.samples]

    @property
    def targets(self) -> list[int]:
        return [target for _, target in self.samples]


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Every file named like an image under ``folder``, recursively, sorted.

    Hidden names (``.DS_Store``, ``._photo.jpg``) are skipped. Links to folders are followed,
    each folder read once, so a link loop ends. A folder that cannot be listed is named in a
    warning and skipped. Entries named like images that are not regular files (broken or
    looping links, pipes) are kept: decoding them fails with a message naming each one.
    """
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    pending = [Path(folder)]
    while pending:
        directory = pending.pop()
        try:
            info = directory.stat()
            if (info.st_dev, info.st_ino) in seen:
                logger.warning("Not following %s: it leads back to a folder already read.", display_path(directory))
                continue
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(directory) as scan:
                entries = list(scan)
        except OSError as e:
            logger.warning("Skipped folder %s: %s. Make it readable or move it away.",
                           display_path(directory), e.strerror or e)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if _is_folder(entry):
                pending.append(Path(entry.path))
            elif is_image_file(entry.name):
                found.append(Path(entry.path))
    return sorted(found)


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links
    except OSError:
        return False  # a link loop: left for decoding to name


def list_image_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, and every image under each folder (recursively, sorted).

    Raises:
        DataError: a path does not exist, or nothing is left to read.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = find_images(path)
            if not found:
                logger.warning("No images (%s) under %s", ", ".join(IMAGE_EXTENSIONS), display_path(path))
            files.extend(found)
        elif os.path.lexists(path):  # a broken link too: decoding names it
            files.append(path)
        else:
            raise DataError(f"Image not found: {display_path(path)}. Pass image files or folders of images.")
    if not files:
        raise DataError(f"No images to read in {', '.join(map(display_path, paths))}.")
    return files


def folder_dataset(root: str | os.PathLike) -> Dataset:
    """One sub-folder per class, images anywhere below it.

    Raises:
        DataError: the folder is missing or holds no class folder with images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Data folder not found: {display_path(root)}. Expected one sub-folder per class, e.g. {root}/cat/*.jpg.")
    classes, samples = [], []
    for folder in class_folders(root):
        images = find_images(folder)
        if images:
            samples.extend((path, len(classes)) for path in images)
            classes.append(folder.name)
    if not samples:
        raise DataError(f"{root} has no class folders with images; expected {root}/<class>/<image>.")
    return Dataset(tuple(classes), tuple(samples), str(root))


def class_folders(root: Path) -> list[Path]:
    """The visible sub-folders of ``root``, sorted by name.

    Raises:
        DataError: ``root`` cannot be listed.
    """
    try:
        entries = list(os.scandir(root))
    except OSError as e:
        raise DataError(f"Cannot list the data folder {display_path(root)}: {e.strerror or e}. Make it readable.") from e
    return sorted(Path(e.path) for e in entries if not e.name.startswith(".") and _is_folder(e))


def run_dataset(run_dir: str | os.PathLike, part: str = "test") -> Dataset:
    """The images of one part of the split a training run recorded, checked against the
    content digests recorded with it, with the run's decoded pixels when they fit the split.

    Raises:
        DataError: no readable split in ``run_dir``, the part is empty, or its files changed.

    Example:
        >>> data = run_dataset("runs/flowers")
        >>> data.pixels.rows.shape[1:], data.pixels.resize_method
        ((32, 32, 3), 'bilinear-asymmetric')
    """
    run = RunDir(run_dir)
    split = run.read_split()
    samples = tuple(split.samples(part))
    if not samples:
        raise DataError(f"The {part} split recorded in {run.split_path} is empty.")
    run.verify_split(split, (part,))
    return Dataset(tuple(split.classes), samples, f"{run_dir} ({part} split)", split.digest or None,
                   _run_pixels(run, split, part))


def _run_pixels(run: RunDir, split: Split, part: str) -> RunPixels | None:
    """The rows of ``part`` in the run's pixel array, when its config names a size and resize
    method, the array fits the split, and this machine's decode cache holds that very array;
    else None (the images are decoded), with a warning when an array is there but unusable.

    A run directory is data from whoever made it: a pull request's run could bring pixels made
    to pass the gate. Only an array that is the decode cache's own (hard-linked when training
    on this machine wrote it) stands for the files; any other is left unread.
    """
    try:
        config = run.read_config()
        size, method = config["image_size"], config["resize_method"]
    except (EdgeshipError, KeyError):
        return None
    if type(size) is not int or not 0 < size <= 4096 or method not in RESIZE_METHODS:
        logger.warning("%s names no usable image size and resize method; decoding the images.", run.config_path)
        return None
    if not DecodeCache().holds_array(run.pixels_paths(size, method)[0], split.digests(), (size, size), method):
        logger.info("%s: its pixel array was not decoded by this machine's decode cache; decoding the images.",
                    run.path)
        return None
    try:
        pixels = run.read_pixels(split, size, method)
    except DataError as e:
        logger.warning("The decoded pixels of the run cannot be used (%s); decoding the images instead.", e)
        return None
    return None if pixels is None else RunPixels(pixels[split.rows(part)], (size, size), method)


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
            f"Class folder(s) {', '.join(map(display_path, unmatched))} match no label of the model ({sample}). "
            "Name each folder after one of the model's labels, or pass --labels FILE."
        )
    return indices
