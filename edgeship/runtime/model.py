"""Load a ``.tflite`` classifier on the CPU or an Edge TPU, and feed it pixels.

:func:`load_model` reads the file once: it checks the flatbuffer (a foreign or cut file gets a
clear error instead of an interpreter crash), names ops this interpreter cannot run before
allocating, reads the labels and manifest the file carries, and works out how ``uint8``
pixels reach the input tensor:

- edgeship models: resize method, mean and std from the manifest.
- third-party models without a manifest: bilinear resize; a ``uint8`` input takes raw pixels
  (pycoral's convention, and what Coral's models expect); a float input takes
  ``(pixel - 127.5) / 127.5``.
- explicit ``resize_method``, ``mean``, ``std`` arguments override both.

A quantized input then gets ``round((pixel - mean) / std / scale + zero_point)``, computed as
an exact integer shift of the pixels when ``1 / (std * scale) == 1`` (edgeship's int8 models
and Coral's: raw pixels, bit-exact), in float otherwise.

Example:
    >>> model = load_model("mobilenet_v1_0.25_128_quant.tflite")  # doctest: +SKIP
    >>> scores = model.classify(model.preprocess("cat.jpg"))      # doctest: +SKIP
    >>> model.labels[int(scores.argmax())]                         # doctest: +SKIP
    'tiger cat'
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import re
from dataclasses import dataclass

import numpy as np

from edgeship.errors import ConfigError, DelegateError, ModelFormatError
from edgeship.runtime.graph import EDGETPU_CUSTOM_OP, Graph, TensorInfo, parse_graph, read_model_bytes
from edgeship.runtime.image import RESIZE_BILINEAR, RESIZE_METHODS, preprocess, resize
from edgeship.runtime.labels import parse_labels, read_labels
from edgeship.runtime.manifest import Manifest, read_embedded

__all__ = [
    "DEFAULT_FLOAT_MEAN",
    "DEFAULT_FLOAT_STD",
    "InputFeed",
    "Model",
    "edgetpu_library",
    "load_edgetpu_delegate",
    "load_model",
    "make_input_feed",
    "make_interpreter",
    "parse_device",
]

logger = logging.getLogger(__name__)

# Float inputs of third-party models: the common MobileNet/Inception range [-1, 1].
DEFAULT_FLOAT_MEAN = 127.5
DEFAULT_FLOAT_STD = 127.5

_EDGETPU_LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
_DEVICE_PATTERN = re.compile(r"^(cpu|edgetpu|usb|pci)(?::(\d+))?$")
# Custom ops that LiteRT's builtin resolver registers itself; any other custom op is missing.
_RESOLVED_CUSTOM_OPS = frozenset({"TFLite_Detection_PostProcess", "Mfcc", "AudioSpectrogram"})
_QUANTIZED_DTYPES = {"uint8": np.uint8, "int8": np.int8, "int16": np.int16}


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
    return _interpreter(data, graph, name, device, num_threads)


def _interpreter(data: bytes, graph: Graph, name: str, device: str, num_threads: int | None):
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


@dataclass(frozen=True)
class InputFeed:
    """How ``uint8`` pixels become the input tensor: ``q = (pixel - mean) / std / scale + zero_point``.

    ``offset`` is set when that is an exact integer shift of the pixels (0: raw pixels).
    """

    dtype: str
    mean: float
    std: float
    scale: float | None = None
    zero_point: int | None = None
    offset: int | None = None

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """The input tensor's values (without the batch axis) for ``(H, W, 3)`` uint8 pixels."""
        if self.offset == 0 and self.dtype == "uint8":
            return np.asarray(pixels, dtype=np.uint8)
        if self.offset is not None:
            info = np.iinfo(_QUANTIZED_DTYPES[self.dtype])
            shifted = pixels.astype(np.int32) + self.offset
            return np.clip(shifted, info.min, info.max).astype(_QUANTIZED_DTYPES[self.dtype])
        values = (pixels.astype(np.float32) - np.float32(self.mean)) / np.float32(self.std)
        if self.scale is None:
            return values.astype(np.float16 if self.dtype == "float16" else np.float32)
        info = np.iinfo(_QUANTIZED_DTYPES[self.dtype])
        quantized = np.rint(values / np.float32(self.scale) + np.float32(self.zero_point))
        return np.clip(quantized, info.min, info.max).astype(_QUANTIZED_DTYPES[self.dtype])

    def describe(self) -> str:
        if self.offset == 0:
            return "raw uint8 pixels"
        if self.offset is not None:
            return f"pixels {self.offset:+d} as {self.dtype} (exact)"
        text = f"(pixel - {self.mean:g}) / {self.std:g}"
        if self.scale is not None:
            text += f", quantized to {self.dtype} (scale {self.scale:g}, zero point {self.zero_point})"
        return text

    def to_dict(self) -> dict:
        return {**self.__dict__, "description": self.describe()}


