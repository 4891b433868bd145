"""Load a ``.tflite`` classifier on the CPU or an Edge TPU, and feed it pixels.

:func:`load_model` reads the file once: it checks the flatbuffer (a foreign or cut file gets a
clear error instead of an interpreter crash), names ops this interpreter cannot run before
allocating, reads the labels and manifest the file carries, and works out how ``uint8``
pixels reach the input tensor:

- edgeship models: resize method, mean and std from the manifest.
- third-party models with standard TFLite Metadata: a float input takes the normalisation it
  states, labels come from the file it names (see :mod:`edgeship.runtime.tflite_metadata`).
- third-party models without either: bilinear resize; a ``uint8`` input takes raw pixels
  (pycoral's convention, and what Coral's models expect); a float input takes
  ``(pixel - 127.5) / 127.5``.
- explicit ``resize_method``, ``mean``, ``std`` arguments override both.

A quantized input then gets ``round((pixel - mean) / std / scale + zero_point)``, computed as
an exact integer shift of the pixels when ``1 / (std * scale) == 1`` (edgeship's int8 models
and Coral's: raw pixels, bit-exact), in float otherwise.

Example:
    >>> model = load_model("mobilenet_v1_0.5_160_quant.tflite", labels="imagenet_labels.txt")
    >>> scores = model.classify(model.preprocess("cat.jpg"))
    >>> model.labels[int(scores.argmax())]
    'Egyptian cat'
"""

from __future__ import annotations

import logging
import os

import numpy as np

from edgeship.errors import ConfigError, ModelFormatError
from edgeship.runtime.device import interpreter_for_graph, invoke_error
from edgeship.runtime.graph import Graph, parse_graph, read_model_bytes
from edgeship.runtime.image import RESIZE_BILINEAR, RESIZE_METHODS, preprocess, resize, to_grayscale
from edgeship.runtime.input_feed import InputFeed, make_input_feed
from edgeship.runtime.labels import read_labels
from edgeship.runtime.manifest import Manifest
from edgeship.runtime.tflite_metadata import SelfDescription, read_self_description

__all__ = ["Model", "load_model"]

logger = logging.getLogger(__name__)


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
        if not _is_image_input(shape):
            raise ModelFormatError(
                f"{path} takes input of shape {list(shape)}; an image classifier takes [1, height, width, 3] "
                "(colour), or [1, height, width, 1] or [1, height, width] (grayscale)."
            )
        self._input_shape = shape
        self.input_size = (shape[1], shape[2])
        self.channels = shape[3] if len(shape) == 4 else 1
        # Stateful models (an RNN over image rows) keep variables between invokes: reset
        # them before each image, so that an image gets the same answer every time.
        self.stateful = any(t.is_variable for t in graph.tensors)
        scale, zero_point = self._output["quantization"]
        self._output_scale = float(scale) if scale else None
        self._output_zero_point = int(zero_point)
        self.num_classes = int(np.prod(self._output["shape"]))
        if not (np.issubdtype(self._output["dtype"], np.number) or self._output["dtype"] == np.bool_):
            raise ModelFormatError(f"{path} outputs {np.dtype(self._output['dtype']).name} values; a classifier "
                                   "outputs a score per class.")
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
        """Decodes (if a path) and resizes an image to this model's input, as ``uint8`` pixels:
        ``(H, W, 3)`` RGB, or ``(H, W, 1)`` luma for a grayscale model."""
        if isinstance(image, np.ndarray):
            pixels = resize(image, self.input_size, self.resize_method)
        else:
            pixels = preprocess(image, self.input_size, self.resize_method)
        return to_grayscale(pixels) if self.channels == 1 else pixels

    def input_tensor(self, pixels: np.ndarray) -> np.ndarray:
        """The batched input tensor for resized pixels. Pure: safe to call from worker threads."""
        return self.feed(pixels).reshape(self._input_shape)

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        """Runs one prepared input tensor; returns the float scores (dequantized)."""
        try:
            if self.stateful:
                self.interpreter.reset_all_variables()
            self.interpreter.set_tensor(self._input["index"], tensor)
            self.interpreter.invoke()
            output = self.interpreter.get_tensor(self._output["index"]).reshape(-1)
        except (RuntimeError, ValueError) as e:
            # With no traceback: on an Edge TPU this is usually the device, on the CPU a damaged model.
            raise invoke_error(self.path, self.device, e) from e
        if self._output_scale is not None:
            return (output.astype(np.float32) - self._output_zero_point) * np.float32(self._output_scale)
        return output.astype(np.float32)

    def classify(self, pixels: np.ndarray) -> np.ndarray:
        """Scores of every class for uint8 pixels from :meth:`preprocess` (at :attr:`input_size`).

        Example:
            >>> model = load_model("model_int8.tflite")
            >>> model.classify(model.preprocess("cat.jpg")).shape
            (4,)
        """
        return self.invoke(self.input_tensor(pixels))


