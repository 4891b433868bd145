"""Which TFLite ops the Edge TPU compiler maps, under which constraints, from which runtime.

The table follows Coral's published list of supported operations and their known limitations
("TensorFlow models on the Edge TPU", https://coral.ai/docs/edgetpu/models-intro/#supported-operations),
restated here in our own words, and the model requirements on the same page: every tensor
8-bit quantized, sizes fixed at compile time, parameters (weights, biases) constant, and only
the three innermost dimensions of a tensor larger than 1. The status phrases are the ones the
compiler writes in its operation log (``edgetpu_compiler -s``), so that a prediction and a real
log can be compared row by row.

``RULES`` is the table as data: one entry per row of Coral's table (``published`` holds the row's
name, ``min_runtime`` its runtime column, with "All" as 10), and the version notes of rows that
changed with runtime 13 (dilated depthwise kernels, reductions and padding along z, squeezes
that relayout) raise the runtime a model needs. Where a rule departs from its row, ``departure``
says how and on what evidence; the tests build one tiny model per row and one per documented
limitation from this table. Ops outside the table stay on the CPU (LEAKY_RELU and HARD_SWISH,
for example: github.com/google-coral/edgetpu/issues/272), except where a compiled file shows
one mapped (TILE).

Where the compiler decides on something Coral does not document (the resize ops "depending on
input/output size", reshapes of large tensors), a verdict is flagged ``uncertain`` rather than
guessed silently.

Example:
    >>> RULES["CONV_2D"].min_runtime, RULES["TRANSPOSE"].min_runtime, RULES["TRANSPOSE"].published
    (10, 14, 'Transpose')
    >>> "LEAKY_RELU" in RULES, "HARD_SWISH" in RULES, bool(RULES["TILE"].published)
    (False, False, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeship.runtime.graph import MAX_RANK, Graph, OpInfo, TensorInfo

__all__ = [
    "LATEST_RUNTIME",
    "OLDEST_RUNTIME",
    "RULES",
    "STATUS_DATA_TYPE",
    "STATUS_MAPPED",
    "STATUS_NOT_SUPPORTED",
    "STATUS_RANK",
    "STATUS_SUBGRAPH",
    "STATUS_UNSPECIFIED",
    "OpRule",
    "Verdict",
    "check_op",
]

# The compiler's own status phrases.
STATUS_MAPPED = "Mapped to Edge TPU"
STATUS_SUBGRAPH = "More than one subgraph is not supported"
STATUS_NOT_SUPPORTED = "Operation not supported"
STATUS_DATA_TYPE = "Operation is working on an unsupported data type"
STATUS_RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
STATUS_UNSPECIFIED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"

OLDEST_RUNTIME = 10   # "All" in Coral's table: every released runtime
LATEST_RUNTIME = 14   # what edgetpu_compiler 16.0 targets by default
INT8_RUNTIME = 13     # TensorFlow 2's signed int8 scheme arrived with compiler 2.1 / runtime 13
_EIGHT_BIT = frozenset({"uint8", "int8"})
_CONSTANT_TYPES = _EIGHT_BIT | {"int32", "int64"}   # weights, biases, shapes, axes
_SOFTMAX_MAX_ELEMENTS = 16000
_RESIZE_MAX_FACTOR = 8   # inferred from Coral's compiled DeepLab models, not documented


@dataclass(frozen=True)
class Verdict:
    """What the compiler is predicted to do with one op, on its own (before partitioning)."""

    status: str
    detail: str = ""          # our explanation, in words a user can act on
    uncertain: bool = False   # the compiler's choice here depends on undocumented criteria
    min_runtime: int = OLDEST_RUNTIME

    @property
    def mappable(self) -> bool:
        return self.status == STATUS_MAPPED


Check = Callable[[OpInfo, Graph], "Verdict | None"]


@dataclass(frozen=True)
class OpRule:
    """One row of the table: Coral's published row (its name and runtime column) and our rule.

    ``departure`` says where the rule differs from the published row, with the evidence (a
    compiled file, a compiler issue); it is empty where the rule restates the row."""

    min_runtime: int
    limitation: str = ""          # Coral's documented limitation, in our words
    check: Check | None = None    # returns a Verdict when the limitation applies
    published: str = ""           # the row's name in Coral's table; "" for an op it does not list
    departure: str = ""


def _tensors(op: OpInfo, graph: Graph, indices) -> list[TensorInfo]:
    tensors = graph.subgraph_tensors[op.subgraph]
    return [tensors[i] for i in indices if i >= 0]


def _shape(op: OpInfo, graph: Graph, indices) -> tuple[int, ...]:
    """The shape of the first tensor of ``indices``; () when the op has none there (a damaged op)."""
    tensors = _tensors(op, graph, indices)
    return tensors[0].shape if tensors else ()


def _activations(op: OpInfo, graph: Graph) -> list[TensorInfo]:
    return [t for t in _tensors(op, graph, op.inputs + op.outputs) if not t.constant]


def _not_mapped(detail: str, uncertain: bool = False) -> Verdict:
    return Verdict(STATUS_UNSPECIFIED, detail, uncertain)


def _axes(op: OpInfo, graph: Graph, position: int) -> list[int] | None:
    """The constant axis values of input ``position``, made non-negative; None if not constant.
    The data tensor is input 0, or input 1 when the axis comes first (SPLIT)."""
    if len(op.inputs) <= position or op.inputs[position] < 0:
        return None
    tensor = graph.subgraph_tensors[op.subgraph][op.inputs[position]]
    values = graph.constant_values(tensor)
    data = _tensors(op, graph, op.inputs[1:2] if position == 0 else op.inputs[:1])
    # More axes than any rank is damage, and each would cost a Python int.
    if values is None or not data or values.size > MAX_RANK:
        return None
    rank = len(data[0].shape)
    return [int(v) % rank if rank else int(v) for v in np.ravel(values)]


def _no_fused_activation(op: OpInfo, graph: Graph) -> Verdict | None:
    if op.options.get("fusedActivationFunction", 0):
        return _not_mapped(f"{op.name} has a fused activation; the Edge TPU takes none here.")
    return None


def _concatenation(op: OpInfo, graph: Graph) -> Verdict | None:
    inputs = _tensors(op, graph, op.inputs)
    constants = [t for t in inputs if t.constant]
    if constants and (len(inputs) != 2 or not all(graph.is_all_zero(t) for t in constants)):
        return _not_mapped("a constant input is allowed only as the all-zero half of a two-input concatenation.")
    return _no_fused_activation(op, graph)


def _dilation(op: OpInfo) -> tuple[int, int]:
    return op.options.get("dilationHFactor", 1), op.options.get("dilationWFactor", 1)


def _constant_weights(op: OpInfo, graph: Graph) -> Verdict | None:
    weights = _tensors(op, graph, op.inputs[1:2])
    if weights and not weights[0].constant:
        return _not_mapped("its weights are computed at run time; the compiler needs them constant.")
    return None


def _conv(op: OpInfo, graph: Graph) -> Verdict | None:
    height, width = _dilation(op)
    if height != width:
        return _not_mapped(f"dilation differs between height ({height}) and width ({width}).")
    return _constant_weights(op, graph)


def _depthwise(op: OpInfo, graph: Graph) -> Verdict | None:
    verdict = _conv(op, graph)
    if verdict is None and max(_dilation(op)) > 1:
        return Verdict(STATUS_MAPPED, "dilated depthwise kernels need runtime 13", min_runtime=13)
    return verdict


def _fully_connected(op: OpInfo, graph: Graph) -> Verdict | None:
    if op.options.get("weightsFormat", 0):
        return _not_mapped("only the default weights format is supported (not shuffled 4x16 int8).")
    output = _tensors(op, graph, op.outputs[:1])
    if output and any(d > 1 for d in output[0].shape[:-1]):
        return _not_mapped(f"its output {list(output[0].shape)} is not one-dimensional (batch > 1 or keep_num_dims).")
    return _constant_weights(op, graph)


def _num_batch_dimensions(rank: int) -> int:
    """How many leading dimensions of a tensor of ``rank`` are the Edge TPU's batch: those outside
    the three innermost (y, x, z). A tensor of rank 3 or less has none, so axis 0 of an unrolled
    recurrent cell's [steps, units] tensor is its y, not a batch."""
    return max(rank - 3, 0)


