"""A confusion-matrix picture drawn with Pillow (the runtime carries no plotting library).

Example:
    >>> image = confusion_image([[5, 1], [0, 6]], ["cat", "dog"])
    >>> image.mode, image.size[0] > 100
    ('RGB', True)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["confusion_image"]

_BACKGROUND = (255, 255, 255)
_INK = (20, 20, 20)
_EMPTY = np.array([247, 251, 255], np.float64)   # light blue for 0 %
_FULL = np.array([8, 48, 107], np.float64)       # dark blue for 100 % of a row


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def _width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def confusion_image(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str = "") -> Image.Image:
    """Rows are true classes, columns predictions; shade is the share of the row, text the count.

    Args:
        matrix: square counts, as :func:`edgeship.runtime.metrics.confusion_matrix` returns.
        labels: one name per row.
        title: drawn above the grid.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    n = len(labels)
    cell = max(18, min(64, 900 // max(n, 1)))
    font, small = _font(max(9, min(16, cell // 3))), _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    names = [label if len(label) <= 24 else label[:23] + "…" for label in labels]
    margin = 12 + max((_width(probe, name, font) for name in names), default=0)
    top = 48 + margin  # column names are written vertically above the grid
    header = [title or "Confusion matrix", "rows: true class, columns: predicted; shade: share of the row"]
    width = max(margin + n * cell + 24, 16 + max(_width(probe, line, small) for line in header))
    image = Image.new("RGB", (width, top + n * cell + 16), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(header):
        draw.text((8, 8 + 18 * i), line, fill=_INK, font=small)
    totals = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    shares = counts / totals
    for row in range(n):
        y = top + row * cell
        draw.text((margin - 6 - _width(draw, names[row], font), y + cell // 3), names[row], fill=_INK, font=font)
        for column in range(n):
            x = margin + column * cell
            share = float(shares[row, column])
            colour = tuple(int(v) for v in _EMPTY + (_FULL - _EMPTY) * share)
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=colour, outline=(210, 210, 210))
            if counts[row, column] and cell >= 20:
                text = str(int(counts[row, column]))
                ink = (255, 255, 255) if share > 0.5 else _INK
                draw.text((x + (cell - _width(draw, text, font)) // 2, y + cell // 3), text, fill=ink, font=font)
    for column in range(n):
        label_image = Image.new("RGB", (margin, cell), _BACKGROUND)
        label_draw = ImageDraw.Draw(label_image)
        label_draw.text((4, cell // 3), names[column], fill=_INK, font=font)
        rotated = label_image.rotate(90, expand=True)
        image.paste(rotated, (margin + column * cell, top - margin))
    return image
