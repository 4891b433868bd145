"""What a ``.tflite`` file holds, read from its flatbuffer without building an interpreter.

Reading the graph first lets the runtime refuse a foreign or truncated file with a clear
message, and name an op the interpreter lacks (an Edge TPU node, a custom op) before
``allocate_tensors`` fails with a generic one. It also answers the export stage's question
"is this model full-integer?" from the file alone.

Example:
    >>> graph = read_graph("mobilenet_v1_0.25_128_quant.tflite")
    >>> graph.op_counts, is_full_integer(graph)
    ({'CONV_2D': 15, 'DEPTHWISE_CONV_2D': 13, ...}, True)
"""

from __future__ import annotations

import math
import os
import stat
import struct
from collections import Counter
from dataclasses import dataclass, field

import flatbuffers
from ai_edge_litert import schema_py_generated as schema

from edgeship.errors import ModelFormatError
from edgeship.runtime.flatbuffer_bounds import DamagedFlatbuffer, ReadBudget, read_string, vector_length

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
_ITEM_BITS = {
    "float32": 32, "float16": 16, "int32": 32, "uint8": 8, "int64": 64, "bool": 8, "int16": 16,
    "complex64": 64, "int8": 8, "float64": 64, "complex128": 128, "uint64": 64, "uint32": 32,
    "uint16": 16, "int4": 4, "bfloat16": 16, "int2": 2, "uint4": 4, "float8_e4m3fn": 8, "float8_e5m2": 8,
}
_ZERO_POINT_RANGE = {"uint8": (0, 255), "int8": (-128, 127), "int16": (-32768, 32767), "int4": (-8, 7)}
# The inputs a builtin op may leave out, by position: the bias of convolutions and dense layers.
_OPTIONAL_INPUTS = {
    "CONV_2D": (2,), "DEPTHWISE_CONV_2D": (2,), "FULLY_CONNECTED": (2,), "CONV_3D": (2,),
    "TRANSPOSE_CONV": (3,), "CONV_3D_TRANSPOSE": (3,),
}
# All tensors together; an edge model needs a few hundred MB at most. A damaged shape (a dim
# of 2**31) would otherwise make the interpreter allocate until the machine runs out of memory.
MAX_TENSOR_BYTES = 2 << 30
# One input: 2,365 x 2,365 RGB pixels. LiteRT sizes every later tensor from the inputs, so a
# damaged input dim would make it allocate and compute far past what the file's shapes say.
MAX_INPUT_VALUES = 1 << 24
# Builtin codes above 127 live in a newer field; the old byte field then holds this marker.
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127
# LiteRT's kernels take at most 8 dimensions (BROADCAST_TO); a longer shape is damage, and its
# product (the tensor's size) would be arithmetic on numbers of millions of digits.
MAX_RANK = 32
# Vtable offsets of the fields read by hand (4 + 2 x the field's id in LiteRT's schema.fbs), so
# that their lengths are checked before the generated reader walks them.
_MODEL_CODES, _MODEL_SUBGRAPHS, _MODEL_DESCRIPTION, _MODEL_BUFFERS, _MODEL_METADATA = 6, 8, 10, 12, 16
_METADATA_NAME = 4  # Metadata.name; its buffer index is Metadata.buffer
_SUBGRAPH_TENSORS, _SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS, _SUBGRAPH_OPERATORS = 4, 6, 8, 10
_TENSOR_SHAPE, _TENSOR_NAME, _TENSOR_SHAPE_SIGNATURE = 4, 10, 18
_OPERATOR_INPUTS, _OPERATOR_OUTPUTS = 6, 8
_QUANTIZATION_SCALE, _QUANTIZATION_ZERO_POINT = 8, 10
_CODE_CUSTOM = 6


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
    buffer: int = 0                 # index into the model's buffers; 0 is the empty one
    constant: bool = False          # its values are stored in the file (weights, shapes, axes)
    is_variable: bool = False       # state kept between invokes (an RNN's hidden state)
    sparse: bool = False

    @property
    def num_bytes(self) -> int | None:
        """Bytes of its dense value, or None for types of no fixed size (strings, resources)."""
        bits = _ITEM_BITS.get(self.dtype)
        if bits is None:
            return None
        return (math.prod(self.shape) * bits + 7) // 8


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
    # The model's named metadata entries (``TFLITE_METADATA``, ``min_runtime_version``, ...) and
    # the buffer each names, unchecked: a bad index is an error only for the entry a reader wants.
    metadata: tuple[tuple[str, int], ...] = field(default=(), repr=False, compare=False)
    # is_all_zero's answers by (buffer, type): a model can feed one large constant to every op.
    _all_zero: dict = field(default_factory=dict, init=False, repr=False, compare=False)

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

    def is_all_zero(self, tensor: TensorInfo) -> bool:
        """Whether a constant tensor's values are all zero (also when they cannot be viewed), worked
        out once per buffer and type."""
        import numpy as np

        key = (tensor.buffer, tensor.dtype)
        if key not in self._all_zero:
            self._all_zero[key] = not np.any(self.constant_values(tensor))
        return self._all_zero[key]

    @property
    def num_classes(self) -> int | None:
        """Values in the first output (a classifier's classes); None for a model without outputs."""
        outputs = self.output_tensors()
        return math.prod(outputs[0].shape) if outputs else None

    def metadata_buffer(self, name: str) -> bytes | None:
        """The bytes of the buffer the model's metadata entry ``name`` names; None when the model
        has no such entry or its buffer is empty.

        Raises:
            ModelFormatError: the entry names a buffer the model does not have.
        """
        for entry, index in self.metadata:
            if entry == name:
                if not 0 <= index < len(self.buffers):
                    raise ModelFormatError(f"The model's {name} entry names buffer {index}; the model has "
                                           f"{len(self.buffers)}.")
                return bytes(self.buffers[index]) or None
        return None

    def constant_values(self, tensor: TensorInfo):
        """A constant tensor's values as a numpy array in its shape (None when not constant)."""
        import numpy as np

        if not tensor.constant or tensor.buffer >= len(self.buffers):
            return None
        try:
            dtype = np.dtype(tensor.dtype)
        except TypeError:
            return None  # int4, bfloat16, float8, strings: no numpy type to view them as
        data = self.buffers[tensor.buffer]
        if len(data) % dtype.itemsize:
            return None  # a sparse tensor's buffer holds its compressed form, not its values
        values = np.frombuffer(data, dtype=dtype)
        return values.reshape(tensor.shape) if values.size == int(np.prod(tensor.shape)) else values