def _not_on_batch(position: int) -> Check:
    """The data tensor is input 1 when the axes are input ``position`` 0 (SPLIT), else input 0."""

    def check(op: OpInfo, graph: Graph) -> Verdict | None:
        axes = _axes(op, graph, position)
        data = _shape(op, graph, op.inputs[1:2] if position == 0 else op.inputs[:1])
        if axes is None or not any(a < _num_batch_dimensions(len(data)) for a in axes):
            return None
        if op.name == "SPLIT" and len(op.outputs) == 1:
            # A split into one piece copies its input: Coral's compiled YAMNet (coralmicro) maps one.
            return None
        return _not_mapped(f"{op.name} works along the batch dimension.")

    return check


def _mean(op: OpInfo, graph: Graph) -> Verdict | None:
    verdict = _not_on_batch(1)(op, graph)
    axes = _axes(op, graph, 1) or []
    shape = _shape(op, graph, op.inputs[:1])
    if verdict is not None or not shape or len(shape) - 1 not in axes:
        return verdict
    if shape[-1] % 4:
        return _not_mapped(f"a reduction over channels needs a multiple of 4 channels; it has {shape[-1]}.")
    return Verdict(STATUS_MAPPED, "a reduction over channels (z) needs runtime 13", min_runtime=13)


