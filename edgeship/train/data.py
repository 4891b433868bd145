"""Data: scan class folders, decode every image once, split, and record the split.

Every photo is decoded and resized with the runtime's own :func:`preprocess` (one
definition, so training sees what the device will see) into the machine-wide decode cache
(:mod:`edgeship.runtime.decode_cache`), once per (content, size, resize method): a second run
on the same photos decodes nothing. The run's own pixels are then written, row by row, into
one ``uint8`` ``.npy`` array in the run directory, atomically, and read back as a memory map,
so memory stays flat whatever the data set's size. Epochs read batches from that map;
``tfdata.py`` augments them in ``tf.data``. Corrupt files are reported by path and skipped.
"""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeship.errors import DataError
from edgeship.progress import progress
from edgeship.runtime.dataset import class_folders, find_images
from edgeship.runtime.decode_cache import DecodeCache
from edgeship.runtime.decoding import FillStats, decode_file, fill_cache
from edgeship.runtime.files import atomic_path, display_path
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

    pixels: np.ndarray           # (N, H, W, 3) uint8, a read-only memory map of the run's array
    labels: np.ndarray           # (N,) int64 class indices
    indices: dict[str, np.ndarray]
    split: Split
    normalization: Normalization  # the backbone's: what every stage feeds the network
    decode_stats: FillStats | None = None  # photos decoded now / found in the decode cache

    @property
    def num_classes(self) -> int:
        return len(self.split.classes)


def _decode_cache(config) -> DecodeCache:
    return DecodeCache(config.cache_dir or None)


def _fill(config, paths: list[Path], what: str) -> tuple[list[tuple[str, str]], FillStats]:
    """Every photo of ``paths`` into the decode cache; ``(sha256, error reason)`` of each."""
    cache = _decode_cache(config)
    size = (config.image_size, config.image_size)
    with progress(len(paths), f"decoding {what}") as update:
        results, stats = fill_cache(cache, paths, size, config.resize_method, config.decode_workers, update)
    logger.info("%s: %d photo(s) decoded, %d found in the decode cache (%s), %d unreadable", what, stats.decoded,
                stats.reused, display_path(cache.root), stats.failed)
    return results, stats


def _collect(config, root: Path, classes: list[str], what: str):
    items = list_images(root, classes)
    if not items:
        raise DataError(f"No images found under {root} ({what}); supported: .jpg .jpeg .png .bmp .gif .webp.")
    logger.info("Preparing %d images from %s (%s) at %dx%d ...", len(items), root, what, config.image_size,
                config.image_size)
    decoded, stats = _fill(config, [p for p, _ in items], what)
    good, skipped = [], []
    for (path, label), (digest, reason) in zip(items, decoded):
        if reason:
            logger.warning("Skipping %s: %s", display_path(path), reason)
            skipped.append({"path": str(path), "reason": reason})
        else:
            good.append((path, label, digest))
    return good, skipped, stats


def _collect_parts(config, root: Path, classes: list[str]) -> tuple[dict[str, list], list[dict], FillStats]:
    """The decoded images of each part: split from ``data_dir``, or taken from ready-made folders."""
    good, skipped, stats = _collect(config, root, classes, "train")
    extra = {}
    for name in ("val", "test"):
        folder = getattr(config, f"{name}_dir")
        if folder:
            folder = Path(folder).resolve()
            unknown = sorted(set(find_classes(folder)) - set(classes))
            if unknown:
                raise DataError(f"{folder} has class folder(s) {unknown} that {root} lacks; both need the same classes.")
            extra[name], more, more_stats = _collect(config, folder, classes, name)
            skipped += more
            stats = stats + more_stats
    present = {label for _, label, _ in good}
    empty = [c for i, c in enumerate(classes) if i not in present]
    if empty:
        raise DataError(
            f"Class folder(s) {', '.join(empty)} in {root} have no usable image. Add images or remove the folder(s)."
        )
    labels = np.array([label for _, label, _ in good], dtype=np.int64)
    fractions = [0.0 if name in extra else getattr(config, f"{name}_fraction") for name in ("val", "test")]
    indices = split_items(labels, *fractions, config.seed)
    parts: dict[str, list] = {name: [good[i] for i in indices[name]] for name in SPLIT_PARTS}
    parts.update(extra)
    if not parts["train"]:
        raise DataError(f"Nothing left to train on in {root} after the split; add images.")
    if not parts["val"]:
        raise DataError("The validation split is empty: add images (at least 3 per class) or pass a val folder.")
    return parts, skipped, stats


def prepare_data(config, run_dir: Path) -> DecodedSplit:
    """Scans, decodes once (into the decode cache), splits, records the split in ``run_dir``
    and writes the run's pixel array.

    Nothing is written to the run before the data has proved usable, so a failed first
    attempt leaves no half-made run behind (the decode cache keeps what was decoded).
    """
    run = RunDir(run_dir)
    root = Path(config.data_dir).resolve()
    classes = find_classes(root)
    parts, skipped, stats = _collect_parts(config, root, classes)
    split = Split(data_root=str(root), classes=classes, skipped=skipped)
    for name in SPLIT_PARTS:
        setattr(split, name, [(os.path.relpath(p, root), int(label), sha) for p, label, sha in parts[name]])
    split.digest = split_digest((name, *entry) for name in SPLIT_PARTS for entry in split.part(name))
    flat = [item for name in SPLIT_PARTS for item in parts[name]]
    labels = np.array([label for _, label, _ in flat], dtype=np.int64)
    pixels = _write_pixels(run, config, [(path, sha) for path, _, sha in flat], labels, split.digest)
    run.write_split(split)
    _decode_cache(config).evict()
    logger.info(
        "Split %s: train %d, val %d, test %d; %d file(s) skipped as undecodable",
        split.digest[:12], *(len(parts[name]) for name in SPLIT_PARTS), len(skipped),
    )
    return DecodedSplit(pixels, labels, _indices(split), split, input_normalization(config.backbone), stats)


