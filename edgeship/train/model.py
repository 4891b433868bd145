"""Backbones and the classifier head, as one flat functional graph.

tfmot refuses a model nested in a model ("Quantizing a keras Model inside another keras Model
is not supported"), which the usual ``x = base(inputs)`` pattern produces. The backbone is
built on our input tensor instead (``input_tensor=``), so the head continues the same graph
and the whole model is one level of layers that QAT can annotate.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edgeship.errors import ConfigError
from edgeship.train.config import EFFICIENTNET_LITES, MOBILENET_V1, WEIGHTS_IMAGENET, WEIGHTS_NONE, TrainConfig
from edgeship.train.h5weights import load_h5_weights
from edgeship.train.tfkeras import keras
from edgeship.weights import resolve_imagenet

__all__ = ["HEAD_LAYERS", "backbone_layers", "build_model", "describe_weights", "set_trainable"]

logger = logging.getLogger(__name__)

HEAD_LAYERS = ("head_pool", "head_dropout", "head_logits")


def _weights_argument(config: TrainConfig):
    """Keras' ``weights=`` for ``config.weights``: "imagenet", None or a file path."""
    weights = config.weights
    if weights == WEIGHTS_IMAGENET:
        resolved = resolve_imagenet(config.backbone, config.alpha, config.image_size)
        return resolved.argument if resolved else "imagenet"
    if weights == WEIGHTS_NONE:
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"Weights file not found: {weights}. Pass --weights imagenet (downloads into Keras' cache), "
            "--weights none (random init), or the path of a no-top .h5 weights file."
        )
    return str(path)


def describe_weights(config: TrainConfig) -> str:
    """Which weights ``build_model`` starts from, in words (for reports)."""
    if config.weights == WEIGHTS_NONE:
        return "none (random initialisation)"
    if config.weights != WEIGHTS_IMAGENET:
        return f"file {config.weights}"
    resolved = resolve_imagenet(config.backbone, config.alpha, config.image_size)
    return resolved.description if resolved else "ImageNet (Keras)"


def _efficientnet(backbone: str, inputs, weights: str | None) -> keras.Model:
    from edgeship.train.efficientnet import efficientnet_lite

    base = efficientnet_lite(inputs, backbone)
    if weights is not None:
        load_h5_weights(base, weights, "Pass --weights imagenet, --weights none, or the no-top .h5 weights of an "
                                       f"{backbone}.")
    return base


def _mobilenet(config: TrainConfig, inputs, weights: str | None) -> keras.Model:
    app = keras.applications.MobileNet if config.backbone == MOBILENET_V1 else keras.applications.MobileNetV2
    if weights not in (None, "imagenet"):
        # A weights file (shipped, cached or passed) is read as arrays of checked shapes, never
        # at the sizes it declares.
        base = _mobilenet(config, inputs, None)
        load_h5_weights(base, weights, f"Pass --weights imagenet, --weights none, or the no-top .h5 weights of a "
                                       f"{config.backbone} with alpha {config.alpha:g}.")
        return base
    try:
        return app(input_tensor=inputs, include_top=False, weights=weights, alpha=config.alpha)
    except ValueError as e:
        raise ConfigError(f"Cannot build {config.backbone} (alpha={config.alpha}, weights={config.weights}): {e}") from e
    except Exception as e:  # the download of weights="imagenet" failed
        if weights != "imagenet":
            raise
        raise ConfigError(
            f"Could not get ImageNet weights for {config.backbone} alpha={config.alpha}: {e}. Without internet, "
            "copy Keras' weights file into ~/.keras/models/ (Keras' download cache), or pass --weights PATH "
            "to a local no-top .h5 file."
        ) from e


def build_model(config: TrainConfig, num_classes: int, pretrained: bool = True) -> keras.Model:
    """The backbone (no top) + global pooling, dropout and a softmax classifier, one flat graph.

    ``pretrained=False`` builds the same network without loading ``config.weights``, for
    weights that are loaded next (a finished run's, with ``load_h5_weights``).
    """
    size = config.image_size
    inputs = keras.Input((size, size, 3), name="image")
    weights = _weights_argument(config) if pretrained else None
    if config.backbone in EFFICIENTNET_LITES:
        base = _efficientnet(config.backbone, inputs, weights)
    else:
        base = _mobilenet(config, inputs, weights)
    if config.weights == WEIGHTS_NONE:
        # Keras' MobileNets use batch-norm momentum 0.999, made for fine-tuning: from random
        # init the moving statistics would lag for thousands of steps and validation would see
        # a different network than training does.
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(base.output)
    x = keras.layers.Dropout(config.dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head_logits")(x)
    return keras.Model(inputs, outputs, name=f"{config.backbone}_{config.alpha:g}_{size}")


def backbone_layers(model: keras.Model) -> list:
    return [layer for layer in model.layers[1:] if layer.name not in HEAD_LAYERS]


def set_trainable(model: keras.Model, fine_tune_fraction: float, train_batch_norm: bool = False) -> int:
    """Freezes the backbone except its top ``fine_tune_fraction`` of layers; returns how many train.

    Batch normalisation stays frozen everywhere: with few images per batch, updating its
    statistics would wreck the pretrained features (Keras' transfer-learning guide), and a
    frozen BN layer in TF 2 runs in inference mode.
    """
    layers = backbone_layers(model)
    first = len(layers) - int(round(len(layers) * fine_tune_fraction))
    trained = 0
    for i, layer in enumerate(layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = i >= first and (train_batch_norm or not is_bn)
        trained += layer.trainable and bool(layer.weights)
    for name in HEAD_LAYERS:
        model.get_layer(name).trainable = True
    return trained
