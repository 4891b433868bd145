"""Image decoding and resizing: the one preprocessing definition.

Training, evaluation and the device runtime all call :func:`preprocess`, so that an image
reaches the network identically everywhere (train/serve skew is the commonest silent
accuracy loss in this field). The result is always ``uint8`` RGB at the model's input size;
normalisation to floats happens after, from the model manifest (:func:`normalize`).

Example:
    >>> import numpy as np
    >>> pixels = resize(np.zeros((227, 227, 3), np.uint8), (160, 160), RESIZE_BILINEAR)
    >>> pixels.shape, pixels.dtype
    ((160, 160, 3), dtype('uint8'))
"""

from __future__ import annotations

import functools
import logging
import os
import re
import stat
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgeship.errors import ConfigError, DataError
from edgeship.runtime.files import display_path

__all__ = [
    "IMAGE_EXTENSIONS",
    "RESIZE_AREA",
    "RESIZE_BILINEAR",
    "RESIZE_METHODS",
    "RESIZE_NEAREST",
    "is_image_file",
    "load_image",
    "normalize",
    "preprocess",
    "resize",
    "to_grayscale",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

# TensorFlow-compatible bilinear: half-pixel centres, no antialiasing (tf.image.resize's
# default and TFLite's RESIZE_BILINEAR with half_pixel_centers=True).
RESIZE_BILINEAR = "bilinear"
# Pillow's nearest neighbour, as pycoral's examples feed their models.
RESIZE_NEAREST = "nearest"
# Box-filter averaging (antialiased): the better choice when shrinking large photos a lot.
RESIZE_AREA = "area"
# Bilinear sampling source pixel i * in / out (TF1's resize_bilinear default, "asymmetric" in
# ONNX's terms): what MediaPipe Tasks' CPU preprocessing samples, since it warps the image's
# corner coordinates onto the tensor's (image_to_tensor_converter_opencv.cc). A model trained
# with it gets the same pixels from edgeship and from a phone app using MediaPipe.
RESIZE_BILINEAR_ASYMMETRIC = "bilinear-asymmetric"
RESIZE_METHODS = (RESIZE_BILINEAR, RESIZE_NEAREST, RESIZE_AREA, RESIZE_BILINEAR_ASYMMETRIC)

# Decompression-bomb guard stays on, but at a size real camera photos never reach. Pillow itself
# only warns up to twice this (1.2 GB of RGB from a file of a few hundred KB); load_image refuses
# anything over it, from the header, before decoding.
Image.MAX_IMAGE_PIXELS = 200_000_000


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether the file name has one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_image(path: str | os.PathLike | BinaryIO) -> np.ndarray:
    """Decodes an image file (a path or an open binary file) to ``(H, W, 3)`` ``uint8`` RGB.

    EXIF orientation is applied; grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit
    images are converted to 8-bit RGB; an animated GIF gives its first frame.

    Raises:
        DataError: the file is missing, unreadable, a folder, empty, truncated or not an
            image; the message names it (an open file by its ``name`` attribute).
    """
    is_stream = hasattr(path, "read")
    name = display_path(getattr(path, "name", None) or "an image stream") if is_stream else display_path(path)
    if not is_stream:
        _check_regular_file(Path(path), name)
    try:
        with Image.open(path if is_stream else Path(path)) as image:
            _check_pixels(image)
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except FileNotFoundError as e:
        raise DataError(f"Image not found: {name}. Check the path.") from e
    except IsADirectoryError as e:
        raise DataError(f"{name} is a folder, not an image file; pass the folder itself to read the images in it.") from e
    except PermissionError as e:
        raise DataError(f"Cannot read image {name}: permission denied. Make it readable (chmod) or remove it.") from e
    except Image.DecompressionBombError as e:
        raise DataError(f"Image {name} is too large to decode: {_reason(e).rstrip('.')}. Downscale it, or remove it "
                        "from the folder.") from e
    except UnidentifiedImageError as e:
        raise DataError(
            f"Cannot decode image {name}: not an image format Pillow reads (a text or other file named "
            "like an image?). Convert it to JPEG or PNG, or remove it from the folder."
        ) from e
    except _DECODE_ERRORS as e:
        raise DataError(
            f"Cannot decode image {name}: {_reason(e)}. The file is empty, truncated or damaged; "
            "re-export it or remove it from the folder."
        ) from e


def _check_pixels(image: Image.Image) -> None:
    """Refuses, from the header alone, more pixels than Pillow's guard allows (it only warns below twice that)."""
    width, height = image.size
    if Image.MAX_IMAGE_PIXELS is not None and width * height > Image.MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError(
            f"{width}x{height} = {width * height:,} pixels, more than the {Image.MAX_IMAGE_PIXELS:,} a photo has "
            "(a decompression bomb?)")


def _check_regular_file(path: Path, name: str) -> None:
    try:
        info = path.stat()
    except FileNotFoundError as e:
        what = "a broken symbolic link" if path.is_symlink() else "not found"
        raise DataError(f"Image {name} is {what}. Check the path, or remove the link.") from e
    except OSError as e:
        raise DataError(f"Cannot read image {name}: {e.strerror or e}. Fix or remove it.") from e
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        raise DataError(f"{name} is a folder, not an image file; pass the folder itself to read the images in it.")
    if not stat.S_ISREG(mode):
        raise DataError(f"{name} is not a regular file (a pipe, socket or device named like an image); remove it.")
    if info.st_size == 0:
        raise DataError(f"Image {name} is empty (0 bytes): an interrupted copy? Copy it again or remove it.")


# What Pillow's decoders raise on damaged data, beyond OSError ("image file is truncated").
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError,
                  struct.error, zlib.error, RuntimeError, MemoryError, Image.DecompressionBombError)
