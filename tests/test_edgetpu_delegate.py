"""The Edge TPU delegate path. The shared library libedgetpu is the one boundary we cannot have
here: those tests replace only ``ctypes.CDLL`` and ``load_delegate`` (and record what the real
LiteRT ``Interpreter`` is given). Tests marked ``edgetpu`` run on real hardware where present."""

from __future__ import annotations

import ctypes

import pytest

import ai_edge_litert.interpreter as litert
import edgetpu_models as models
from conftest import CORAL, needs_shared
from edgeship.errors import DelegateError, EdgeshipError
from edgeship.runtime.bench import BenchConfig, benchmark_models
from edgeship.runtime.device import edgetpu_library, load_edgetpu_delegate, make_interpreter
from runtime_models import write_models

DELEGATE = object()  # what the replaced load_delegate hands out


@pytest.fixture
def fake_library(monkeypatch) -> list:
    """libedgetpu "loads"; returns the (library, options) of every load_delegate call."""
    calls = []
    monkeypatch.setattr("edgeship.runtime.device.ctypes.CDLL", lambda name: None)
    monkeypatch.setattr(litert, "load_delegate", lambda library, options=None: calls.append((library, options)) or DELEGATE)
    return calls


@pytest.fixture
def interpreter_spy(monkeypatch) -> list:
    """Records the delegates given to LiteRT's Interpreter, then builds the real one without them."""
    received, real = [], litert.Interpreter

    def spy(*args, experimental_delegates=None, **kwargs):
        received.append(experimental_delegates)
        return real(*args, **kwargs)

    monkeypatch.setattr(litert, "Interpreter", spy)
    return received


@pytest.mark.parametrize("device, options", [
    ("edgetpu", {}), ("edgetpu:1", {"device": ":1"}), ("usb", {"device": "usb"}), ("usb:0", {"device": "usb:0"}),
    ("pci", {"device": "pci"}), ("pci:1", {"device": "pci:1"}),
])
def test_every_device_form_reaches_the_delegate_and_the_interpreter(device, options, fake_library, interpreter_spy,
                                                                    tmp_path):
    model = write_models(tmp_path)["uint8"]
    make_interpreter(model, device=device)
    assert fake_library == [(edgetpu_library(), options)]
    assert interpreter_spy == [[DELEGATE]]


def test_cpu_loads_no_delegate(fake_library, interpreter_spy, tmp_path):
    make_interpreter(write_models(tmp_path)["uint8"], device="cpu")
    assert fake_library == [] and interpreter_spy == [None]


@pytest.mark.parametrize("system, library", [("Linux", "libedgetpu.so.1"), ("Darwin", "libedgetpu.1.dylib"),
                                             ("Windows", "edgetpu.dll")])
def test_library_name_per_operating_system(system, library, monkeypatch, fake_library):
    monkeypatch.setattr("edgeship.runtime.device.platform.system", lambda: system)
    load_edgetpu_delegate("usb")
    assert fake_library == [(library, {"device": "usb"})]


@pytest.mark.parametrize("device, hint, other", [("usb:0", "plugdev", "/dev/apex_0"), ("pci:0", "/dev/apex_0", "plugdev")])
def test_no_device_message_has_per_type_hints_and_no_stray_newline(device, hint, other, monkeypatch):
    def fail(library, options=None):
        raise ValueError("Failed to load delegate from libedgetpu.so.1\n")

    monkeypatch.setattr("edgeship.runtime.device.ctypes.CDLL", lambda name: None)
    monkeypatch.setattr(litert, "load_delegate", fail)
    with pytest.raises(DelegateError) as error:
        load_edgetpu_delegate(device)
    message = str(error.value)
    assert "\n" not in message and hint in message and other not in message and "--device cpu" in message


@pytest.mark.parametrize("failure, advice", [
    ("Failed precondition: Package requires runtime version (14), which is newer than this runtime version (13).\n"
     "Node number 0 (edgetpu-custom-op) failed to prepare.", "edgetpu_compiler -m 13"),
    ("Encountered unresolved custom op: edgetpu-custom-op.\nNode number 0 (edgetpu-custom-op) failed to prepare.",
     "update libedgetpu"),
])
def test_a_delegate_failure_is_not_called_a_bad_model(failure, advice, fake_library, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError(failure)  # LiteRT's text when the runtime cannot take the compiled op

    monkeypatch.setattr(litert, "Interpreter", refuse)
    with pytest.raises(DelegateError) as error:
        make_interpreter(models.chain(), device="usb")
    assert advice in str(error.value) and "\n" not in str(error.value)


def test_bench_labels_a_cpu_only_model_as_cpu(fake_library, interpreter_spy, tmp_path):
    rows = benchmark_models([write_models(tmp_path)["uint8"]], BenchConfig(num_runs=3, num_warmup_runs=0, device="usb"))
    assert rows[0]["device"] == "cpu" and "not compiled for the Edge TPU" in rows[0]["note"]
    assert rows[0]["first_inference_ms"] > 0


def test_a_failed_invoke_is_a_clear_error_and_bench_goes_on(tmp_path):
    failing = tmp_path / "failing.tflite"
    failing.write_bytes(models.failing_invoke())
    rows = benchmark_models([failing, write_models(tmp_path)["uint8"]], BenchConfig(num_runs=3, num_warmup_runs=0))
    assert rows[0]["error"].startswith(f"LiteRT cannot run {failing}: gather index out of bounds")
    assert "median_ms" in rows[1]


def _edgetpu_present() -> bool:
    try:
        ctypes.CDLL(edgetpu_library())
        load_edgetpu_delegate("")
        return True
    except (OSError, EdgeshipError):
        return False


@pytest.mark.edgetpu
@needs_shared(CORAL)
def test_compiled_model_runs_on_a_real_edgetpu():
    if not _edgetpu_present():
        pytest.skip("no Edge TPU delegate loads here")
    rows = benchmark_models([CORAL / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"],
                            BenchConfig(num_runs=5, device="edgetpu"))
    assert rows[0]["device"] == "edgetpu" and rows[0]["first_inference_ms"] > rows[0]["median_ms"] > 0


def test_invoke_error_names_the_device_and_what_to_check():
    from edgeship.errors import ModelFormatError
    from edgeship.runtime.device import invoke_error

    on_usb = invoke_error("m.tflite", "usb:0", RuntimeError("Failed to execute request\nNode number 0 failed"))
    assert isinstance(on_usb, DelegateError) and "\n" not in str(on_usb)
    assert "unplugged or be under-powered" in str(on_usb) and "plugdev" in str(on_usb)
    on_cpu = invoke_error("m.tflite", "cpu", RuntimeError("gather index out of bounds"))
    assert isinstance(on_cpu, ModelFormatError) and "gather index out of bounds" in str(on_cpu)
