"""Hostile but tiny model, label and image files, built byte by byte: each costs time and memory in
proportion to its size, and ends in a clear message, never a traceback.

Peak memory is measured in a child process (the runtime never imports TensorFlow, so the child is
light), under an address-space guard, so that a regression fails the test instead of the machine.
Work is measured by counting, never by the clock: a file twice as large may cost about twice as
much, not four times. A hostile associated file (a label file that inflates to gigabytes) is a
damaged archive: like any damaged archive it is left out with a warning naming the model, which
still runs; a hostile flatbuffer or ``--labels`` file is an error (exit 1).
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import resource
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.edgetpu.mapping import predict_mapping
from edgeship.errors import DataError, ModelFormatError
from edgeship.runtime import flatbuffer_bounds
from edgeship.runtime.graph import parse_graph
from edgeship.runtime.image import load_image
from edgeship.runtime.labels import MAX_CLASSES, MAX_LABEL_BYTES, parse_labels, read_labels
from edgeship.runtime.manifest import MANIFEST_NAME, MAX_MEMBER_BYTES, Manifest, read_embedded, read_member
from edgeship.runtime.metadata_writer import build_metadata, with_metadata
from edgeship.runtime.tflite_metadata import _FILE_NAME, _MODEL_FILES

from runtime_models import LABELS, colour_model, edited_colour_model

TESTS = Path(__file__).resolve().parent
IMAGE = TESTS / "data" / "coral" / "cat.bmp"
PEAK_BOUND_MB = 300            # the runtime's commands alone peak at about 80 MB
ADDRESS_SPACE_GUARD = 2 << 30  # a regression dies in the child with MemoryError, not on the machine
BOMB_BYTES = 200 << 20         # what the inflating label files expand to: 12x the cap

# The child runs each command line through the CLI, then reports the results and its own peak.
CHILD = """
import json, logging, sys
from typer.testing import CliRunner
from edgeship.cli import app
results = []
for args in json.loads(sys.argv[1]):
    logging.getLogger().handlers.clear()
    result = CliRunner().invoke(app, args)
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    results.append({"exit_code": result.exit_code, "output": result.output,
                    "exception": repr(result.exception) if crashed else None})
# VmHWM, not ru_maxrss: on Linux the latter keeps the peak of the parent it was forked from (a
# pytest process holding TensorFlow) across exec.
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
peak_mb = int(status["VmHWM"].split()[0]) / 1024
print(json.dumps({"results": results, "peak_mb": peak_mb, "tensorflow": "tensorflow" in sys.modules}))
"""


def run(*args):
    logging.getLogger().handlers.clear()  # the CLI configures logging once per process
    return CliRunner().invoke(app, [str(a) for a in args])


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_GUARD, ADDRESS_SPACE_GUARD))


def run_in_child(*commands: list) -> list[dict]:
    """Runs CLI command lines in one child process; asserts its peak memory, returns the results."""
    lines = [[str(a) for a in command] for command in commands]
    child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(lines)], capture_output=True, text=True,
                           check=False, timeout=120, preexec_fn=_limit_address_space, cwd=TESTS.parent.parent)
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.splitlines()[-1])
    for line, result in zip(lines, report["results"]):
        assert result["exception"] is None and "Traceback" not in result["output"], (line, result)
    assert report["peak_mb"] < PEAK_BOUND_MB, f"{lines} peaked at {report['peak_mb']:.0f} MB"
    assert not report["tensorflow"]
    return report["results"]


def count_lines(fn, *args) -> int:
    """How many lines of Python ``fn(*args)`` executes (a ModelFormatError ends it): work that no
    machine's speed or load changes."""
    executed = 0

    def trace(frame, event, arg):
        nonlocal executed
        executed += event == "line"
        return trace

    sys.settrace(trace)
    try:
        fn(*args)
    except ModelFormatError:
        pass
    finally:
        sys.settrace(None)
    return executed


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


# Flatbuffers written by hand: what no converter writes, but anyone can.

def _ints(builder: flatbuffers.Builder, values) -> int:
    return builder.CreateNumpyVector(np.asarray(values, dtype="<i4"))


def _repeated(builder: flatbuffers.Builder, table: int, count: int) -> int:
    """A vector of ``count`` entries that all point at one table."""
    builder.StartVector(4, count, 4)
    for _ in range(count):
        builder.PrependUOffsetTRelative(table)
    return builder.EndVector()


