"""Tiny TFLite graphs, written with the flatbuffer schema, that each exercise one Edge TPU rule.

They are parsed, never run: the mapping prediction reads the file only. Each is a chain of
8x8x4 feature maps through 1x1 convolutions, with the one feature a rule is about.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

_TYPES = {"float32": schema.TensorType.FLOAT32, "uint8": schema.TensorType.UINT8,
          "int8": schema.TensorType.INT8, "int16": schema.TensorType.INT16, "int32": schema.TensorType.INT32}
SHAPE = (1, 8, 8, 4)


class GraphBuilder:
    """Collects tensors, buffers and ops of one or more subgraphs, then packs a model."""

    def __init__(self, dtype: str = "uint8"):
        self.dtype = dtype
        self.buffers = [schema.BufferT()]
        self.codes: list[tuple[int, str | None]] = []
        self.subgraphs: list[schema.SubGraphT] = []
        self.new_subgraph()

    def new_subgraph(self) -> None:
        subgraph = schema.SubGraphT()
        subgraph.tensors, subgraph.operators, subgraph.inputs, subgraph.outputs = [], [], [], []
        self.subgraphs.append(subgraph)

    @property
    def _current(self) -> schema.SubGraphT:
        return self.subgraphs[-1]

    def tensor(self, shape=SHAPE, dtype: str | None = None, data=None, signature=None, variable: bool = False) -> int:
        tensor = schema.TensorT()
        tensor.isVariable = variable
        dtype = dtype or self.dtype
        tensor.name, tensor.shape, tensor.type = f"t{len(self._current.tensors)}", list(shape), _TYPES[dtype]
        if signature is not None:
            tensor.shapeSignature = list(signature)
        if dtype in ("uint8", "int8"):
            tensor.quantization = schema.QuantizationParametersT()
            tensor.quantization.scale, tensor.quantization.zeroPoint = [0.05], [128 if dtype == "uint8" else 0]
        tensor.buffer = 0
        if data is not None:
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.buffers.append(buffer)
            tensor.buffer = len(self.buffers) - 1
        self._current.tensors.append(tensor)
        return len(self._current.tensors) - 1

    def op(self, name: str, inputs, outputs, custom: bool = False, options: tuple[str, dict] | None = None) -> None:
        """``options``: the builtin options' table name and fields (``("PackOptions", {"axis": 1})``)."""
        code = (schema.BuiltinOperator.CUSTOM, name) if custom else (getattr(schema.BuiltinOperator, name), None)
        if code not in self.codes:
            self.codes.append(code)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.codes.index(code), list(inputs), list(outputs)
        if options is not None:
            table, fields = options
            op.builtinOptionsType = getattr(schema.BuiltinOptions, table)
            op.builtinOptions = getattr(schema, table + "T")()
            for key, value in fields.items():
                setattr(op.builtinOptions, key, value)
        self._current.operators.append(op)

    def constant(self, values, dtype: str = "int32") -> int:
        values = np.asarray(values, {"int32": np.int32, "uint8": np.uint8, "int8": np.int8}[dtype])
        return self.tensor(values.shape, dtype, values)

    def conv(self, source: int, dtype: str | None = None) -> int:
        """A 1x1 convolution of ``source`` with constant weights and bias; returns its output."""
        dtype = dtype or self.dtype
        weights = self.tensor((4, 1, 1, 4), dtype, np.ones((4, 1, 1, 4), np.float32 if dtype == "float32" else np.uint8))
        bias = self.tensor((4,), "float32" if dtype == "float32" else "int32",
                           np.zeros(4, np.float32 if dtype == "float32" else np.int32))
        out = self.tensor(dtype=dtype)
        self.op("CONV_2D", [source, weights, bias], [out])
        return out

    def finish(self, inputs, outputs) -> None:
        self._current.inputs, self._current.outputs = list(inputs), list(outputs)

    def build(self) -> bytes:
        codes = []
        for builtin, custom in self.codes:
            code = schema.OperatorCodeT()
            code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
            code.customCode = custom
            codes.append(code)
        model = schema.ModelT()
        model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, codes, self.subgraphs, self.buffers
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def _sandwich(middle, dtype: str = "uint8", signature=None) -> bytes:
    """input -> CONV -> ``middle(graph, x)`` -> CONV -> output."""
    graph = GraphBuilder(dtype)
    source = graph.tensor(signature=signature)
    out = graph.conv(middle(graph, graph.conv(source)))
    graph.finish([source], [out])
    return graph.build()


