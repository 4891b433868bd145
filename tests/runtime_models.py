"""Tiny real TFLite classifiers for the runtime tests, written with the flatbuffer schema
(no TensorFlow): they tell red, green and blue pictures apart.

Graph: [uint8 input -> DEQUANTIZE ->] MEAN over height and width -> FULLY_CONNECTED -> SOFTMAX.
"""

from __future__ import annotations

import json
from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from PIL import Image

from edgeship.runtime.manifest import Manifest, embed

COLOURS = {"red": (200, 30, 40), "green": (30, 190, 50), "blue": (40, 50, 210)}
LABELS = list(COLOURS)
SIZE = 8


def _tensor(name, shape, dtype, buffer=0, scale=None, zero_point=None):
    tensor = schema.TensorT()
    tensor.name, tensor.shape, tensor.type, tensor.buffer = name, list(shape), dtype, buffer
    if scale is not None:
        tensor.quantization = schema.QuantizationParametersT()
        tensor.quantization.scale, tensor.quantization.zeroPoint = [scale], [zero_point]
    return tensor


def _buffer(array=None):
    buffer = schema.BufferT()
    if array is not None:
        buffer.data = np.frombuffer(np.ascontiguousarray(array).tobytes(), dtype=np.uint8)
    return buffer


def _op(index, inputs, outputs, options_type=0, options=None):
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = index, list(inputs), list(outputs)
    op.builtinOptionsType, op.builtinOptions = options_type, options
    return op


def colour_model(weights: np.ndarray, uint8_input: bool = False, custom_op: str | None = None) -> bytes:
    """A 3-class colour classifier; ``weights`` maps channel means (in [-1, 1]) to logits."""
    builtin = schema.BuiltinOperator
    codes = []
    for code in ([builtin.DEQUANTIZE] if uint8_input else []) + [builtin.MEAN, builtin.FULLY_CONNECTED, builtin.SOFTMAX]:
        op_code = schema.OperatorCodeT()
        op_code.builtinCode, op_code.deprecatedBuiltinCode, op_code.version = code, min(code, 127), 1
        codes.append(op_code)
    if custom_op:
        op_code = schema.OperatorCodeT()
        op_code.builtinCode = op_code.deprecatedBuiltinCode = builtin.CUSTOM
        op_code.customCode, op_code.version = custom_op, 1
        codes.append(op_code)

    buffers = [_buffer(), _buffer(np.array([1, 2], np.int32)), _buffer(weights.astype(np.float32)),
               _buffer(np.zeros(3, np.float32))]
    tensors = [
        _tensor("image", (1, SIZE, SIZE, 3), schema.TensorType.FLOAT32),
        _tensor("axes", (2,), schema.TensorType.INT32, buffer=1),
        _tensor("means", (1, 3), schema.TensorType.FLOAT32),
        _tensor("weights", (3, 3), schema.TensorType.FLOAT32, buffer=2),
        _tensor("bias", (3,), schema.TensorType.FLOAT32, buffer=3),
        _tensor("logits", (1, 3), schema.TensorType.FLOAT32),
        _tensor("scores", (1, 3), schema.TensorType.FLOAT32),
    ]
    offset = 1 if uint8_input else 0
    reducer = schema.ReducerOptionsT()
    reducer.keepDims = False
    softmax = schema.SoftmaxOptionsT()
    softmax.beta = 1.0
    ops = [
        _op(offset, [0, 1], [2], schema.BuiltinOptions.ReducerOptions, reducer),
        _op(offset + 1, [2, 3, 4], [5], schema.BuiltinOptions.FullyConnectedOptions, schema.FullyConnectedOptionsT()),
        _op(offset + 2, [5], [6], schema.BuiltinOptions.SoftmaxOptions, softmax),
    ]
    inputs = [0]
    if uint8_input:
        tensors.append(_tensor("pixels", (1, SIZE, SIZE, 3), schema.TensorType.UINT8, scale=1 / 128, zero_point=128))
        ops.insert(0, _op(0, [7], [0], schema.BuiltinOptions.DequantizeOptions, schema.DequantizeOptionsT()))
        inputs = [7]
    if custom_op:
        tensors.append(_tensor("custom_out", (1, 3), schema.TensorType.FLOAT32))
        ops.append(_op(len(codes) - 1, [6], [len(tensors) - 1]))

    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators = tensors, ops
    subgraph.inputs, subgraph.outputs = inputs, [len(tensors) - 1 if custom_op else 6]
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, codes, [subgraph], buffers
    model.description = "edgeship test colour classifier"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def write_models(folder: Path) -> dict[str, Path]:
    """Writes the test models; returns their paths by name.

    ``float``: float32 input with a manifest (mean = std = 128). ``uint8``: uint8 input,
    raw pixels. ``wrong``: like ``float`` but every class answers as the next one.
    ``bare``: float32, no labels or manifest. ``custom``: needs an unknown custom op.
    """
    folder.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(labels=tuple(LABELS), image_size=(SIZE, SIZE), quantization="float32", backbone="test")
    right, wrong = 8 * np.eye(3), 8 * np.roll(np.eye(3), 1, axis=0)
    contents = {
        "float": embed(colour_model(right), LABELS, manifest),
        "uint8": embed(colour_model(right, uint8_input=True), LABELS, Manifest(
            labels=tuple(LABELS), image_size=(SIZE, SIZE), quantization="int8")),
        "wrong": embed(colour_model(wrong), LABELS, manifest),
        "bare": colour_model(right),
        "custom": colour_model(right, custom_op="fake-op-double"),
    }
    paths = {}
    for name, data in contents.items():
        paths[name] = folder / f"colour_{name}.tflite"
        paths[name].write_bytes(data)
    return paths


def write_images(root: Path, per_class: int = 4, size: int = 20, seed: int = 0) -> Path:
    """Class folders of noisy solid-colour PNGs, and one corrupt JPEG in ``red``."""
    rng = np.random.default_rng(seed)
    for label, colour in COLOURS.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-25, 26, size=(size, size, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{label}_{i}.png")
    (root / "red" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def write_run(run_dir: Path, data_root: Path, float_model: Path) -> Path:
    """A run directory as `edgeship train` and `export` leave it, for the runtime's needs."""
    from edgeship.runtime.files import sha256_file
    from edgeship.runtime.rundir import RunDir, Split

    run = RunDir(run_dir)
    items = sorted(
        (p.relative_to(data_root).as_posix(), LABELS.index(p.parent.name), sha256_file(p))
        for p in data_root.glob("*/*.png")
    )
    run.write_split(Split(str(data_root), list(LABELS), train=items[::2], val=[], test=items, digest="0" * 64))
    run.write_labels(list(LABELS))
    run.export_dir.mkdir(parents=True, exist_ok=True)
    (run.export_dir / "model_float32.tflite").write_bytes(float_model.read_bytes())
    return run_dir


def edited_colour_model(edit) -> bytes:
    """The colour model with its object tree changed by ``edit(model)`` (a ``schema.ModelT``)."""
    model = schema.ModelT.InitFromPackedBuf(colour_model(8 * np.eye(3)), 0)
    edit(model)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
