"""Decoding many photos into the decode cache, on every core.

Pillow's JPEG decoder releases the GIL for part of its work, edgeship's resize (numpy's
gathers and casts on rows of a few hundred values) hardly at all: two threads decode a
320x240 JPEG 1.5x as fast as one and resize it 1.1x (``benchmarks/dataset_scale.py``, on a
machine where two processes of a pure loop ran 1.08x one). So :func:`fill_cache` decodes in
worker processes, started fresh as ``python -P -m edgeship.runtime.decode_worker`` (a forked
copy of a process that runs TensorFlow's threads can deadlock, and ``multiprocessing``'s
``spawn`` would run the user's own script again in every worker), each importing only
edgeship's TensorFlow-free runtime. Workers return
only the content digest: the pixels travel through the cache's files, never through the
parent's memory. ``num_workers=1`` decodes in-process, which is faster when the machine gives
this process no second core.

Example:
    >>> import tempfile
    >>> from edgeship.runtime.decode_cache import DecodeCache
    >>> results, stats = fill_cache(DecodeCache(tempfile.mkdtemp()), [], (224, 224), "bilinear")
    >>> stats.decoded
    0
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgeship.errors import DataError
from edgeship.runtime.child_process import module_command
from edgeship.runtime.decode_cache import DecodeCache
from edgeship.runtime.files import display_path
from edgeship.runtime.image import preprocess

__all__ = ["FillStats", "decode_file", "default_decode_workers", "fill_cache"]

_MIN_PARALLEL = 128            # fewer small photos decode faster in-process than workers start
_MIN_PARALLEL_BYTES = 8 << 20  # ... unless they are large: two 4000x3000 JPEGs already pay for it


@dataclass
class FillStats:
    """What one :func:`fill_cache` did: photos decoded, found in the cache, unreadable."""

    decoded: int = 0
    reused: int = 0
    failed: int = 0

    def __add__(self, other: "FillStats") -> "FillStats":
        return FillStats(self.decoded + other.decoded, self.reused + other.reused, self.failed + other.failed)


def default_decode_workers() -> int:
    """One decoding process per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS
        return max(1, os.cpu_count() or 1)


def _read(path: Path) -> tuple[bytes, str, str]:
    """(content, sha256, error reason)."""
    if not path.is_file():  # a pipe would block the read forever
        return b"", "", "not a regular file (a broken or looping link, a pipe or a device)"
    try:
        data = path.read_bytes()
    except OSError as e:
        return b"", "", f"unreadable: {e.strerror or e}"
    digest = hashlib.sha256(data).hexdigest()
    return data, digest, "" if data else "empty file"


def _decode_bytes(data: bytes, path: Path, size: tuple[int, int], method: str) -> tuple[np.ndarray | None, str]:
    stream = io.BytesIO(data)
    stream.name = display_path(path)  # so that a decoding error names the file, not the stream object
    try:
        return preprocess(stream, size, method), ""
    except DataError as e:
        return None, str(e)


def decode_file(path: str | os.PathLike, size: tuple[int, int], method: str) -> tuple[np.ndarray | None, str, str]:
    """One photo's model pixels, its content sha256 and, when it cannot be decoded, why.

    Returns:
        ``(pixels or None, sha256 or "", error reason or "")``.
    """
    data, digest, reason = _read(Path(path))
    if reason:
        return None, digest, reason
    pixels, reason = _decode_bytes(data, Path(path), size, method)
    return pixels, digest, reason


def _check_one(path: Path, cache: DecodeCache, size: tuple[int, int], method: str) -> tuple[str, str, bool]:
    """(sha256, error reason, whether it still needs decoding) of one photo."""
    _, digest, reason = _read(path)
    return digest, reason, not reason and not cache.has(digest, size, method)


def fill_one(path: Path, cache: DecodeCache, size: tuple[int, int], method: str) -> tuple[str, str, bool]:
    """(sha256, error reason, whether it was decoded now) of one photo, its entry written."""
    data, digest, reason = _read(path)
    if reason or cache.has(digest, size, method):
        return digest, reason, False
    pixels, reason = _decode_bytes(data, path, size, method)
    if pixels is None:
        return digest, reason, False
    cache.write(digest, size, method, pixels)
    return digest, "", True