def make_input_feed(tensor: TensorInfo, mean: float | None = None, std: float | None = None) -> InputFeed:
    """The :class:`InputFeed` for an input tensor; None mean/std take the third-party defaults.

    Example:
        >>> from edgeship.runtime.graph import TensorInfo
        >>> t = TensorInfo(0, "input", "uint8", (1, 160, 160, 3), (1 / 128,), (128,))
        >>> make_input_feed(t, mean=128, std=128).describe()
        'raw uint8 pixels'
        >>> make_input_feed(t, mean=127.5, std=127.5).describe()
        '(pixel - 127.5) / 127.5, quantized to uint8 (scale 0.0078125, zero point 128)'
    """
    dtype = tensor.dtype
    if dtype not in _QUANTIZED_DTYPES:
        if dtype not in ("float32", "float16"):
            raise ModelFormatError(f"Unsupported input tensor type {dtype}; expected uint8, int8 or float32.")
        mean = DEFAULT_FLOAT_MEAN if mean is None else mean
        std = DEFAULT_FLOAT_STD if std is None else std
        return InputFeed(dtype, float(mean), _check_std(std))
    # Raw pixels for uint8 (pycoral's convention), pixels - 128 for int8.
    natural_offset = -128 if dtype == "int8" else 0
    if len(tensor.scale) != 1 or tensor.scale[0] <= 0:
        if mean is None and std is None:
            return InputFeed(dtype, 0.0, 1.0, offset=natural_offset)
        raise ModelFormatError(f"The {dtype} input has no single quantization scale; cannot apply mean/std.")
    scale, zero_point = float(tensor.scale[0]), int(tensor.zero_point[0] if tensor.zero_point else 0)
    if mean is None and std is None:
        # The normalisation the quantization itself implies: q == pixel + natural_offset.
        mean, std = float(zero_point - natural_offset), 1.0 / scale
    mean = DEFAULT_FLOAT_MEAN if mean is None else float(mean)
    std = DEFAULT_FLOAT_STD if std is None else _check_std(std)
    gain = 1.0 / (std * scale)
    shift = zero_point - mean * gain
    offset = int(round(shift)) if abs(gain - 1.0) < 1e-6 and abs(shift - round(shift)) < 1e-6 else None
    return InputFeed(dtype, mean, std, scale, zero_point, offset)


def _check_std(std: float) -> float:
    if not std > 0:
        raise ConfigError(f"std must be positive; received {std}.")
    return float(std)


