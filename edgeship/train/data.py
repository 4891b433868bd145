"""Data: scan class folders, decode every image once, split, and record the split.

Every image is decoded and resized exactly once, with the runtime's own :func:`preprocess`
(one definition, so training sees what the device will see), into a ``uint8`` array that is
kept in the run directory. Epochs then read that array; ``tfdata.py`` augments it in
``tf.data``. Corrupt files are reported by path and skipped.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeship.errors import DataError
from edgeship.runtime.files import atomic_path, atomic_write_json
from edgeship.runtime.dataset import class_folders, find_images
from edgeship.runtime.files import display_path
from edgeship.runtime.image import preprocess

__all__ = [
    "Dataset", "Split", "find_classes", "list_images", "load_data", "load_split", "prepare_data", "split_items",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


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
            "at least two. Put each class's images in its own sub-folder: {root}/<class>/<image>."
        )
    return classes


def list_images(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """Every image file (by extension, any case, recursive) in each class folder, with its class index."""
    items = []
    for index, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        items.extend((p, index) for p in find_images(folder))
    return items


@dataclass
class Split:
    """Which file is in which split, relative to ``data_root``, with a content digest."""

    data_root: str
    classes: list[str]
    train: list[tuple[str, int]] = field(default_factory=list)
    val: list[tuple[str, int]] = field(default_factory=list)
    test: list[tuple[str, int]] = field(default_factory=list)
    digest: str = ""
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"} of undecodable files

    def to_dict(self) -> dict:
        return {
            "data_root": self.data_root,
            "digest": self.digest,
            "classes": self.classes,
            **{name: [list(item) for item in getattr(self, name)] for name in SPLITS},
            "skipped": self.skipped,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Split":
        return cls(
            data_root=data["data_root"],
            classes=list(data["classes"]),
            **{name: [(p, int(c)) for p, c in data[name]] for name in SPLITS},
            digest=data.get("digest", ""),
            skipped=list(data.get("skipped", [])),
        )


def load_split(run_dir: str | os.PathLike) -> Split:
    path = Path(run_dir) / "split.json"
    try:
        return Split.from_dict(json.loads(path.read_text()))
    except FileNotFoundError as e:
        raise DataError(f"No split.json in {run_dir}: is it a run directory written by `edgeship train`?") from e


def split_items(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Stratified, seeded split of item indices into train / val / test.

    Each class contributes ``round(n * fraction)`` items to val and test, at least one when the
    fraction is positive and the class has three or more items, so every class is scored.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {name: [] for name in SPLITS}
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
class Dataset:
    """Decoded pixels of every usable image, with labels and split indices into them."""

    pixels: np.ndarray           # (N, H, W, 3) uint8, possibly a read-only memmap
    labels: np.ndarray           # (N,) int64 class indices
    indices: dict[str, np.ndarray]
    split: Split

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


def prepare_data(config, run_dir: Path) -> Dataset:
    """Scans, decodes once, splits and records ``split.json`` in ``run_dir``.

    On resume (``split.json`` present) the recorded split is reused, so a resumed run trains
    and scores exactly the same images; the decoded pixels are reused from the cache file.
    """
    split_path = run_dir / "split.json"
    if split_path.exists():
        return load_data(run_dir, config)
    size = (config.image_size, config.image_size)
    cache_path = _cache_path(run_dir, config)
    root = Path(config.data_dir).resolve()
    classes = find_classes(root)
    good, skipped = _collect(root, classes, size, config.resize_method, "train")
    extra = {}
    for name in ("val", "test"):
        folder = getattr(config, f"{name}_dir")
        if folder:
            folder = Path(folder).resolve()
            other = find_classes(folder)
            unknown = sorted(set(other) - set(classes))
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

    labels_all = np.array([label for _, label, _, _ in good], dtype=np.int64)
    parts = split_items(
        labels_all,
        0.0 if "val" in extra else config.val_fraction,
        0.0 if "test" in extra else config.test_fraction,
        config.seed,
    )
    ordered: dict[str, list] = {name: [good[i] for i in parts[name]] for name in SPLITS}
    ordered.update(extra)
    if not ordered["train"]:
        raise DataError(f"Nothing left to train on in {root} after the split; add images.")
    if not ordered["val"]:
        raise DataError("The validation split is empty: add images (at least 3 per class) or pass a val folder.")

    split = Split(data_root=str(root), classes=classes, skipped=skipped)
    hashed = []
    for name in SPLITS:
        entries = [(os.path.relpath(p, root), int(label)) for p, label, _, _ in ordered[name]]
        setattr(split, name, entries)
        hashed += [(name, rel, label, item[3]) for (rel, label), item in zip(entries, ordered[name])]
    split.digest = _split_digest(hashed)

    flat = [item for name in SPLITS for item in ordered[name]]
    pixels = np.stack([item[2] for item in flat]).astype(np.uint8)
    labels = np.array([item[1] for item in flat], dtype=np.int64)
    counts = [len(ordered[name]) for name in SPLITS]
    indices = _indices(split)

    _save_npy(run_dir / "cache" / "labels.npy", labels)
    _save_npy(cache_path, pixels)
    atomic_write_json(split_path, split.to_dict())
    logger.info(
        "Split %s: train %d, val %d, test %d; %d file(s) skipped as undecodable",
        split.digest[:12], *counts, len(skipped),
    )
    return Dataset(pixels, labels, indices, split)


def _split_digest(entries) -> str:
    """sha256 over (part, relative path, label, file content sha256) of every image, in order."""
    hasher = hashlib.sha256()
    for name, rel, label, content in entries:
        hasher.update(f"{name}\t{rel}\t{label}\t{content}\n".encode())
    return hasher.hexdigest()


def _cache_path(run_dir: Path, config) -> Path:
    return run_dir / "cache" / f"pixels_{config.image_size}_{config.resize_method}.npy"


def _indices(split: Split) -> dict[str, np.ndarray]:
    offsets = np.cumsum([0] + [len(getattr(split, name)) for name in SPLITS])
    return {name: np.arange(offsets[i], offsets[i + 1]) for i, name in enumerate(SPLITS)}


def load_data(run_dir: str | os.PathLike, config) -> Dataset:
    """The recorded split of a run with its decoded pixels (from the cache, else decoded again).

    Decoding again checks the files against the split's digest: export and evaluation must
    score exactly the images training held out, and a changed file would silently break that.
    """
    run_dir = Path(run_dir)
    split = load_split(run_dir)
    cache_path = _cache_path(run_dir, config)
    labels_path = run_dir / "cache" / "labels.npy"
    if cache_path.exists() and labels_path.exists():
        logger.info("Reusing the recorded split and decoded cache in %s", run_dir)
        return Dataset(np.load(cache_path, mmap_mode="r"), np.load(labels_path), _indices(split), split)
    root = Path(split.data_root)
    entries = [(name, rel, label) for name in SPLITS for rel, label in getattr(split, name)]
    logger.info("Decoding the %d images of the recorded split from %s ...", len(entries), root)
    decoded = _decode_all([root / rel for _, rel, _ in entries], (config.image_size,) * 2, config.resize_method)
    for (_, rel, _), (pixels, _, reason) in zip(entries, decoded):
        if pixels is None:
            raise DataError(f"{root / rel}, recorded in {run_dir}/split.json, cannot be read now: {reason}")
    digest = _split_digest([(*entry, item[1]) for entry, item in zip(entries, decoded)])
    if digest != split.digest:
        raise DataError(
            f"The images under {root} no longer match the split recorded in {run_dir}/split.json (digest "
            f"{split.digest[:12]}): files were changed. Restore them, or train a new run on the new data."
        )
    pixels = np.stack([item[0] for item in decoded])
    labels = np.array([label for _, _, label in entries], dtype=np.int64)
    _save_npy(labels_path, labels)
    _save_npy(cache_path, pixels)
    return Dataset(pixels, labels, _indices(split), split)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)