def fill_cache(
    cache: DecodeCache,
    paths: Sequence[str | os.PathLike],
    size: tuple[int, int],
    method: str,
    num_workers: int = 0,
    progress: Callable[[], None] | None = None,
) -> tuple[list[tuple[str, str]], FillStats]:
    """Makes sure every photo of ``paths`` has its entry in ``cache``, decoding those that lack one.

    Holds the cache's fill lock for ``(size, method)``, so that processes filling the same key
    (the workers of one training cluster) take turns and the later ones find the entries made.
    A killed fill loses nothing: every entry written before stays, and the next fill reuses it.

    Args:
        num_workers: decoding processes; 0 = one per core.
        progress: called once per photo done.

    Returns:
        ``(sha256, error reason)`` per photo, in order (an empty reason: it is in the cache),
        and the counts.
    """
    paths = [Path(p) for p in paths]
    workers = num_workers or default_decode_workers()
    key = {"cache": cache, "size": tuple(size), "method": method}
    stats, results = FillStats(), []
    with cache.fill_lock(size, method):
        # First only read and hash (threads: hashlib releases the GIL), so that a run whose photos
        # are all cached starts no decoding process at all.
        with ThreadPoolExecutor(workers) as pool:
            checked = list(pool.map(partial(_check_one, **key), paths))
        missing = [i for i, (_, _, needed) in enumerate(checked) if needed]
        for digest, reason, needed in checked:
            results.append((digest, reason))
            stats.reused += not (needed or reason)
            stats.failed += bool(reason)
            if progress is not None and not needed:
                progress()
        for i, (digest, reason, decoded) in zip(missing, _map(key, [paths[i] for i in missing], workers)):
            results[i] = (digest, reason)
            stats.decoded += decoded
            stats.reused += not (decoded or reason)
            stats.failed += bool(reason)
            if progress is not None:
                progress()
    return results, stats


def _map(key: dict, paths: list[Path], workers: int):
    """:func:`fill_one` over ``paths`` in order, on ``workers`` processes when that pays for their
    start (a few hundred small photos, or a few large ones: the files' size stands for the decode's cost)."""
    size = sum(_file_size(path) for path in paths[:_MIN_PARALLEL])
    if workers <= 1 or len(paths) < 2 or (len(paths) < _MIN_PARALLEL and size < _MIN_PARALLEL_BYTES):
        yield from map(partial(fill_one, **key), paths)
        return
    yield from _in_workers(key, paths, min(workers, len(paths)))


def _in_workers(key: dict, paths: list[Path], workers: int):
    """:func:`fill_one` over ``paths`` in order, photo ``i`` on worker ``i % workers``
    (:mod:`edgeship.runtime.decode_worker`); a worker that dies is an error naming its last words."""
    # Absolute: the workers start in an empty folder of their own.
    header = json.dumps({"cache": os.path.abspath(key["cache"].root), "limit_bytes": key["cache"].limit_bytes,
                         "size": list(key["size"]), "method": key["method"]})
    with tempfile.TemporaryDirectory(prefix="edgeship-decode-") as empty:
        # stderr to a file: a worker's warnings must never fill a pipe nobody reads.
        logs = [tempfile.TemporaryFile("w+", dir=empty) for _ in range(workers)]
        children = [subprocess.Popen(module_command("edgeship.runtime.decode_worker"), cwd=empty, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log) for log in logs]
        try:
            for k, child in enumerate(children):
                threading.Thread(target=_feed, args=(child, header, paths[k::workers]), daemon=True).start()
            for i in range(len(paths)):
                yield _answer(children[i % workers], logs[i % workers], paths[i])
        finally:
            for child, log in zip(children, logs):
                if child.poll() is None:
                    child.kill()
                child.wait()
                child.stdout.close()
                log.close()


def _feed(child: subprocess.Popen, header: str, paths: list[Path]) -> None:
    try:
        child.stdin.write(header + "\n")
        for path in paths:  # JSON: a name may hold a line break, or bytes that are not UTF-8
            child.stdin.write(json.dumps(os.path.abspath(path)) + "\n")
        child.stdin.close()
    except (BrokenPipeError, ValueError):  # the worker died or was stopped: _answer says so
        pass


def _answer(child: subprocess.Popen, log, path: Path) -> tuple[str, str, bool]:
    line = child.stdout.readline()
    try:
        digest, reason, decoded = json.loads(line)
        return str(digest), str(reason), bool(decoded)
    except (ValueError, TypeError):
        child.kill()
        log.seek(0)
        tail = " ".join(log.read().split())[-300:]
        raise DataError(f"A decoding process stopped while decoding {display_path(path)} "
                        f"(exit {child.wait()}): {tail or 'no message'}. Run again with --decode-workers 1 "
                        "to decode in this process.") from None


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