def _write_pixels(run: RunDir, config, entries: list[tuple[Path, str]], labels: np.ndarray,
                  split_digest: str) -> np.ndarray:
    """The run's ``(N, H, W, 3)`` array, memory-mapped: linked from the decode cache when an
    earlier run kept the same photos in the same order, else written one photo at a time from
    the cache's entries, to a temporary name renamed into place, and kept for later runs.
    """
    pixels_path, labels_path = run.pixels_paths(config.image_size, config.resize_method)
    cache, size, method = _decode_cache(config), (config.image_size, config.image_size), config.resize_method
    digests = [digest for _, digest in entries]
    pixels_path.parent.mkdir(parents=True, exist_ok=True)
    if not cache.link_array(digests, size, method, pixels_path):
        crc = _assemble(pixels_path, cache, entries, size, method)
        cache.keep_array(pixels_path, digests, size, method, crc)
    with atomic_path(labels_path, suffix=".npy") as tmp:
        np.save(tmp, labels)
    run.write_pixels_record(split_digest, config.image_size, config.resize_method)
    return np.load(pixels_path, mmap_mode="r")


def _assemble(pixels_path: Path, cache: DecodeCache, entries: list[tuple[Path, str]], size, method) -> int:
    """Writes the ``.npy`` row by row; returns the CRC-32 of the whole file.

    Rows are written with plain file writes, not through a writable map: written pages of a
    map count in the process's resident memory until the map closes, the page cache does not.
    """
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (len(entries), *size, 3)}
    with atomic_path(pixels_path, suffix=".npy") as tmp, open(tmp, "wb") as file:
        np.lib.format.write_array_header_2_0(file, header)
        file.flush()
        crc = zlib.crc32(tmp.read_bytes())
        with progress(len(entries), "writing the run's pixels") as update:
            for path, digest in entries:
                row = np.ascontiguousarray(_cached_pixels(cache, path, digest, size, method)).data
                file.write(row)
                crc = zlib.crc32(row, crc)
                update()
    return crc


def _cached_pixels(cache: DecodeCache, path: Path, digest: str, size: tuple[int, int], method: str) -> np.ndarray:
    """One photo's pixels from the cache; decoded again when its entry went missing meanwhile
    (evicted by another process) or was damaged."""
    pixels = cache.read(digest, size, method)
    if pixels is not None:
        return pixels
    pixels, actual, reason = decode_file(path, size, method)
    if pixels is None or actual != digest:
        raise DataError(f"{display_path(path)} changed while its pixels were being prepared "
                        f"({reason or 'its content is not what was read before'}). Leave the data folder alone "
                        "while edgeship prepares it, and run again.")
    cache.write(digest, size, method, pixels)
    return pixels


def _load_cache(run: RunDir, config, split: Split) -> np.ndarray | None:
    """The run's pixels, memory-mapped, when the array fits the split; else None (prepare again)."""
    try:
        return run.read_pixels(split, config.image_size, config.resize_method)
    except DataError as e:
        logger.warning("The decoded pixels in %s cannot be used (%s); preparing them again", run.cache_dir, e)
        return None


def _indices(split: Split) -> dict[str, np.ndarray]:
    return {name: np.arange(split.rows(name).start, split.rows(name).stop) for name in SPLIT_PARTS}


def load_data(run_dir: str | os.PathLike, config) -> DecodedSplit:
    """The recorded split of a run with its decoded pixels (the run's array, else rebuilt
    through the decode cache).

    Every file is first checked against the content digest recorded in the split: export and
    evaluation must score exactly the images training held out, and a changed file would
    silently break that. The error names the files that changed.
    """
    run = RunDir(run_dir)
    split = run.read_split()
    run.verify_split(split)
    samples = [sample for name in SPLIT_PARTS for sample in split.samples(name)]
    labels = split.labels()
    normalization = input_normalization(config.backbone)
    cached = _load_cache(run, config, split)
    if cached is not None:
        logger.info("Reusing the recorded split and decoded pixels in %s", run_dir)
        return DecodedSplit(cached, labels, _indices(split), split, normalization)
    decoded, stats = _fill(config, [path for path, _ in samples], "the recorded split")
    for (path, _), (_, reason) in zip(samples, decoded):
        if reason:
            raise DataError(f"{path}, recorded in {run.split_path}, cannot be read now: {reason}")
    pixels = _write_pixels(run, config, [(path, digest) for (path, _), (digest, _) in zip(samples, decoded)], labels,
                           split.digest)
    return DecodedSplit(pixels, labels, _indices(split), split, normalization, stats)