def _pack(op: OpInfo, graph: Graph) -> Verdict | None:
    output = _shape(op, graph, op.outputs[:1])
    axis = op.options.get("axis", 0) % max(len(output), 1)
    if axis < _num_batch_dimensions(len(output)) and len(op.inputs) > 1:
        return _not_mapped("PACK along the batch dimension.")
    return None


def _pad(op: OpInfo, graph: Graph) -> Verdict | None:
    paddings = _tensors(op, graph, op.inputs[1:2])
    values = graph.constant_values(paddings[0]) if paddings else None
    if values is None or values.size > 2 * MAX_RANK:
        return _not_mapped("its paddings are computed at run time.")
    rows = np.reshape(values, (-1, 2)) if values.size % 2 == 0 else np.zeros((0, 2))
    if rows[:_num_batch_dimensions(len(rows))].any():
        return _not_mapped("it pads the batch dimension.")
    if len(rows) and rows[-1].any():
        return Verdict(STATUS_MAPPED, "padding along z (channels) needs runtime 13", min_runtime=13)
    return None


def _squeeze(op: OpInfo, graph: Graph) -> Verdict | None:
    """Runtimes up to 12 squeeze only leading 1s (no relayout); 13 squeezes any."""
    shape = _shape(op, graph, op.inputs[:1])
    dims = [d % len(shape) for d in op.options.get("squeezeDims", []) or []] if shape else []
    dims = dims or [i for i, d in enumerate(shape) if d == 1]
    leading = next((i for i, d in enumerate(shape) if d != 1), len(shape))
    if any(d >= leading for d in dims):
        return Verdict(STATUS_MAPPED, "squeezing a dimension after a larger one needs runtime 13", min_runtime=13)
    return None


def _unverified(op: OpInfo, graph: Graph) -> Verdict | None:
    return Verdict(STATUS_MAPPED, f"no compiled file we know shows the compiler mapping {op.name}", uncertain=True)


def _prelu(op: OpInfo, graph: Graph) -> Verdict | None:
    alpha = _tensors(op, graph, op.inputs[1:2])
    if alpha and any(d > 1 for d in alpha[0].shape[:-1]):
        return _not_mapped("its alpha varies along more than the innermost dimension (use shared_axes=[1, 2]).")
    return None


def _softmax(op: OpInfo, graph: Graph) -> Verdict | None:
    shape = _shape(op, graph, op.inputs[:1])
    if any(d > 1 for d in shape[:-1]) or (shape and shape[-1] > _SOFTMAX_MAX_ELEMENTS):
        return _not_mapped(f"softmax maps only on a 1-D input of at most {_SOFTMAX_MAX_ELEMENTS} values; it has {list(shape)}.")
    return None


def _strided_slice(op: OpInfo, graph: Graph) -> Verdict | None:
    strides = _tensors(op, graph, op.inputs[3:4])
    values = graph.constant_values(strides[0]) if strides else None
    if values is None or values.size > MAX_RANK or np.any(np.ravel(values) != 1):
        return _not_mapped("only strides of 1 are supported.")
    if op.options.get("ellipsisMask", 0) or op.options.get("newAxisMask", 0):
        return _not_mapped("an ellipsis or new-axis mask is not supported.")
    return None


