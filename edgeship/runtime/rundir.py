"""The run directory: the one module that knows its file names and formats.

``edgeship train`` writes a run directory; ``export``, ``eval --run``, ``validate --run`` and
``run`` read it. Its layout::

    RUN/config.json       the resolved TrainConfig          RUN/split.json   the recorded split
    RUN/labels.txt        one class per line                 RUN/model.h5     the best float model
    RUN/history.json      per-epoch training curves          RUN/metrics.json (+ .md) test metrics
    RUN/cache/            decoded pixels (a memory map, with the digest of the split it holds)
    RUN/checkpoints/      resume state
    RUN/export/           the exported .tflite files, report.json, report.md, predictions.json
    RUN/summary.json (+ .md)  the table of ``edgeship run``
    RUN/report.html       the report page (``edgeship report``), one self-contained file
    RUN/report_disagreements.json  every test image whose class int8 changed, closest calls first
    RUN/layer_drift.json  per-layer drift of each variant (benchmarks/layer_drift.py), when measured
    RUN/bench/            bench.json, bench.md, bench.png of `edgeship bench RUN` (the latency matrix)

``split.json`` records the data root and, for every image, its part, path, class and the
sha256 of its content, so that every later stage scores exactly the images training held out
and refuses, naming them, files that changed since.

Example:
    >>> run = RunDir("runs/flowers")
    >>> run.split_path.name, run.export_dir.name
    ('split.json', 'export')
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from edgeship.errors import ConfigError, DataError, EdgeshipError, RunBusyError
from edgeship.runtime.files import (atomic_write_json, atomic_write_text, open_lock_file, read_json_object, sha256_file,
                                    try_flock)

__all__ = ["SPLIT_PARTS", "RunDir", "Split", "split_digest"]

SPLIT_PARTS = ("train", "val", "test")
_LOCK = ".lock"
_EXPORT = "export"
_STAGING_PREFIX = ".export-"       # one version of the export folder; ``export`` links to one
_EXPORT_LINK = ".export-link-"     # the new link, before it is renamed over ``export``
_STAGING = re.compile(r"\.export-[0-9a-f]{12}")
_MAX_JSON_BYTES = 1 << 30          # a split of a million images is about 200 MB


@dataclass
class Split:
    """Which image is in which part, relative to ``data_root``: ``(path, class, sha256)``."""

    data_root: str
    classes: list[str]
    train: list[tuple[str, int, str]] = field(default_factory=list)
    val: list[tuple[str, int, str]] = field(default_factory=list)
    test: list[tuple[str, int, str]] = field(default_factory=list)
    digest: str = ""
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"} of undecodable files

    def part(self, name: str) -> list[tuple[str, int, str]]:
        if name not in SPLIT_PARTS:
            raise DataError(f"Unknown split part {name!r}; expected one of {', '.join(SPLIT_PARTS)}.")
        return getattr(self, name)

    def samples(self, name: str) -> list[tuple[Path, int]]:
        """``(absolute path, class index)`` of every image of one part."""
        root = Path(self.data_root)
        return [(root / rel, label) for rel, label, _ in self.part(name)]

    def labels(self) -> np.ndarray:
        """The class index of every image, parts in order: the rows of the run's pixel array."""
        return np.array([label for name in SPLIT_PARTS for _, label, _ in self.part(name)], dtype=np.int64)

    def digests(self) -> list[str]:
        """The content sha256 of every image, parts in order: the key of the run's pixel array."""
        return [digest for name in SPLIT_PARTS for _, _, digest in self.part(name)]

    def rows(self, name: str) -> slice:
        """Where one part's images are in the run's pixel array."""
        start = sum(len(self.part(other)) for other in SPLIT_PARTS[:SPLIT_PARTS.index(name)])
        return slice(start, start + len(self.part(name)))

    def to_dict(self) -> dict:
        return {
            "data_root": self.data_root,
            "digest": self.digest,
            "classes": self.classes,
            **{name: [list(item) for item in self.part(name)] for name in SPLIT_PARTS},
            "skipped": self.skipped,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Split":
        classes = [str(c) for c in data["classes"]]
        parts = {}
        for name in SPLIT_PARTS:
            entries = [(str(e[0]), int(e[1]), str(e[2]) if len(e) > 2 else "") for e in data[name]]
            if any(not 0 <= label < len(classes) for _, label, _ in entries):
                raise ValueError(f"class indices of the {name} part outside the {len(classes)} classes")
            outside = [rel for rel, _, _ in entries if not is_inside_relative(rel)]
            if outside:
                raise ValueError(f"{len(outside)} path(s) of the {name} part leave the data root "
                                 f"({', '.join(map(repr, outside[:3]))}): entries must be relative, without '..'")
            parts[name] = entries
        return cls(str(data["data_root"]), classes, **parts, digest=str(data.get("digest", "")),
                   skipped=list(data.get("skipped", [])))


def is_inside_relative(rel: str) -> bool:
    """Whether ``rel`` names a file below the folder it is joined to: relative, no ``..``.

    A recorded split comes from whoever made the run; an absolute entry or one with ``..``
    would make later stages open (and hash) any file on the machine.

    Example:
        >>> is_inside_relative("roses/1.jpg"), is_inside_relative("../etc/hostname"), is_inside_relative("/etc/hostname")
        (True, False, False)
    """
    path = PurePosixPath(rel.replace("\\", "/"))
    return bool(rel) and "\0" not in rel and not path.is_absolute() and not PureWindowsPath(rel).drive \
        and ".." not in path.parts


def split_digest(entries) -> str:
    """sha256 over ``(part, relative path, class, content sha256)`` of every image, in order.

    Example:
        >>> split_digest([("train", "a/1.jpg", 0, "ab")])[:12]
        '4aa79ddfdde4'
    """
    hasher = hashlib.sha256()
    for name, rel, label, content in entries:
        hasher.update(f"{name}\t{rel}\t{label}\t{content}\n".encode())
    return hasher.hexdigest()


class RunDir:
    """Paths and readers of one run directory. Creating one touches nothing on disk."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._links_checked = False

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    config_path = property(lambda self: self.path / "config.json")
    labels_path = property(lambda self: self.path / "labels.txt")
    split_path = property(lambda self: self.path / "split.json")
    model_path = property(lambda self: self.path / "model.h5")
    history_path = property(lambda self: self.path / "history.json")
    metrics_path = property(lambda self: self.path / "metrics.json")
    metrics_markdown_path = property(lambda self: self.path / "metrics.md")
    cache_dir = property(lambda self: self.path / "cache")

    def pixels_paths(self, image_size: int, resize_method: str) -> tuple[Path, Path]:
        """The run's decoded pixels (one ``.npy`` array in the split's order, read as a memory
        map) and their labels, at one size and resize method."""
        name = f"{int(image_size)}_{resize_method}"
        return self.cache_dir / f"pixels_{name}.npy", self.cache_dir / f"labels_{name}.npy"

    def _pixels_record_path(self, image_size: int, resize_method: str) -> Path:
        return self.pixels_paths(image_size, resize_method)[0].with_suffix(".json")

    def write_pixels_record(self, split_digest: str, image_size: int, resize_method: str) -> None:
        """Records which split the pixel array was written for (call once the array is in place)."""
        atomic_write_json(self._pixels_record_path(image_size, resize_method), {"split_digest": split_digest})

    def read_pixels(self, split: Split, image_size: int, resize_method: str) -> np.ndarray | None:
        """The run's pixel array of ``split``, memory-mapped; None when there is none.

        The array comes with the run directory, whoever made it: both arrays are mapped (numpy
        refuses a header that declares more than the file holds, so nothing is allocated at a
        size the file states), and they must have the split's length, the size and its labels,
        and, when the array's record names a split digest (runs of older versions have none),
        the split's digest.

        Raises:
            DataError: the arrays are damaged or do not fit the split (prepare them again).
        """
        pixels_path, labels_path = self.pixels_paths(image_size, resize_method)
        if not (pixels_path.exists() and labels_path.exists()):
            return None
        record_path = self._pixels_record_path(image_size, resize_method)
        if record_path.exists() and self._read_json(record_path, "part of a run", DataError).get(
                "split_digest") != split.digest:
            raise DataError(f"{pixels_path} was written for another split than the one in {self.split_path}")
        labels = split.labels()
        try:
            pixels, recorded = np.load(pixels_path, mmap_mode="r"), np.load(labels_path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DataError(f"{pixels_path} is damaged ({e})") from e
        if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8
                and pixels.shape == (len(labels), image_size, image_size, 3)
                and recorded.shape == labels.shape and np.array_equal(recorded, labels)):
            raise DataError(f"the arrays in {self.cache_dir} do not match the split recorded in {self.split_path}")
        return pixels

    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    # Resume state of training: phases done, and the best weights on validation with their record.
    state_path = property(lambda self: self.checkpoints_dir / "state.json")
    best_weights_path = property(lambda self: self.checkpoints_dir / "best.h5")
    best_record_path = property(lambda self: self.checkpoints_dir / "best.json")
    export_dir = property(lambda self: self.path / _EXPORT)
    report_path = property(lambda self: self.export_dir / "report.json")
    report_markdown_path = property(lambda self: self.export_dir / "report.md")
    predictions_path = property(lambda self: self.export_dir / "predictions.json")
    summary_path = property(lambda self: self.path / "summary.json")
    summary_markdown_path = property(lambda self: self.path / "summary.md")
    report_page_path = property(lambda self: self.path / "report.html")
    disagreements_path = property(lambda self: self.path / "report_disagreements.json")
    layer_drift_path = property(lambda self: self.path / "layer_drift.json")
    bench_dir = property(lambda self: self.path / "bench")

    @property
    def resume_files(self) -> tuple[Path, ...]:
        """What a resumed training reads: its history, phases done, and best weights."""
        return self.history_path, self.state_path, self.best_record_path, self.best_weights_path

    def eval_dir(self, model_stem: str) -> Path:
        return self.path / "eval" / model_stem

    @property
    def is_started(self) -> bool:
        """A training run began here (its config is recorded)."""
        return self.config_path.exists()

    @property
    def is_trained(self) -> bool:
        return self.metrics_path.exists() and self.model_path.exists()

    # ----------------------------------------------------------------------------- JSON files

    def _read_json(self, path: Path, what: str, error: type[EdgeshipError] = ConfigError) -> dict:
        if not self._links_checked:
            self.check_links()
            self._links_checked = True
        try:
            return read_json_object(path, _MAX_JSON_BYTES)
        except FileNotFoundError as e:
            raise error(
                f"No {path.name} in {self.path}: it is not {what}. Run `edgeship train DATA --out {self.path}` first."
            ) from e
        except (OSError, ValueError) as e:
            raise error(f"{path} is damaged ({e}); train a new run, or restore the file.") from e

    def read_config(self) -> dict:
        """The recorded TrainConfig fields (``edgeship.train.config.load_run_config`` checks them)."""
        return self._read_json(self.config_path, "a run directory")

    def write_config(self, values: dict) -> None:
        atomic_write_json(self.config_path, values)

    def read_metrics(self) -> dict:
        return self._read_json(self.metrics_path, "a finished training run")

    def write_metrics(self, metrics: dict, markdown: str) -> None:
        atomic_write_json(self.metrics_path, metrics)
        atomic_write_text(self.metrics_markdown_path, markdown)

    def write_labels(self, classes: list[str]) -> None:
        atomic_write_text(self.labels_path, "\n".join(classes) + "\n")

    def read_json(self, path: Path) -> dict:
        """Any JSON file of the run (history, report), with a clear error when damaged."""
        return self._read_json(path, "part of a finished run")

    # ----------------------------------------------------------------------------- the split

    def read_split(self) -> Split:
        data = self._read_json(self.split_path, "a run directory written by `edgeship train`", DataError)
        try:
            return Split.from_dict(data)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise DataError(f"{self.split_path} is malformed ({e}); train a new run to rewrite it.") from e

    def write_split(self, split: Split) -> None:
        atomic_write_json(self.split_path, split.to_dict())

    def verify_split(self, split: Split, parts: tuple[str, ...] = SPLIT_PARTS) -> None:
        """Checks that the images of ``parts`` are unchanged since training.

        Raises:
            DataError: naming the files that are missing or whose content changed.
        """
        root = Path(split.data_root)
        missing, changed = [], []
        for name in parts:
            for rel, _, recorded in split.part(name):
                try:
                    actual = sha256_file(root / rel)
                except OSError:
                    missing.append(rel)
                    continue
                if recorded and actual != recorded:
                    changed.append(rel)
        if missing or changed:
            raise DataError(_changed_message(self.split_path, root, missing, changed))

    # ----------------------------------------------------------------------------- concurrency

    @contextmanager
    def lock(self, stage: str):
        """Holds the run for one stage; a second ``train``/``export`` on it is refused.

        The lock is an advisory ``flock`` on ``RUN/.lock``: the operating system releases it
        when the holder exits, even when killed, so a crashed run never blocks the next one.
        The folder is checked for links first (:meth:`check_links`), and the lock file is
        opened without following one: the stage then writes only inside the run.

        Raises:
            RunBusyError: another process holds the run.
            DataError: the run holds a link edgeship did not make.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        self.check_links()
        handle = open_lock_file(self.path / _LOCK, "the run's lock file")
        try:
            if not try_flock(handle):
                handle.seek(0)
                holder = handle.read(200).strip() or "another process"
                raise RunBusyError(
                    f"{self.path} is in use ({holder}). Wait for that to finish, or pass another --out."
                )
            handle.seek(0)
            handle.truncate()
            handle.write(f"{stage} by process {os.getpid()}")
            handle.flush()
            yield self
        finally:
            handle.close()

    # ----------------------------------------------------------------------------- links

    def check_links(self) -> None:
        """Refuses a run directory that holds a symbolic link edgeship did not make.

        edgeship writes only to real folders inside the run directory. A run from someone
        else (a CI artifact, a shared drive) could otherwise carry ``eval -> /home/me`` or a
        ``.lock`` pointing at a file of the user's, and have later stages write or truncate
        there. The only links allowed are ``export`` and an interrupted swap's
        ``.export-link-*``, each naming a real ``.export-*`` folder beside it. The run
        directory itself may be a link: the user pointed at it.

        Raises:
            DataError: naming the first links found.
        """
        if not self.path.is_dir():
            return
        found = []
        for folder, dirs, files in os.walk(self.path):
            for name in dirs + files:
                path = Path(folder) / name
                if path.is_symlink() and not self._is_own_link(path):
                    found.append(path)
            if len(found) >= 5:
                break
        if found:
            shown = ", ".join(f"{p} -> {os.readlink(p)}" for p in found[:5])
            raise DataError(
                f"{self.path} holds symbolic links edgeship did not make ({shown}). edgeship writes only to real "
                "folders inside a run directory: remove the links, or copy the run without them (cp -rL)."
            )

    def _is_own_link(self, path: Path) -> bool:
        if path.parent != self.path or not (path.name == _EXPORT or path.name.startswith(_EXPORT_LINK)):
            return False
        target = os.readlink(path)
        return (_STAGING.fullmatch(target) is not None and (self.path / target).is_dir()
                and not (self.path / target).is_symlink())

    def eval_output_dir(self, model_stem: str) -> Path:
        """``RUN/eval/<model>``, checked for links, for ``eval --run`` to write its reports into."""
        self.check_links()
        return self.eval_dir(model_stem)

    # ----------------------------------------------------------------------------- export swap

    def new_export_staging(self) -> Path:
        """A fresh, uniquely named folder to write a new export into (see :meth:`publish_export`)."""
        self.remove_stale_exports()
        path = self.path / f"{_STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        return path

    def publish_export(self, staging: Path) -> None:
        """Makes ``staging`` the run's ``export/`` in one atomic step.

        ``export`` is a symbolic link to the current version; a new link replaces it with one
        ``rename``, so at every instant ``export/`` is a complete old or a complete new export.
        """
        link = self.export_dir
        if link.is_dir() and not link.is_symlink():  # a plain folder from an older layout
            link.rename(self.path / f"{_STAGING_PREFIX}{uuid.uuid4().hex[:12]}")
        temporary = self.path / f"{_EXPORT_LINK}{uuid.uuid4().hex[:12]}"
        temporary.symlink_to(staging.name, target_is_directory=True)
        os.replace(temporary, link)
        self.remove_stale_exports()

    def remove_stale_exports(self) -> None:
        """Deletes export versions that ``export/`` no longer points at (call under :meth:`lock`)."""
        import shutil

        current = os.readlink(self.export_dir) if self.export_dir.is_symlink() else None
        for path in self.path.glob(f"{_STAGING_PREFIX}*"):
            if path.name != current:
                if path.is_symlink() or path.is_file():
                    path.unlink(missing_ok=True)
                else:
                    shutil.rmtree(path, ignore_errors=True)


def _changed_message(split_path: Path, root: Path, missing: list[str], changed: list[str]) -> str:
    def listing(names: list[str]) -> str:
        shown = ", ".join(names[:5])
        return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing or unreadable ({listing(missing)})")
    if changed:
        parts.append(f"{len(changed)} changed since training ({listing(changed)})")
    return (
        f"The images recorded in {split_path} no longer match the files under {root}: {'; '.join(parts)}. "
        "Restore those files, or train a new run on the new data."
    )
