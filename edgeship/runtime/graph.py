"""What a ``.tflite`` file holds, read from its flatbuffer without building an interpreter.

Reading the graph first lets the runtime refuse a foreign or truncated file with a clear
message, and name an op the interpreter lacks (an Edge TPU node, a custom op) before
``allocate_tensors`` fails with a generic one. It also answers the export stage's question
"is this model full-integer?" from the file alone.

Example:
    >>> graph = read_graph("model_int8.tflite")  # doctest: +SKIP
    >>> graph.op_counts, is_full_integer(graph)  # doctest: +SKIP
    ({'CONV_2D': 14, 'DEPTHWISE_CONV_2D': 13, ...}, True)
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from dataclasses import dataclass, field

import flatbuffers
from ai_edge_litert import schema_py_generated as schema

from edgeship.errors import ModelFormatError

__all__ = [
    "EDGETPU_CUSTOM_OP",
    "FLOAT_TYPES",
    "Graph",
    "OpInfo",
    "TensorInfo",
    "float_tensors",
    "is_full_integer",
    "parse_graph",
    "read_graph",
    "read_model_bytes",
]

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
_IDENTIFIER = b"TFL3"

_TYPE_NAMES = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
FLOAT_TYPES = frozenset({"float32", "float16", "float64", "bfloat16", "float8_e4m3fn", "float8_e5m2"})
# Builtin codes above 127 live in a newer field; the old byte field then holds this marker.
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the main subgraph."""

    index: int
    name: str
    dtype: str                      # numpy-style name: "uint8", "float32", ...
    shape: tuple[int, ...]
    scale: tuple[float, ...] = ()   # empty when the tensor is not quantized
    zero_point: tuple[int, ...] = ()
    shape_signature: tuple[int, ...] = ()   # -1 marks a dimension only known at run time
    buffer: int = 0                 # index of the buffer holding its constant data (0: none)
    constant: bool = False          # its values are stored in the file (weights, shapes, axes)


