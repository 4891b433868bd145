"""Describe a ``.tflite`` file: tensors, ops, integer-only readiness, Edge TPU build, labels, metadata.

Works from the file alone (no interpreter), so an Edge TPU build can be inspected on a
machine without an Edge TPU.

Example:
    >>> info = inspect_model("mobilenet_v1_0.25_128_quant.tflite")
    >>> info["full_integer"], info["edgetpu_compiled"], info["labels"]["count"]
    (True, False, 1001)
    >>> inspect_model("mobilenet_v1_0.25_128_quant_edgetpu.tflite")["edgetpu_compiled"]
    True
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict

from edgeship.errors import EdgeshipError
from edgeship.runtime.graph import TensorInfo, float_tensors, parse_graph, read_model_bytes
from edgeship.runtime.input_feed import make_input_feed
from edgeship.runtime.tflite_metadata import read_self_description

__all__ = ["inspect_model"]

_MAX_LISTED = 10


def _tensor(tensor: TensorInfo) -> dict:
    data = {"name": tensor.name, "dtype": tensor.dtype, "shape": list(tensor.shape)}
    if tensor.scale:
        data["quantization"] = {"scale": list(tensor.scale), "zero_point": list(tensor.zero_point)}
    return data


def inspect_model(path: str | os.PathLike) -> dict:
    """Everything the runtime knows about a model file, as a JSON-ready dict.

    Keys: ``model``, ``size_bytes``, ``sha256``, ``inputs``, ``outputs`` (name, dtype, shape,
    quantization), ``op_counts``, ``num_ops``, ``custom_ops``, ``full_integer`` (see
    :func:`edgeship.runtime.graph.is_full_integer`), ``float_tensors`` (the first few that
    keep it from being full-integer), ``edgetpu_compiled``, ``labels`` (count, source, first
    few), ``manifest``, ``tflite_metadata`` (see
    :class:`edgeship.runtime.tflite_metadata.StandardMetadata`) and ``input_feed`` (how the
    runtime would turn pixels into the input).

    Raises:
        ModelFormatError: the file is missing, empty, not a TFLite model or truncated.
    """
    data = read_model_bytes(path)
    graph = parse_graph(data, str(path))
    described = read_self_description(data, graph, str(path))
    labels, manifest, standard = described.labels, described.manifest, described.standard
    floats = float_tensors(graph)
    info = {
        "model": str(path),
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "tflite_schema_version": graph.version,
        "num_subgraphs": graph.num_subgraphs,
        "inputs": [_tensor(t) for t in graph.input_tensors()],
        "outputs": [_tensor(t) for t in graph.output_tensors()],
        "num_ops": len(graph.ops),
        "op_counts": graph.op_counts,
        "custom_ops": graph.custom_ops,
        "full_integer": not floats,
        "full_integer_body": not float_tensors(graph, allow_float_io=True),
        "float_tensors": floats[:_MAX_LISTED],
        "num_float_tensors": len(floats),
        "edgetpu_compiled": graph.is_edgetpu_compiled,
        "labels": {"count": len(labels) if labels else 0, "source": described.label_source, "first": (labels or [])[:_MAX_LISTED]},
        "manifest": asdict(manifest) if manifest is not None else None,
        "tflite_metadata": standard.metadata.to_dict() if standard.metadata is not None else None,
    }
    try:
        mean, std = (manifest.mean, manifest.std) if manifest is not None else (standard.mean, standard.std)
        info["input_feed"] = make_input_feed(graph.input_tensors()[0], mean, std).to_dict()
    except (EdgeshipError, IndexError):
        info["input_feed"] = None  # not an image classifier's input
    return info
