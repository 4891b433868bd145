"""Generated stand-ins for camera photos: JPEGs with smooth shading, edges and sensor noise.

They exercise what real photos do in the preprocessing tests (JPEG decoding, downscaling and
upscaling of fine detail, non-square sizes) without any file from outside the clone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["make_photo", "write_photos"]

PHOTO_SIZES = ((227, 227), (320, 240), (181, 263))  # (width, height): the real set's size, landscape, portrait


def make_photo(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """An RGB uint8 image: a lit gradient, a few soft blobs, hard-edged shapes and noise."""
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    image = rng.uniform(40, 200, 3) + 60 * (rng.uniform(-1, 1, 3) * xx[..., None] + rng.uniform(-1, 1, 3) * yy[..., None])
    for _ in range(4):  # out-of-focus blobs
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
        weight = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        image = image * (1 - weight) + rng.uniform(0, 255, 3) * weight
    for _ in range(3):  # sharp edges, where resampling differences show
        x0, y0 = rng.uniform(0, 0.8, 2)
        mask = (xx > x0) & (xx < x0 + rng.uniform(0.05, 0.3)) & (yy > y0) & (yy < y0 + rng.uniform(0.05, 0.3))
        image[mask] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 6, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def write_photos(root: Path, classes: tuple[str, ...], per_class: int, seed: int = 0,
                 sizes: tuple[tuple[int, int], ...] = PHOTO_SIZES) -> list[Path]:
    """Writes ``root/<class>/<n>.jpg`` (quality 90, (width, height) cycling through ``sizes``)."""
    rng = np.random.default_rng(seed)
    paths = []
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            width, height = sizes[len(paths) % len(sizes)]
            path = root / name / f"{name}_{n:03d}.jpg"
            Image.fromarray(make_photo(rng, width, height)).save(path, quality=90)
            paths.append(path)
    return paths