_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror  # without the repeated file name
    text = _OBJECT_REPR.sub("the file", str(error)).strip()
    return text or type(error).__name__


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16-bit (or 32-bit) grayscale: Pillow's convert("L") clips instead of scaling.
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if values.max(initial=0) > 255 else 255.0
        gray = np.clip(np.rint(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def resize(pixels: np.ndarray, size: tuple[int, int], method: str = RESIZE_BILINEAR) -> np.ndarray:
    """Resizes an ``(H, W, 3)`` ``uint8`` image to ``size`` = (height, width), rounding to uint8.

    Args:
        pixels: RGB image, ``uint8``.
        size: target (height, width).
        method: one of :data:`RESIZE_METHODS`.
    """
    if method not in RESIZE_METHODS:
        raise ConfigError(f"Unknown resize method {method!r}; expected one of {', '.join(RESIZE_METHODS)}.")
    height, width = int(size[0]), int(size[1])
    if pixels.shape[:2] == (height, width):
        return np.ascontiguousarray(pixels, dtype=np.uint8)
    if method in (RESIZE_BILINEAR, RESIZE_BILINEAR_ASYMMETRIC):
        return _resize_bilinear(pixels, height, width, half_pixel=method == RESIZE_BILINEAR)
    resample = Image.Resampling.NEAREST if method == RESIZE_NEAREST else Image.Resampling.BOX
    return np.asarray(Image.fromarray(pixels).resize((width, height), resample=resample), dtype=np.uint8)


def _axis_weights(in_size: int, out_size: int, half_pixel: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # TensorFlow's HalfPixelScaler: source = (i + 0.5) * in / out - 0.5, edges clamped;
    # its LegacyScaler (asymmetric): source = i * in / out.
    offset = 0.5 if half_pixel else 0.0
    source = (np.arange(out_size, dtype=np.float64) + offset) * (in_size / out_size) - offset
    floor = np.floor(source)
    lower = np.clip(floor, 0, in_size - 1).astype(np.intp)
    upper = np.clip(floor + 1, 0, in_size - 1).astype(np.intp)
    return lower, upper, (source - floor).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _bilinear_plan(in_height: int, in_width: int, height: int, width: int, half_pixel: bool) -> tuple[np.ndarray, ...]:
    """Gather indices and weights of one resize, computed once per (input, output) shape.

    Rows are read once each (a shrink skips the rows no output needs), and columns are indexed
    on the image viewed as ``(H, W * 3)``, so every arithmetic step runs over contiguous rows
    of ``width * 3`` values rather than over 3-channel pixels.
    """
    top, bottom, y_frac = _axis_weights(in_height, height, half_pixel)
    left, right, x_frac = _axis_weights(in_width, width, half_pixel)
    rows, position = np.unique(np.concatenate([top, bottom]), return_inverse=True)
    channels = np.arange(3)
    plan = (
        rows,
        position[:height],                            # where each output row's top source row is in `rows`
        position[height:],                            # ... and its bottom source row
        y_frac[:, None],
        (left[:, None] * 3 + channels).reshape(-1),   # flat column of each output value's left source
        (right[:, None] * 3 + channels).reshape(-1),
        np.repeat(x_frac, 3),
    )
    for array in plan:
        array.flags.writeable = False  # shared between threads through the cache
    return plan


def _resize_bilinear(pixels: np.ndarray, height: int, width: int, half_pixel: bool) -> np.ndarray:
    in_height, in_width = pixels.shape[:2]
    rows, top, bottom, y_frac, left, right, x_frac = _bilinear_plan(in_height, in_width, height, width, half_pixel)
    block = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(in_height, in_width * 3)[rows]
    # TensorFlow's order and float32 arithmetic, so the rounding matches too: each source row
    # is interpolated along x (left + (right - left) * x), then those rows along y.
    rows_x = np.take(block, left, axis=1).astype(np.float32)
    step = np.take(block, right, axis=1).astype(np.float32)
    step -= rows_x
    step *= x_frac
    rows_x += step
    out, below = rows_x[top], rows_x[bottom]
    below -= out
    below *= y_frac
    out += below
    # A convex combination of values in [0, 255] needs no clipping before the cast.
    np.rint(out, out=out)
    return out.astype(np.uint8).reshape(height, width, 3)


def preprocess(path: str | os.PathLike | BinaryIO, size: tuple[int, int], method: str = RESIZE_BILINEAR) -> np.ndarray:
    """Decodes and resizes one image file: the exact pixels a model sees, as ``uint8``.

    Example:
        >>> pixels = preprocess("cat.jpg", (160, 160))
        >>> pixels.shape, pixels.dtype
        ((160, 160, 3), dtype('uint8'))
    """
    return resize(load_image(path), size, method)


def to_grayscale(pixels: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` RGB to ``(H, W, 1)`` luma (ITU-R 601-2), rounded as Pillow's ``convert("L")``
    rounds, so a grayscale file's own values come back unchanged.

    Example:
        >>> to_grayscale(np.array([[[255, 0, 0], [7, 7, 7]]], np.uint8))[..., 0]
        array([[76,  7]], dtype=uint8)
    """
    rgb = np.asarray(pixels, dtype=np.uint32)
    # Pillow's fixed-point weights: 0.299, 0.587, 0.114 scaled by 2**16, plus half for rounding.
    luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return luma.astype(np.uint8)[..., None]


def normalize(pixels: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(pixels - mean) / std`` as float32: what a float model's input expects."""
    return (np.asarray(pixels, dtype=np.float32) - np.float32(mean)) / np.float32(std)