def _tensor(builder: flatbuffers.Builder, name: str, shape, dtype=schema.TensorType.FLOAT32, buffer=0) -> int:
    name_at, shape_at = builder.CreateString(name), _ints(builder, shape)
    schema.TensorStart(builder)
    schema.TensorAddShape(builder, shape_at)
    schema.TensorAddName(builder, name_at)
    schema.TensorAddType(builder, dtype)
    schema.TensorAddBuffer(builder, buffer)
    return schema.TensorEnd(builder)


def _operator(builder: flatbuffers.Builder, inputs, outputs) -> int:
    inputs_at, outputs_at = _ints(builder, inputs), _ints(builder, outputs)
    schema.OperatorStart(builder)
    schema.OperatorAddInputs(builder, inputs_at)
    schema.OperatorAddOutputs(builder, outputs_at)
    return schema.OperatorEnd(builder)


def _op_code(builder: flatbuffers.Builder, builtin: int, custom: int | None = None) -> int:
    schema.OperatorCodeStart(builder)
    schema.OperatorCodeAddBuiltinCode(builder, builtin)
    schema.OperatorCodeAddDeprecatedBuiltinCode(builder, min(builtin, 127))
    if custom is not None:
        schema.OperatorCodeAddCustomCode(builder, custom)
    return schema.OperatorCodeEnd(builder)


def _model(builder: flatbuffers.Builder, subgraphs: int, codes: int | None = None, buffers: int | None = None) -> bytes:
    schema.ModelStart(builder)
    schema.ModelAddVersion(builder, 3)
    schema.ModelAddSubgraphs(builder, subgraphs)
    if codes is not None:
        schema.ModelAddOperatorCodes(builder, codes)
    if buffers is not None:
        schema.ModelAddBuffers(builder, buffers)
    builder.Finish(schema.ModelEnd(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _subgraph(builder: flatbuffers.Builder, tensors: int, operators: int | None = None, io=((0,), (0,))) -> int:
    inputs_at, outputs_at = _ints(builder, io[0]), _ints(builder, io[1])
    schema.SubGraphStart(builder)
    schema.SubGraphAddTensors(builder, tensors)
    if operators is not None:
        schema.SubGraphAddOperators(builder, operators)
    schema.SubGraphAddInputs(builder, inputs_at)
    schema.SubGraphAddOutputs(builder, outputs_at)
    return schema.SubGraphEnd(builder)


def shared_offset_model(num_subgraphs: int, num_tensors: int) -> bytes:
    """``num_subgraphs`` entries that all point at one subgraph, whose ``num_tensors`` entries all
    point at one tensor: num_subgraphs x num_tensors tensors to a reader, in 4 x their sum bytes."""
    builder = flatbuffers.Builder(0)
    tensors = _repeated(builder, _tensor(builder, "t", [1, 3]), num_tensors)
    return _model(builder, _repeated(builder, _subgraph(builder, tensors), num_subgraphs))


def shared_name_model(num_codes: int, name_bytes: int) -> bytes:
    """``num_codes`` op codes that all point at one custom op code with a long name."""
    builder = flatbuffers.Builder(0)
    code = _op_code(builder, schema.BuiltinOperator.CUSTOM, builder.CreateString("x" * name_bytes))
    codes = _repeated(builder, code, num_codes)
    subgraph = _subgraph(builder, _repeated(builder, _tensor(builder, "t", [1, 3]), 1))
    return _model(builder, _repeated(builder, subgraph, 1), codes)


def shared_tensor_ops(num_ops: int) -> bytes:
    """``num_ops`` ops from tensor 0 to 1, then ``num_ops`` from 1 to 2: every op of the first half
    feeds every op of the second."""
    builder = flatbuffers.Builder(0)
    tensors = [_tensor(builder, name, [1, 4]) for name in "abc"]
    first, second = _operator(builder, [0], [1]), _operator(builder, [1], [2])
    builder.StartVector(4, 3, 4)
    for tensor in reversed(tensors):
        builder.PrependUOffsetTRelative(tensor)
    tensors_at = builder.EndVector()
    builder.StartVector(4, 2 * num_ops, 4)
    for op in [second] * num_ops + [first] * num_ops:  # prepended: the first half ends up first
        builder.PrependUOffsetTRelative(op)
    operators = builder.EndVector()
    subgraph = _subgraph(builder, tensors_at, operators, io=((0,), (2,)))
    codes = _repeated(builder, _op_code(builder, schema.BuiltinOperator.RELU), 1)
    return _model(builder, _repeated(builder, subgraph, 1), codes)


def _patched(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + struct.pack("<I", value) + data[at + 4 :]


# Archives written by hand, so that their headers can claim any size.

def _zip(name: str, data: bytes, method: int, size: int, crc: int) -> bytes:
    """A one-member zip archive whose headers claim ``size`` uncompressed bytes and ``crc``."""
    encoded = name.encode()
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(data), size, len(encoded), 0)
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc, len(data), size,
                          len(encoded), 0, 0, 0, 0, 0, 0)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(encoded), len(local) + len(encoded)
                      + len(data), 0)
    return local + encoded + data + central + encoded + end


