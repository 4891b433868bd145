"""Inputs users have: grayscale and stateful models, and messy image folders, through the CLI."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.errors import DataError
from edgeship.runtime.image import load_image, to_grayscale
from edgeship.runtime.labels import read_labels
from edgeship.runtime.manifest import Manifest, embed
from edgeship.runtime.model import load_model

from input_models import GRAY_LABELS, gray_model, stateful_model
from runtime_models import COLOURS, LABELS, SIZE, write_models

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    logging.getLogger().handlers.clear()
    return CliRunner().invoke(app, [str(a) for a in args])


def solid(path: Path, colour, mode: str = "RGB") -> Path:
    Image.new(mode, (20, 20), colour).save(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    found = {name: solid(root / f"{name}.png", colour) for name, colour in COLOURS.items()}
    found["dark"] = solid(root / "dark.png", 30, mode="L")
    found["bright"] = solid(root / "bright.jpg", (230, 220, 240))
    return found


@pytest.mark.parametrize("channel_axis", [True, False], ids=["1xHxWx1", "1xHxW"])
def test_grayscale_models_classify_by_luma(tmp_path, images, channel_axis):
    path = tmp_path / "gray.tflite"
    manifest = Manifest(labels=tuple(GRAY_LABELS), image_size=(SIZE, SIZE))
    path.write_bytes(embed(gray_model(channel_axis), GRAY_LABELS, manifest))
    result = run("predict", path, images["dark"], images["bright"], images["red"], "--top-k", 1, "--json")
    assert result.exit_code == 0, result.output
    top = [p["classes"][0]["label"] for p in json.loads(result.stdout)["predictions"]]
    assert top == ["dark", "bright", "dark"]  # red's luma is 90: below mid-grey
    model = load_model(path)
    pixels = model.preprocess(images["red"])
    assert pixels.shape == (SIZE, SIZE, 1) and model.channels == 1
    # Luma as Pillow computes it, so a grayscale file reaches the model with its own values.
    expected = np.asarray(Image.open(images["red"]).convert("L").resize((SIZE, SIZE)))
    np.testing.assert_array_equal(pixels[..., 0], expected)
    np.testing.assert_array_equal(model.preprocess(images["dark"])[..., 0], np.full((SIZE, SIZE), 30, np.uint8))


def test_to_grayscale_matches_pillow_on_every_colour():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_grayscale(pixels)[..., 0], np.asarray(Image.fromarray(pixels).convert("L")))


def test_stateful_model_gives_the_same_answer_for_the_same_image(tmp_path, images):
    path = tmp_path / "stateful.tflite"
    path.write_bytes(embed(stateful_model(), LABELS))
    order = [images["red"], images["blue"], images["red"], images["red"], images["green"]]
    result = run("predict", path, *order, "--top-k", 3, "--json")
    assert result.exit_code == 0, result.output
    scores = [{c["label"]: c["score"] for c in p["classes"]} for p in json.loads(result.stdout)["predictions"]]
    assert scores[0] == scores[2] == scores[3]
    # Each answer equals a freshly loaded model's: nothing of the images before leaks in.
    for image, got in zip(order, scores):
        model = load_model(path)
        fresh = model.classify(model.preprocess(image))
        assert got == pytest.approx({label: float(s) for label, s in zip(LABELS, fresh)}, abs=1e-6)
    assert [max(s, key=s.get) for s in scores] == ["red", "blue", "red", "red", "green"]


def test_input_shapes_that_are_no_image_are_refused_clearly(tmp_path):
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(gray_model(), 0)
    model.subgraphs[0].tensors[0].shape = [2, SIZE, SIZE, 1]  # a batch of two: runs, but is no image input
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / "batch_of_two.tflite"
    path.write_bytes(bytes(builder.Output()))
    result = run("predict", path, tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "batch_of_two.tflite takes input of shape [2, 8, 8, 1]" in result.output
    assert "grayscale" in result.output


# --------------------------------------------------------------------------- messy folders


def messy_folder(root: Path, images: dict[str, Path]) -> tuple[Path, dict[str, str]]:
    """A folder of everything that goes wrong in real photo folders; returns the unreadable
    entries' names with a phrase their error must hold."""
    folder = root / "messy"
    (folder / "nested").mkdir(parents=True)
    good = images["red"].read_bytes()
    (folder / "good.png").write_bytes(good)
    (folder / "nested" / "deep.png").write_bytes(good)
    (folder / "png_named.jpg").write_bytes(good)                  # readable: the content decides
    (folder / "empty.jpg").write_bytes(b"")
    jpeg = images["bright"].read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "notes.jpg").write_text("not an image, a note\n")
    (folder / "folder.jpg").mkdir()                               # a folder named like an image
    (folder / "folder.jpg" / "inside.png").write_bytes(good)
    os.symlink("loop_b.jpg", folder / "loop_a.jpg")
    os.symlink("loop_a.jpg", folder / "loop_b.jpg")
    os.symlink("missing.png", folder / "broken.png")
    os.symlink(".", folder / "nested" / "again")                  # a folder link loop
    os.mkfifo(folder / "pipe.png")                                # opening it would block for ever
    (folder / os.fsdecode(b"caf\xe9.png")).write_bytes(good)      # a Latin-1 name: readable
    (folder / os.fsdecode(b"bad\xff.jpg")).write_bytes(b"\x00" * 10)
    (folder / "._good.png").write_bytes(b"\x00\x05\x16\x07")      # macOS metadata: skipped
    unreadable = {
        "empty.jpg": "is empty (0 bytes)", "truncated.jpg": "truncated",
        "notes.jpg": "not an image format", "loop_a.jpg": "symbolic links", "loop_b.jpg": "symbolic links",
        "broken.png": "broken symbolic link", "pipe.png": "not a regular file", "bad\\xff.jpg": "not an image format",
    }
    return folder, unreadable


