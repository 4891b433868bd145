"""Data: scan class folders, decode every image once, split, and record the split.

Every image is decoded and resized exactly once, with the runtime's own :func:`preprocess`
(one definition, so training sees what the device will see), into a ``uint8`` array that is
kept in the run directory. Epochs then read that array; ``tfdata.py`` augments it in
``tf.data``. Corrupt files are reported by path and skipped.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeship.errors import DataError
from edgeship.runtime.dataset import class_folders, find_images
from edgeship.runtime.files import atomic_path, display_path
from edgeship.runtime.image import preprocess
from edgeship.runtime.rundir import SPLIT_PARTS, RunDir, Split, split_digest
from edgeship.train.config import Normalization, input_normalization

__all__ = ["DecodedSplit", "find_classes", "list_images", "load_data", "prepare_data", "split_items"]

logger = logging.getLogger(__name__)


def find_classes(root: Path) -> list[str]:
    """Sorted names of the class sub-folders of ``root``."""
    if not root.is_dir():
        raise DataError(f"Data folder not found: {root}. Expected one sub-folder per class, e.g. {root}/cats/*.jpg.")
    classes = []
    for folder in class_folders(root):
        if folder.name != display_path(folder.name):  # bytes of another encoding: no label can hold them
            logger.warning("Skipping class folder %s: its name is not UTF-8 text, so it cannot be a label. "
                           "Rename it to include its images.", display_path(folder))
        else:
            classes.append(folder.name)
    if len(classes) < 2:
        raise DataError(
            f"{root} has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); a classifier needs "
            f"at least two. Put each class's images in its own sub-folder: {root}/<class>/<image>."
        )
    return classes


def list_images(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """Every image file in each class folder, with its class index (the runtime's lister)."""
    items = []
    for index, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        items.extend((p, index) for p in find_images(folder))
    return items


def split_items(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Stratified, seeded split of item indices into train / val / test.

    Each class contributes ``round(n * fraction)`` items to val and test, at least one when the
    fraction is positive and the class has three or more items, so every class is scored.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {name: [] for name in SPLIT_PARTS}
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        n = len(members)
        n_test = _share(n, test_fraction)
        n_val = _share(n, val_fraction)
        parts["test"].extend(members[:n_test])
        parts["val"].extend(members[n_test : n_test + n_val])
        parts["train"].extend(members[n_test + n_val :])
    return {name: np.sort(np.asarray(idx, dtype=np.int64)) for name, idx in parts.items()}


def _share(n: int, fraction: float) -> int:
    if fraction <= 0:
        return 0
    k = int(round(n * fraction))
    if n >= 3:
        k = max(k, 1)
    return min(k, max(n - 1, 0))


@dataclass
class DecodedSplit:
    """Decoded pixels of every image of a run's split, with labels and each part's indices."""

    pixels: np.ndarray           # (N, H, W, 3) uint8, possibly a read-only memmap
    labels: np.ndarray           # (N,) int64 class indices
    indices: dict[str, np.ndarray]
    split: Split
    normalization: Normalization  # the backbone's: what every stage feeds the network

    @property
    def num_classes(self) -> int:
        return len(self.split.classes)


def _decode(path: Path, size: tuple[int, int], method: str) -> tuple[np.ndarray | None, str, str]:
    """(pixels or None, content sha256, error reason)."""
    if not path.is_file():  # a pipe would block the read forever
        return None, "", "not a regular file (a broken or looping link, a pipe or a device)"
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, "", f"unreadable: {e.strerror or e}"
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return None, digest, "empty file"
    stream = io.BytesIO(data)
    stream.name = display_path(path)  # so that a decoding error names the file, not the stream object
    try:
        return preprocess(stream, size, method), digest, ""
    except DataError as e:
        return None, digest, str(e)


def _decode_all(paths: list[Path], size: tuple[int, int], method: str):
    workers = min(8, (os.cpu_count() or 2))
    with ThreadPoolExecutor(workers) as pool:  # Pillow releases the GIL while decoding
        return list(pool.map(lambda p: _decode(p, size, method), paths))


def _collect(root: Path, classes: list[str], size, method, what: str):
    items = list_images(root, classes)
    if not items:
        raise DataError(f"No images found under {root} ({what}); supported: .jpg .jpeg .png .bmp .gif .webp.")
    logger.info("Decoding %d images from %s (%s) at %dx%d ...", len(items), root, what, size[0], size[1])
    decoded = _decode_all([p for p, _ in items], size, method)
    good, skipped = [], []
    for (path, label), (pixels, digest, reason) in zip(items, decoded):
        if pixels is None:
            logger.warning("Skipping %s: %s", display_path(path), reason)
            skipped.append({"path": str(path), "reason": reason})
        else:
            good.append((path, label, pixels, digest))
    return good, skipped


def _collect_parts(config, root: Path, classes: list[str], size) -> tuple[dict[str, list], list[dict]]:
    """The decoded images of each part: split from ``data_dir``, or taken from ready-made folders."""
    good, skipped = _collect(root, classes, size, config.resize_method, "train")
    extra = {}
    for name in ("val", "test"):
        folder = getattr(config, f"{name}_dir")
        if folder:
            folder = Path(folder).resolve()
            unknown = sorted(set(find_classes(folder)) - set(classes))
            if unknown:
                raise DataError(f"{folder} has class folder(s) {unknown} that {root} lacks; both need the same classes.")
            extra[name], more = _collect(folder, classes, size, config.resize_method, name)
            skipped += more
    present = {label for _, label, _, _ in good}
    empty = [c for i, c in enumerate(classes) if i not in present]
    if empty:
        raise DataError(
            f"Class folder(s) {', '.join(empty)} in {root} have no usable image. Add images or remove the folder(s)."
        )
    labels = np.array([label for _, label, _, _ in good], dtype=np.int64)
    fractions = [0.0 if name in extra else getattr(config, f"{name}_fraction") for name in ("val", "test")]
    indices = split_items(labels, *fractions, config.seed)
    parts: dict[str, list] = {name: [good[i] for i in indices[name]] for name in SPLIT_PARTS}
    parts.update(extra)
    if not parts["train"]:
        raise DataError(f"Nothing left to train on in {root} after the split; add images.")
    if not parts["val"]:
        raise DataError("The validation split is empty: add images (at least 3 per class) or pass a val folder.")
    return parts, skipped


def prepare_data(config, run_dir: Path) -> DecodedSplit:
    """Scans, decodes once, splits, and records the split in ``run_dir``.

    Nothing is written before the data has proved usable, so a failed first attempt leaves
    no half-made run behind.
    """
    run = RunDir(run_dir)
    size = (config.image_size, config.image_size)
    root = Path(config.data_dir).resolve()
    classes = find_classes(root)
    parts, skipped = _collect_parts(config, root, classes, size)
    split = Split(data_root=str(root), classes=classes, skipped=skipped)
    for name in SPLIT_PARTS:
        setattr(split, name, [(os.path.relpath(p, root), int(label), sha) for p, label, _, sha in parts[name]])
    split.digest = split_digest((name, *entry) for name in SPLIT_PARTS for entry in split.part(name))
    flat = [item for name in SPLIT_PARTS for item in parts[name]]
    pixels = np.stack([item[2] for item in flat]).astype(np.uint8)
    labels = np.array([item[1] for item in flat], dtype=np.int64)
    _save_cache(run, config, pixels, labels)
    run.write_split(split)
    logger.info(
        "Split %s: train %d, val %d, test %d; %d file(s) skipped as undecodable",
        split.digest[:12], *(len(parts[name]) for name in SPLIT_PARTS), len(skipped),
    )
    return DecodedSplit(pixels, labels, _indices(split), split, input_normalization(config.backbone))


def _cache_paths(run: RunDir, config) -> tuple[Path, Path]:
    name = f"{config.image_size}_{config.resize_method}"
    return run.cache_dir / f"pixels_{name}.npy", run.cache_dir / f"labels_{name}.npy"


def _save_cache(run: RunDir, config, pixels: np.ndarray, labels: np.ndarray) -> None:
    for path, array in zip(_cache_paths(run, config), (pixels, labels)):
        with atomic_path(path, suffix=".npy") as tmp:
            np.save(tmp, array)


def _load_cache(run: RunDir, config, labels: np.ndarray) -> np.ndarray | None:
    """The cached pixels, memory-mapped, when the cache fits the split; else None (decode again).

    The cache comes with the run directory, whoever made it: both arrays are mapped (numpy
    refuses a header that declares more than the file holds, so nothing is allocated at a size
    the file states), and they must have the split's length, the configured size and its labels.
    """
    pixels_path, labels_path = _cache_paths(run, config)
    if not (pixels_path.exists() and labels_path.exists()):
        return None
    size = config.image_size
    try:
        pixels, cached_labels = np.load(pixels_path, mmap_mode="r"), np.load(labels_path, mmap_mode="r")
        fits = (pixels.dtype == np.uint8 and pixels.shape == (len(labels), size, size, 3)
                and cached_labels.shape == labels.shape and np.array_equal(cached_labels, labels))
    except (OSError, ValueError) as e:
        fits, reason = False, str(e)
    else:
        reason = "its arrays do not match the recorded split"
    if fits:
        return pixels
    logger.warning("The decoded cache in %s cannot be used (%s); decoding the images again", run.cache_dir, reason)
    return None


def _indices(split: Split) -> dict[str, np.ndarray]:
    offsets = np.cumsum([0] + [len(split.part(name)) for name in SPLIT_PARTS])
    return {name: np.arange(offsets[i], offsets[i + 1]) for i, name in enumerate(SPLIT_PARTS)}


def load_data(run_dir: str | os.PathLike, config) -> DecodedSplit:
    """The recorded split of a run with its decoded pixels (from the cache, else decoded again).

    Every file is first checked against the content digest recorded in the split: export and
    evaluation must score exactly the images training held out, and a changed file would
    silently break that. The error names the files that changed.
    """
    run = RunDir(run_dir)
    split = run.read_split()
    run.verify_split(split)
    samples = [sample for name in SPLIT_PARTS for sample in split.samples(name)]
    labels = np.array([label for _, label in samples], dtype=np.int64)
    cached = _load_cache(run, config, labels)
    if cached is not None:
        logger.info("Reusing the recorded split and decoded cache in %s", run_dir)
        return DecodedSplit(cached, labels, _indices(split), split, input_normalization(config.backbone))
    logger.info("Decoding the %d images of the recorded split ...", len(samples))
    decoded = _decode_all([path for path, _ in samples], (config.image_size,) * 2, config.resize_method)
    for (path, _), (pixels, _, reason) in zip(samples, decoded):
        if pixels is None:
            raise DataError(f"{path}, recorded in {run.split_path}, cannot be read now: {reason}")
    pixels = np.stack([item[0] for item in decoded])
    _save_cache(run, config, pixels, labels)
    return DecodedSplit(pixels, labels, _indices(split), split, input_normalization(config.backbone))