def read_model_bytes(path: str | os.PathLike) -> bytes:
    """Reads a model file, refusing missing, empty and directory paths with a clear message."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode) and not os.path.isdir(path):
            # A pipe or device: reading it could block for ever or never end.
            raise ModelFormatError(f"{path} is not a regular file (a pipe or a device); pass a .tflite model file.")
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError as e:
        raise ModelFormatError(f"Model file not found: {path}. Pass the path of a .tflite file.") from e
    except IsADirectoryError as e:
        raise ModelFormatError(f"{path} is a folder; expected a .tflite model file.") from e
    except OSError as e:
        raise ModelFormatError(f"Cannot read model file {path}: {e.strerror or e}. Check its permissions.") from e
    if not data:
        raise ModelFormatError(f"Model file {path} is empty (0 bytes); re-export or copy it again.")
    return data


def read_graph(path: str | os.PathLike) -> Graph:
    """Reads and parses a ``.tflite`` file. See :func:`parse_graph`.

    Example:
        >>> read_graph("mobilenet_v1_0.25_128_quant.tflite").is_edgetpu_compiled
        False
    """
    return parse_graph(read_model_bytes(path), name=str(path))


def parse_graph(data: bytes, name: str = "model") -> Graph:
    """Parses and checks a TFLite flatbuffer (trailing metadata archives are ignored).

    LiteRT verifies the flatbuffer's layout but trusts much of its content, and crashes or
    allocates without bound on some damaged files. So beyond parsing, every tensor, buffer and
    op code index must be in range, constant data must be the size of its tensor, an op may
    omit only the inputs it can do without, quantization must fit its type, and the tensors
    must add up to a size an edge model can have.

    Every vector and string length is checked against the file before it is read, and the
    whole read is charged to a budget proportional to the file's size
    (:mod:`edgeship.runtime.flatbuffer_bounds`), so a hostile file costs no more than a real one
    of its size.

    Raises:
        ModelFormatError: the bytes are not a TFLite model (wrong identifier, e.g. a JPEG
            or a SavedModel), are truncated, fail one of the checks above (named), or share
            offsets so that reading them would take work out of proportion to their size.
    """
    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise ModelFormatError(
            f"{name} is not a TFLite model: its flatbuffer identifier is {_describe_head(data)}, "
            f"expected {_IDENTIFIER.decode()}. Pass a .tflite file written by a TFLite converter."
        )
    try:
        return _parse(data)
    except _Corrupt as e:
        raise ModelFormatError(
            f"{name} is corrupt: {e}. The interpreter would fail or crash on it; copy or export the model again."
        ) from e
    except DamagedFlatbuffer as e:
        raise ModelFormatError(
            f"{name} is corrupt or hostile: {e}. It is refused before it costs unbounded time or memory; export "
            "the model again with a TFLite converter, or download it again from its source."
        ) from e
    except (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError, OverflowError) as e:
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


class _Corrupt(ValueError):
    """A model part that parses but points nowhere or does not add up."""


def _parse(data: bytes) -> Graph:
    budget = ReadBudget(len(data))  # entries sharing offsets would make the work grow as the size squared
    model = schema.Model.GetRootAs(data, 0)
    # Bounds-check the root: the generated reader trusts offsets, so a cut file would
    # otherwise read garbage instead of failing.
    root = flatbuffers.encode.Get(flatbuffers.packer.uoffset, data, 0)
    if root >= len(data):
        raise ValueError("root offset past the end of the file")
    table = model._tab
    num_codes = vector_length(table, _MODEL_CODES, 4, "op codes", budget)
    codes = [_op_code(model.OperatorCodes(i), budget) for i in range(num_codes)]
    num_buffers = vector_length(table, _MODEL_BUFFERS, 4, "buffers", budget)
    buffer_sizes = [_buffer_size(model.Buffers(b), data, b) for b in range(num_buffers)]
    num_subgraphs = vector_length(table, _MODEL_SUBGRAPHS, 4, "subgraphs", budget)
    if num_subgraphs < 1:
        raise _Corrupt("it has no subgraph")
    buffers = tuple(_buffer_bytes(data, model.Buffers(b)) for b in range(num_buffers))
    ops: list[OpInfo] = []
    tensors_by_subgraph = []
    for s in range(num_subgraphs):
        tensors, subgraph_ops, io = _subgraph(model.Subgraphs(s), s, codes, buffers, budget)
        _check_subgraph(s, tensors, subgraph_ops, io, buffer_sizes)
        tensors_by_subgraph.append(tensors)
        ops.extend(subgraph_ops)
        if s == 0:
            inputs, outputs = io
    total = sum(t.num_bytes or 0 for tensors in tensors_by_subgraph for t in tensors)
    if total > MAX_TENSOR_BYTES:
        raise _Corrupt(f"its tensor shapes add up to {total / 2**30:.1f} GiB (a damaged shape?)")
    description = read_string(table, _MODEL_DESCRIPTION, "description", budget) or b""
    metadata = []
    for i in range(vector_length(table, _MODEL_METADATA, 4, "metadata entries", budget)):
        entry = model.Metadata(i)
        name = read_string(entry._tab, _METADATA_NAME, "metadata names", budget) or b""
        metadata.append((name.decode("utf-8", errors="replace"), entry.Buffer()))
    return Graph(
        version=model.Version(),
        subgraph_tensors=tuple(tensors_by_subgraph),
        ops=tuple(ops),
        inputs=inputs,
        outputs=outputs,
        description=description.decode("utf-8", errors="replace"),
        buffers=buffers,
        metadata=tuple(metadata),
    )


def _subgraph(subgraph, s: int, codes: list[tuple[str, bool, int]], buffers: tuple[memoryview, ...],
              budget: ReadBudget) -> tuple[tuple[TensorInfo, ...], list[OpInfo], tuple[tuple[int, ...], ...]]:
    """One subgraph's tensors, operators, and (inputs, outputs), every vector checked and charged."""
    table = subgraph._tab
    num_tensors = vector_length(table, _SUBGRAPH_TENSORS, 4, "tensors", budget)
    tensors = tuple(_tensor(subgraph.Tensors(t), t, buffers, budget) for t in range(num_tensors))
    ops = []
    for o in range(vector_length(table, _SUBGRAPH_OPERATORS, 4, "operators", budget)):
        op = subgraph.Operators(o)
        if not 0 <= op.OpcodeIndex() < len(codes):
            raise _Corrupt(f"operator {o} of subgraph {s} names op code {op.OpcodeIndex()} of {len(codes)}")
        op_name, custom, version = codes[op.OpcodeIndex()]
        op_inputs = _numbers(op.InputsAsNumpy, op._tab, _OPERATOR_INPUTS, 4, "operator inputs", budget)
        op_outputs = _numbers(op.OutputsAsNumpy, op._tab, _OPERATOR_OUTPUTS, 4, "operator outputs", budget)
        ops.append(OpInfo(op_name, custom, op_inputs, op_outputs, s, version, _options(op)))
    io = (_numbers(subgraph.InputsAsNumpy, table, _SUBGRAPH_INPUTS, 4, "subgraph inputs", budget),
          _numbers(subgraph.OutputsAsNumpy, table, _SUBGRAPH_OUTPUTS, 4, "subgraph outputs", budget))
    return tensors, ops, io