def _single(name: str):
    def middle(graph: GraphBuilder, x: int) -> int:
        y = graph.tensor()
        graph.op(name, [x], [y])
        return y

    return middle


def chain(dtype: str = "uint8", middle: str | None = None, signature=None) -> bytes:
    """input -> CONV -> [middle op] -> CONV -> output, all in ``dtype``."""
    return _sandwich(_single(middle) if middle else (lambda graph, x: x), dtype, signature)


def float_op_inside() -> bytes:
    """uint8 CONV -> DEQUANTIZE -> float CONV -> QUANTIZE -> uint8 CONV: one op computes in float."""
    def middle(graph: GraphBuilder, x: int) -> int:
        real = graph.tensor(dtype="float32")
        graph.op("DEQUANTIZE", [x], [real])
        back = graph.tensor()
        graph.op("QUANTIZE", [graph.conv(real, "float32")], [back])
        return back

    return _sandwich(middle)


def float_input() -> bytes:
    """float input -> QUANTIZE -> CONV -> CONV: the QUANTIZE stays on the CPU before the segment."""
    graph = GraphBuilder("uint8")
    source = graph.tensor(dtype="float32")
    x = graph.tensor()
    graph.op("QUANTIZE", [source], [x])
    out = graph.conv(graph.conv(x))
    graph.finish([source], [out])
    return graph.build()


def _reshape(graph: GraphBuilder, x: int, shape, signature=None, computed: bool = False) -> int:
    target = graph.tensor(shape, signature=signature)
    if computed:  # the size comes from a SHAPE op at run time, as Keras emits for a batch of None
        size = graph.tensor((len(shape),), "int32")
        graph.op("SHAPE", [x], [size])
    else:
        size = graph.tensor((len(shape),), "int32", np.array(shape, np.int32))
    graph.op("RESHAPE", [x, size], [target])
    return target


def five_dimensional() -> bytes:
    """CONV -> RESHAPE to 1x2x4x8x4 -> RESHAPE back -> CONV: the 5-D tensor has a 2 outside the 3 innermost."""
    return _sandwich(lambda graph, x: _reshape(graph, _reshape(graph, x, (1, 2, 4, 8, 4)), SHAPE))


def dynamic_batch() -> bytes:
    """A -1 batch and the pattern Keras emits for it: SHAPE -> RESHAPE to the computed shape."""
    signature = (-1,) + SHAPE[1:]
    return _sandwich(lambda graph, x: _reshape(graph, x, SHAPE, signature, computed=True), signature=signature)


def split(axis: int) -> bytes:
    """CONV -> SPLIT in two along ``axis`` -> CONCATENATION -> CONV."""
    def middle(graph: GraphBuilder, x: int) -> int:
        halves = [graph.tensor((1, 8, 8, 2)), graph.tensor((1, 8, 8, 2))]
        graph.op("SPLIT", [graph.tensor((), "int32", np.array(axis, np.int32)), x], halves)
        out = graph.tensor()
        graph.op("CONCATENATION", halves, [out])
        return out

    return _sandwich(middle)


def two_subgraphs() -> bytes:
    """A quantized chain plus a second subgraph (as control flow or a second signature adds)."""
    graph = GraphBuilder("uint8")
    source = graph.tensor()
    out = graph.conv(source)
    graph.finish([source], [out])
    graph.new_subgraph()
    source = graph.tensor()
    out = graph.conv(source)
    graph.finish([source], [out])
    return graph.build()


def custom_tail(name: str = "PosenetDecoderOp") -> bytes:
    """CONV -> CONV -> a custom op: the custom op runs on the CPU after the segment."""
    graph = GraphBuilder("uint8")
    source = graph.tensor()
    x = graph.conv(graph.conv(source))
    out = graph.tensor((1, 10), "float32")
    graph.op(name, [x], [out], custom=True)
    graph.finish([source], [out])
    return graph.build()



