"""EfficientNet-Lite0, Lite1 and Lite2 as flat tf_keras graphs, and the mapping of their
PyTorch checkpoints.

The architecture is Google's ``efficientnet_lite_builder``: the EfficientNet-B0 blocks without
squeeze-and-excitation and with ReLU6 instead of swish, the changes that make it run well
quantized and map fully onto the Edge TPU. ReLU6 is a ``ReLU(6.0)`` layer (as in Keras'
MobileNetV2), which tfmot knows how to quantize.

Lite1 and Lite2 scale Lite0 as Google's builder does for Lite (``fix_head_stem``): channels
times the width coefficient rounded to a multiple of 8 (never below 90 % of the product),
repeats times the depth coefficient rounded up, except that the stem keeps 32 channels, the
head 1280, and the first and last stages one block each. The checkpoints confirm it: Lite2's
stages have 16, 24, 48, 88, 120, 208 and 352 channels and 1, 3, 3, 4, 4, 5 and 1 blocks.

The ImageNet weights were trained in TensorFlow, so convolutions pad the TensorFlow way
(``padding="same"``: for stride 2 the extra row and column go at the bottom and right), and
batch norm uses TensorFlow's epsilon 1e-3.

Example:
    >>> from edgeship.train.tfkeras import keras
    >>> base = efficientnet_lite0(keras.Input((96, 96, 3)))
    >>> base.output_shape, base.count_params()
    ((None, 3, 3, 1280), 3413024)
    >>> [spec[0] for spec in stages("efficientnet_lite2")], stages("efficientnet_lite2")[-1][-1]
    ([1, 3, 3, 4, 4, 5, 1], 352)
"""

from __future__ import annotations

import math
import string
from typing import NamedTuple

import numpy as np

from edgeship.errors import ConfigError
from edgeship.train.config import DEFAULT_IMAGE_SIZE, NATIVE_IMAGE_SIZES
from edgeship.train.tfkeras import keras

__all__ = ["BLOCKS", "SCALING", "LiteScaling", "efficientnet_lite", "efficientnet_lite0", "imagenet_classifier",
           "load_torch_state", "stages"]

# (repeats, kernel size, first stride, expansion, input channels, output channels) per stage, Lite0.
BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class LiteScaling(NamedTuple):
    """Google's compound scaling of one Lite network (``efficientnet_lite_builder.efficientnet_lite_params``;
    the resolution its weights were trained at is ``NATIVE_IMAGE_SIZES``, the train config's default)."""

    width: float
    depth: float


SCALING = {
    "efficientnet_lite0": LiteScaling(1.0, 1.0),
    "efficientnet_lite1": LiteScaling(1.0, 1.1),
    "efficientnet_lite2": LiteScaling(1.1, 1.2),
}
_STEM_CHANNELS = 32
_TOP_CHANNELS = 1280
_CHANNEL_DIVISOR = 8
_BN_EPSILON = 1e-3  # TensorFlow's batch_norm_epsilon in efficientnet_lite_builder
_BN_MOMENTUM = 0.99
# PyTorch's num_batches_tracked counts training steps; no Keras weight corresponds to it.
_IGNORED_SUFFIX = ".num_batches_tracked"


def _scaling(backbone: str) -> LiteScaling:
    if backbone not in SCALING:
        raise ConfigError(f"`backbone` must be one of {', '.join(SCALING)} here; received backbone={backbone!r}.")
    return SCALING[backbone]


def _round_channels(channels: int, width: float) -> int:
    """Google's ``round_filters``: to the nearest multiple of 8, never below 90 % of the product."""
    scaled = channels * width
    rounded = max(_CHANNEL_DIVISOR, int(scaled + _CHANNEL_DIVISOR / 2) // _CHANNEL_DIVISOR * _CHANNEL_DIVISOR)
    return rounded + _CHANNEL_DIVISOR if rounded < 0.9 * scaled else rounded


def stages(backbone: str) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """:data:`BLOCKS` scaled for ``backbone``: the stem's and the first and last stages' repeats stay."""
    width, depth = _scaling(backbone)
    scaled = []
    for index, (repeats, kernel, stride, expansion, in_channels, out_channels) in enumerate(BLOCKS):
        fixed = index in (0, len(BLOCKS) - 1)
        scaled.append((repeats if fixed else math.ceil(repeats * depth), kernel, stride, expansion,
                       _STEM_CHANNELS if index == 0 else _round_channels(in_channels, width),
                       _round_channels(out_channels, width)))
    return tuple(scaled)


def _display_name(backbone: str) -> str:
    """``EfficientNet-Lite1`` for ``efficientnet_lite1``."""
    return "EfficientNet-Lite" + backbone.rsplit("lite", 1)[1]


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, activation: bool = True, depthwise: bool = False):
    # padding="same" is TensorFlow's: what the weights were trained with (module docstring).
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x) if activation else x


def _block_names(backbone: str) -> list[str]:
    """``block1a``, ``block2a``, ``block2b``, ... in checkpoint order (``_blocks.0``, ``_blocks.1``, ...)."""
    return [f"block{stage + 1}{string.ascii_lowercase[i]}" for stage, spec in enumerate(stages(backbone))
            for i in range(spec[0])]