@pytest.fixture(scope="module")
def bomb() -> tuple[bytes, int]:
    """BOMB_BYTES of newlines, deflated (about 0.9 MB), and their CRC: a label file of 200 million
    empty lines, which a list of lines would make into gigabytes."""
    chunk = b"\n" * (1 << 20)
    deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
    parts, crc = [], 0
    for _ in range(BOMB_BYTES >> 20):
        parts.append(deflate.compress(chunk))
        crc = zlib.crc32(chunk, crc)
    return b"".join(parts) + deflate.flush(), crc


def metadata_model() -> bytes:
    """The colour model with TFLite Metadata naming ``labels.txt`` as its label file."""
    manifest = Manifest(labels=tuple(LABELS), image_size=(8, 8))
    return with_metadata(colour_model(8 * np.eye(3)), build_metadata(manifest, "float32"))


# 6. Associated files: every decompression capped.

@pytest.mark.parametrize("carrier, claimed", [("metadata", BOMB_BYTES), ("metadata", 100), ("archive", 100)],
                         ids=["metadata label file", "metadata label file, size lies", "archive label file, size lies"])
def test_an_inflating_label_file_is_left_out_in_bounded_memory(tmp_path, bomb, carrier, claimed):
    deflated, crc = bomb
    model = metadata_model() if carrier == "metadata" else colour_model(8 * np.eye(3))
    path = _write(tmp_path, "bomb.tflite", model + _zip("labels.txt", deflated, zipfile.ZIP_DEFLATED, claimed, crc))
    for result in run_in_child(["inspect", path], ["predict", path, IMAGE]):
        assert result["exit_code"] == 0, result["output"]
        reason = "more than the 16 MB" if claimed > MAX_MEMBER_BYTES else "Bad CRC-32"
        assert f"{path}: " in result["output"] and reason in result["output"] and "--labels" in result["output"]


def test_read_member_inflates_no_more_than_the_cap(bomb):
    deflated, crc = bomb
    archive = zipfile.ZipFile(io.BytesIO(_zip("labels.txt", deflated, zipfile.ZIP_DEFLATED, 100, crc)))
    tracemalloc.start()
    try:
        with pytest.raises(zipfile.BadZipFile, match="CRC"):  # the header lied about the size
            read_member(archive, "labels.txt")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * MAX_MEMBER_BYTES + (4 << 20), peak  # not the 200 MB it inflates to


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA], ids=["bzip2", "lzma"])
def test_members_zipfile_cannot_stop_decompressing_are_refused(method):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        archive.writestr("labels.txt", "cat\ndog\n")
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive, pytest.raises(ValueError, match="stored or"):
        read_member(archive, "labels.txt")


# 7. The flatbuffer readers: work linear in the size, every length checked.

def test_shared_offsets_are_refused_after_work_linear_in_the_size():
    sizes = [100, 200, 400]  # entries per vector: 10,000 to 160,000 tensors to a naive reader
    work = [count_lines(parse_graph, shared_offset_model(n, n)) for n in sizes]
    assert all(later <= 2.5 * earlier for earlier, later in itertools.pairwise(work)), work
    with pytest.raises(ModelFormatError, match="corrupt or hostile: reading its tensor") as error:
        parse_graph(shared_offset_model(800, 800), "shared.tflite")  # 6.5 KB, 640,000 tensors
    assert "point at the same data again and again" in str(error.value)


@pytest.mark.parametrize("command", [["inspect"], ["inspect", "--edgetpu"], ["predict", IMAGE], ["bench", "--num-runs", 1]],
                         ids=["inspect", "inspect --edgetpu", "predict", "bench"])
def test_a_shared_offset_model_is_one_clear_error(tmp_path, command):
    path = _write(tmp_path, "shared.tflite", shared_offset_model(800, 800))
    result = run(command[0], path, *command[1:])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"{path} is corrupt or hostile" in result.output and "export the model again" in result.output