@dataclass(frozen=True)
class OpInfo:
    """One operator: its name (builtin, or the custom code) and its tensor indices."""

    name: str
    custom: bool
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    subgraph: int = 0
    version: int = 1                # the op code's version: newer kernels raise it
    # The builtin options' fields by their object-API names (``fusedActivationFunction``...).
    options: dict = field(default_factory=dict, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class Graph:
    """The parts of a TFLite model the runtime reasons about (all subgraphs' ops, main tensors)."""

    version: int
    subgraph_tensors: tuple[tuple[TensorInfo, ...], ...] = field(repr=False)
    ops: tuple[OpInfo, ...]
    inputs: tuple[int, ...]                  # of subgraph 0, the one the interpreter runs
    outputs: tuple[int, ...]
    description: str = ""
    # Constant tensor data by buffer index, for rules that look at values (zero padding, alphas).
    buffers: tuple[memoryview, ...] = field(default=(), repr=False, compare=False)

    @property
    def tensors(self) -> tuple[TensorInfo, ...]:
        """The tensors of subgraph 0."""
        return self.subgraph_tensors[0]

    @property
    def num_subgraphs(self) -> int:
        return len(self.subgraph_tensors)

    @property
    def op_counts(self) -> dict[str, int]:
        """Histogram of op names, most frequent first."""
        return dict(Counter(op.name for op in self.ops).most_common())

    @property
    def custom_ops(self) -> list[str]:
        """Distinct custom op codes, in order of first use."""
        return list(dict.fromkeys(op.name for op in self.ops if op.custom))

    @property
    def is_edgetpu_compiled(self) -> bool:
        """Whether the Edge TPU compiler produced this file (it holds ``edgetpu-custom-op`` nodes)."""
        return EDGETPU_CUSTOM_OP in self.custom_ops

    def input_tensors(self) -> list[TensorInfo]:
        return [self.tensors[i] for i in self.inputs]

    def output_tensors(self) -> list[TensorInfo]:
        return [self.tensors[i] for i in self.outputs]

    def constant_values(self, tensor: TensorInfo):
        """A constant tensor's values as a numpy array in its shape (None when not constant)."""
        import numpy as np

        if not tensor.constant or tensor.buffer >= len(self.buffers):
            return None
        dtype = np.dtype("bool" if tensor.dtype == "bool" else tensor.dtype)
        values = np.frombuffer(self.buffers[tensor.buffer], dtype=dtype)
        return values.reshape(tensor.shape) if values.size == int(np.prod(tensor.shape)) else values


def read_model_bytes(path: str | os.PathLike) -> bytes:
    """Reads a model file, refusing missing, empty and directory paths with a clear message."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError as e:
        raise ModelFormatError(f"Model file not found: {path}. Pass the path of a .tflite file.") from e
    except IsADirectoryError as e:
        raise ModelFormatError(f"{path} is a folder; expected a .tflite model file.") from e
    except OSError as e:
        raise ModelFormatError(f"Cannot read model file {path}: {e}") from e
    if not data:
        raise ModelFormatError(f"Model file {path} is empty (0 bytes); re-export or copy it again.")
    return data


def read_graph(path: str | os.PathLike) -> Graph:
    """Reads and parses a ``.tflite`` file. See :func:`parse_graph`.

    Example:
        >>> read_graph("mobilenet_v1_0.25_128_quant.tflite").is_edgetpu_compiled  # doctest: +SKIP
        False
    """
    return parse_graph(read_model_bytes(path), name=str(path))


def parse_graph(data: bytes, name: str = "model") -> Graph:
    """Parses a TFLite flatbuffer (trailing metadata archives are ignored).

    Raises:
        ModelFormatError: the bytes are not a TFLite model (wrong identifier, e.g. a JPEG
            or a SavedModel) or are truncated.
    """
    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise ModelFormatError(
            f"{name} is not a TFLite model: its flatbuffer identifier is {_describe_head(data)}, "
            f"expected {_IDENTIFIER.decode()}. Pass a .tflite file written by a TFLite converter."
        )
    try:
        return _parse(data)
    except (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError) as e:
        raise ModelFormatError(
            f"{name} is truncated or corrupt: its TFLite flatbuffer points past the end of the "
            f"file ({len(data)} bytes) or does not parse. Copy or export the model again."
        ) from e


_KNOWN_FORMATS = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"PK\x03\x04", "a zip archive"),
    (b"\x89HDF", "an HDF5 file (a Keras .h5 model?)"),
)


def _describe_head(data: bytes) -> str:
    for magic, what in _KNOWN_FORMATS:
        if data.startswith(magic):
            return f"absent (the file is {what})"
    return repr(data[4:8]) if len(data) >= 8 else f"absent (only {len(data)} bytes)"


def _parse(data: bytes) -> Graph:
    model = schema.Model.GetRootAs(data, 0)
    # Bounds-check the root: the generated reader trusts offsets, so a cut file would
    # otherwise read garbage instead of failing.
    root = flatbuffers.encode.Get(flatbuffers.packer.uoffset, data, 0)
    if root >= len(data):
        raise ValueError("root offset past the end of the file")
    codes = [_op_code(model.OperatorCodes(i)) for i in range(model.OperatorCodesLength())]
    if model.SubgraphsLength() < 1:
        raise ValueError("no subgraph")
    buffers = tuple(_buffer_bytes(data, model.Buffers(b)) for b in range(model.BuffersLength()))
    ops = []
    tensors_by_subgraph = []
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        tensors_by_subgraph.append(tuple(
            _tensor(subgraph.Tensors(t), t, buffers) for t in range(subgraph.TensorsLength())))
        for o in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(o)
            op_name, custom, version = codes[op.OpcodeIndex()]
            ops.append(OpInfo(op_name, custom, _ints(op.InputsAsNumpy()), _ints(op.OutputsAsNumpy()), s,
                              version, _options(op)))
        if s == 0:
            inputs, outputs = _ints(subgraph.InputsAsNumpy()), _ints(subgraph.OutputsAsNumpy())
    tensors = tensors_by_subgraph[0]
    for index in inputs + outputs:
        if not 0 <= index < len(tensors):
            raise ValueError(f"graph input/output {index} names no tensor")
    description = (model.Description() or b"").decode("utf-8", errors="replace")
    return Graph(
        version=model.Version(),
        subgraph_tensors=tuple(tensors_by_subgraph),
        ops=tuple(ops),
        inputs=inputs,
        outputs=outputs,
        description=description,
        buffers=buffers,
    )


def _op_code(code) -> tuple[str, bool, int]:
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == schema.BuiltinOperator.CUSTOM:
        custom = code.CustomCode()
        return (custom or b"<unnamed>").decode("utf-8", errors="replace"), True, code.Version()
    return _OP_NAMES.get(builtin, f"BUILTIN_{builtin}"), False, code.Version()


def _options(op) -> dict:
    table = op.BuiltinOptions()
    if table is None:
        return {}
    options = schema.BuiltinOptionsCreator(op.BuiltinOptionsType(), table)
    return {k: v for k, v in vars(options).items() if not k.startswith("_")} if options is not None else {}


def _buffer_bytes(data: bytes, buffer) -> memoryview:
    """A view of one buffer's bytes (no copy: weights can be hundreds of megabytes)."""
    if buffer is None:
        return memoryview(b"")
    if buffer.Offset():  # large models keep weights outside the flatbuffer, at an absolute offset
        return memoryview(data)[buffer.Offset(): buffer.Offset() + buffer.Size()]
    values = buffer.DataAsNumpy()
    return memoryview(b"") if isinstance(values, int) else memoryview(values)


def _ints(values) -> tuple[int, ...]:
    # The generated reader returns 0 (not an empty array) for an absent vector.
    return () if isinstance(values, int) else tuple(int(v) for v in values)


def _tensor(tensor, index: int, buffers: tuple[memoryview, ...] = ()) -> TensorInfo:
    quantization = tensor.Quantization()
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    if quantization is not None and quantization.ScaleLength():
        scale = tuple(float(v) for v in quantization.ScaleAsNumpy())
        zero_point = _ints(quantization.ZeroPointAsNumpy())
    return TensorInfo(
        index=index,
        name=(tensor.Name() or b"").decode("utf-8", errors="replace"),
        dtype=_TYPE_NAMES.get(tensor.Type(), f"type_{tensor.Type()}"),
        shape=_ints(tensor.ShapeAsNumpy()),
        scale=scale,
        zero_point=zero_point,
        shape_signature=_ints(tensor.ShapeSignatureAsNumpy()),
        buffer=tensor.Buffer(),
        constant=0 < tensor.Buffer() < len(buffers) and len(buffers[tensor.Buffer()]) > 0,
    )


def float_tensors(graph: Graph, allow_float_io: bool = False) -> list[dict]:
    """Float tensors that an op reads or writes: what keeps a model from being full-integer.

    Args:
        graph: from :func:`read_graph` or :func:`parse_graph`.
        allow_float_io: ignore the model's own float inputs and outputs (a full-integer body
            wrapped in QUANTIZE/DEQUANTIZE for float callers).

    Returns:
        One ``{"op", "tensor", "dtype"}`` record per (op, float tensor) pair, in graph order.
    """
    io = set(graph.inputs) | set(graph.outputs) if allow_float_io else set()
    found = []
    for op in graph.ops:
        tensors = graph.subgraph_tensors[op.subgraph]
        for index in op.inputs + op.outputs:
            if index < 0:  # an omitted optional input
                continue
            if op.subgraph == 0 and index in io:
                continue
            tensor = tensors[index]
            if tensor.dtype in FLOAT_TYPES:
                found.append({"op": op.name, "tensor": tensor.name, "dtype": tensor.dtype})
    return found


def is_full_integer(model: Graph | bytes | str | os.PathLike, allow_float_io: bool = False) -> bool:
    """Whether every op reads and writes integer tensors only (what the Edge TPU compiler and
    integer-only accelerators need). uint8 and int8 model inputs and outputs both qualify.

    Args:
        model: a parsed :class:`Graph`, the model's bytes, or its path.
        allow_float_io: still answer True when only the model's own inputs/outputs are float.

    Example:
        >>> is_full_integer("mobilenet_v1_0.25_128_quant.tflite")  # doctest: +SKIP
        True
    """
    if isinstance(model, Graph):
        graph = model
    elif isinstance(model, (bytes, bytearray)):
        graph = parse_graph(bytes(model))
    else:
        graph = read_graph(model)
    return not float_tensors(graph, allow_float_io=allow_float_io)
