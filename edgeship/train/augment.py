"""Augmentation presets, built from Keras preprocessing layers and applied in ``tf.data``.

Augmentation lives in the input pipeline, never in the saved model: the exported graph stays
free of random ops, and tfmot has nothing to quantize there. Every layer works on float
pixels in [0, 255], on batches (each image gets its own random draw).

| preset | transforms |
| --- | --- |
| ``none`` | nothing |
| ``light`` | horizontal flip; rotation up to ±7.2° (factor 0.02); brightness ±10 % |
| ``medium`` | horizontal flip; rotation ±18° (0.05); zoom ±10 %; translation ±10 %; brightness ±20 %; contrast ±20 % |
| ``heavy`` | horizontal + vertical flip; rotation ±36° (0.1); zoom ±20 %; translation ±15 %; brightness ±30 %; contrast ±30 % |

Geometric transforms fill uncovered pixels by reflection, so no black borders appear that the
device's camera never produces.
"""

from __future__ import annotations

from edgeship.errors import ConfigError
from edgeship.train.config import AUGMENT_PRESETS
from edgeship.train.tfkeras import keras

__all__ = ["PRESETS", "make_augmenter"]

PRESETS = {
    "none": {},
    "light": {"flip": "horizontal", "rotation": 0.02, "brightness": 0.1},
    "medium": {
        "flip": "horizontal", "rotation": 0.05, "zoom": 0.1, "translation": 0.1,
        "brightness": 0.2, "contrast": 0.2,
    },
    "heavy": {
        "flip": "horizontal_and_vertical", "rotation": 0.1, "zoom": 0.2, "translation": 0.15,
        "brightness": 0.3, "contrast": 0.3,
    },
}


def make_augmenter(preset: str, seed: int | None = None) -> keras.Sequential | None:
    """A Sequential of random layers for ``preset``, or None for ``none``.

    Example:
        >>> import numpy as np
        >>> augment = make_augmenter("light", seed=0)
        >>> augment(np.full((2, 32, 32, 3), 128.0, np.float32), training=True).shape
        TensorShape([2, 32, 32, 3])
        >>> make_augmenter("none") is None
        True
    """
    if preset not in AUGMENT_PRESETS:
        raise ConfigError(f"Unknown augmentation preset {preset!r}; expected one of {', '.join(AUGMENT_PRESETS)}.")
    spec = PRESETS[preset]
    if not spec:
        return None
    L = keras.layers
    layers = [L.RandomFlip(spec["flip"], seed=seed)]
    if "rotation" in spec:
        layers.append(L.RandomRotation(spec["rotation"], fill_mode="reflect", seed=seed))
    if "zoom" in spec:
        layers.append(L.RandomZoom(spec["zoom"], fill_mode="reflect", seed=seed))
    if "translation" in spec:
        layers.append(L.RandomTranslation(spec["translation"], spec["translation"], fill_mode="reflect", seed=seed))
    if "brightness" in spec:
        layers.append(L.RandomBrightness(spec["brightness"], value_range=(0.0, 255.0), seed=seed))
    if "contrast" in spec:
        layers.append(L.RandomContrast(spec["contrast"], seed=seed))
    return keras.Sequential(layers, name=f"augment_{preset}")