def _numbers(as_numpy, table, field: int, item_bytes: int, what: str, budget: ReadBudget, kind=int) -> tuple:
    """A vector of numbers as a tuple of ``kind``, its length checked and charged before it is read."""
    if not vector_length(table, field, item_bytes, what, budget):
        return ()  # absent or empty (the generated reader gives 0, not an array, for an absent one)
    return tuple(kind(v) for v in as_numpy())


def _op_code(code, budget: ReadBudget) -> tuple[str, bool, int]:
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == schema.BuiltinOperator.CUSTOM:
        custom = read_string(code._tab, _CODE_CUSTOM, "custom op names", budget)
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
    if buffer.Offset() > 1:  # large models keep weights outside the flatbuffer, at an absolute offset
        return memoryview(data)[buffer.Offset(): buffer.Offset() + buffer.Size()]
    values = buffer.DataAsNumpy()
    return memoryview(b"") if isinstance(values, int) else memoryview(values)


def _buffer_size(buffer, data: bytes, index: int) -> int:
    """Bytes a buffer holds, inline or (models over 2 GB) at an offset past the flatbuffer."""
    inline = buffer.DataLength()
    if inline:
        start = buffer._tab.Vector(buffer._tab.Offset(4))  # Data is the buffer's first field
        if start + inline > len(data):
            raise _Corrupt(f"buffer {index} ({inline} bytes) runs past the end of the file")
        return inline
    offset, size = buffer.Offset(), buffer.Size()
    if offset > 1 and offset + size > len(data):
        raise _Corrupt(f"buffer {index} points at bytes {offset}..{offset + size}, past the end of the file")
    return size if offset > 1 else 0