def _is_image_input(shape: tuple[int, ...]) -> bool:
    """[1, H, W, 3], [1, H, W, 1] or [1, H, W], with H and W at least 1."""
    if len(shape) not in (3, 4) or shape[0] != 1 or min(shape[1:3]) < 1:
        return False
    return len(shape) == 3 or shape[3] in (1, 3)


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
        >>> model = load_model("model_int8.tflite", num_threads=2)
        >>> model.input_size, model.resize_method, model.labels_source, model.feed.describe()
        ((32, 32), 'bilinear-asymmetric', 'manifest', 'raw uint8 pixels')
    """
    if resize_method is not None and resize_method not in RESIZE_METHODS:
        raise ConfigError(f"Unknown resize method {resize_method!r}; expected one of {', '.join(RESIZE_METHODS)}.")
    name = str(path)
    data = read_model_bytes(path)
    graph = parse_graph(data, name)
    if not graph.inputs or not graph.outputs:
        raise ModelFormatError(f"{name} has {len(graph.inputs)} input(s) and {len(graph.outputs)} output(s); "
                               "an image classifier has an image input and a scores output.")
    described = read_self_description(data, graph, name)
    manifest, standard = described.manifest, described.standard
    interpreter = interpreter_for_graph(data, graph, name, device, num_threads)
    label_list, source = _labels(labels, described, graph.num_classes)
    resize_method, mean, std = _preprocessing(name, graph, manifest, standard, resize_method, mean, std)
    try:
        feed = make_input_feed(graph.input_tensors()[0], mean, std)
    except ModelFormatError as e:
        raise ModelFormatError(f"{name}: {e}") from e
    model = Model(name, interpreter, graph, label_list, source, manifest, resize_method, feed, device)
    logger.debug("Loaded %r: labels from %s, %s, %s resize", model, source, feed.describe(), model.resize_method)
    return model


def _labels(labels, described: SelfDescription, num_classes: int) -> tuple[list[str] | None, str | None]:
    """The label list and where it came from: the argument, else what the file carries
    (:func:`~edgeship.runtime.tflite_metadata.read_self_description`)."""
    if isinstance(labels, (list, tuple)):
        return list(labels), "argument"
    if labels is not None:
        return read_labels(labels, num_classes), str(labels)
    return described.labels, described.label_source


def _preprocessing(name: str, graph: Graph, manifest: Manifest | None, standard, resize_method, mean, std):
    """Resize method, mean and std: the arguments, else edgeship's manifest, else the file's
    standard TFLite Metadata (float inputs), else the defaults of :func:`make_input_feed`."""
    if manifest is not None:
        input_shape = graph.input_tensors()[0].shape
        size = tuple(int(v) for v in input_shape[1:3]) if len(input_shape) in (3, 4) else (0, 0)
        if tuple(manifest.image_size) != size:
            logger.warning("%s: manifest says %s, input tensor is %s; using the tensor's.",
                           name, tuple(manifest.image_size), size)
        return (resize_method or manifest.resize_method, manifest.mean if mean is None else mean,
                manifest.std if std is None else std)
    if mean is None and std is None:
        mean, std = standard.mean, standard.std
    return resize_method or RESIZE_BILINEAR, mean, std
