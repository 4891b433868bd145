"""Label files: one class per line, or ``<index> <label>`` lines as Coral's label files have.

Example:
    >>> parse_labels("0 cat\\n2 dog\\n")
    ['cat', '', 'dog']
    >>> parse_labels("cat\\ndog\\n")
    ['cat', 'dog']
"""

from __future__ import annotations

import os
import re
import stat

from edgeship.errors import DataError
from edgeship.runtime.files import display_path

__all__ = ["parse_labels", "read_labels"]

# "3 dog", "3: dog", "3  dog": an index, then a separator of spaces and/or a colon.
_INDEXED_LINE = re.compile(r"^\s*(\d+)\s*[:\s]\s*(\S.*?)\s*$")


def parse_labels(text: str) -> list[str]:
    """Labels by output index from a label file's text.

    The ``<index> <label>`` form is recognised only when every non-empty line has it and no
    index repeats, so that plain labels starting with a digit stay plain. Indices missing
    from an indexed file give empty labels, keeping every label at its output index.
    """
    lines = [line.rstrip("\r") for line in text.splitlines()]
    while lines and not lines[-1].strip():
        lines.pop()
    content = [line for line in lines if line.strip()]
    matches = [_INDEXED_LINE.match(line) for line in content]
    indices = [int(m.group(1)) for m in matches if m]
    if content and all(matches) and len(set(indices)) == len(indices):
        labels = [""] * (max(indices) + 1)
        for m in matches:
            labels[int(m.group(1))] = m.group(2)
        return labels
    return [line.strip() for line in lines]


def read_labels(path: str | os.PathLike) -> list[str]:
    """Reads a label file (see :func:`parse_labels`).

    Raises:
        DataError: the file is missing, unreadable or has no labels.
    """
    name = display_path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a folder, or a pipe that would block the read
            raise DataError(f"Label file {name} is not a regular file. Pass a text file, one label per line.")
        # Latin-1 and other legacy encodings keep their lines, with unknown bytes shown as such.
        with open(path, encoding="utf-8", errors="replace") as file:
            text = file.read()
    except OSError as e:
        raise DataError(f"Cannot read label file {name}: {e.strerror or e}. Pass a text file, one label per line.") from e
    if "\x00" in text:
        raise DataError(f"Label file {name} is binary, not text (an image or a model?). Pass a text file, one label per line.")
    labels = parse_labels(text)
    if not any(labels):
        raise DataError(f"Label file {name} has no labels; expected one label per line.")
    return labels
