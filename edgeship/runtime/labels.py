"""Label files: one class per line, or ``<index> <label>`` lines as Coral's label files have.

Label files come from model zoos and strangers as models do, so their sizes are bounded before
anything is allocated from them: at most :data:`MAX_LABEL_BYTES` of text, :data:`MAX_CLASSES`
lines, and no index far beyond the model's outputs (``100000000 dog`` would otherwise make a
list of a hundred million slots).

Example:
    >>> parse_labels("0 cat\\n2 dog\\n")
    ['cat', '', 'dog']
    >>> parse_labels("cat\\ndog\\n")
    ['cat', 'dog']
"""

from __future__ import annotations

import logging
import os
import re
import stat

from edgeship.errors import DataError
from edgeship.runtime.files import display_path

__all__ = ["MAX_CLASSES", "MAX_LABEL_BYTES", "parse_embedded_labels", "parse_labels", "read_labels"]

logger = logging.getLogger(__name__)

# ImageNet-21k, the largest label set in common use, has 21,843 classes in 0.3 MB of names.
MAX_CLASSES = 100_000
MAX_LABEL_BYTES = 16 << 20
# An indexed file may skip indices (COCO's 80 labels run to 90) and name a few classes the model
# lacks; beyond this many past its outputs or lines, an index is damage, not a class.
_INDEX_ALLOWANCE = 1000
# "3 dog", "3: dog", "3  dog": an index, then a separator of spaces and/or a colon.
_INDEXED_LINE = re.compile(r"^\s*(\d+)\s*[:\s]\s*(\S.*?)\s*$")
# What str.splitlines() ends a line at ("\r\n" counts once).
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def _check_line_count(text: str, source: str) -> None:
    """Refuses a text of more than :data:`MAX_CLASSES` lines before it is split into a list."""
    breaks = sum(text.count(character) for character in _LINE_BREAKS) - text.count("\r\n")
    if breaks > MAX_CLASSES:
        raise DataError(f"{source} has {breaks:,} lines; a label file has one line per class, and at most "
                        f"{MAX_CLASSES:,} classes. Pass the model's own label file.")


def parse_labels(text: str, num_classes: int | None = None, source: str = "the label file") -> list[str]:
    """Labels by output index from a label file's text.

    The ``<index> <label>`` form is recognised only when every non-empty line has it and no
    index repeats, so that plain labels starting with a digit stay plain. Indices missing
    from an indexed file give empty labels, keeping every label at its output index.

    Args:
        text: the label file's content.
        num_classes: the model's number of outputs, when known: indices are checked against it.
        source: names the file in errors.

    Raises:
        DataError: more than :data:`MAX_CLASSES` lines, or an index far beyond the model's
            outputs (or, without ``num_classes``, beyond the file's own lines); the error
            names the line.
    """
    _check_line_count(text, source)
    lines = [line.rstrip("\r") for line in text.splitlines()]
    while lines and not lines[-1].strip():
        lines.pop()
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    matches = [_INDEXED_LINE.match(line) for _, line in numbered]
    if numbered and all(matches):
        indices = [_index(m.group(1)) for m in matches]
        if len(set(indices)) == len(indices):
            limit = min(MAX_CLASSES, max(num_classes or 0, 2 * len(numbered)) + _INDEX_ALLOWANCE)
            _check_indices(numbered, indices, limit, num_classes, source)
            labels = [""] * (max(indices) + 1)
            for index, match in zip(indices, matches):
                labels[index] = match.group(2)
            return labels
    return [line.strip() for line in lines]


def _index(digits: str) -> int | str:
    # int() refuses more than 4,300 digits (and is slow long before); such an index is refused
    # by _check_indices anyway, and compares unequal to every other index as it should.
    return int(digits) if len(digits) <= 4000 else digits.lstrip("0")


def _check_indices(numbered: list[tuple[int, str]], indices: list[int | str], limit: int, num_classes: int | None,
                   source: str) -> None:
    """Refuses the first index at ``limit`` or beyond, naming its line."""
    for (number, line), index in zip(numbered, indices):
        if isinstance(index, str) or index >= limit:
            if limit >= MAX_CLASSES:
                beyond = f"the {MAX_CLASSES:,} classes a label file can have"
            elif num_classes is not None:
                beyond = f"the model's {num_classes:,} outputs"
            else:
                beyond = f"the file's {len(numbered):,} label line(s)"
            raise DataError(f"{source}, line {number} ({line.strip()[:60]!r}): class index {str(index)[:20]} is "
                            f"far beyond {beyond}; an indexed label file gives each output's index. Fix or remove "
                            "that line.")


def parse_embedded_labels(text: str, num_classes: int | None, name: str) -> list[str] | None:
    """Labels from the label file a model carries (either form); None, with a warning naming the
    model, when they break :func:`parse_labels`' bounds: the model still runs, labels by index."""
    try:
        return parse_labels(text, num_classes, source=f"{name}: its embedded label file")
    except DataError as e:
        logger.warning("%s Running without those labels, so classes show as numbers; pass --labels FILE.", e)
        return None


def read_labels(path: str | os.PathLike, num_classes: int | None = None) -> list[str]:
    """Reads a label file (see :func:`parse_labels`).

    Raises:
        DataError: the file is missing, unreadable, larger than :data:`MAX_LABEL_BYTES`, has no
            labels, or breaks :func:`parse_labels`' bounds.
    """
    name = display_path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a folder, or a pipe that would block the read
            raise DataError(f"Label file {name} is not a regular file. Pass a text file, one label per line.")
        # Latin-1 and other legacy encodings keep their lines, with unknown bytes shown as such.
        with open(path, encoding="utf-8", errors="replace") as file:
            text = file.read(MAX_LABEL_BYTES + 1)  # characters: at least as many bytes
    except OSError as e:
        raise DataError(f"Cannot read label file {name}: {e.strerror or e}. Pass a text file, one label per line.") from e
    if len(text) > MAX_LABEL_BYTES:
        raise DataError(f"Label file {name} is larger than {MAX_LABEL_BYTES >> 20} MB; a label file holds one short "
                        "line per class. Pass the model's own label file.")
    if "\x00" in text:
        raise DataError(f"Label file {name} is binary, not text (an image or a model?). Pass a text file, one label per line.")
    labels = parse_labels(text, num_classes, source=f"Label file {name}")
    if not any(labels):
        raise DataError(f"Label file {name} has no labels; expected one label per line.")
    return labels