def failing_invoke() -> bytes:
    """A float GATHER with an out-of-range constant index: it loads, and every invoke fails."""
    graph = GraphBuilder("float32")
    params = graph.tensor((4,))
    indices = graph.tensor((1,), "int32", np.array([10], np.int32))
    out = graph.tensor((1,))
    graph.op("GATHER", [params, indices], [out])
    graph.finish([params], [out])
    return graph.build()


# One recipe per op of Coral's table: ``recipe(graph, x, variant)`` wires the op to the 1x8x8x4
# feature map ``x`` and returns its output. ``variant`` names a case that breaks one documented
# limitation (or, for "batch1", one that looks like it and does not).
_SHAPES_OUT = {"CONCATENATION": (1, 8, 8, 8), "SPACE_TO_DEPTH": (1, 4, 4, 16), "MEAN": (1, 1, 1, 4)}


def _flat(graph: GraphBuilder, x: int, shape=(1, 256)) -> int:
    return _reshape(graph, x, shape)


def _simple(name: str, extra=lambda graph, x, variant: [], options=None, shape=None):
    def recipe(graph: GraphBuilder, x: int, variant: str) -> int:
        out = graph.tensor(shape or _SHAPES_OUT.get(name, SHAPE))
        graph.op(name, [x, *extra(graph, x, variant)], [out], options=options(variant) if options else None)
        return out

    return recipe


def _weights(graph: GraphBuilder, shape, num_outputs: int = 4) -> list[int]:
    """Constant uint8 weights of ``shape`` and an int32 bias of ``num_outputs``."""
    return [graph.tensor(shape, data=np.ones(shape, np.uint8)), graph.constant(np.zeros(num_outputs))]


def _conv(name: str, table: str, shape):
    def recipe(graph: GraphBuilder, x: int, variant: str) -> int:
        dilation = {"dilationHFactor": 2, "dilationWFactor": 1 if variant == "limit" else 2} if variant else {}
        out = graph.tensor()
        graph.op(name, [x, *_weights(graph, shape)], [out], options=(table, dilation))
        return out

    return recipe


def _transpose_conv(graph: GraphBuilder, x: int, variant: str) -> int:
    out = graph.tensor()
    weights = graph.tensor() if variant == "limit" else graph.tensor((4, 1, 1, 4), data=np.ones((4, 1, 1, 4), np.uint8))
    graph.op("TRANSPOSE_CONV", [graph.constant(SHAPE), weights, x], [out])
    return out


def _fully_connected(graph: GraphBuilder, x: int, variant: str) -> int:
    flat = _flat(graph, x, (1, 4, 64) if variant == "limit" else (1, 256))
    out = graph.tensor((1, 4, 4) if variant == "limit" else (1, 4))
    graph.op("FULLY_CONNECTED", [flat, *_weights(graph, (4, 64 if variant == "limit" else 256))], [out],
             options=("FullyConnectedOptions", {"keepNumDims": variant == "limit"}))
    return out


def _softmax(graph: GraphBuilder, x: int, variant: str) -> int:
    shape = (1, 64, 4) if variant == "limit" else (1, 256)
    out = graph.tensor(shape)
    graph.op("SOFTMAX", [_flat(graph, x, shape)], [out])
    return out


def _pool(name: str):
    return _simple(name, options=lambda variant: ("Pool2DOptions", {
        "filterWidth": 2, "filterHeight": 2, "strideW": 1, "strideH": 1,
        "fusedActivationFunction": schema.ActivationFunctionType.RELU if variant == "limit" else 0}))


def _concatenation(graph: GraphBuilder, x: int, variant: str) -> int:
    other = graph.tensor(data=np.full(SHAPE, 3, np.uint8)) if variant == "limit" else x
    out = graph.tensor((1, 8, 8, 8))
    graph.op("CONCATENATION", [x, other], [out], options=("ConcatenationOptions", {"axis": 3}))
    return out


def _reduce(name: str, published_axes=(1, 2)):
    """Reduces x and y; ``limit`` reduces the batch (axis 0 of the 4-D map); ``z`` reduces 3 channels."""
    def recipe(graph: GraphBuilder, x: int, variant: str) -> int:
        source = x
        if variant == "z":
            source = graph.tensor((1, 8, 8, 3))
            graph.op("SLICE", [x, graph.constant([0, 0, 0, 0]), graph.constant([1, 8, 8, 3])], [source])
        axes = {"limit": [0], "z": [3]}.get(variant, list(published_axes))
        out = graph.tensor((1, 1, 1, 4))
        graph.op(name, [source, graph.constant(axes)], [out], options=("ReducerOptions", {"keepDims": True}))
        return out

    return recipe


