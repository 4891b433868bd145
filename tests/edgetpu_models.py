"""Tiny TFLite graphs, written with the flatbuffer schema, that each exercise one Edge TPU rule.

They are parsed, never run: the mapping prediction reads the file only. Each is a chain of
8x8x4 feature maps through 1x1 convolutions, with the one feature a rule is about.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

_TYPES = {"float32": schema.TensorType.FLOAT32, "uint8": schema.TensorType.UINT8,
          "int8": schema.TensorType.INT8, "int32": schema.TensorType.INT32}
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

    def tensor(self, shape=SHAPE, dtype: str | None = None, data=None, signature=None) -> int:
        tensor = schema.TensorT()
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

    def op(self, name: str, inputs, outputs, custom: bool = False) -> None:
        code = (schema.BuiltinOperator.CUSTOM, name) if custom else (getattr(schema.BuiltinOperator, name), None)
        if code not in self.codes:
            self.codes.append(code)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.codes.index(code), list(inputs), list(outputs)
        self._current.operators.append(op)

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
