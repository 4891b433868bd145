"""The device side: LiteRT, numpy and Pillow only. Never TensorFlow.

Example:
    >>> from edgeship.runtime import preprocess, Manifest  # no TensorFlow is imported
"""

from edgeship.runtime.image import RESIZE_METHODS, load_image, normalize, preprocess, resize
from edgeship.runtime.manifest import Manifest, embed, read_embedded

__all__ = [
    "RESIZE_METHODS",
    "Manifest",
    "embed",
    "load_image",
    "normalize",
    "preprocess",
    "read_embedded",
    "resize",
]