def _pack(graph: GraphBuilder, x: int, variant: str) -> int:
    """``limit`` packs two 1x8x8x4 maps along axis 0 into a batch of 2; ``rows`` packs two [64, 4]
    tensors along axis 0, whose output [2, 64, 4] has no batch dimension."""
    if variant == "limit":
        out = graph.tensor((2, 1, 8, 8, 4))
        graph.op("PACK", [x, x], [out], options=("PackOptions", {"axis": 0, "valuesCount": 2}))
        return out
    rows = _flat(graph, x, (64, 4))
    out = graph.tensor((2, 64, 4))
    graph.op("PACK", [rows, rows], [out], options=("PackOptions", {"axis": 0, "valuesCount": 2}))
    return out


def _pad(graph: GraphBuilder, x: int, variant: str) -> int:
    rows = {"limit": [[1, 0], [0, 0], [0, 0], [0, 0]], "z": [[0, 0], [0, 0], [0, 0], [2, 2]]}
    out = graph.tensor((1, 10, 10, 4))
    graph.op("PAD", [x, graph.constant(rows.get(variant, [[0, 0], [1, 1], [1, 1], [0, 0]]))], [out])
    return out


def _split(graph: GraphBuilder, x: int, variant: str) -> int:
    """Along channels; ``limit`` along a batch; ``batch1`` a one-piece split along a batch of 1."""
    axis = {"limit": 0, "batch1": 0}.get(variant, 3)
    pieces = 1 if variant == "batch1" else 2
    outs = [graph.tensor((1, 8, 8, 4 // pieces)) for _ in range(pieces)]
    graph.op("SPLIT", [graph.constant(axis), x], outs, options=("SplitOptions", {"numSplits": pieces}))
    if pieces == 1:
        return outs[0]
    out = graph.tensor()
    graph.op("CONCATENATION", outs, [out], options=("ConcatenationOptions", {"axis": 3}))
    return out


def _squeeze(graph: GraphBuilder, x: int, variant: str) -> int:
    """Squeezes the leading 1 of [1, 8, 8, 4]; ``relayout`` squeezes the inner 1 of [1, 8, 1, 32]."""
    source = _flat(graph, x, (1, 8, 1, 32)) if variant == "relayout" else x
    out = graph.tensor((1, 8, 32) if variant else (8, 8, 4))
    graph.op("SQUEEZE", [source], [out], options=("SqueezeOptions", {"squeezeDims": [2 if variant else 0]}))
    return out


def _strided_slice(graph: GraphBuilder, x: int, variant: str) -> int:
    strides = [1, 2, 1, 1] if variant == "limit" else [1, 1, 1, 1]
    out = graph.tensor((1, 4, 8, 4))
    graph.op("STRIDED_SLICE", [x, graph.constant([0, 0, 0, 0]), graph.constant([1, 8, 8, 4]), graph.constant(strides)],
             [out], options=("StridedSliceOptions", {}))
    return out


def _prelu(graph: GraphBuilder, x: int, variant: str) -> int:
    shape = (8, 8, 4) if variant == "limit" else (1, 1, 4)
    out = graph.tensor()
    graph.op("PRELU", [x, graph.tensor(shape, data=np.ones(shape, np.uint8))], [out])
    return out


def _resize(name: str, table: str):
    def recipe(graph: GraphBuilder, x: int, variant: str) -> int:
        size = (128, 128) if variant == "limit" else (16, 16)
        out = graph.tensor((1, *size, 4))
        graph.op(name, [x, graph.constant(size)], [out], options=(table, {}))
        return out

    return recipe


def _lstm(name: str, table: str):
    """A [1, steps, units] sequence through a 4-unit LSTM: 4 input and 4 recurrent weights, 4
    biases, and the hidden (int8) and cell (int16) state as variable tensors, as TFLite's
    quantized kernel takes them."""
    def recipe(graph: GraphBuilder, x: int, variant: str) -> int:
        sequence = _flat(graph, x, (1, 64, 4) if name.startswith("UNIDIRECTIONAL") else (1, 256))
        units = 4 if name.startswith("UNIDIRECTIONAL") else 256
        weights = [graph.tensor((4, units), "int8", np.ones((4, units), np.int8)) for _ in range(4)]
        recurrent = [graph.tensor((4, 4), "int8", np.ones((4, 4), np.int8)) for _ in range(4)]
        biases = [graph.constant(np.zeros(4)) for _ in range(4)]
        hidden, cell = graph.tensor((1, 4), "int8", variable=True), graph.tensor((1, 4), "int16", variable=True)
        out = graph.tensor((1, 64, 4) if units == 4 else (1, 4), "int8")
        inputs = [sequence, *weights, *recurrent, -1, -1, -1, *biases, -1, -1, hidden, cell, -1, -1, -1, -1]
        graph.op(name, inputs, [out], options=(table, {"fusedActivationFunction": schema.ActivationFunctionType.TANH}))
        return out

    return recipe


def _constant_inputs(*values):
    return lambda graph, x, variant: [graph.constant(v) for v in values]


RECIPES = {
    "ADD": _simple("ADD", lambda graph, x, variant: [x]),
    "AVERAGE_POOL_2D": _pool("AVERAGE_POOL_2D"),
    "CONCATENATION": _concatenation,
    "CONV_2D": _conv("CONV_2D", "Conv2DOptions", (4, 1, 1, 4)),
    "DEPTHWISE_CONV_2D": _conv("DEPTHWISE_CONV_2D", "DepthwiseConv2DOptions", (1, 1, 1, 4)),
    "EXPAND_DIMS": _simple("EXPAND_DIMS", _constant_inputs(0), shape=(1, 1, 8, 8, 4)),
    "FULLY_CONNECTED": _fully_connected,
    "L2_NORMALIZATION": _simple("L2_NORMALIZATION"),
    "LOGISTIC": _simple("LOGISTIC"),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": _lstm("UNIDIRECTIONAL_SEQUENCE_LSTM", "UnidirectionalSequenceLSTMOptions"),
    "LSTM": _lstm("LSTM", "LSTMOptions"),
    "MAXIMUM": _simple("MAXIMUM", lambda graph, x, variant: [x]),
    "MAX_POOL_2D": _pool("MAX_POOL_2D"),
    "MEAN": _reduce("MEAN"),
    "MINIMUM": _simple("MINIMUM", lambda graph, x, variant: [x]),
    "MUL": _simple("MUL", lambda graph, x, variant: [x]),
    "PACK": _pack,
    "PAD": _pad,
    "PRELU": _prelu,
    "QUANTIZE": _simple("QUANTIZE"),
    "REDUCE_MAX": _reduce("REDUCE_MAX"),
    "REDUCE_MIN": _reduce("REDUCE_MIN"),
    "RELU": _simple("RELU"),
    "RELU6": _simple("RELU6"),
    "RELU_N1_TO_1": _simple("RELU_N1_TO_1"),
    "RESHAPE": lambda graph, x, variant: _reshape(graph, x, (1, 16, 4, 4)),
    "RESIZE_BILINEAR": _resize("RESIZE_BILINEAR", "ResizeBilinearOptions"),
    "RESIZE_NEAREST_NEIGHBOR": _resize("RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions"),
    "RSQRT": _simple("RSQRT"),
    "SLICE": _simple("SLICE", _constant_inputs([0, 0, 0, 0], [1, 4, 4, 4]), shape=(1, 4, 4, 4)),
    "SOFTMAX": _softmax,
    "SPACE_TO_DEPTH": _simple("SPACE_TO_DEPTH", options=lambda variant: ("SpaceToDepthOptions", {"blockSize": 2})),
    "SPLIT": _split,
    "SQUARED_DIFFERENCE": _simple("SQUARED_DIFFERENCE", lambda graph, x, variant: [x]),
    "SQUEEZE": _squeeze,
    "STRIDED_SLICE": _strided_slice,
    "SUB": _simple("SUB", lambda graph, x, variant: [x]),
    "SUM": _reduce("SUM"),
    "TANH": _simple("TANH"),
    "TILE": _simple("TILE", _constant_inputs([1, 1, 1, 2]), shape=(1, 8, 8, 8)),
    "TRANSPOSE": _simple("TRANSPOSE", _constant_inputs([0, 2, 1, 3])),
    "TRANSPOSE_CONV": _transpose_conv,
}


def single_op(name: str, variant: str = "") -> bytes:
    """input -> CONV -> the op ``name`` (its recipe, in ``variant``) -> CONV -> output."""
    return _sandwich(lambda graph, x: RECIPES[name](graph, x, variant))


def branches(cut: str = "branch") -> bytes:
    """Two branches that rejoin in an ADD, stored branch after branch:

        input -> CONV -> [cut op -> CONV] + [CONV -> CONV] -> ADD -> CONV

    ``cut="input"`` feeds the cut op (LEAKY_RELU) from the model's input instead of the CONV."""
    graph = GraphBuilder("uint8")
    source = graph.tensor()
    trunk = graph.conv(source)
    cut_output = graph.tensor()
    graph.op("LEAKY_RELU", [source if cut == "input" else trunk], [cut_output])
    first = graph.conv(cut_output)
    second = graph.conv(graph.conv(trunk))
    joined = graph.tensor()
    graph.op("ADD", [first, second], [joined])
    out = graph.conv(joined)
    graph.finish([source], [out])
    return graph.build()


def _cell_step(graph: GraphBuilder, x: int, hidden: int, cell: int, activation: str) -> tuple[int, int]:
    """One LSTM step unrolled into small ops, on [1, 4] tensors: gates from a dense layer over
    [x, h], then c = f*c + i*g and h = o * activation(c)."""
    both = graph.tensor((1, 8))
    graph.op("CONCATENATION", [x, hidden], [both], options=("ConcatenationOptions", {"axis": 1}))
    gates = graph.tensor((1, 16))
    graph.op("FULLY_CONNECTED", [both, *_weights(graph, (16, 8), 16)], [gates])
    parts = [graph.tensor((1, 4)) for _ in range(4)]
    graph.op("SPLIT", [graph.constant(1), gates], parts, options=("SplitOptions", {"numSplits": 4}))
    squashed = [graph.tensor((1, 4)) for _ in range(4)]
    for name, part, out in zip(("LOGISTIC", "LOGISTIC", "TANH", "LOGISTIC"), parts, squashed):
        graph.op(name, [part], [out])
    forget, remember, new_cell = graph.tensor((1, 4)), graph.tensor((1, 4)), graph.tensor((1, 4))
    graph.op("MUL", [squashed[0], cell], [forget])
    graph.op("MUL", [squashed[1], squashed[2]], [remember])
    graph.op("ADD", [forget, remember], [new_cell])
    squashed_cell, new_hidden = graph.tensor((1, 4)), graph.tensor((1, 4))
    graph.op(activation, [new_cell], [squashed_cell])
    graph.op("MUL", [squashed[3], squashed_cell], [new_hidden])
    return new_hidden, new_cell


def unrolled_lstm(steps: int = 3, cut_step: int | None = None) -> bytes:
    """A [steps, 4] sequence split along axis 0 into steps, an LSTM cell unrolled over them with
    its state as model inputs (as recurrent detectors take it), the hidden states packed back
    along axis 0. Step ``cut_step`` (from 0) squashes its cell with LEAKY_RELU, which the Edge TPU
    lacks: 1 + 12 x steps + 1 ops."""
    graph = GraphBuilder("uint8")
    sequence, hidden, cell = graph.tensor((steps, 4)), graph.tensor((1, 4)), graph.tensor((1, 4))
    inputs = [graph.tensor((1, 4)) for _ in range(steps)]
    graph.op("SPLIT", [graph.constant(0), sequence], inputs, options=("SplitOptions", {"numSplits": steps}))
    outputs = []
    for step, x in enumerate(inputs):
        hidden, cell = _cell_step(graph, x, hidden, cell, "LEAKY_RELU" if step == cut_step else "TANH")
        outputs.append(hidden)
    packed = graph.tensor((steps, 4))
    graph.op("PACK", outputs, [packed], options=("PackOptions", {"axis": 0, "valuesCount": steps}))
    graph.finish([sequence, 1, 2], [packed, cell])
    return graph.build()