def _check_subgraph(s: int, tensors: tuple[TensorInfo, ...], ops: list[OpInfo],
                    io: tuple[tuple[int, ...], tuple[int, ...]], buffer_sizes: list[int]) -> None:
    """Indices in range and constant data the size of its tensor: what LiteRT trusts blindly."""
    where = f"subgraph {s}"
    for kind, indices in (("input", io[0]), ("output", io[1])):
        for index in indices:
            if not 0 <= index < len(tensors):
                raise _Corrupt(f"{where} {kind} {index} names no tensor (it has {len(tensors)})")
    for index in io[0]:
        if math.prod(tensors[index].shape) > MAX_INPUT_VALUES:
            raise _Corrupt(f"input {tensors[index].name!r} of shape {list(tensors[index].shape)} takes more than "
                           f"{MAX_INPUT_VALUES:,} values (a damaged shape?)")
    for number, op in enumerate(ops):
        for index in op.inputs + op.outputs:
            if not -1 <= index < len(tensors):
                raise _Corrupt(f"{op.name} (op {number} of {where}) uses tensor {index}; it has {len(tensors)}")
        omitted = [position for position, index in enumerate(op.inputs) if index == -1]
        if not op.custom and (-1 in op.outputs or any(not _may_omit(op.name, p) for p in omitted)):
            raise _Corrupt(f"{op.name} (op {number} of {where}) lacks a required input or output tensor")
    for tensor in tensors:
        label = f"tensor {tensor.index} ({tensor.name!r}) of {where}"
        if any(dim < 0 for dim in tensor.shape):
            raise _Corrupt(f"{label} has the shape {list(tensor.shape)}")
        # A model without a buffers vector (hand-built ones) leaves every tensor's at 0.
        if not 0 <= tensor.buffer < max(len(buffer_sizes), 1):
            raise _Corrupt(f"{label} names buffer {tensor.buffer}; the model has {len(buffer_sizes)}")
        held = buffer_sizes[tensor.buffer] if buffer_sizes else 0
        needed = tensor.num_bytes
        if held and needed is not None and not tensor.sparse and held != needed:
            raise _Corrupt(f"{label} of shape {list(tensor.shape)} needs {needed} bytes; its buffer holds {held}")
        _check_quantization(tensor, label)