class Model:
    """A loaded classifier: interpreter, labels, manifest, and how to feed it. Use :func:`load_model`."""

    def __init__(self, path: str, interpreter, graph: Graph, labels: list[str] | None, labels_source: str | None,
                 manifest: Manifest | None, resize_method: str, feed: InputFeed, device: str):
        self.path = path
        self.interpreter = interpreter
        self.graph = graph
        self.labels = labels
        self.labels_source = labels_source
        self.manifest = manifest
        self.resize_method = resize_method
        self.feed = feed
        self.device = device
        self._input = interpreter.get_input_details()[0]
        self._output = interpreter.get_output_details()[0]
        shape = tuple(int(v) for v in self._input["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise ModelFormatError(
                f"{path} takes input of shape {list(shape)}; an image classifier takes [1, height, width, 3]."
            )
        self.input_size = (shape[1], shape[2])
        scale, zero_point = self._output["quantization"]
        self._output_scale = float(scale) if scale else None
        self._output_zero_point = int(zero_point)
        self.num_classes = int(np.prod(self._output["shape"]))
        if labels is not None and len(labels) != self.num_classes:
            logger.warning(
                "%s: %d labels for %d outputs; outputs without a label are shown by index.",
                path, len(labels), self.num_classes,
            )

    def __repr__(self) -> str:
        return f"Model({self.path!r}, input={self.input_size}, classes={self.num_classes}, device={self.device!r})"

    def label(self, index: int) -> str:
        """The label of output ``index`` (its number when the model has no label for it)."""
        if self.labels is not None and 0 <= index < len(self.labels) and self.labels[index]:
            return self.labels[index]
        return str(index)

    def preprocess(self, image: str | os.PathLike | np.ndarray) -> np.ndarray:
        """Decodes (if a path) and resizes an image to this model's input, as ``uint8`` pixels."""
        if isinstance(image, np.ndarray):
            return resize(image, self.input_size, self.resize_method)
        return preprocess(image, self.input_size, self.resize_method)

    def input_tensor(self, pixels: np.ndarray) -> np.ndarray:
        """The batched input tensor for resized pixels. Pure: safe to call from worker threads."""
        return self.feed(pixels)[None]

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        """Runs one prepared input tensor; returns the float scores (dequantized)."""
        self.interpreter.set_tensor(self._input["index"], tensor)
        self.interpreter.invoke()
        output = self.interpreter.get_tensor(self._output["index"]).reshape(-1)
        if self._output_scale is not None:
            return (output.astype(np.float32) - self._output_zero_point) * np.float32(self._output_scale)
        return output.astype(np.float32)

    def classify(self, pixels: np.ndarray) -> np.ndarray:
        """Scores of every class for ``(H, W, 3)`` uint8 pixels already at :attr:`input_size`.

        Example:
            >>> scores = model.classify(model.preprocess("cat.jpg"))  # doctest: +SKIP
        """
        return self.invoke(self.input_tensor(pixels))


def load_model(
    path: str | os.PathLike,
    device: str = "cpu",
    num_threads: int | None = None,
    labels: str | os.PathLike | list[str] | None = None,
    resize_method: str | None = None,
    mean: float | None = None,
    std: float | None = None,
) -> Model:
    """Loads a ``.tflite`` classifier with its labels and preprocessing.

    Args:
        path: the model file.
        device: ``cpu`` (default), ``edgetpu``, ``usb``, ``usb:N``, ``pci``, ``pci:N``.
        num_threads: CPU threads; None lets LiteRT choose.
        labels: a label file or list overriding the labels the model carries.
        resize_method: overrides the manifest's (third-party default: bilinear).
        mean: overrides the input normalisation mean.
        std: overrides the input normalisation std.

    Raises:
        ModelFormatError: see :func:`make_interpreter`.
        DelegateError: see :func:`make_interpreter`.

    Example:
        >>> model = load_model("model_int8.tflite", num_threads=2)  # doctest: +SKIP
        >>> model.input_size, model.resize_method, model.feed.describe()  # doctest: +SKIP
        ((160, 160), 'bilinear', 'raw uint8 pixels')
    """
    if resize_method is not None and resize_method not in RESIZE_METHODS:
        raise ConfigError(f"Unknown resize method {resize_method!r}; expected one of {', '.join(RESIZE_METHODS)}.")
    name = str(path)
    data = read_model_bytes(path)
    graph = parse_graph(data, name)
    embedded_labels, manifest = read_embedded(data)
    interpreter = _interpreter(data, graph, name, device, num_threads)

    if labels is None and embedded_labels is not None:
        source = "manifest" if manifest is not None and manifest.labels else "embedded"
        # Third-party archives may use the "<index> <label>" form too.
        label_list = list(manifest.labels) if source == "manifest" else parse_labels("\n".join(embedded_labels))
    elif isinstance(labels, (list, tuple)):
        label_list, source = list(labels), "argument"
    elif labels is not None:
        label_list, source = read_labels(labels), str(labels)
    else:
        label_list, source = None, None

    input_tensor = graph.input_tensors()[0]
    if manifest is not None:
        resize_method = resize_method or manifest.resize_method
        mean = manifest.mean if mean is None else mean
        std = manifest.std if std is None else std
        height, width = (int(v) for v in input_tensor.shape[1:3]) if len(input_tensor.shape) == 4 else (0, 0)
        if tuple(manifest.image_size) != (height, width):
            logger.warning("%s: manifest says %s, input tensor is %s; using the tensor's.",
                           name, tuple(manifest.image_size), (height, width))
    feed = make_input_feed(input_tensor, mean, std)
    model = Model(name, interpreter, graph, label_list, source, manifest, resize_method or RESIZE_BILINEAR, feed,
                  device)
    logger.debug("Loaded %r: labels from %s, %s, %s resize", model, source, feed.describe(), model.resize_method)
    return model

