"""The split, bad-image handling and the one preprocessing definition."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeship.errors import ConfigError, DataError
from edgeship.runtime.image import load_image, normalize, preprocess
from edgeship.runtime.manifest import MEAN, STD
from edgeship.train.config import TrainConfig, load_config
from edgeship.runtime.rundir import RunDir
from edgeship.train.data import load_data, prepare_data, split_items

from photos import write_photos


def _write(path: Path, image: Image.Image, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save)
    return path


def _noise(rng, size=(24, 24)) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


# --------------------------------------------------------------------------- split


def test_split_is_stratified_seeded_and_covers_every_class():
    labels = np.repeat(np.arange(3), [50, 20, 7])
    parts = split_items(labels, 0.1, 0.1, seed=3)
    again = split_items(labels, 0.1, 0.1, seed=3)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    everything = np.concatenate(list(parts.values()))
    assert sorted(everything) == list(range(len(labels)))  # a partition: nothing lost, nothing twice
    for name in ("val", "test"):
        counts = np.bincount(labels[parts[name]], minlength=3)
        assert counts.tolist() == [5, 2, 1]  # round(n * 0.1), at least one per class
    other = split_items(labels, 0.1, 0.1, seed=4)
    assert not np.array_equal(parts["test"], other["test"])


def test_split_is_recorded_with_root_and_digest(demo_data, tmp_path):
    config = TrainConfig.tiny(data_dir=str(demo_data), out_dir=str(tmp_path / "run"))
    data = prepare_data(config, tmp_path / "run")
    recorded = json.loads((tmp_path / "run" / "split.json").read_text())
    assert recorded["data_root"] == str(demo_data.resolve())
    assert len(recorded["digest"]) == 64
    assert recorded["classes"] == ["checks", "dots", "rings", "stripes"]
    assert sum(len(recorded[k]) for k in ("train", "val", "test")) == 48
    for rel, label, sha in recorded["test"]:
        assert (demo_data / rel).is_file() and rel.split("/")[0] == recorded["classes"][label] and len(sha) == 64
    # The same folder and seed give the same split and digest; the cached pixels are the files'.
    again = prepare_data(config, tmp_path / "again")
    assert again.split.digest == data.split.digest
    first_test = data.indices["test"][0]
    rel = data.split.test[0][0]
    assert np.array_equal(data.pixels[first_test], preprocess(demo_data / rel, (32, 32), config.resize_method))


def test_a_changed_file_breaks_the_recorded_split(demo_data, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(demo_data, data_dir)
    config = TrainConfig.tiny(data_dir=str(data_dir), out_dir=str(tmp_path / "run"))
    split = prepare_data(config, tmp_path / "run").split
    assert load_data(tmp_path / "run", config).split.digest == split.digest
    rel = split.test[0][0]
    _write(data_dir / rel, _noise(np.random.default_rng(0)), format="PNG")
    with pytest.raises(DataError, match=f"no longer match.*1 changed since training \\({rel}\\)"):
        load_data(tmp_path / "run", config)  # the decoded cache is there, and still not trusted


def test_the_run_array_is_reused_only_for_the_split_it_was_written_for(demo_data, tmp_path, caplog):
    config = TrainConfig.tiny(data_dir=str(demo_data), out_dir=str(tmp_path / "run"))
    prepare_data(config, tmp_path / "run")
    assert load_data(tmp_path / "run", config).decode_stats is None  # the run's array, nothing decoded
    RunDir(tmp_path / "run").write_pixels_record("f" * 64, config.image_size, config.resize_method)
    again = load_data(tmp_path / "run", config)
    assert again.decode_stats is not None and "written for another split" in caplog.text
    assert load_data(tmp_path / "run", config).decode_stats is None  # prepared again, with its own record


def test_separate_val_and_test_folders(demo_data, tmp_path):
    train_dir, val_dir, test_dir = (tmp_path / n for n in ("train", "val", "test"))
    for cls in sorted(p.name for p in demo_data.iterdir()):
        files = sorted((demo_data / cls).iterdir())
        for folder, chunk in ((val_dir, files[:2]), (test_dir, files[2:4]), (train_dir, files[4:])):
            (folder / cls).mkdir(parents=True)
            for f in chunk:
                shutil.copy(f, folder / cls / f.name)
    config = TrainConfig.tiny(data_dir=str(train_dir), val_dir=str(val_dir), test_dir=str(test_dir))
    data = prepare_data(config, tmp_path / "run")
    assert [len(data.indices[k]) for k in ("train", "val", "test")] == [32, 8, 8]
    assert all(rel.startswith("../test/") for rel, _, _ in data.split.test)


# --------------------------------------------------------------------------- bad input


def test_undecodable_images_are_reported_and_skipped(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for cls in ("a", "b"):
        for i in range(4):
            _write(root / cls / f"{i}.jpg", _noise(rng), format="JPEG")
    good = (root / "a" / "0.jpg").read_bytes()
    (root / "a" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "b" / "notes.JPG").write_text("not an image")
    (root / "b" / "readme.txt").write_text("ignored: not an image extension")
    config = TrainConfig.tiny(data_dir=str(root), val_fraction=0.25, test_fraction=0.25)
    data = prepare_data(config, tmp_path / "run")
    skipped = sorted(Path(s["path"]).name for s in data.split.skipped)
    assert skipped == ["empty.png", "notes.JPG", "truncated.jpg"]
    assert all(s["reason"] for s in data.split.skipped)
    assert len(data.labels) == 8
    assert RunDir(tmp_path / "run").read_split().skipped == data.split.skipped


def test_odd_colour_modes_become_rgb(tmp_path):
    rng = np.random.default_rng(1)
    rgb = np.asarray(_noise(rng, (20, 30)))
    files = {
        "gray.png": Image.fromarray(rgb[..., 0], "L"),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "RGBA"),
        "palette.gif": Image.fromarray(rgb).convert("P"),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "gray16.png": Image.fromarray(rgb[..., 0].astype("<u2") * 257),
        "pic.webp": Image.fromarray(rgb),
        "pic.bmp": Image.fromarray(rgb),
    }
    for name, image in files.items():
        path = _write(tmp_path / name, image)
        pixels = load_image(path)
        assert pixels.shape == (20, 30, 3) and pixels.dtype == np.uint8, name
    sixteen = load_image(tmp_path / "gray16.png")
    assert np.array_equal(sixteen[..., 0], rgb[..., 0])  # 16-bit scaled back down, not clipped


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _write(tmp_path / "rotated.jpg", image, exif=exif.tobytes(), quality=95)
    pixels = load_image(path)
    assert pixels.shape == (40, 20, 3)  # displayed upright: portrait
    assert pixels[2, 10, 2] > 200 and pixels[2, 10, 0] < 60  # the blue side now on top


def test_a_class_without_usable_images_stops_before_training(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(3):
        _write(tmp_path / "data" / "good" / f"{i}.png", _noise(rng))
    (tmp_path / "data" / "broken").mkdir()
    (tmp_path / "data" / "broken" / "x.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(DataError, match="broken.*no usable image"):
        prepare_data(TrainConfig.tiny(data_dir=str(tmp_path / "data")), tmp_path / "run")


def test_fewer_than_two_classes_is_an_error(tmp_path):
    _write(tmp_path / "data" / "only" / "0.png", _noise(np.random.default_rng(3)))
    with pytest.raises(DataError, match="at least two"):
        prepare_data(TrainConfig.tiny(data_dir=str(tmp_path / "data")), tmp_path / "run")
    with pytest.raises(DataError, match="not found"):
        prepare_data(TrainConfig.tiny(data_dir=str(tmp_path / "missing")), tmp_path / "run2")


# --------------------------------------------------------------------------- config


def test_config_validates_choices_with_the_field_name():
    with pytest.raises(ConfigError, match="backbone"):
        TrainConfig(backbone="resnet50")
    with pytest.raises(ConfigError, match="augment.*'hevy'"):
        TrainConfig(augment="hevy")
    with pytest.raises(ConfigError, match="alpha=0.3"):
        TrainConfig(alpha=0.3)  # no ImageNet weights at that width
    assert TrainConfig(alpha=0.3, weights="none").alpha == 0.3


def test_toml_config_then_flags(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text('[train]\nbackbone = "mobilenet_v1"\nalpha = 0.25\nepochs = 3\n')
    config = load_config(path, epochs=7, image_size=None)
    assert (config.backbone, config.alpha, config.epochs, config.image_size) == ("mobilenet_v1", 0.25, 7, 224)
    path.write_text("[train]\nepochs = 3\nepochz = 4\n")
    with pytest.raises(ConfigError, match="epochz"):
        load_config(path)
    path.write_text("epochs = 3\n")
    with pytest.raises(ConfigError, match="outside any table"):
        load_config(path)
    path.write_text("[train]\nepochs = \"three\"\n")
    with pytest.raises(ConfigError, match="`epochs`.*whole number"):
        load_config(path)


# --------------------------------------------------------------------------- one preprocessing definition


def test_training_feeds_exactly_what_the_runtime_produces(tmp_path):
    """For photo-like JPEGs of several sizes: the pipeline's tensor (before augmentation) == the
    runtime's input."""
    from edgeship.train.tfdata import make_dataset

    root = tmp_path / "data"
    write_photos(root, ("daisy", "roses"), per_class=6, seed=5)
    config = TrainConfig.tiny(data_dir=str(root), image_size=160, resize_method="bilinear")
    data = prepare_data(config, tmp_path / "run")
    indices = data.indices["train"]
    batches = make_dataset(data.pixels, data.labels, indices, data.num_classes, batch_size=4,
                           normalization=data.normalization)
    fed = np.concatenate([x.numpy() for x, _ in batches])
    for row, i in enumerate(indices):
        rel = data.split.train[row][0]
        expected = normalize(preprocess(root / rel, (160, 160), "bilinear"), MEAN, STD)
        np.testing.assert_array_equal(fed[row], expected)