def _resize(op: OpInfo, graph: Graph) -> Verdict | None:
    """Coral: mapped "depending on input/output size", to avoid a loss of precision; the
    criteria are not published (github.com/google-coral/edgetpu/issues/31)."""
    source = _shape(op, graph, op.inputs[:1])
    target = _shape(op, graph, op.outputs[:1])
    if len(source) != 4 or len(target) != 4:
        return None
    factor = max(target[1] / max(source[1], 1), target[2] / max(source[2], 1))
    if factor > _RESIZE_MAX_FACTOR:
        # Coral's DeepLab builds keep a 1x1 -> 33x33 and a 33x33 -> 513x513 upsampling on the CPU.
        return _not_mapped(f"an upsampling by {factor:.0f}x (precision guard; threshold inferred)", uncertain=True)
    if factor != 1:
        return Verdict(STATUS_MAPPED, f"an upsampling by {factor:g}x; the size criteria are undocumented", uncertain=True)
    if op.options.get("halfPixelCenters"):
        # Compiler 14.1 logged "Operation version not supported" for TF2's half-pixel resize.
        return Verdict(STATUS_MAPPED, "half-pixel centres: older compilers refuse this op version", uncertain=True)
    return None


_BATCH = "not along the batch (the dimensions outside the 3 innermost)"
_DIMENSIONS = ("Coral's notes name the batch without defining it; we take it to be the dimensions outside "
               "the three innermost, the ones the model requirements allow only a size of 1, so a tensor of "
               "rank 3 or less has no batch.")

# One entry per row of Coral's table (``published`` is the row's name), plus the ops it does not
# list that compiled files show mapped. ``min_runtime`` is the table's runtime column: "All" is 10.
RULES: dict[str, OpRule] = {
    "ADD": OpRule(10, published="Add"),
    "AVERAGE_POOL_2D": OpRule(10, "no fused activation", _no_fused_activation, "AveragePool2d"),
    "CONCATENATION": OpRule(10, "no fused activation; a constant input only as an all-zero pad of 2 inputs",
                            _concatenation, "Concatenation"),
    "CONV_2D": OpRule(10, "same dilation in height and width; constant weights", _conv, "Conv2d"),
    "DEPTHWISE_CONV_2D": OpRule(10, "same dilation in height and width (dilation needs runtime 13)", _depthwise,
                                "DepthwiseConv2d"),
    "EXPAND_DIMS": OpRule(13, published="ExpandDims"),
    "FULLY_CONNECTED": OpRule(10, "default weights format; one-dimensional output", _fully_connected,
                              "FullyConnected"),
    "L2_NORMALIZATION": OpRule(10, published="L2Normalization"),
    "LOGISTIC": OpRule(10, published="Logistic"),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": OpRule(14, "unidirectional only", published="LSTM"),
    # The same row names TFLite's one-step LSTM kernel too; no compiled file shows it.
    "LSTM": OpRule(14, "unidirectional only", _unverified, "LSTM",
                   departure="flagged uncertain: the compiled LSTM we know (Coral's keras_lstm_mnist_ptq) is the "
                             "sequence kernel"),
    "MAXIMUM": OpRule(10, published="Maximum"),
    "MAX_POOL_2D": OpRule(10, "no fused activation", _no_fused_activation, "MaxPool2d"),
    "MEAN": OpRule(10, f"{_BATCH}; over z only for a multiple of 4 (runtime 13; 12 reduces x and y only)", _mean,
                   "Mean", departure=_DIMENSIONS),
    "MINIMUM": OpRule(10, published="Minimum"),
    "MUL": OpRule(10, published="Mul"),
    "PACK": OpRule(10, _BATCH, _pack, "Pack", departure=_DIMENSIONS),
    "PAD": OpRule(10, f"{_BATCH}; along z needs runtime 13 (12 pads x and y only)", _pad, "Pad",
                  departure=_DIMENSIONS),
    "PRELU": OpRule(10, "alpha varies along the innermost dimension only", _prelu, "PReLU"),
    "QUANTIZE": OpRule(13, published="Quantize"),
    "REDUCE_MAX": OpRule(14, _BATCH, _not_on_batch(1), "ReduceMax", departure=_DIMENSIONS),
    "REDUCE_MIN": OpRule(14, _BATCH, _not_on_batch(1), "ReduceMin", departure=_DIMENSIONS),
    "RELU": OpRule(10, published="ReLU"),
    "RELU6": OpRule(10, published="ReLU6"),
    "RELU_N1_TO_1": OpRule(10, published="ReLUN1To1"),
    "RESHAPE": OpRule(10, "some reshapes of large tensors are not mapped", published="Reshape"),
    "RESIZE_BILINEAR": OpRule(10, "3-D input/output; some sizes stay on the CPU (undocumented)", _resize,
                              "ResizeBilinear"),
    "RESIZE_NEAREST_NEIGHBOR": OpRule(10, "3-D input/output; some sizes stay on the CPU (undocumented)", _resize,
                                      "ResizeNearestNeighbor"),
    "RSQRT": OpRule(14, published="Rsqrt"),
    "SLICE": OpRule(10, published="Slice"),
    "SOFTMAX": OpRule(10, "1-D input of at most 16,000 values", _softmax, "Softmax"),
    "SPACE_TO_DEPTH": OpRule(10, published="SpaceToDepth"),
    "SPLIT": OpRule(10, _BATCH, _not_on_batch(0), "Split",
                    departure=_DIMENSIONS + " A split into one piece along a batch of 1 maps: Coral's compiled "
                                            "YAMNet (google-coral/coralmicro, models/yamnet_spectra_in) has one."),
    "SQUARED_DIFFERENCE": OpRule(14, published="Squared-difference"),
    "SQUEEZE": OpRule(10, "runtime 12 squeezes leading 1s only; 13 any", _squeeze, "Squeeze"),
    "STRIDED_SLICE": OpRule(10, "strides of 1, no ellipsis or new-axis mask", _strided_slice, "StridedSlice"),
    "SUB": OpRule(10, published="Sub"),
    "SUM": OpRule(13, _BATCH, _not_on_batch(1), "Sum", departure=_DIMENSIONS),
    "TANH": OpRule(10, published="Tanh"),
    "TILE": OpRule(LATEST_RUNTIME, "not in Coral's table", departure="mapped in Coral's compiled DeepLab "
                   "(google-coral/test_data, deeplab_mobilenet_edgetpu_slim_cityscapes_quant) by compiler 16"),
    "TRANSPOSE": OpRule(14, published="Transpose"),
    "TRANSPOSE_CONV": OpRule(13, "constant weights", _constant_weights, "TransposeConv"),
}


