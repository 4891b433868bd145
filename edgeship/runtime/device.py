"""Where a model runs: the device grammar, the Edge TPU delegate, and a checked interpreter.

Device strings follow pycoral's grammar: ``cpu``, ``edgetpu`` (the first Edge TPU found),
``usb``, ``usb:N``, ``pci``, ``pci:N``.

Example:
    >>> parse_device("usb:1"), parse_device("cpu")
    ('usb:1', None)
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import re

from edgeship.errors import ConfigError, DelegateError, ModelFormatError
from edgeship.runtime.graph import EDGETPU_CUSTOM_OP, Graph, parse_graph, read_model_bytes

__all__ = ["edgetpu_library", "load_edgetpu_delegate", "make_interpreter", "interpreter_for_graph", "parse_device",
           "run_error"]

logger = logging.getLogger(__name__)

_EDGETPU_LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
_DEVICE_PATTERN = re.compile(r"^(cpu|edgetpu|usb|pci)(?::(\d+))?$")
# Custom ops that LiteRT's builtin resolver registers itself; any other custom op is missing.
_RESOLVED_CUSTOM_OPS = frozenset({"TFLite_Detection_PostProcess", "Mfcc", "AudioSpectrogram"})


def edgetpu_library() -> str:
    """The Edge TPU runtime's shared library name on this operating system."""
    return _EDGETPU_LIBRARIES.get(platform.system(), _EDGETPU_LIBRARIES["Linux"])


def parse_device(device: str) -> str | None:
    """Validates a device string; returns the Edge TPU delegate's ``device`` option.

    ``cpu`` gives None (no delegate); ``edgetpu`` gives ``""`` (the first Edge TPU found);
    ``usb``, ``usb:N``, ``pci``, ``pci:N`` are passed on as the delegate expects them.

    Example:
        >>> parse_device("usb:1"), parse_device("edgetpu"), parse_device("cpu")
        ('usb:1', '', None)
    """
    match = _DEVICE_PATTERN.match(device.strip().lower())
    if not match or (match.group(1) in ("cpu", "edgetpu") and match.group(2) is not None):
        raise ConfigError(f"Unknown device {device!r}; expected cpu, edgetpu, usb, usb:N, pci or pci:N.")
    kind = match.group(1)
    if kind == "cpu":
        return None
    return "" if kind == "edgetpu" else device.strip().lower()


def load_edgetpu_delegate(device_option: str = ""):
    """Loads the Edge TPU delegate for ``device_option`` (``""``, ``usb``, ``usb:0``, ``pci:0``...).

    Raises:
        DelegateError: the Edge TPU runtime is not installed, or found no such device.
    """
    from ai_edge_litert.interpreter import load_delegate

    library = edgetpu_library()
    try:
        # Probe the library on its own first: a failed load_delegate leaves a half-built
        # delegate whose destructor prints a stray traceback.
        ctypes.CDLL(library)
    except OSError as e:
        raise DelegateError(
            f"The Edge TPU runtime ({library}) was not found: {e}. Install libedgetpu "
            "(https://coral.ai/docs/accelerator/get-started/), or pass --device cpu to run without it."
        ) from e
    options = {"device": device_option} if device_option else {}
    try:
        return load_delegate(library, options)
    except (ValueError, OSError, RuntimeError) as e:
        what = f"an Edge TPU at {device_option!r}" if device_option else "an Edge TPU"
        raise DelegateError(
            f"{library} loaded but could not open {what}: {e}. Check that the device is plugged in "
            "(`lsusb` shows 'Global Unichip' or 'Google'), or pass --device cpu."
        ) from e


def _check_ops(graph: Graph, name: str, on_edgetpu: bool) -> None:
    if graph.is_edgetpu_compiled and not on_edgetpu:
        raise ModelFormatError(
            f"{name} is compiled for the Edge TPU (it holds {EDGETPU_CUSTOM_OP} nodes), which the CPU "
            "cannot run. Use the CPU build of the model (usually the same name without '_edgetpu'), "
            "or run it on an Edge TPU with --device usb (or pci, edgetpu)."
        )
    # On an Edge TPU the delegate claims its own op; every other custom op must be builtin.
    missing = [op for op in graph.custom_ops if op not in _RESOLVED_CUSTOM_OPS and op != EDGETPU_CUSTOM_OP]
    flex = [op for op in missing if op.startswith("Flex")]
    if flex:
        raise ModelFormatError(
            f"{name} needs TensorFlow ops ({', '.join(flex)}) that LiteRT cannot run. Convert the "
            "model with builtin TFLite ops only (no SELECT_TF_OPS)."
        )
    if missing:
        raise ModelFormatError(
            f"{name} uses custom op(s) {', '.join(missing)} that this runtime does not provide. "
            "Convert the model with builtin TFLite ops only, or run it where that op is registered."
        )
    if on_edgetpu and not graph.is_edgetpu_compiled:
        logger.warning("%s is not compiled for the Edge TPU: every op runs on the CPU.", name)


def make_interpreter(
    model: str | os.PathLike | bytes,
    device: str = "cpu",
    num_threads: int | None = None,
):
    """An allocated LiteRT interpreter for a ``.tflite`` path or its bytes.

    Args:
        model: path of the model, or its content.
        device: ``cpu``, ``edgetpu``, ``usb``, ``usb:N``, ``pci`` or ``pci:N``.
        num_threads: CPU threads; None lets LiteRT choose.

    Raises:
        ModelFormatError: the file is missing, empty, not a TFLite model, truncated, or needs
            an op this interpreter lacks (such as an Edge TPU node on the CPU).
        DelegateError: an Edge TPU device was asked for and cannot be used.

    Example:
        >>> interpreter = make_interpreter("model.tflite", num_threads=2)  # doctest: +SKIP
        >>> interpreter.get_input_details()[0]["shape"]                     # doctest: +SKIP
        array([  1, 128, 128,   3], dtype=int32)
    """
    if isinstance(model, (bytes, bytearray)):
        data, name = bytes(model), "the model"
    else:
        data, name = read_model_bytes(model), str(model)
    graph = parse_graph(data, name)
    return interpreter_for_graph(data, graph, name, device, num_threads)


def interpreter_for_graph(data: bytes, graph: Graph, name: str, device: str, num_threads: int | None):
    from ai_edge_litert.interpreter import Interpreter

    device_option = parse_device(device)
    if num_threads is not None and num_threads < 1:
        raise ConfigError(f"num_threads must be at least 1; received {num_threads}.")
    _check_ops(graph, name, on_edgetpu=device_option is not None)
    delegates = [load_edgetpu_delegate(device_option)] if device_option is not None else None
    try:
        interpreter = Interpreter(model_content=data, experimental_delegates=delegates, num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ModelFormatError(f"LiteRT cannot load {name}: {str(e).strip().splitlines()[0]}") from e
    return interpreter




def run_error(name: str, error: Exception) -> ModelFormatError:
    """The error for a model that LiteRT loaded but could not run: it checks some of a model
    only then (a constant input without data)."""
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelFormatError(f"LiteRT cannot run {name}: {detail}. The model file is damaged or was written for "
                            "another runtime; export or copy it again.")
