"""Where a model runs: the device grammar, the Edge TPU delegate, and a checked interpreter.

Device strings follow pycoral's grammar: ``cpu``, ``edgetpu`` (the first Edge TPU found),
``edgetpu:N`` (the N-th Edge TPU of any type, pycoral's ``:N``), ``usb``, ``usb:N``, ``pci``,
``pci:N``.

Example:
    >>> parse_device("usb:1"), parse_device("edgetpu:1"), parse_device("cpu")
    ('usb:1', ':1', None)
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import re

from edgeship.errors import ConfigError, DelegateError, EdgeshipError, ModelFormatError
from edgeship.runtime.graph import EDGETPU_CUSTOM_OP, Graph, parse_graph, read_model_bytes
from edgeship.runtime.native_stderr import filtered_native_stderr

__all__ = [
    "DEVICE_HINTS", "device_hint", "edgetpu_library", "invoke_error", "load_edgetpu_delegate", "make_interpreter",
    "interpreter_for_graph", "parse_device",
]

logger = logging.getLogger(__name__)

_EDGETPU_LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
_DEVICE_PATTERN = re.compile(r"^(cpu|edgetpu|usb|pci)(?::(\d+))?$")
_VERSION_MISMATCH = re.compile(r"requires runtime version \((\d+)\).*?this runtime version \((\d+)\)", re.S)
# What to check when an Edge TPU of each kind cannot be opened (Coral's get-started guides).
DEVICE_HINTS = {
    "usb": (
        "USB Accelerator: `lsusb` should list 1a6e:089a (Global Unichip, before first use) or 18d1:9302 "
        "(Google, once the runtime has loaded its firmware); install Coral's udev rules (shipped with the "
        "libedgetpu package) and add your user to the plugdev group, then log in again; only one process at "
        "a time can hold a USB Edge TPU; use a USB 3 port or a powered hub (a Pi's port may not give enough power)."
    ),
    "pci": (
        "M.2/PCIe card: /dev/apex_0 must exist; it comes from the gasket/apex kernel driver (Coral's "
        "gasket-dkms package, or your kernel's apex module); your user needs access to it (the apex group via "
        "Coral's udev rule); `lspci -nn | grep 089a` should show the card."
    ),
}
# Custom ops that LiteRT's builtin resolver registers itself; any other custom op is missing.
_RESOLVED_CUSTOM_OPS = frozenset({"TFLite_Detection_PostProcess", "Mfcc", "AudioSpectrogram"})


def edgetpu_library() -> str:
    """The Edge TPU runtime's shared library name on this operating system."""
    return _EDGETPU_LIBRARIES.get(platform.system(), _EDGETPU_LIBRARIES["Linux"])


def parse_device(device: str) -> str | None:
    """Validates a device string; returns the Edge TPU delegate's ``device`` option.

    ``cpu`` gives None (no delegate); ``edgetpu`` gives ``""`` (the first Edge TPU found) and
    ``edgetpu:N`` gives ``":N"`` (the N-th of any type); ``usb``, ``usb:N``, ``pci``, ``pci:N``
    are passed on as the delegate expects them.

    Example:
        >>> parse_device("usb:1"), parse_device("edgetpu"), parse_device("edgetpu:0"), parse_device("cpu")
        ('usb:1', '', ':0', None)
    """
    match = _DEVICE_PATTERN.match(device.strip().lower())
    if not match or (match.group(1) == "cpu" and match.group(2) is not None):
        raise ConfigError(f"Unknown device {device!r}; expected cpu, edgetpu, usb, usb:N, pci, pci:N or edgetpu:N (the N-th Edge TPU of any type).")
    kind, number = match.groups()
    if kind == "cpu":
        return None
    if kind == "edgetpu":
        return "" if number is None else f":{number}"
    return device.strip().lower()


def device_hint(device_option: str) -> str:
    """What to check for a device option that did not open (both kinds when it names none)."""
    kinds = [k for k in DEVICE_HINTS if device_option.startswith(k)] or list(DEVICE_HINTS)
    return " ".join(DEVICE_HINTS[k] for k in kinds)


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
        reason = " ".join(str(e).split())  # LiteRT's text carries a stray newline
        raise DelegateError(
            f"{library} loaded but could not open {what}: {reason}. {device_hint(device_option)} "
            "Or pass --device cpu."
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
        num_threads: CPU threads; None leaves LiteRT's default, which is 1 thread in LiteRT 2.x.

    Raises:
        ModelFormatError: the file is missing, empty, not a TFLite model, truncated, or needs
            an op this interpreter lacks (such as an Edge TPU node on the CPU).
        DelegateError: an Edge TPU device was asked for and cannot be used.

    Example:
        >>> interpreter = make_interpreter("mobilenet_v1_0.25_128_quant.tflite", num_threads=2)
        >>> interpreter.get_input_details()[0]["shape"]
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
        with filtered_native_stderr():  # LiteRT announces its XNNPACK delegate on stderr
            interpreter = Interpreter(model_content=data, experimental_delegates=delegates, num_threads=num_threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        if delegates:
            raise _delegate_failure(name, e) from e
        raise ModelFormatError(f"LiteRT cannot load {name}: {str(e).strip().splitlines()[0]}") from e
    return interpreter


def _delegate_failure(name: str, error: Exception) -> DelegateError:
    """With the Edge TPU delegate applied, a load failure is the runtime's, not the model's."""
    text = " ".join(str(error).split())
    mismatch = _VERSION_MISMATCH.search(text)
    if mismatch:
        needed, installed = mismatch.groups()
        return DelegateError(
            f"{name} was compiled for Edge TPU runtime {needed}, but the installed libedgetpu is runtime "
            f"{installed}. Update libedgetpu (see `edgeship doctor`), or compile for the older runtime: "
            f"`edgetpu_compiler -m {installed}` (`edgeship compile MODEL -m {installed}`)."
        )
    if EDGETPU_CUSTOM_OP in text:
        return DelegateError(
            f"The Edge TPU delegate did not take {name}'s {EDGETPU_CUSTOM_OP} ({text[:200]}). The libedgetpu in use "
            "does not match this ai-edge-litert or this model: run `edgeship doctor --device ...` for the "
            "supported pairs, update libedgetpu, or recompile with `edgetpu_compiler -m N` for an older runtime."
        )
    return DelegateError(f"LiteRT could not load {name} with the Edge TPU delegate: {text[:300]}. "
                         "Run `edgeship doctor` to check the set-up, or pass --device cpu.")


def invoke_error(name, device: str, error: Exception) -> EdgeshipError:
    """A clear error for a failed ``invoke()``: on an Edge TPU usually the device itself
    (unplugged, under-powered), on the CPU the model."""
    reason = " ".join(str(error).split())[:300].rstrip(".") or type(error).__name__
    option = parse_device(device)
    if option is None:  # LiteRT checks some of a model only when it runs (a constant input without data)
        return ModelFormatError(f"LiteRT cannot run {name}: {reason}. The model file is damaged or was written for "
                                "another runtime; export or copy it again.")
    return DelegateError(
        f"Invoking {name} on the Edge TPU ({device}) failed: {reason}. The device may have been unplugged or be "
        f"under-powered. {device_hint(option)}"
    )
