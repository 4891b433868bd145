"""EfficientNet-Lite0 as a flat tf_keras graph, and the mapping of its PyTorch checkpoint.

The architecture is Google's ``efficientnet_lite_builder`` at width and depth 1.0: the
EfficientNet-B0 blocks without squeeze-and-excitation and with ReLU6 instead of swish, the
changes that make it run well quantized and map fully onto the Edge TPU. ReLU6 is a
``ReLU(6.0)`` layer (as in Keras' MobileNetV2), which tfmot knows how to quantize.

The ImageNet weights were trained in TensorFlow, so convolutions pad the TensorFlow way
(``padding="same"``: for stride 2 the extra row and column go at the bottom and right), and
batch norm uses TensorFlow's epsilon 1e-3.

Example:
    >>> from edgeship.train.tfkeras import keras
    >>> base = efficientnet_lite0(keras.Input((96, 96, 3)))
    >>> base.output_shape, base.count_params()
    ((None, 3, 3, 1280), 3413024)
"""

from __future__ import annotations

import string

import numpy as np

from edgeship.errors import ConfigError
from edgeship.train.tfkeras import keras

__all__ = ["BLOCKS", "efficientnet_lite0", "imagenet_classifier", "load_torch_state"]

# (repeats, kernel size, first stride, expansion, input channels, output channels) per stage.
BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STEM_CHANNELS = 32
_TOP_CHANNELS = 1280
_BN_EPSILON = 1e-3  # TensorFlow's batch_norm_epsilon in efficientnet_lite_builder
_BN_MOMENTUM = 0.99
# PyTorch's num_batches_tracked counts training steps; no Keras weight corresponds to it.
_IGNORED_SUFFIX = ".num_batches_tracked"


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, activation: bool = True, depthwise: bool = False):
    # padding="same" is TensorFlow's: what the weights were trained with (module docstring).
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x) if activation else x


def _block_names() -> list[str]:
    """``block1a``, ``block2a``, ``block2b``, ... in checkpoint order (``_blocks.0``, ``_blocks.1``, ...)."""
    return [f"block{stage + 1}{string.ascii_lowercase[i]}" for stage, spec in enumerate(BLOCKS) for i in range(spec[0])]


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


def efficientnet_lite0(inputs) -> keras.Model:
    """The no-top backbone built on ``inputs`` (any square size), as Keras' applications do
    with ``input_tensor=``: its layers continue the caller's graph, nothing is nested."""
    x = _conv_bn(inputs, _STEM_CHANNELS, 3, 2, "stem")
    names = iter(_block_names())
    for repeats, kernel, stride, expansion, in_channels, out_channels in BLOCKS:
        for i in range(repeats):
            x = _mbconv(x, next(names), kernel, stride if i == 0 else 1, expansion,
                        in_channels if i == 0 else out_channels, out_channels)
    x = _conv_bn(x, _TOP_CHANNELS, 1, 1, "top")
    return keras.Model(inputs, x, name="efficientnet_lite0")


def imagenet_classifier(image_size: int = 224) -> keras.Model:
    """The backbone with ImageNet's 1000-class softmax (``predictions``), as the checkpoint has it."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    base = efficientnet_lite0(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(base.output)
    outputs = keras.layers.Dense(1000, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="efficientnet_lite0_imagenet")


def _torch_names() -> dict[str, str]:
    """Our layer name for each module prefix of the PyTorch checkpoint."""
    names = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "top_conv", "_bn1": "top_bn",
             "_fc": "predictions"}
    for index, block in enumerate(_block_names()):
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


def load_torch_state(model: keras.Model, tensors: dict[str, np.ndarray]) -> None:
    """Sets every weighted layer of ``model`` from the checkpoint's ``tensors``, each value used
    exactly once. The model is the backbone, or :func:`imagenet_classifier`; the backbone alone
    leaves the checkpoint's ``_fc`` classifier out, and only that.

    Raises:
        ConfigError: a layer's tensor is missing or of another shape, or the checkpoint holds
            tensors no layer took (another architecture's checkpoint).
    """
    prefixes = {ours: theirs for theirs, ours in _torch_names().items()}
    used: set[str] = set()

    def take(prefix: str, suffix: str) -> np.ndarray:
        name = f"{prefix}.{suffix}"
        if name not in tensors:
            raise ConfigError(f"The checkpoint has no tensor {name}: it is not an EfficientNet-Lite0 state dict.")
        used.add(name)
        return tensors[name]

    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in prefixes:
            raise ConfigError(f"Layer {layer.name} has no counterpart in the EfficientNet-Lite0 checkpoint.")
        values = _keras_values(layer, lambda suffix, prefix=prefixes[layer.name]: take(prefix, suffix))
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise ConfigError(f"Layer {layer.name} has weight shapes {expected}; the checkpoint's "
                              f"{prefixes[layer.name]} gives {[v.shape for v in values]}.")
        layer.set_weights(values)
    has_top = any(layer.name == "predictions" for layer in model.layers)
    left = {n for n in tensors if n not in used and not n.endswith(_IGNORED_SUFFIX)}
    left -= set() if has_top else {"_fc.weight", "_fc.bias"}
    if left:
        raise ConfigError(f"{len(left)} tensor(s) of the checkpoint match no layer, e.g. {sorted(left)[:3]}: "
                          "it is not an EfficientNet-Lite0 state dict.")
