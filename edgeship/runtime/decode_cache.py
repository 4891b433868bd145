"""The machine-wide decode cache: each photo decoded once per (content, size, resize method).

The one module that knows the cache's layout::

    CACHE/decoded-v1/<height>x<width>-<method>/<sha[:2]>/<sha256 of the file>.px
    CACHE/decoded-v1/<height>x<width>-<method>/.fill.lock
    CACHE/decoded-v1/<height>x<width>-<method>/arrays/<key>.npy (+ .json)   a run's whole array

A run's ``(N, H, W, 3)`` array is kept too, as a hard link to the run's own file (no second
copy on disk), keyed by the digests of its photos in order: a second run on the same photos
with the same split links it instead of copying every photo again. Its record holds the
CRC-32 of the whole file, checked before each reuse.

``CACHE`` is ``--cache-dir``, else ``$EDGESHIP_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgeship``,
else ``~/.cache/edgeship``. Every entry is its own file, written to a temporary name and
renamed into place, so two processes filling the same cache never see half an entry. An
entry is data like any other file: its header (magic, height, width, channels, CRC-32 of the
pixels) must fit the key and the file's size exactly, and a damaged entry reads as missing
(the photo is decoded again). Reading an entry marks it used (its modification time), and
:meth:`DecodeCache.evict` removes the least recently used ones above the size limit.

Example:
    >>> import tempfile
    >>> cache = DecodeCache(tempfile.mkdtemp())
    >>> cache.write("ab" * 32, (2, 2), "bilinear", np.zeros((2, 2, 3), np.uint8))
    >>> cache.read("ab" * 32, (2, 2), "bilinear").shape
    (2, 2, 3)
    >>> cache.info()["entries"]
    1
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import struct
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeship.errors import ConfigError
from edgeship.runtime.files import (atomic_write_json, display_path, open_lock_file, read_json_object,
                                    read_regular_file, try_flock)
from edgeship.runtime.image import RESIZE_METHODS

__all__ = ["CACHE_DIR_ENV", "CACHE_LIMIT_ENV", "DEFAULT_LIMIT_BYTES", "DecodeCache", "cache_root", "info_text",
           "parse_size"]

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "EDGESHIP_CACHE_DIR"
CACHE_LIMIT_ENV = "EDGESHIP_CACHE_LIMIT"
DEFAULT_LIMIT_BYTES = 20 << 30   # 20 GiB: about 140,000 photos at 224 px
_LAYOUT = "decoded-v1"
_SUFFIX = ".px"
_HEADER = struct.Struct("<4sHHHxxI")  # magic, height, width, channels, padding, crc32 of the pixels
_MAGIC = b"ESPX"
_SHA = re.compile(r"[0-9a-f]{64}")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def cache_root(explicit: str | os.PathLike | None = None) -> Path:
    """Where the cache lives: ``explicit``, else ``$EDGESHIP_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/edgeship``, else ``~/.cache/edgeship``.

    Example:
        >>> cache_root("/tmp/pixels")
        PosixPath('/tmp/pixels')
    """
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "edgeship"


def parse_size(text: str) -> int:
    """Bytes from ``"20G"``, ``"500M"``, ``"1.5T"`` or a plain number of bytes.

    Example:
        >>> parse_size("1.5K"), parse_size("2G")
        (1536, 2147483648)
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ConfigError(f"Cannot read the cache size limit {text!r}: expected bytes or a number with K, M, G or T, "
                          f"e.g. {CACHE_LIMIT_ENV}=20G.")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _default_limit() -> int:
    text = os.environ.get(CACHE_LIMIT_ENV)
    return parse_size(text) if text else DEFAULT_LIMIT_BYTES


