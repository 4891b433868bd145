"""Results of big folders as JSON lines: written as they come, resumable after a kill.

One JSON object per line, flushed after each, so a killed ``predict`` over 100,000 photos
keeps every result written before it, and ``--resume`` reads them back and skips those
photos. A last line cut off by the kill is dropped (the file is cut back to its last whole
line) and that photo is done again. The file is data: lines longer than a bound, or that are
not JSON objects, stop the resume with an error naming the line, rather than being trusted.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "out.jsonl")
    >>> with JsonLines(path) as out:
    ...     out.write({"path": "a.jpg", "classes": []})
    >>> sorted(read_done(path))
    ['a.jpg']
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from edgeship.errors import DataError
from edgeship.runtime.files import display_path

__all__ = ["JsonLines", "read_done", "read_lines"]

MAX_LINE_BYTES = 1 << 20  # a prediction with a thousand classes is about 60 KB


class JsonLines:
    """Appends one JSON object per line to ``path`` (created when missing), flushed after each."""

    def __init__(self, path: str | os.PathLike, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC) | getattr(os, "O_NOFOLLOW", 0)
        try:
            self._file = os.fdopen(os.open(self.path, flags, 0o666), "w", encoding="utf-8")
        except OSError as e:
            raise DataError(f"Cannot write {display_path(self.path)}: {e.strerror or e}. Pass another --out.") from e

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "JsonLines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_done(path: str | os.PathLike, key: str = "path") -> set[str]:
    """The ``key`` of every whole line of a JSON-lines file; cuts a partial last line away.

    Raises:
        DataError: a line is too long, not a JSON object, or lacks ``key``.
    """
    return {str(record[key]) for record in read_lines(path, key)}


def read_lines(path: str | os.PathLike, key: str = "path") -> Iterator[dict]:
    """Every whole line of a JSON-lines file as a dict, one at a time (flat memory); once all
    are read, a partial last line (a kill's) is cut away.

    Raises:
        DataError: a line is too long, not a JSON object, or lacks ``key``.
    """
    path = Path(path)
    if not path.exists():
        return
    whole = 0
    with open(path, "rb") as file:
        for number, line in enumerate(iter(lambda: file.readline(MAX_LINE_BYTES + 1), b""), 1):
            if not line.endswith(b"\n"):
                if len(line) > MAX_LINE_BYTES:
                    raise DataError(f"Line {number} of {display_path(path)} is longer than {MAX_LINE_BYTES} bytes: "
                                    "not a file edgeship wrote. Pass another --out, or drop --resume.")
                break  # cut off by a kill: done again
            try:
                record = json.loads(line)
                record[key]  # a list, a string or an object without it is not ours
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"Line {number} of {display_path(path)} is not a result edgeship wrote ({e}). "
                                "Pass another --out, or drop --resume to start it afresh.") from e
            whole += len(line)
            yield record
    if whole != path.stat().st_size:
        os.truncate(path, whole)