def _mbconv(x, name: str, kernel: int, stride: int, expansion: int, in_channels: int, out_channels: int):
    """Inverted residual: 1x1 expansion, depthwise, linear 1x1 projection, skip when shapes match."""
    inputs = x
    if expansion != 1:
        x = _conv_bn(x, in_channels * expansion, 1, 1, f"{name}_expand")
    x = _conv_bn(x, 0, kernel, stride, name, depthwise=True)
    x = _conv_bn(x, out_channels, 1, 1, f"{name}_project", activation=False)
    if stride == 1 and in_channels == out_channels:
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def efficientnet_lite(inputs, backbone: str) -> keras.Model:
    """The no-top ``backbone`` (a key of :data:`SCALING`) built on ``inputs`` (any square size),
    as Keras' applications do with ``input_tensor=``: its layers continue the caller's graph,
    nothing is nested.

    Raises:
        ConfigError: ``backbone`` is not an EfficientNet-Lite this module builds.
    """
    x = _conv_bn(inputs, _STEM_CHANNELS, 3, 2, "stem")
    names = iter(_block_names(backbone))
    for repeats, kernel, stride, expansion, in_channels, out_channels in stages(backbone):
        for i in range(repeats):
            x = _mbconv(x, next(names), kernel, stride if i == 0 else 1, expansion,
                        in_channels if i == 0 else out_channels, out_channels)
    x = _conv_bn(x, _TOP_CHANNELS, 1, 1, "top")
    return keras.Model(inputs, x, name=backbone)


def efficientnet_lite0(inputs) -> keras.Model:
    """:func:`efficientnet_lite` for Lite0."""
    return efficientnet_lite(inputs, "efficientnet_lite0")


def imagenet_classifier(image_size: int | None = None, backbone: str = "efficientnet_lite0") -> keras.Model:
    """The backbone with ImageNet's 1000-class softmax (``predictions``), as the checkpoint has
    it, at ``image_size`` (default: the size its weights were trained at)."""
    _scaling(backbone)
    size = image_size or NATIVE_IMAGE_SIZES.get(backbone, DEFAULT_IMAGE_SIZE)
    inputs = keras.Input((size, size, 3), name="image")
    base = efficientnet_lite(inputs, backbone)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(base.output)
    outputs = keras.layers.Dense(1000, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"{backbone}_imagenet")


def _torch_names(backbone: str) -> dict[str, str]:
    """Our layer name for each module prefix of the PyTorch checkpoint."""
    names = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "top_conv", "_bn1": "top_bn",
             "_fc": "predictions"}
    for index, block in enumerate(_block_names(backbone)):
        for theirs, ours in (("_expand_conv", "expand_conv"), ("_bn0", "expand_bn"), ("_depthwise_conv", "dwconv"),
                             ("_bn1", "bn"), ("_project_conv", "project_conv"), ("_bn2", "project_bn")):
            names[f"_blocks.{index}.{theirs}"] = f"{block}_{ours}"
    return names


def _keras_values(layer, take) -> list[np.ndarray]:
    """The layer's weights, in Keras' order, from ``take(suffix)`` (PyTorch layouts converted)."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [take("weight").transpose(2, 3, 0, 1)]  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    if isinstance(layer, keras.layers.Conv2D):
        return [take("weight").transpose(2, 3, 1, 0)]  # (O, I, kh, kw) -> (kh, kw, I, O)
    if isinstance(layer, keras.layers.BatchNormalization):
        return [take(suffix) for suffix in ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, keras.layers.Dense):
        return [take("weight").T, take("bias")]
    raise ConfigError(f"No PyTorch counterpart is known for layer {layer.name} ({type(layer).__name__}).")


def load_torch_state(model: keras.Model, tensors: dict[str, np.ndarray], backbone: str = "efficientnet_lite0") -> None:
    """Sets every weighted layer of ``model`` (a ``backbone``) from the checkpoint's ``tensors``,
    each value used exactly once. The model is the backbone, or :func:`imagenet_classifier`; the
    backbone alone leaves the checkpoint's ``_fc`` classifier out, and only that.

    Raises:
        ConfigError: a layer's tensor is missing or of another shape, or the checkpoint holds
            tensors no layer took (another architecture's checkpoint).
    """
    prefixes = {ours: theirs for theirs, ours in _torch_names(backbone).items()}
    network = _display_name(backbone)
    used: set[str] = set()

    def take(prefix: str, suffix: str) -> np.ndarray:
        name = f"{prefix}.{suffix}"
        if name not in tensors:
            raise ConfigError(f"The checkpoint has no tensor {name}: it is not an {network} state dict.")
        used.add(name)
        return tensors[name]

    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in prefixes:
            raise ConfigError(f"Layer {layer.name} has no counterpart in the {network} checkpoint.")
        values = _keras_values(layer, lambda suffix, prefix=prefixes[layer.name]: take(prefix, suffix))
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise ConfigError(f"Layer {layer.name} has weight shapes {expected}; the checkpoint's "
                              f"{prefixes[layer.name]} gives {[v.shape for v in values]}: it is not an {network} "
                              "state dict.")
        layer.set_weights(values)
    has_top = any(layer.name == "predictions" for layer in model.layers)
    left = {n for n in tensors if n not in used and not n.endswith(_IGNORED_SUFFIX)}
    left -= set() if has_top else {"_fc.weight", "_fc.bias"}
    if left:
        raise ConfigError(f"{len(left)} tensor(s) of the checkpoint match no layer, e.g. {sorted(left)[:3]}: "
                          f"it is not an {network} state dict.")
