"""TFLite conversion of a Keras model into each variant edgeship ships.

Example (the export stage's calls, with its models and calibration batches)::

    data = convert(float_model, "float16")
    data = convert(qat_model, "int8", representative=batches, io="uint8")
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from typing import Callable, Iterable

import numpy as np

from edgeship.errors import ConfigError
from edgeship.export.config import DYNAMIC, FLOAT16, FORMATS, FULL_INTEGER, INT16X8
from edgeship.runtime.native_stderr import filtered_native_stderr
from edgeship.train.tfkeras import keras, tf

__all__ = ["convert", "convert_variants", "inference_graph"]

logger = logging.getLogger(__name__)


def _configure(converter, kind: str, representative, io: str):
    """Sets a TFLite converter up for one variant ``kind``."""
    if kind not in FORMATS:
        raise ConfigError(f"Unknown TFLite variant {kind!r}; expected one of {', '.join(FORMATS)}.")
    if kind == FLOAT16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif kind == DYNAMIC:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif kind == INT16X8:
        if representative is None:
            raise ConfigError("int16x8 conversion needs representative data (train images) for its activation ranges.")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        # The 16x8 op set alone: an op without a 16x8 kernel fails the conversion instead of
        # silently staying float. Input and output stay float32 (the converter's default here),
        # which MediaPipe Tasks can feed; it has no int16 input.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    elif kind in FULL_INTEGER:
        if representative is None:  # TensorFlow asks for it even when fake-quant ranges cover everything
            raise ConfigError("Full-integer conversion needs representative data (train images).")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        # Integer-only kernels: the conversion fails rather than leave a float op behind,
        # which the Edge TPU compiler would push back to the CPU.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = tf.uint8 if io == "uint8" else tf.int8
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype
    return converter


@contextlib.contextmanager
def inference_graph(model: keras.Model):
    """Within the block, a temporary folder holding ``model``'s inference function as a
    SavedModel, for ``TFLiteConverter.from_saved_model`` (:func:`_save_inference_graph`)."""
    with tempfile.TemporaryDirectory(prefix="edgeship-graph-") as folder:
        _save_inference_graph(model, folder)
        yield folder


def _save_inference_graph(model: keras.Model, folder: str) -> None:
    """Writes ``model``'s inference function, and only it, as a SavedModel in ``folder``.

    The signature is the one the Keras save writes (inputs and outputs named after the model's
    input and output layers, any batch size), so the converted files are the same, but
    without the Keras object graph, a traced function per layer, that the converter would
    otherwise load back: on MobileNet v1 0.25 the save and four conversions take about a fifth of
    the time of the Keras entry point (``benchmarks/convert_time.py``).
    """
    specs = [tf.TensorSpec([None, *tensor.shape[1:]], tensor.dtype, name=name)
             for tensor, name in zip(model.inputs, model.input_names)]

    def serve(*inputs):
        outputs = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return dict(zip(model.output_names, outputs))

    graph = tf.Module()
    graph.variables_ = list(model.variables)  # the function's weights, saved beside it
    graph.serve = tf.function(serve, input_signature=specs)
    with filtered_native_stderr():
        tf.saved_model.save(graph, folder, signatures={"serving_default": graph.serve})


def _run(converter, kind: str) -> bytes:
    try:
        with filtered_native_stderr():  # the converter echoes its quantization parameters
            return converter.convert()
    except Exception as e:  # the converter raises ConverterError and plain exceptions alike
        raise RuntimeError(f"TFLite conversion to {kind} failed: {e}") from e


def convert(
    model: keras.Model,
    kind: str,
    *,
    representative: Callable[[], Iterable[list[np.ndarray]]] | None = None,
    io: str = "uint8",
) -> bytes:
    """Converts ``model`` to a ``.tflite`` flatbuffer of the given kind.

    Args:
        model: a float Keras model, or a tfmot QAT model for ``int8``.
        kind: one of ``FORMATS``.
        representative: calibration samples (a generator function of ``[batch]`` lists of
            normalised float inputs); required for full integer and int16x8; for a QAT model it
            only fills ranges the fake-quant ops do not give.
        io: ``uint8`` or ``int8`` input and output of full-integer models.

    Raises:
        ConfigError: unknown kind, or full integer or int16x8 without representative data.
    """
    return convert_variants(model, [kind], representative=representative, io=io)[kind]


def convert_variants(
    model: keras.Model,
    kinds: Iterable[str],
    *,
    representative: Callable[[], Iterable[list[np.ndarray]]] | None = None,
    io: str = "uint8",
) -> dict[str, bytes]:
    """Converts one model to several variants from one saved graph.

    The Keras converter entry point writes the whole Keras model as a SavedModel on every call,
    and reading it back, a function per layer, was most of a conversion's time; here the
    inference function alone is written once (:func:`_save_inference_graph`) and every variant
    is converted from it. Arguments as :func:`convert`; returns the flatbuffers by kind.
    """
    kinds = list(kinds)
    for kind in kinds:  # refuse before the save
        _configure(tf.lite.TFLiteConverter.from_keras_model(model), kind, representative, io)
    with inference_graph(model) as folder:
        built = {}
        for kind in kinds:
            converter = _configure(tf.lite.TFLiteConverter.from_saved_model(folder), kind, representative, io)
            built[kind] = _run(converter, kind)
        return built