class DecodeCache:
    """The decoded pixels of photos, keyed by ``(sha256 of the file, size, resize method)``.

    Args:
        root: the cache folder (:func:`cache_root` resolves the default).
        limit_bytes: size above which :meth:`evict` removes least recently used entries
            [``$EDGESHIP_CACHE_LIMIT``, else 20 GiB].
    """

    def __init__(self, root: str | os.PathLike | None = None, limit_bytes: int | None = None):
        self.root = cache_root(root)
        self.limit_bytes = _default_limit() if limit_bytes is None else int(limit_bytes)
        if self.limit_bytes < 0:
            raise ConfigError(f"The cache size limit must be at least 0 bytes; received {self.limit_bytes}.")

    def __repr__(self) -> str:
        return f"DecodeCache({str(self.root)!r})"

    @property
    def layout_dir(self) -> Path:
        return self.root / _LAYOUT

    def key_dir(self, size: tuple[int, int], method: str) -> Path:
        if method not in RESIZE_METHODS:
            raise ConfigError(f"Unknown resize method {method!r}; expected one of {', '.join(RESIZE_METHODS)}.")
        return self.layout_dir / f"{int(size[0])}x{int(size[1])}-{method}"

    def entry_path(self, sha: str, size: tuple[int, int], method: str) -> Path:
        if not _SHA.fullmatch(sha):
            raise ValueError(f"not a sha256 hex digest: {sha!r}")
        return self.key_dir(size, method) / sha[:2] / f"{sha}{_SUFFIX}"

    def has(self, sha: str, size: tuple[int, int], method: str) -> bool:
        """Whether an entry of the right length exists (cheap: its content is checked on :meth:`read`)."""
        try:
            return self.entry_path(sha, size, method).stat().st_size == _entry_bytes(size)
        except OSError:
            return False

    def read(self, sha: str, size: tuple[int, int], method: str) -> np.ndarray | None:
        """The ``(height, width, 3)`` uint8 pixels of an entry, or None when it is missing or
        damaged (a damaged one is removed, so the next fill decodes the photo again)."""
        path = self.entry_path(sha, size, method)
        try:
            data = read_regular_file(path, _entry_bytes(size))
        except OSError:
            return None
        pixels = _parse_entry(data, size)
        if pixels is None:
            logger.warning("Decode cache entry %s is damaged; decoding its photo again", display_path(path))
            path.unlink(missing_ok=True)
            return None
        _touch(path)
        return pixels

    def write(self, sha: str, size: tuple[int, int], method: str, pixels: np.ndarray) -> None:
        """Stores one photo's pixels under a temporary name, then renames it into place."""
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        if pixels.shape != (int(size[0]), int(size[1]), 3):
            raise ValueError(f"pixels of shape {pixels.shape} do not fit the cache key's size {size}")
        payload = pixels.tobytes()
        header = _HEADER.pack(_MAGIC, pixels.shape[0], pixels.shape[1], 3, zlib.crc32(payload))
        _write_entry(self.entry_path(sha, size, method), header + payload)

    @contextmanager
    def fill_lock(self, size: tuple[int, int], method: str):
        """Holds the right to fill one (size, method) of the cache: a second process filling the
        same key waits, then finds the entries the first one wrote and decodes nothing again."""
        folder = self.key_dir(size, method)
        folder.mkdir(parents=True, exist_ok=True)
        with open_lock_file(folder / ".fill.lock", "the decode cache's lock file") as handle:
            if not try_flock(handle):
                logger.info("Waiting for another edgeship process filling the decode cache in %s ...",
                            display_path(folder))
                try_flock(handle, blocking=True)
            yield self

    def array_path(self, digests: Sequence[str], size: tuple[int, int], method: str) -> Path:
        """Where the whole array of photos ``digests``, in that order, is kept."""
        key = hashlib.sha256("\n".join(digests).encode()).hexdigest()
        return self.key_dir(size, method) / "arrays" / f"{key}.npy"

    def link_array(self, digests: Sequence[str], size: tuple[int, int], method: str, target: Path) -> bool:
        """Hard-links the kept array of ``digests`` to ``target`` (atomically); False when there
        is none, it fails its record's size or CRC, or the two folders are on different disks."""
        source = self.array_path(digests, size, method)
        try:
            record = read_json_object(source.with_suffix(".json"), 4096)
            if not (source.stat().st_size == record["bytes"] and _file_crc(source) == record["crc32"]):
                raise ValueError("size or CRC-32 differ from its record")
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("Kept array %s is unusable (%s); copying its photos again", display_path(source), e)
            source.unlink(missing_ok=True)
            return False
        _link_replace(source, target)
        _touch(source)
        return True

    def holds_array(self, path: str | os.PathLike, digests: Sequence[str], size: tuple[int, int], method: str) -> bool:
        """Whether ``path`` is this cache's own kept array of ``digests`` (the same file, linked):
        pixels this machine decoded, not an array a run directory brought with it."""
        try:
            kept, given = self.array_path(digests, size, method).stat(), os.stat(path)
        except OSError:
            return False
        return (kept.st_dev, kept.st_ino) == (given.st_dev, given.st_ino)

    def keep_array(self, source: Path, digests: Sequence[str], size: tuple[int, int], method: str, crc: int) -> None:
        """Keeps a run's finished array (``crc``: CRC-32 of its whole file) for later runs."""
        target = self.array_path(digests, size, method)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(target.with_suffix(".json"), {"bytes": source.stat().st_size, "crc32": crc})
        try:
            _link_replace(source, target)
        except OSError as e:  # another disk, or a file system without hard links: nothing is kept
            logger.debug("Not keeping %s in the decode cache: %s", display_path(source), e)

    def _entries(self) -> list[tuple[Path, os.stat_result]]:
        found = []
        listed = [*self.layout_dir.glob(f"*/??/*{_SUFFIX}"), *self.layout_dir.glob("*/arrays/*.npy")] \
            if self.layout_dir.is_dir() else []
        for path in listed:
            try:
                found.append((path, path.lstat()))
            except OSError:  # removed meanwhile by another process
                continue
        return found

    def info(self) -> dict:
        """Where the cache is, how many entries and bytes it holds, and its limit."""
        entries = self._entries()
        keys: dict[str, int] = {}
        photos = [(path, info) for path, info in entries if path.suffix == _SUFFIX]
        for path, _ in photos:
            keys[path.parent.parent.name] = keys.get(path.parent.parent.name, 0) + 1
        return {"path": str(self.root), "entries": len(photos), "arrays": len(entries) - len(photos),
                "bytes": sum(s.st_size for _, s in entries), "limit_bytes": self.limit_bytes,
                "keys": dict(sorted(keys.items()))}

    def evict(self) -> int:
        """Removes least recently used entries until the cache fits its limit; returns how many."""
        entries = self._entries()
        total = sum(s.st_size for _, s in entries)
        removed = 0
        for path, info in sorted(entries, key=lambda e: e[1].st_mtime):
            if total <= self.limit_bytes:
                break
            path.unlink(missing_ok=True)
            if path.suffix == ".npy":
                path.with_suffix(".json").unlink(missing_ok=True)
            total -= info.st_size
            removed += 1
        if removed:
            logger.info("Decode cache over its %s limit: removed %d least recently used entries",
                        _gigabytes(self.limit_bytes), removed)
        return removed

    def clear(self) -> int:
        """Removes every entry (the folder's other files are left alone); returns how many."""
        count = self.info()["entries"]
        if self.layout_dir.is_dir() and not self.layout_dir.is_symlink():
            shutil.rmtree(self.layout_dir)  # does not follow links inside
        return count


