"""Atomic file writes: a killed process never leaves a half-written file under its final name."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["display_path", "atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "open_lock_file", "read_json_object",
           "read_regular_file", "sha256_file", "try_flock"]


def display_path(path: str | os.PathLike | bytes) -> str:
    """A path as printable text: bytes that are not UTF-8 (a file name from another system's
    encoding) show as ``\\xNN`` escapes instead of failing the terminal's encoder.

    Example:
        >>> display_path(b"caf\\xe9.jpg")
        'caf\\\\xe9.jpg'
    """
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yields a temporary path beside ``path``; on success it is renamed to ``path``.

    For writers that want a file name rather than bytes (``np.save``, Keras ``save``).
    ``suffix`` keeps an extension such writers look at (``.h5``).

    Example:
        >>> import numpy as np
        >>> with atomic_path("cache/pixels.npy", suffix=".npy") as tmp:
        ...     np.save(tmp, np.zeros(3))
        >>> np.load("cache/pixels.npy").tolist()
        [0.0, 0.0, 0.0]
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to a temporary file beside ``path``, fsyncs it, then renames it into place."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_regular_file(path: str | os.PathLike, max_bytes: int, follow_links: bool = False) -> bytes:
    """The bytes of ``path``, a regular file of at most ``max_bytes``, opened without
    following a link unless ``follow_links`` (a path the user typed may be a link).

    For files that come from other people (a run directory's records, config files): a
    planted link, FIFO or device must not be read through, and a huge file must not be read
    into memory.

    Raises:
        FileNotFoundError: there is no such file.
        OSError: it is a link, not a regular file, larger than ``max_bytes``, or unreadable.
    """
    no_follow = 0 if follow_links else getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, os.O_RDONLY | no_follow | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{display_path(path)} is not a regular file")
        if info.st_size > max_bytes:
            raise OSError(f"{display_path(path)} has {info.st_size} bytes, more than the {max_bytes} allowed")
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(f"{display_path(path)} grew past {max_bytes} bytes while being read")
    return data


def read_json_object(path: str | os.PathLike, max_bytes: int) -> dict:
    """The JSON object in ``path``, read as :func:`read_regular_file` reads (no link, bounded).

    Raises:
        FileNotFoundError: there is no such file.
        OSError: as :func:`read_regular_file`.
        ValueError: not UTF-8, not JSON, nested beyond what the parser takes, or not an object.
    """
    try:
        data = json.loads(read_regular_file(path, max_bytes).decode("utf-8"))
    except RecursionError as e:  # arrays nested thousands deep
        raise ValueError(f"nested too deep ({e})") from e
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def sha256_file(path: str | os.PathLike) -> str:
    import hashlib

    digest = hashlib.sha256()
    # Non-blocking open, then only a regular file is read: a FIFO among the images would hang.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{display_path(path)} is not a regular file")
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def open_lock_file(path: str | os.PathLike, what: str):
    """Opens a lock file for reading and writing without following a link, and only as a
    regular file of one name: a planted link, hard link or FIFO must not make the lock truncate
    or block on it.

    Raises:
        DataError: ``path`` is a link or a hard link, not a regular file, or cannot be opened;
            ``what`` names it.
    """
    from edgeship.errors import DataError

    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        raise DataError(f"{path} cannot be opened as {what} ({e.strerror or e}); it must be a plain "
                        "file edgeship made: remove it and run again.") from e
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode) or status.st_nlink > 1:  # a hard link shares a file of the user's
        os.close(fd)
        what = "a hard link to another file" if stat.S_ISREG(status.st_mode) else "not a regular file"
        raise DataError(f"{path} is {what}; edgeship truncates its lock files, so it refuses that one: remove it "
                        "and run again.")
    return os.fdopen(fd, "r+", encoding="utf-8")


def try_flock(handle, blocking: bool = False) -> bool:
    """Takes an exclusive advisory ``flock`` on an open file: True once held, False when another
    process holds it (only without ``blocking``). The system releases it when the holder exits."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock, nothing is guarded
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except OSError:
        if blocking:
            raise
        return False
