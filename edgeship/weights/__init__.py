"""Where a backbone's ImageNet weights come from: Keras' cache, Keras' download, or our copy.

``weights="imagenet"`` takes Keras' own path first: its download cache (``~/.keras/models``),
then its download. Without internet and without a cached file, the MobileNet v1 (alpha 0.25)
weights fall back to the copy of Keras' published file shipped in this package (2 MB,
Apache-2.0, see ``NOTICE``), so the demo stays a real fine-tune offline. Other backbones have
no embedded copy: they need the cache, the network, or ``--weights PATH``. EfficientNet-Lite0,
Lite1 and Lite2's come from optional packages, converted once into Keras' cache (``efficientnet.py``).

Set ``EDGESHIP_NO_DOWNLOAD=1`` to skip the download attempt (the test suite does).

Example:
    >>> embedded_weights("mobilenet_v1", 0.25).name
    'mobilenet_2_5_224_tf_no_top.h5'
    >>> embedded_weights("mobilenet_v2", 1.0) is None
    True
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SOURCE_CACHE", "SOURCE_CONVERTED", "SOURCE_DOWNLOAD", "SOURCE_EMBEDDED", "ImagenetWeights",
           "embedded_weights", "keras_cache_dir", "resolve_imagenet"]

logger = logging.getLogger(__name__)

SOURCE_CACHE = "keras-cache"
SOURCE_DOWNLOAD = "download"
SOURCE_EMBEDDED = "embedded"
SOURCE_CONVERTED = "converted"  # from another framework's checkpoint, into Keras' cache

# Keras' own file names and address (tf_keras/src/applications/mobilenet.py).
_MOBILENET_V1_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/"
_KERAS_ALPHA_TEXT = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}
_KERAS_ROWS = (128, 160, 192, 224)  # other input sizes get the 224 file
_EMBEDDED = {("mobilenet_v1", 0.25): "mobilenet_2_5_224_tf_no_top.h5"}
_DOWNLOAD_TIMEOUT_S = 20  # a black-holed network must not hang the first run


@dataclass(frozen=True)
class ImagenetWeights:
    argument: str   # what to pass as Keras' ``weights=``: "imagenet" or a file path
    source: str     # SOURCE_CACHE | SOURCE_DOWNLOAD | SOURCE_EMBEDDED
    description: str


def embedded_weights(backbone: str, alpha: float) -> Path | None:
    """The shipped copy of the ImageNet no-top weights of ``backbone`` at ``alpha``, if any."""
    name = _EMBEDDED.get((backbone, float(alpha)))
    return Path(__file__).with_name(name) if name else None


def keras_cache_dir() -> Path:
    """Where tf_keras' ``get_file`` keeps downloaded models (it reads ``~``, not KERAS_HOME)."""
    base = Path(os.path.expanduser("~")) / ".keras"
    if not os.access(base if base.exists() else base.parent, os.W_OK):
        base = Path("/tmp") / ".keras"
    return base / "models"


def _keras_file_name(image_size: int, alpha: float) -> str:
    rows = image_size if image_size in _KERAS_ROWS else 224
    return f"mobilenet_{_KERAS_ALPHA_TEXT[float(alpha)]}_{rows}_tf_no_top.h5"


def _download_allowed() -> bool:
    return os.environ.get("EDGESHIP_NO_DOWNLOAD", "") in ("", "0")


@functools.lru_cache(maxsize=None)  # one failed download per process is enough
def _download(name: str) -> str | None:
    from edgeship.train.tfkeras import keras

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    printed = io.StringIO()  # Keras prints its download progress to stdout, where results go
    try:
        with contextlib.redirect_stdout(printed):
            path = keras.utils.get_file(name, _MOBILENET_V1_URL + name, cache_subdir="models")
        logger.info("Downloaded %s into Keras' cache", name)
        return path
    except Exception as e:  # offline, proxy, DNS, HTTP error: Keras wraps them all in Exception
        logger.debug("Keras could not download %s: %s (%s)", name, e, printed.getvalue().strip())
        return None
    finally:
        socket.setdefaulttimeout(previous)


@functools.lru_cache(maxsize=None)  # said once per process, not at every model build
def _log_fallback(wanted: str, embedded: str) -> None:
    logger.info("ImageNet weights: Keras' cache has no %s and it cannot be downloaded; using the embedded copy of "
                "Keras' %s", wanted, embedded)


def resolve_imagenet(backbone: str, alpha: float, image_size: int) -> ImagenetWeights | None:
    """Where ``weights="imagenet"`` comes from for a backbone that has an embedded copy, or
    that Keras does not publish (EfficientNet-Lite: a converted file, always a path).

    Returns None for the other backbones: Keras' own ``weights="imagenet"`` handles those
    (and reports its own failure).

    Raises:
        ConfigError: an EfficientNet-Lite's weights are neither cached nor installed.
    """
    from edgeship.weights.efficientnet import BACKBONES, imagenet_files

    if backbone in BACKBONES:
        no_top, _, description = imagenet_files(backbone)
        return ImagenetWeights(str(no_top), SOURCE_CONVERTED, description)
    embedded = embedded_weights(backbone, alpha)
    if embedded is None:
        return None
    name = _keras_file_name(image_size, alpha)
    cached = keras_cache_dir() / name
    if cached.is_file():
        return ImagenetWeights("imagenet", SOURCE_CACHE, f"ImageNet (Keras' cache: {cached})")
    if _download_allowed() and _download(name):
        return ImagenetWeights("imagenet", SOURCE_DOWNLOAD, f"ImageNet (downloaded by Keras: {name})")
    _log_fallback(name, embedded.name)
    return ImagenetWeights(str(embedded), SOURCE_EMBEDDED, f"ImageNet (embedded copy of Keras' {embedded.name})")
