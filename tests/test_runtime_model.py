"""Loading models: Coral's reference cases, labels, input feeding, ops and file checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeship.errors import ConfigError, DelegateError, ModelFormatError
from edgeship.runtime import get_classes, is_full_integer, load_model, predict, read_graph
from edgeship.runtime.graph import TensorInfo, float_tensors, parse_graph
from edgeship.runtime.labels import parse_labels
from edgeship.runtime.manifest import strip_embedded
from edgeship.runtime.device import edgetpu_library, load_edgetpu_delegate, parse_device
from edgeship.runtime.input_feed import make_input_feed

from conftest import CORAL, CORAL_RESIZE, coral_cases
from runtime_models import LABELS, write_images, write_models


def case_passes(case: dict, classes) -> bool:
    """The upstream rule: expected label in the top-k with a score >= (or >) the minimum."""
    for c in classes:
        if c.id == case["expected_label_index"]:
            return c.score >= case["min_score"] if case["min_score_inclusive"] else c.score > case["min_score"]
    return False


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return write_models(tmp_path_factory.mktemp("models"))


@pytest.mark.parametrize("case", coral_cases())
def test_coral_cases_with_labels_read_from_the_model_file(case):
    model = load_model(CORAL / case["model"], resize_method=CORAL_RESIZE[case["upstream_resize_mode"]])
    assert model.labels_source == "embedded"  # not the imagenet_labels.txt beside it
    assert model.feed.describe() == "raw uint8 pixels"
    [prediction] = predict(model, [CORAL / case["image"]], top_k=case["top_k"])
    assert case_passes(case, prediction.classes), prediction.classes
    expected = [c for c in prediction.classes if c.id == case["expected_label_index"]]
    assert expected[0].label == case["expected_label"]


def test_edgetpu_build_on_cpu_says_what_to_do():
    with pytest.raises(ModelFormatError) as error:
        load_model(CORAL / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")
    assert "compiled for the Edge TPU" in str(error.value)
    assert "--device usb" in str(error.value) and "CPU build" in str(error.value)


def test_unknown_custom_op_is_named_before_allocating():
    with pytest.raises(ModelFormatError, match="fake-op-double"):
        load_model(CORAL / "invalid_models" / "model_invoking_error.tflite")


def test_our_own_custom_op_model_is_refused_too(models):
    with pytest.raises(ModelFormatError, match="custom op.*fake-op-double"):
        load_model(models["custom"])


def test_usb_device_without_libedgetpu_gives_the_hint():
    import ctypes

    try:
        ctypes.CDLL("libedgetpu.so.1")
        pytest.skip("libedgetpu is installed here")
    except OSError:
        pass
    with pytest.raises(DelegateError) as error:
        load_model(CORAL / "mobilenet_v1_0.25_128_quant_edgetpu.tflite", device="usb")
    assert "libedgetpu" in str(error.value) and "--device cpu" in str(error.value)


def test_edgetpu_delegate_gets_pycoral_style_options(monkeypatch):
    # The shared library itself is the one boundary we cannot have here.
    import ai_edge_litert.interpreter as litert

    calls = []
    monkeypatch.setattr("edgeship.runtime.device.ctypes.CDLL", lambda name: None)
    monkeypatch.setattr(litert, "load_delegate", lambda library, options=None: calls.append((library, options)) or "d")
    assert load_edgetpu_delegate("usb:1") == "d"
    assert calls == [(edgetpu_library(), {"device": "usb:1"})]

    def fail(library, options=None):
        raise ValueError("Failed to load delegate from libedgetpu.so.1")

    monkeypatch.setattr(litert, "load_delegate", fail)
    with pytest.raises(DelegateError, match="could not open an Edge TPU at 'pci:0'.*--device cpu"):
        load_edgetpu_delegate("pci:0")


@pytest.mark.parametrize("device, option", [("cpu", None), ("edgetpu", ""), ("usb", "usb"), ("usb:0", "usb:0"),
                                            ("pci:1", "pci:1")])
def test_device_grammar(device, option):
    assert parse_device(device) == option


@pytest.mark.parametrize("device", ["gpu", "usb:", "cpu:0", "usb:x", ""])
def test_bad_devices_are_refused(device):
    with pytest.raises(ConfigError, match="expected cpu, edgetpu, usb"):
        parse_device(device)


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    data = strip_embedded((CORAL / "mobilenet_v1_0.25_128_quant.tflite").read_bytes())  # cut the flatbuffer itself
    for size in (4, 8, 64, 4096, len(data) // 2, len(data) - 4096, len(data) - 1):
        path = tmp_path / f"cut_{size}.tflite"
        path.write_bytes(data[:size])
        with pytest.raises(ModelFormatError, match="truncated|not a TFLite model"):
            load_model(path)
    with pytest.raises(ModelFormatError, match="BMP image"):
        load_model(CORAL / "cat.bmp")


def test_empty_missing_and_folder_paths(tmp_path):
    (tmp_path / "empty.tflite").write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty"):
        load_model(tmp_path / "empty.tflite")
    with pytest.raises(ModelFormatError, match="not found"):
        load_model(tmp_path / "missing.tflite")
    with pytest.raises(ModelFormatError, match="folder"):
        load_model(tmp_path)
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    with pytest.raises(ModelFormatError, match="JPEG"):
        load_model(tmp_path / "photo.jpg")


def test_cut_models_never_crash_the_interpreter(models, tmp_path):
    # Every prefix of a model: checked in a child process, so a crash would show as a signal.
    script = f"""