def test_a_shared_long_name_costs_bounded_memory(tmp_path):
    # 200 KB: 25,000 op codes naming one 100 KB custom op took 2.4 GB of names.
    path = _write(tmp_path, "names.tflite", shared_name_model(25_000, 100_000))
    [result] = run_in_child(["inspect", path])
    assert result["exit_code"] == 1 and "corrupt or hostile: reading its custom op names" in result["output"]


def _tensors_vector(data: bytes) -> int:
    subgraph = schema.Model.GetRootAs(data, 0).Subgraphs(0)
    return subgraph._tab.Vector(subgraph._tab.Offset(4)) - 4


def _first_op_inputs(data: bytes) -> int:
    op = schema.Model.GetRootAs(data, 0).Subgraphs(0).Operators(0)
    return op._tab.Vector(op._tab.Offset(6)) - 4


def _first_shape(data: bytes) -> int:
    tensor = schema.Model.GetRootAs(data, 0).Subgraphs(0).Tensors(0)
    return tensor._tab.Vector(tensor._tab.Offset(4)) - 4


def _first_name(data: bytes) -> int:
    tensor = schema.Model.GetRootAs(data, 0).Subgraphs(0).Tensors(0)
    return tensor._tab.Indirect(tensor._tab.Pos + tensor._tab.Offset(10))


@pytest.mark.parametrize("field, value, phrase", [
    (_tensors_vector, 2**31, "its tensors claim 2,147,483,648 entries, past the end"),
    (_first_op_inputs, 2**31, "its operator inputs claim 2,147,483,648 entries, past the end"),
    (_first_shape, 2**31, "its tensor shapes claim 2,147,483,648 entries, past the end"),
    (_first_name, 2**31 - 1, "its tensor names claims 2,147,483,647 bytes, past the end"),
], ids=["tensors", "op inputs", "shape", "name"])
def test_a_length_past_the_end_is_refused_before_anything_is_built(field, value, phrase):
    model = colour_model(8 * np.eye(3))  # 876 bytes
    damaged = _patched(model, field(model), value)
    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError, match="corrupt or hostile") as error:
            parse_graph(damaged, "long.tflite")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert phrase in str(error.value)
    assert peak < 1 << 20, peak


def test_a_shape_of_a_thousand_dimensions_is_refused():
    def edit(model):
        model.subgraphs[0].tensors[2].shape = [2**31 - 1] * 1000  # its size would be a 31,000-bit number
    with pytest.raises(ModelFormatError, match="tensor 2 has 1,000 dimensions; LiteRT takes at most 8"):
        parse_graph(edited_colour_model(edit), "rank.tflite")


def test_real_models_use_a_small_part_of_the_budget(monkeypatch):
    budgets = []

    class Recorded(flatbuffer_bounds.ReadBudget):
        def __init__(self, num_bytes):
            super().__init__(num_bytes)
            budgets.append(self)

    monkeypatch.setattr("edgeship.runtime.graph.ReadBudget", Recorded)
    shared = TESTS.parent.parent / "shared" / "external"
    paths = sorted((TESTS / "data" / "coral").glob("*.tflite")) + sorted(shared.glob("*/*.tflite"))
    for path in paths:
        parse_graph(path.read_bytes(), path.name)
        assert budgets[-1].left > 0.75 * budgets[-1].limit, path  # measured: at most 5% of it
    assert len(budgets) >= 4


def test_shared_metadata_tables_cost_bounded_memory(tmp_path):
    # 20,000 associated files that all point at one 50 KB name: a gigabyte of names to read.
    builder = flatbuffers.Builder(0)
    name = builder.CreateString("x" * 50_000)
    builder.StartObject(5)
    builder.PrependUOffsetTRelativeSlot(_FILE_NAME, name, 0)
    files = _repeated(builder, builder.EndObject(), 20_000)
    builder.StartObject(8)
    builder.PrependUOffsetTRelativeSlot(_MODEL_FILES, files, 0)
    builder.Finish(builder.EndObject(), file_identifier=b"M001")
    path = _write(tmp_path, "files.tflite", with_metadata(colour_model(8 * np.eye(3)), bytes(builder.Output())))
    [result] = run_in_child(["inspect", path])
    assert result["exit_code"] == 0 and "ignoring its TFLite Metadata" in result["output"]
    assert "reading its strings takes more than" in result["output"]


