"""Pictures drawn with Pillow (the runtime carries no plotting library): a confusion matrix, and
accuracy against latency with its Pareto front.

Example:
    >>> image = confusion_image([[5, 1], [0, 6]], ["cat", "dog"])
    >>> image.mode, image.size[0] > 100
    ('RGB', True)
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["confusion_image", "tradeoff_image"]

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


_SERIES = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _axis(values: Sequence[float], log: bool) -> tuple[float, float]:
    low, high = min(values), max(values)
    if log:
        return np.log10(low) - 0.05, np.log10(high) + 0.05
    pad = (high - low) * 0.08 or max(abs(high) * 0.05, 0.5)
    return low - pad, high + pad


def _label(draw: ImageDraw.ImageDraw, text: str, x: int, y: int, font, taken: list) -> None:
    """Writes ``text`` beside the dot at ``(x, y)`` where it overlaps no earlier label; skips it
    when every place is taken (points that close read as one in the table anyway)."""
    width = _width(draw, text, font)
    for dx, dy in ((7, -14), (7, 2), (-7 - width, -14), (-7 - width, 2), (7, -28), (7, 16)):
        box = (x + dx, y + dy, x + dx + width, y + dy + 12)
        if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in taken):
            taken.append(box)
            draw.text(box[:2], text, fill=_INK, font=font)
            return


def _join_fronts(draw: ImageDraw.ImageDraw, points: Sequence[dict], place: Callable[[dict], tuple[int, int]]) -> None:
    # Each device has its own front (a phone's fastest variant does not compete with the desk's):
    # joining across groups would draw a trade-off no one can make.
    for group in dict.fromkeys(p.get("group") for p in points):
        front = sorted((p for p in points if p.get("front") and p.get("group") == group), key=lambda p: p["latency_ms"])
        if len(front) > 1:
            draw.line([place(p) for p in front], fill=(120, 120, 120), width=2)


def tradeoff_image(points: Sequence[dict], title: str = "") -> Image.Image:
    """Accuracy against latency, one dot per point; the Pareto front joined and filled.

    Args:
        points: ``label``, ``latency_ms``, ``accuracy`` (percent), ``series`` (colour key, e.g.
            the thread count), ``front`` (no other point is as fast and as accurate) and,
            optionally, ``group`` (the device: each group's front is joined on its own).
        title: drawn above the plot.

    Example:
        >>> image = tradeoff_image([{"label": "int8", "latency_ms": 2.0, "accuracy": 91.0, "series": "1 thread",
        ...                          "front": True}, {"label": "float32", "latency_ms": 6.0, "accuracy": 91.5,
        ...                          "series": "1 thread", "front": True}])
        >>> image.size
        (760, 480)
    """
    width, height, left, right, top, bottom = 760, 480, 70, 170, 66, 56
    image = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, small = _font(13), _font(11)
    latencies = [p["latency_ms"] for p in points]
    log = min(latencies) > 0 and max(latencies) / min(latencies) > 8  # spans an order of magnitude: log axis
    (x0, x1), (y0, y1) = _axis(latencies, log), _axis([p["accuracy"] for p in points], False)
    plot_w, plot_h = width - left - right, height - top - bottom

    def place(point: dict) -> tuple[int, int]:
        x = np.log10(point["latency_ms"]) if log else point["latency_ms"]
        return (int(left + (x - x0) / (x1 - x0) * plot_w), int(top + (y1 - point["accuracy"]) / (y1 - y0) * plot_h))

    draw.text((8, 8), title or "Accuracy against latency", fill=_INK, font=font)
    draw.text((8, 28), "filled and joined: the Pareto front (nothing else is both faster and more accurate)",
              fill=_INK, font=small)
    draw.rectangle((left, top, left + plot_w, top + plot_h), outline=(160, 160, 160))
    for i in range(5):
        fraction = i / 4
        x_value, y_value = x0 + (x1 - x0) * fraction, y1 - (y1 - y0) * fraction
        tick = f"{10 ** x_value:.3g}" if log else f"{x_value:.3g}"
        draw.text((left + int(fraction * plot_w) - _width(draw, tick, small) // 2, top + plot_h + 6), tick, fill=_INK,
                  font=small)
        draw.text((left - 8 - _width(draw, f"{y_value:.1f}", small), top + int(fraction * plot_h) - 6),
                  f"{y_value:.1f}", fill=_INK, font=small)
    x_title = "median latency, ms" + (" (log scale)" if log else "")
    draw.text((left + (plot_w - _width(draw, x_title, small)) // 2, height - 22), x_title, fill=_INK, font=small)
    draw.text((8, top - 16), "test accuracy %", fill=_INK, font=small)
    series = list(dict.fromkeys(str(p["series"]) for p in points))
    colours = {name: _SERIES[i % len(_SERIES)] for i, name in enumerate(series)}
    _join_fronts(draw, points, place)
    taken: list[tuple[int, int, int, int]] = []
    for point in sorted(points, key=lambda p: not p.get("front")):  # the front's labels get the free places
        x, y = place(point)
        colour = colours[str(point["series"])]
        draw.ellipse((x - 5, y - 5, x + 5, y + 5), fill=colour if point.get("front") else _BACKGROUND,
                     outline=colour, width=2)
        _label(draw, str(point["label"]), x, y, small, taken)
    for i, name in enumerate(series):
        y = top + 6 + 20 * i
        draw.ellipse((width - right + 16, y, width - right + 26, y + 10), fill=colours[name])
        draw.text((width - right + 32, y - 2), name, fill=_INK, font=small)
    return image
