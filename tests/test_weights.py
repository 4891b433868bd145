"""ImageNet weights offline: Keras' cache first, then Keras' download, then the embedded copy."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from edgeship.train.config import MOBILENET_V1, MOBILENET_V2, TrainConfig
from edgeship.weights import SOURCE_CACHE, SOURCE_EMBEDDED, embedded_weights, resolve_imagenet

KERAS_SHA256 = "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf"  # Keras' published file


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # tf_keras caches in ~/.keras/models
    return tmp_path


def test_the_embedded_copy_is_keras_published_file_with_its_notice():
    path = embedded_weights(MOBILENET_V1, 0.25)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == KERAS_SHA256
    assert "Apache License" in (path.parent / "LICENSE").read_text()
    assert path.name in (path.parent / "NOTICE").read_text()
    assert embedded_weights(MOBILENET_V2, 1.0) is None and embedded_weights(MOBILENET_V1, 0.5) is None


def test_keras_cache_wins_over_the_embedded_copy(empty_home):
    cached = empty_home / ".keras" / "models" / "mobilenet_2_5_128_tf_no_top.h5"
    cached.parent.mkdir(parents=True)
    cached.symlink_to(embedded_weights(MOBILENET_V1, 0.25))
    at_128 = resolve_imagenet(MOBILENET_V1, 0.25, 128)
    assert (at_128.argument, at_128.source) == ("imagenet", SOURCE_CACHE) and str(cached) in at_128.description
    at_96 = resolve_imagenet(MOBILENET_V1, 0.25, 96)  # Keras takes the 224 file below 128 px: not cached here
    assert at_96.source == SOURCE_EMBEDDED and at_96.argument == str(embedded_weights(MOBILENET_V1, 0.25))
    assert resolve_imagenet(MOBILENET_V2, 1.0, 96) is None  # no copy: Keras' own path, unchanged


def test_offline_without_cache_the_model_starts_from_the_embedded_imagenet_weights(empty_home):
    """No cache, no download (EDGESHIP_NO_DOWNLOAD, set for the suite): still a real fine-tune."""
    from edgeship.train.model import build_model, describe_weights
    from edgeship.train.tfkeras import keras

    config = TrainConfig(backbone=MOBILENET_V1, alpha=0.25, image_size=96, weights="imagenet")
    model = build_model(config, 4)
    source = str(embedded_weights(MOBILENET_V1, 0.25))
    reference = keras.applications.MobileNet(input_shape=(96, 96, 3), include_top=False, weights=source, alpha=0.25)
    for name in ("conv1", "conv_pw_13", "conv_pw_13_bn"):
        for ours, theirs in zip(model.get_layer(name).get_weights(), reference.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    assert describe_weights(config) == "ImageNet (embedded copy of Keras' mobilenet_2_5_224_tf_no_top.h5)"
    assert not (empty_home / ".keras" / "models" / "mobilenet_2_5_224_tf_no_top.h5").exists()  # nothing fetched