def test_a_deeply_nested_manifest_is_a_warning(caplog):
    archive = _zip(MANIFEST_NAME, b"[" * 100_000, zipfile.ZIP_STORED, 100_000, zlib.crc32(b"[" * 100_000))
    assert read_embedded(colour_model(8 * np.eye(3)) + archive, "nested.tflite") == (None, None)
    assert "nested.tflite" in caplog.text and "malformed" in caplog.text


# The Edge TPU mapping reads the same graph: its work must be linear too.

def test_mapping_work_grows_linearly_with_shared_tensors():
    graphs = [parse_graph(shared_tensor_ops(n)) for n in (300, 600)]  # 600 to 1,200 float ops
    small, large = (count_lines(predict_mapping, graph) for graph in graphs)
    assert large <= 2.5 * small, (small, large)


def int8_model(edit=None) -> bytes:
    """An int8 model the Edge TPU rules look into: MEAN over constant axes, then SOFTMAX; ``edit``
    changes its object tree first. Tensor 4 is an all-zero constant, 5 is spare."""
    def tensor(name, shape, dtype=schema.TensorType.INT8, buffer=0):
        made = schema.TensorT()
        made.name, made.shape, made.type, made.buffer = name, list(shape), dtype, buffer
        return made

    def buffer(values=None):
        made = schema.BufferT()
        made.data = None if values is None else np.frombuffer(values.tobytes(), np.uint8)
        return made

    codes = []
    for builtin in (schema.BuiltinOperator.MEAN, schema.BuiltinOperator.SOFTMAX, schema.BuiltinOperator.CONCATENATION):
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = builtin
        codes.append(code)
    graph = schema.SubGraphT()
    graph.tensors = [tensor("image", (1, 4, 4, 8)), tensor("axes", (2,), schema.TensorType.INT32, 1),
                     tensor("means", (1, 8)), tensor("scores", (1, 8)), tensor("zeros", (1, 8), buffer=2),
                     tensor("joined", (1, 16))]
    graph.operators = [_op_t(0, [0, 1], [2]), _op_t(1, [2], [3])]
    graph.inputs, graph.outputs = [0], [3]
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, codes, [graph]
    model.buffers = [buffer(), buffer(np.array([1, 2], np.int32)), buffer(np.zeros(8, np.int8))]
    if edit is not None:
        edit(model)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _op_t(code: int, inputs, outputs):
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = code, list(inputs), list(outputs)
    return op


def test_one_constant_shared_by_every_op_is_looked_at_once(monkeypatch):
    def edit(model):  # 500 concatenations, each of the means with the same all-zero constant
        model.subgraphs[0].operators += [_op_t(2, [2, 4], [5]) for _ in range(500)]
    graph = parse_graph(int8_model(edit))
    calls = []
    real_any = np.any
    monkeypatch.setattr(np, "any", lambda *args, **kwargs: calls.append(1) or real_any(*args, **kwargs))
    report = predict_mapping(graph)
    assert report.on_edgetpu == 502 and len(calls) < 10, (report.on_cpu, len(calls))


def _sparse_axes(model):
    model.subgraphs[0].tensors[1].sparsity = schema.SparsityParametersT()
    model.buffers[1].data = np.zeros(3, np.uint8)  # 3 bytes of int32 axes


@pytest.mark.parametrize("edit", [
    lambda m: setattr(m.subgraphs[0].operators[0], "inputs", []),
    lambda m: setattr(m.subgraphs[0].operators[1], "inputs", []),
    _sparse_axes,
], ids=["MEAN without inputs", "SOFTMAX without inputs", "sparse axes of 3 bytes"])
def test_a_damaged_op_gives_a_mapping_not_a_traceback(tmp_path, edit):
    path = _write(tmp_path, "odd.tflite", int8_model(edit))
    result = run("inspect", path, "--edgetpu")
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "Edge TPU (predicted offline)" in result.output


# 8. Indexed label files: no index far beyond the outputs.

def test_an_index_far_beyond_the_outputs_costs_no_memory(tmp_path):
    model = colour_model(8 * np.eye(3)) + _zip("labels.txt", b"100000000 dog\n", zipfile.ZIP_STORED, 14,
                                                 zlib.crc32(b"100000000 dog\n"))
    path = _write(tmp_path, "index.tflite", model)  # 1 KB; it cost 850 MB
    labels = tmp_path / "labels.txt"
    labels.write_text("0 red\n99999999999999 dog\n")
    inspected, predicted, overridden = run_in_child(["inspect", path], ["predict", path, IMAGE],
                                                    ["predict", path, IMAGE, "--labels", labels])
    for result in (inspected, predicted):
        assert result["exit_code"] == 0, result["output"]
        assert f"{path}: its embedded label file, line 1 ('100000000 dog')" in result["output"]
        assert "beyond the model's 3 outputs" in result["output"] and "--labels" in result["output"]
    assert overridden["exit_code"] == 1 and overridden["output"].startswith("error: ")
    assert f"Label file {labels}, line 2 ('99999999999999 dog')" in overridden["output"]