def info_text(info: dict) -> str:
    """:meth:`DecodeCache.info` as a few lines of text.

    Example:
        >>> print(info_text({"path": "/c", "entries": 2, "bytes": 3 << 30, "limit_bytes": 20 << 30,
        ...                  "keys": {"224x224-bilinear": 2}}))
        decode cache /c: 2 photo(s), 0 run array(s), 3.0 GiB of 20.0 GiB
          224x224-bilinear: 2
    """
    lines = [f"decode cache {info['path']}: {info['entries']} photo(s), {info.get('arrays', 0)} run array(s), "
             f"{_gigabytes(info['bytes'])} of {_gigabytes(info['limit_bytes'])}"]
    lines += [f"  {key}: {count}" for key, count in info["keys"].items()]
    return "\n".join(lines)


def _entry_bytes(size: tuple[int, int]) -> int:
    return _HEADER.size + int(size[0]) * int(size[1]) * 3


def _parse_entry(data: bytes, size: tuple[int, int]) -> np.ndarray | None:
    height, width = int(size[0]), int(size[1])
    if len(data) != _entry_bytes(size):
        return None
    magic, h, w, channels, crc = _HEADER.unpack_from(data)
    payload = memoryview(data)[_HEADER.size:]
    if magic != _MAGIC or (h, w, channels) != (height, width, 3) or zlib.crc32(payload) != crc:
        return None
    return np.frombuffer(data, np.uint8, offset=_HEADER.size).reshape(height, width, 3)


def _write_entry(path: Path, data: bytes) -> None:
    """Writes under a name of this process's own, then renames into place: cheaper than
    :func:`atomic_write_bytes` (no random name, no fsync: an entry is checked when read), which
    counts when a photo's decode takes a millisecond."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(temporary, flags, 0o666)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temporary, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 22), b""):
            crc = zlib.crc32(chunk, crc)
    return crc


def _link_replace(source: Path, target: Path) -> None:
    """Makes ``target`` a hard link to ``source``: linked under a temporary name, then renamed."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.link")
    temporary.unlink(missing_ok=True)
    os.link(source, temporary)
    os.replace(temporary, target)


def _touch(path: Path) -> None:
    try:
        os.utime(path, (time.time(), time.time()))
    except OSError:  # removed by another process's eviction meanwhile: the pixels were read already
        pass


def _gigabytes(count: int) -> str:
    return f"{count / (1 << 30):.1f} GiB"
