"""The runtime's bilinear resize is TensorFlow's, so training and the device see the same pixels."""

from __future__ import annotations

import numpy as np
import pytest

from edgeship.runtime.image import load_image, resize

from photos import write_photos


def test_bilinear_equals_tensorflow_resize_on_photos(tmp_path):
    tf = pytest.importorskip("tensorflow")
    paths = write_photos(tmp_path, ("a", "b", "c"), per_class=5, seed=3, sizes=((227, 227),))  # the real set's size
    odd = write_photos(tmp_path / "odd", ("d",), per_class=4, seed=4, sizes=((320, 240), (181, 263)))
    sizes = [(96, 96), (128, 128), (160, 160), (224, 224), (100, 75), (300, 300)]  # down, up, and not square
    total = off_by_one = 0
    for path in paths:
        pixels = load_image(path)
        for size in sizes:
            ours = resize(pixels, size, "bilinear").astype(np.int16)
            theirs = tf.image.resize(pixels, size, method="bilinear", antialias=False).numpy()
            theirs = np.clip(np.rint(theirs), 0, 255).astype(np.int16)
            difference = np.abs(ours - theirs)
            assert difference.max() <= 1, (path.name, size)
            total += difference.size
            off_by_one += int(difference.sum())
    # Only float rounding at exact .5 boundaries may differ.
    assert off_by_one / total < 1e-3, off_by_one / total
    for path in odd:  # scale factors like 240 -> 75 put many samples on exact ties: never more than 1 off
        for size in sizes:
            ours = resize(load_image(path), size, "bilinear").astype(np.int16)
            theirs = tf.image.resize(load_image(path), size, method="bilinear", antialias=False).numpy()
            assert np.abs(ours - np.clip(np.rint(theirs), 0, 255)).max() <= 1, (path.name, size)