@pytest.mark.parametrize("text, num_classes, phrase", [
    ("0 cat\n5000 dog\n", None, "line 2 ('5000 dog'): class index 5000 is far beyond the file's 2 label line(s)"),
    ("0 cat\n1500 dog\n", 3, "line 2 ('1500 dog'): class index 1500 is far beyond the model's 3 outputs"),
    ("0 cat\n200000 dog\n", 10**6, "class index 200000 is far beyond the 100,000 classes a label file can have"),
    ("0 a\n" + "9" * 5000 + " b\n", None, "line 2 ('" + "9" * 60 + "'): class index " + "9" * 20),
    ("a\n" * (MAX_CLASSES + 1), None, "has 100,001 lines; a label file has one line per class"),
    ("a\r\n" * (MAX_CLASSES + 1), 3, "has 100,001 lines"),
], ids=["no outputs given", "outputs given", "the absolute bound", "5,000 digits", "lines", "CRLF lines"])
def test_label_bounds_name_the_line(text, num_classes, phrase):
    with pytest.raises(DataError) as error:
        parse_labels(text, num_classes, source="labels.txt")
    assert phrase in str(error.value)


def test_label_files_within_bounds_parse_as_before():
    assert parse_labels("0 cat\n2 dog\n") == ["cat", "", "dog"]
    assert parse_labels("07 up\n7 down\n") == ["07 up", "7 down"]  # index 7 twice: plain labels
    assert parse_labels("0 person\n89 toothbrush\n", num_classes=90)[89] == "toothbrush"  # COCO skips indices
    assert len(parse_labels("".join(f"{i} c{i}\n" for i in range(MAX_CLASSES)))) == MAX_CLASSES
    coral = (TESTS / "data" / "coral" / "imagenet_labels.txt").read_text()
    assert parse_labels(coral, num_classes=1001) == parse_labels(coral)


def test_a_label_file_over_the_size_cap_is_refused(tmp_path):
    path = tmp_path / "huge.txt"
    path.write_text("x" * (MAX_LABEL_BYTES + 1))
    with pytest.raises(DataError, match="larger than 16 MB"):
        read_labels(path)


def test_a_manifest_with_more_labels_than_classes_is_a_warning(caplog):
    text = json.dumps({"labels": ["a"] * (MAX_CLASSES + 1), "image_size": [8, 8]}).encode()
    archive = _zip(MANIFEST_NAME, text, zipfile.ZIP_STORED, len(text), zlib.crc32(text))
    assert read_embedded(colour_model(8 * np.eye(3)) + archive, "many.tflite") == (None, None)
    assert "lists 100,001 labels; a classifier has at most 100,000 classes" in caplog.text


# Images: Pillow's decompression-bomb guard, as a DataError naming the file.

def _png(width: int, height: int, rows: int) -> bytes:
    """An 8-bit grayscale PNG of zeros whose data holds ``rows`` rows (fewer: a truncated file)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    deflate = zlib.compressobj(1)
    row = bytes(width + 1)  # filter byte 0, then the pixels
    data = b"".join(deflate.compress(row) for _ in range(rows)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_a_decompression_bomb_image_is_refused_from_its_header(tmp_path):
    # 14,143 x 14,143 pixels: just over the guard, where Pillow itself only warns and decodes
    # 200 MB of zeros to 1.2 GB of RGB from a 0.9 MB file.
    path = _write(tmp_path, "bomb.png", _png(14_143, 14_143, 14_143))
    [result] = run_in_child(["predict", TESTS / "data" / "coral" / "mobilenet_v1_0.25_128_quant.tflite", path])
    assert result["exit_code"] == 1, result["output"]
    assert f"Image {path} is too large to decode: 14143x14143 = 200,024,449 pixels" in result["output"]
    huge = _write(tmp_path, "huge.png", _png(50_000, 50_000, 1))  # past Pillow's own error threshold
    with pytest.raises(DataError) as error:
        load_image(huge)
    assert f"Image {huge} is too large to decode: Image size (2500000000 pixels)" in str(error.value)
