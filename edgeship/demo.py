"""A built-in demo data set, drawn procedurally offline in about a second.

Four classes of textured patches (checks, dots, rings, stripes) on noisy gradient backgrounds,
with random colours, positions, sizes, periods, rotations and noise, written as class folders of PNGs. It is
there to show the pipeline end to end without downloading anything; it is no substitute for
real photos when judging accuracy.

Example:
    >>> from edgeship.demo import make_demo_data
    >>> root = make_demo_data("/tmp/edgeship-demo", images_per_class=4, image_size=48)
    >>> sorted(p.name for p in root.iterdir())
    ['checks', 'dots', 'rings', 'stripes']
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from edgeship.runtime.files import atomic_write_bytes

__all__ = ["DEMO_CLASSES", "make_demo_data"]

DEMO_CLASSES = ("checks", "dots", "rings", "stripes")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    return start + (end - start) * t[..., None]


def _colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    mean = background.reshape(-1, 3).mean(axis=0)
    for _ in range(20):  # keep the pattern visible against its background
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - mean).sum() > 150:
            break
    return colour


def _pattern(kind: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """A boolean mask of ``kind`` over rotated coordinates (u, v) in pixels."""
    if kind == "stripes":
        return (u / period) % 1.0 < 0.5
    if kind == "checks":
        return (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    if kind == "dots":
        du = (u / period) % 1.0 - 0.5
        dv = (v / period) % 1.0 - 0.5
        return du * du + dv * dv < 0.09
    radius = np.hypot(u, v)  # rings, centred on the patch
    return (radius / period) % 1.0 < 0.5


def _draw(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    background = _background(rng, size)
    colour = _colour(rng, background)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    radius = rng.uniform(0.3, 0.55) * size
    cx, cy = rng.uniform(0.3 * size, 0.7 * size, 2)
    angle = rng.uniform(0, np.pi)
    dx, dy = xx - cx, yy - cy
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    period = rng.uniform(0.1, 0.22) * size
    mask = _pattern(kind, u, v, period) & (dx * dx + dy * dy < radius * radius)
    pixels = np.where(mask[..., None], colour, background)
    pixels += rng.normal(0, rng.uniform(2, 14), pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def make_demo_data(
    root: str | os.PathLike, images_per_class: int = 100, image_size: int = 96, seed: int = 0
) -> Path:
    """Writes ``root/<class>/<n>.png`` for each of :data:`DEMO_CLASSES`; returns ``root``.

    Existing files are kept, so calling it again is cheap and does not change the data.
    """
    import io

    root = Path(root)
    for index, kind in enumerate(DEMO_CLASSES):
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, index])
        for n in range(images_per_class):
            path = folder / f"{kind}_{n:04d}.png"
            pixels = _draw(kind, rng, image_size)  # drawn even when present, so the sequence stays fixed
            if path.exists():
                continue
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            atomic_write_bytes(path, buffer.getvalue())
    return root