import sys
from edgeship.errors import ModelFormatError
from edgeship.runtime import load_model
data = open({str(models["float"])!r}, "rb").read()
for size in range(0, len(data), 7):
    open({str(tmp_path / "cut.tflite")!r}, "wb").write(data[:size])
    try:
        load_model({str(tmp_path / "cut.tflite")!r})
    except ModelFormatError:
        pass
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_manifest_decides_preprocessing_and_arguments_override(models):
    model = load_model(models["float"])
    assert (model.labels, model.labels_source, model.resize_method) == (LABELS, "manifest", "bilinear")
    assert (model.feed.mean, model.feed.std) == (128.0, 128.0)
    override = load_model(models["float"], resize_method="area", mean=0.0, std=255.0, labels=["a", "b", "c"])
    assert (override.resize_method, override.feed.mean, override.feed.std) == ("area", 0.0, 255.0)
    assert override.labels == ["a", "b", "c"]
    bare = load_model(models["bare"])
    assert bare.labels is None and bare.manifest is None and bare.feed.mean == 127.5
    with pytest.raises(ConfigError, match="resize method"):
        load_model(models["float"], resize_method="bicubic")


def test_label_files_in_both_forms(models, tmp_path):
    (tmp_path / "indexed.txt").write_text("0  red\n1: green\n2 blue\n")
    (tmp_path / "plain.txt").write_text("red\ngreen\nblue\n\n")
    for name in ("indexed.txt", "plain.txt"):
        assert load_model(models["bare"], labels=tmp_path / name).labels == LABELS
    assert parse_labels("0 cat\n2 dog\n") == ["cat", "", "dog"]
    assert parse_labels("7 up\n7 up\n") == ["7 up", "7 up"]  # repeated index: plain labels


def test_uint8_and_float_models_see_the_same_pixels(models, tmp_path):
    data = write_images(tmp_path / "data", per_class=2)
    uint8, floating = load_model(models["uint8"]), load_model(models["float"])
    assert uint8.feed.describe() == "raw uint8 pixels"
    for path in sorted(data.glob("*/*.png")):
        a, b = uint8.classify(uint8.preprocess(path)), floating.classify(floating.preprocess(path))
        np.testing.assert_allclose(a, b, atol=1e-5)
        assert LABELS[int(a.argmax())] == path.parent.name


def test_input_feed_is_exact_when_the_quantization_allows_it():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    uint8 = TensorInfo(0, "in", "uint8", (1, 16, 16, 3), (1 / 128,), (128,))
    int8 = TensorInfo(0, "in", "int8", (1, 16, 16, 3), (1 / 128,), (0,))
    feed = make_input_feed(int8, mean=128, std=128)
    assert feed.offset == -128
    np.testing.assert_array_equal(feed(pixels), pixels.astype(np.int16) - 128)
    np.testing.assert_array_equal(make_input_feed(int8)(pixels), pixels.astype(np.int16) - 128)  # third-party
    inexact = make_input_feed(uint8, mean=127.5, std=127.5)
    assert inexact.offset is None
    expected = np.clip(np.rint((pixels - 127.5) / 127.5 * 128 + 128), 0, 255)
    np.testing.assert_array_equal(inexact(pixels), expected)
    floating = make_input_feed(TensorInfo(0, "in", "float32", (1, 16, 16, 3)))
    np.testing.assert_allclose(floating(pixels), (pixels - 127.5) / 127.5, atol=1e-6)


def test_full_integer_and_edgetpu_from_the_flatbuffer(models):
    cpu = read_graph(CORAL / "mobilenet_v1_0.25_128_quant.tflite")
    assert is_full_integer(cpu) and not cpu.is_edgetpu_compiled and cpu.op_counts["CONV_2D"] == 15
    tpu = read_graph(CORAL / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")
    assert tpu.is_edgetpu_compiled and is_full_integer(tpu)
    assert not is_full_integer(models["uint8"])
    assert {f["op"] for f in float_tensors(read_graph(models["uint8"]))} >= {"MEAN", "SOFTMAX"}
    assert not is_full_integer(models["float"].read_bytes(), allow_float_io=True)  # float inside too


def test_parse_graph_refuses_short_buffers():
    with pytest.raises(ModelFormatError, match="only 3 bytes"):
        parse_graph(b"abc")


def test_get_classes_threshold_is_inclusive_and_ties_keep_index_order():
    scores = np.array([0.25, 0.5, 0.25, 0.0])
    assert [c.id for c in get_classes(scores, top_k=3)] == [1, 0, 2]
    assert [c.id for c in get_classes(scores, top_k=4, score_threshold=0.25)] == [1, 0, 2]
    assert get_classes(scores, top_k=2, labels=["a", "", "c", "d"])[0].label == "1"
    with pytest.raises(ConfigError, match="top_k"):
        get_classes(scores, top_k=0)