def _check_quantization(tensor: TensorInfo, label: str) -> None:
    if len(tensor.zero_point) not in (0, 1, len(tensor.scale)):
        raise _Corrupt(f"{label} has {len(tensor.scale)} scales but {len(tensor.zero_point)} zero points")
    if not all(math.isfinite(scale) for scale in tensor.scale):
        raise _Corrupt(f"{label} has the quantization scale {list(tensor.scale)[:4]}")
    low, high = _ZERO_POINT_RANGE.get(tensor.dtype, (-(2**31), 2**31 - 1))
    if any(not low <= zero_point <= high for zero_point in tensor.zero_point):
        raise _Corrupt(f"{label} is {tensor.dtype} with the zero point {list(tensor.zero_point)[:4]}")


def _may_omit(op_name: str, position: int) -> bool:
    """Whether a builtin op may have input ``position`` omitted (-1): a bias, or the optional
    inputs of recurrent ops. LiteRT reads any other omitted input through a null pointer."""
    if position in _OPTIONAL_INPUTS.get(op_name, ()):
        return True
    return position > 0 and any(part in op_name for part in ("LSTM", "RNN", "SVDF"))


def _tensor(tensor, index: int, buffers: tuple[memoryview, ...], budget: ReadBudget) -> TensorInfo:
    table = tensor._tab
    shape = _numbers(tensor.ShapeAsNumpy, table, _TENSOR_SHAPE, 4, "tensor shapes", budget)
    signature = _numbers(tensor.ShapeSignatureAsNumpy, table, _TENSOR_SHAPE_SIGNATURE, 4, "tensor shapes", budget)
    if max(len(shape), len(signature)) > MAX_RANK:
        raise _Corrupt(f"tensor {index} has {max(len(shape), len(signature)):,} dimensions; LiteRT takes at most 8")
    quantization = tensor.Quantization()
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    if quantization is not None:
        scale = _numbers(quantization.ScaleAsNumpy, quantization._tab, _QUANTIZATION_SCALE, 4, "quantization scales",
                         budget, float)
        if scale:
            zero_point = _numbers(quantization.ZeroPointAsNumpy, quantization._tab, _QUANTIZATION_ZERO_POINT, 8,
                                  "quantization zero points", budget)
    try:
        # LiteRT's own Python wrapper decodes tensor names strictly.
        name = (read_string(table, _TENSOR_NAME, "tensor names", budget) or b"").decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Corrupt(f"the name of tensor {index} is not UTF-8 text") from e
    return TensorInfo(
        index=index,
        name=name,
        dtype=_TYPE_NAMES.get(tensor.Type(), f"type_{tensor.Type()}"),
        shape=shape,
        scale=scale,
        zero_point=zero_point,
        shape_signature=signature,
        buffer=tensor.Buffer(),
        constant=0 < tensor.Buffer() < len(buffers) and len(buffers[tensor.Buffer()]) > 0,
        is_variable=bool(tensor.IsVariable()),
        sparse=tensor.Sparsity() is not None,
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
        >>> is_full_integer("mobilenet_v1_0.25_128_quant.tflite"), is_full_integer("model_float32.tflite")
        (True, False)
    """
    if isinstance(model, Graph):
        graph = model
    elif isinstance(model, (bytes, bytearray)):
        graph = parse_graph(bytes(model))
    else:
        graph = read_graph(model)
    return not float_tensors(graph, allow_float_io=allow_float_io)
