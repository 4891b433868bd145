"""Tiny real TFLite models with the inputs users bring beyond RGB: grayscale and stateful ones.

Written with the flatbuffer schema (no TensorFlow), like ``runtime_models``:

- ``gray_model``: dark versus bright, on a ``[1, H, W, 1]`` or ``[1, H, W]`` float input.
- ``stateful_model``: the colour classifier with an SVDF layer, whose state (a variable tensor)
  remembers the previous images: without a reset, the same image gets another answer.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from runtime_models import SIZE, _buffer, _op, _tensor

GRAY_LABELS = ["dark", "bright"]
_FLOAT32 = schema.TensorType.FLOAT32


def _finish(codes: list[int], tensors, ops, buffers, inputs, outputs) -> bytes:
    op_codes = []
    for code in codes:
        op_code = schema.OperatorCodeT()
        op_code.builtinCode, op_code.deprecatedBuiltinCode, op_code.version = code, min(code, 127), 1
        op_codes.append(op_code)
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.inputs, subgraph.outputs = tensors, ops, inputs, outputs
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, op_codes, [subgraph], buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _mean_options():
    reducer = schema.ReducerOptionsT()
    reducer.keepDims = False
    return schema.BuiltinOptions.ReducerOptions, reducer


def _softmax_options():
    softmax = schema.SoftmaxOptionsT()
    softmax.beta = 1.0
    return schema.BuiltinOptions.SoftmaxOptions, softmax


def gray_model(channel_axis: bool = True) -> bytes:
    """Mean brightness (input in [-1, 1]) to two logits: ``dark`` below mid-grey, ``bright`` above."""
    builtin = schema.BuiltinOperator
    shape = (1, SIZE, SIZE, 1) if channel_axis else (1, SIZE, SIZE)
    buffers = [_buffer(), _buffer(np.array([1, 2], np.int32)), _buffer(np.array([[-8.0], [8.0]], np.float32)),
               _buffer(np.zeros(2, np.float32))]
    tensors = [
        _tensor("gray", shape, _FLOAT32),
        _tensor("axes", (2,), schema.TensorType.INT32, buffer=1),
        _tensor("brightness", (1, 1) if channel_axis else (1,), _FLOAT32),
        _tensor("weights", (2, 1), _FLOAT32, buffer=2),
        _tensor("bias", (2,), _FLOAT32, buffer=3),
        _tensor("logits", (1, 2), _FLOAT32),
        _tensor("scores", (1, 2), _FLOAT32),
    ]
    ops = [
        _op(0, [0, 1], [2], *_mean_options()),
        _op(1, [2, 3, 4], [5], schema.BuiltinOptions.FullyConnectedOptions, schema.FullyConnectedOptionsT()),
        _op(2, [5], [6], *_softmax_options()),
    ]
    return _finish([builtin.MEAN, builtin.FULLY_CONNECTED, builtin.SOFTMAX], tensors, ops, buffers, [0], [6])


def stateful_model(memory: int = 2) -> bytes:
    """Channel means through an SVDF layer (rank 1, ``memory`` steps) to three colour scores.

    The SVDF's activation state is a variable tensor: each invoke shifts the newest channel
    means in, so its output mixes the current image with the ones before.
    """
    builtin = schema.BuiltinOperator
    svdf = schema.SVDFOptionsT()
    svdf.rank = 1
    # Weight the current step 1.0 and the previous one 0.7: the memory changes the scores.
    weights_time = np.tile(np.array([0.7] + [0.0] * (memory - 2) + [1.0], np.float32), (3, 1))
    buffers = [_buffer(), _buffer(np.array([1, 2], np.int32)), _buffer(8 * np.eye(3, dtype=np.float32)),
               _buffer(weights_time), _buffer(np.zeros(3, np.float32))]
    tensors = [
        _tensor("image", (1, SIZE, SIZE, 3), _FLOAT32),
        _tensor("axes", (2,), schema.TensorType.INT32, buffer=1),
        _tensor("means", (1, 3), _FLOAT32),
        _tensor("weights_feature", (3, 3), _FLOAT32, buffer=2),
        _tensor("weights_time", (3, memory), _FLOAT32, buffer=3),
        _tensor("bias", (3,), _FLOAT32, buffer=4),
        _tensor("state", (1, 3 * memory), _FLOAT32),
        _tensor("logits", (1, 3), _FLOAT32),
        _tensor("scores", (1, 3), _FLOAT32),
    ]
    tensors[6].isVariable = True
    ops = [
        _op(0, [0, 1], [2], *_mean_options()),
        _op(1, [2, 3, 4, 5, 6], [7], schema.BuiltinOptions.SVDFOptions, svdf),
        _op(2, [7], [8], *_softmax_options()),
    ]
    return _finish([builtin.MEAN, builtin.SVDF, builtin.SOFTMAX], tensors, ops, buffers, [0], [8])