def test_predict_names_and_skips_every_unreadable_file(tmp_path, images):
    folder, unreadable = messy_folder(tmp_path, images)
    model = write_models(tmp_path / "models")["uint8"]
    # A subprocess with a timeout: a pipe opened for reading would hang the test otherwise.
    result = subprocess.run([sys.executable, "-m", "edgeship.cli", "predict", str(model), str(folder), "--json"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and " object at 0x" not in result.stdout + result.stderr
    predictions = {Path(p["path"]).name: p for p in json.loads(result.stdout)["predictions"]}
    errors = {name: p["error"] for name, p in predictions.items() if "error" in p}
    assert set(errors) == set(unreadable), errors
    for name, phrase in unreadable.items():
        assert name in errors[name] and phrase in errors[name], (name, errors[name])
    read = {name for name, p in predictions.items() if "classes" in p}
    assert read == {"good.png", "deep.png", "png_named.jpg", "inside.png", "caf\\xe9.png"}
    assert all(predictions[name]["classes"][0]["label"] == "red" for name in read)
    assert "leads back to a folder already read" in result.stderr and "again" in result.stderr


def test_unlistable_folders_are_named_in_a_warning(tmp_path, images, caplog, monkeypatch):
    from edgeship.runtime import dataset

    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "hidden.png").write_bytes(images["red"].read_bytes())
    (tmp_path / "ok.png").write_bytes(images["red"].read_bytes())
    os.chmod(tmp_path / "locked", 0)
    if os.geteuid() == 0:
        # Root lists every folder whatever its permissions: refuse it as the kernel would refuse a user.
        real_scandir = os.scandir

        def scandir(path):
            if Path(path).name == "locked":
                raise PermissionError(13, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(dataset.os, "scandir", scandir)
    try:
        assert dataset.find_images(tmp_path) == [tmp_path / "ok.png"]
    finally:
        os.chmod(tmp_path / "locked", 0o755)
    assert f"Skipped folder {tmp_path / 'locked'}: Permission denied. Make it readable" in caplog.text


def test_image_errors_name_the_file_never_a_stream_object(tmp_path):
    import io

    stream = io.BytesIO(b"not an image")
    with pytest.raises(DataError) as error:
        load_image(stream)
    assert "object at 0x" not in str(error.value) and "an image stream" in str(error.value)
    stream.name = "photos/cat.jpg"
    with pytest.raises(DataError, match="photos/cat.jpg: not an image format"):
        load_image(stream)
    with pytest.raises(DataError, match="is a folder"):
        load_image(tmp_path)


def test_label_files_that_are_no_text_are_refused(tmp_path):
    (tmp_path / "labels.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01")
    with pytest.raises(DataError, match="labels.jpg is binary"):
        read_labels(tmp_path / "labels.jpg")
    with pytest.raises(DataError, match="not a regular file"):
        read_labels(tmp_path)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\nth\xe9\n".encode("latin-1"))
    assert read_labels(tmp_path / "latin1.txt") == ["caf\ufffd", "th\ufffd"]


@pytest.fixture(scope="module")
def keras_lstm(tmp_path_factory):
    """A Keras LSTM over the rows of a grayscale image, converted by TensorFlow's own converter:
    its UNIDIRECTIONAL_SEQUENCE_LSTM keeps its state in variable tensors between invokes."""
    from edgeship.train.tfkeras import keras, tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 1), batch_size=1)
    x = keras.layers.Reshape((SIZE, SIZE))(inputs)
    x = keras.layers.Rescaling(1 / 128.0, offset=-1.0)(x)
    x = keras.layers.LSTM(4)(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    path = tmp_path_factory.mktemp("lstm") / "lstm.tflite"
    manifest = Manifest(labels=("a", "b", "c"), image_size=(SIZE, SIZE), mean=0.0, std=1.0)  # raw pixels
    path.write_bytes(embed(tf.lite.TFLiteConverter.from_keras_model(model).convert(), ["a", "b", "c"], manifest))
    return model, path


def test_converted_lstm_answers_like_keras_every_time(keras_lstm, images):
    keras_model, path = keras_lstm
    order = [images["bright"], images["red"], images["bright"], images["bright"]]
    result = run("predict", path, *order, "--top-k", 3, "--json")
    assert result.exit_code == 0, result.output
    scores = [{c["label"]: c["score"] for c in p["classes"]} for p in json.loads(result.stdout)["predictions"]]
    assert scores[0] == scores[2] == scores[3]
    model = load_model(path)
    assert model.stateful and model.channels == 1
    for image, got in zip(order, scores):
        pixels = model.preprocess(image).astype(np.float32)[None]
        expected = keras_model.predict(pixels, verbose=0)[0]
        assert [got[label] for label in "abc"] == pytest.approx(expected.tolist(), abs=1e-5)


def test_training_scan_names_and_skips_every_unreadable_file(tmp_path, images, caplog):
    from edgeship.train.config import TrainConfig
    from edgeship.train.data import _collect, find_classes

    folder, unreadable = messy_folder(tmp_path, images)
    data = tmp_path / "data"
    data.mkdir()
    folder.rename(data / "red")
    (data / "blue").mkdir()
    (data / "blue" / "b.png").write_bytes(images["blue"].read_bytes())
    (data / os.fsdecode(b"gr\xfcn")).mkdir()  # a Latin-1 folder name cannot become a label
    caplog.set_level(logging.INFO)
    classes = find_classes(data)
    assert classes == ["blue", "red"] and "gr\\xfcn: its name is not UTF-8" in caplog.text
    config = TrainConfig(data_dir=str(data), image_size=32, resize_method="bilinear", cache_dir=str(tmp_path / "c"))
    good, skipped, _ = _collect(config, data, classes, "train")
    assert len(good) == 6
    reasons = {Path(s["path"]).name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"): s["reason"]
               for s in skipped}
    assert set(reasons) == set(unreadable), reasons
    for name in unreadable:
        assert f"Skipping {data / 'red' / name}: " in caplog.text
    assert "object at 0x" not in caplog.text
