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


def test_asymmetric_bilinear_equals_tensorflow_v1_resize():
    """``bilinear-asymmetric`` samples as TF1's resize_bilinear default (and MediaPipe Tasks) do."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(3)
    for in_size, size in [((227, 227), (96, 96)), ((40, 40), (32, 32)), ((50, 70), (100, 75))]:
        pixels = rng.integers(0, 256, (*in_size, 3), dtype=np.uint8)
        ours = resize(pixels, size, "bilinear-asymmetric").astype(np.int16)
        theirs = tf.compat.v1.image.resize_bilinear(pixels[None], size, align_corners=False,
                                                    half_pixel_centers=False).numpy()[0]
        difference = np.abs(ours - np.clip(np.rint(theirs), 0, 255).astype(np.int16))
        # Only rounding differs, at ties (an upscale by 2 makes many values end in .5).
        assert difference.max() <= 1 and difference.mean() < 0.05, (in_size, size)
        assert np.abs(ours - resize(pixels, size, "bilinear")).max() > 10  # a different sampling