def _data_type(op: OpInfo, graph: Graph) -> Verdict | None:
    # An int8 LSTM keeps its cell state in int16 (Coral's Keras LSTM build maps it).
    states = {"int16"} if op.name in ("UNIDIRECTIONAL_SEQUENCE_LSTM", "LSTM") else set()
    for tensor in _tensors(op, graph, op.inputs + op.outputs):
        allowed = _CONSTANT_TYPES if tensor.constant else _EIGHT_BIT | states
        if tensor.dtype not in allowed:
            kind = "constant" if tensor.constant else "tensor"
            return Verdict(STATUS_DATA_TYPE, f"{kind} {tensor.name!r} is {tensor.dtype}; the Edge TPU computes on 8-bit integers.")
    return None


def _rank(op: OpInfo, graph: Graph) -> Verdict | None:
    for tensor in _activations(op, graph):
        if any(d > 1 for d in tensor.shape[:-3]):
            return Verdict(STATUS_RANK, f"tensor {tensor.name!r} has shape {list(tensor.shape)}: only the 3 innermost dimensions may exceed 1.")
    return None


def check_op(op: OpInfo, graph: Graph) -> Verdict:
    """The compiler's predicted verdict on one op by itself (custom ops are never mapped).

    Example:
        >>> from edgeship.runtime.graph import read_graph
        >>> graph = read_graph("mobilenet_v1_0.25_128_quant.tflite")
        >>> check_op(graph.ops[0], graph).status
        'Mapped to Edge TPU'
    """
    rule = None if op.custom else RULES.get(op.name)
    if op.custom:
        return Verdict(STATUS_NOT_SUPPORTED, f"custom op {op.name} runs on the CPU.")
    verdict = _data_type(op, graph)
    if verdict is None and rule is None:
        verdict = Verdict(STATUS_NOT_SUPPORTED, f"{op.name} is not in Coral's list of supported operations.")
    verdict = verdict or _rank(op, graph) or (rule.check(op, graph) if rule.check else None)
    if verdict is None:
        return Verdict(STATUS_MAPPED, min_runtime=rule.min_runtime)
    if verdict.mappable:
        return Verdict(STATUS_MAPPED, verdict.detail, verdict.uncertain, max(verdict.min_runtime, rule.min_runtime))
    return verdict
