"""`edgeship profile`: cut models that compute what the full model computes, per-op rows that
cover the model once and add up, the join with what a run knows, and the command's output.

Timings are compared with each other (sums against the whole), never with a wall-clock bound.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.edgetpu.mapping import predict_mapping
from edgeship.errors import ConfigError
from edgeship.runtime.graph import parse_graph, read_graph
from edgeship.runtime.profile import (
    ProfileConfig, cut_models, live_outputs, median_interval, order_stability, profile_model,
)
from edgeship.runtime.profile_join import (
    FLAG_CPU, FLAG_NOISY, FLAG_SLOW, annotate, drift_by_op, join_run, read_drift, render_profile,
)

CORAL = Path(__file__).resolve().parent / "data" / "coral"
MOBILENET = CORAL / "mobilenet_v1_0.25_128_quant.tflite"
QUICK = ProfileConfig(num_rounds=3, runs_per_round=2, num_warmup_runs=1, num_threads=1)
SHAPE = (1, 8, 8, 4)


def _tensor(name: str, data=None, buffers=None, shape=SHAPE):
    tensor = schema.TensorT()
    tensor.name, tensor.shape, tensor.type, tensor.buffer = name, list(shape), schema.TensorType.FLOAT32, 0
    if data is not None:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(np.asarray(data, np.float32).tobytes(), dtype=np.uint8)
        buffers.append(buffer)
        tensor.buffer = len(buffers) - 1
    return tensor


def branch_model() -> bytes:
    """input -> CONV a; a -> CONV b and a -> CONV c (two branches); ADD(b, c) -> d; ADD(d, input)
    -> e. Outputs e and b, so that b stays live to the end and the input is read again late."""
    rng = np.random.default_rng(0)
    buffers, tensors, ops = [schema.BufferT()], [_tensor("input")], []
    codes = []
    for builtin in (schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.ADD):
        code = schema.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, builtin, 1
        codes.append(code)

    def add_op(code: int, inputs: list[int], name: str) -> int:
        tensors.append(_tensor(name))
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = code, inputs, [len(tensors) - 1]
        if code == 0:
            op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.Conv2DOptions, schema.Conv2DOptionsT()
            op.builtinOptions.strideH = op.builtinOptions.strideW = 1
            op.builtinOptions.padding = schema.Padding.SAME
        else:
            op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.AddOptions, schema.AddOptionsT()
        ops.append(op)
        return len(tensors) - 1

    def conv(source: int, name: str) -> int:
        tensors.append(_tensor(f"{name}_w", rng.normal(size=(4, 1, 1, 4)), buffers, (4, 1, 1, 4)))
        tensors.append(_tensor(f"{name}_b", rng.normal(size=4), buffers, (4,)))
        return add_op(0, [source, len(tensors) - 2, len(tensors) - 1], name)

    a = conv(0, "a")
    b, c = conv(a, "b"), conv(a, "c")
    e = add_op(1, [add_op(1, [b, c], "d"), 0], "e")
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.inputs, subgraph.outputs = tensors, ops, [0], [e, b]
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, codes, [subgraph], buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.fixture(scope="module")
def branch(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("profile") / "branch.tflite"
    path.write_bytes(branch_model())
    return path


@pytest.fixture(scope="module")
def coral_report() -> dict:
    return profile_model(MOBILENET, ProfileConfig(num_rounds=7, runs_per_round=3, num_threads=1))


def _names(graph, indices) -> list[str]:
    return [graph.tensors[i].name for i in indices]


def test_live_outputs_keep_what_later_ops_and_the_output_read(branch):
    graph = read_graph(branch)
    assert [_names(graph, live) for live in live_outputs(graph)] == [
        ["a"], ["a", "b"], ["b", "c"], ["b", "d"], ["b", "e"]]


@pytest.mark.filterwarnings("ignore:.*experimental_preserve_all_tensors")  # LiteRT's note that it is for debugging
def test_cut_models_compute_the_full_models_intermediate_tensors(branch):
    data = branch.read_bytes()
    x = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    full = Interpreter(model_content=data, experimental_preserve_all_tensors=True)
    full.allocate_tensors()
    full.set_tensor(full.get_input_details()[0]["index"], x)
    full.invoke()
    intermediate = {d["name"]: full.get_tensor(d["index"]) for d in full.get_tensor_details()}
    cuts = cut_models(data)
    assert len(cuts) == 6
    for k, cut in enumerate(cuts):
        graph = parse_graph(cut, f"cut {k}")  # the strict checks every model file passes
        assert len(graph.ops) == k and graph.inputs and _names(graph, graph.inputs) == ["input"]
        interpreter = Interpreter(model_content=cut)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        outputs = interpreter.get_output_details()
        expected = ["input"] if k == 0 else _names(read_graph(branch), live_outputs(read_graph(branch))[k - 1])
        assert [d["name"] for d in outputs] == expected
        for detail in outputs:
            np.testing.assert_allclose(interpreter.get_tensor(detail["index"]), intermediate[detail["name"]],
                                       rtol=1e-5, atol=1e-5, err_msg=f"cut {k}: {detail['name']}")


def test_cuts_keep_only_the_weights_they_use():
    data = MOBILENET.read_bytes()
    cuts = cut_models(data)
    sizes = [len(cut) for cut in cuts]
    assert sizes == sorted(sizes) and sizes[0] < 20_000 < sizes[-1]
    assert parse_graph(cuts[-1]).op_counts == parse_graph(data).op_counts


def test_rows_cover_every_op_once_and_the_shares_add_up(branch):
    report = profile_model(branch, QUICK)
    rows = report["ops"]
    assert [row["index"] for row in rows] == list(range(5)) == sorted(row["rank"] - 1 for row in rows)
    assert [row["op"] for row in rows] == ["CONV_2D"] * 3 + ["ADD"] * 2
    assert rows[0]["output_shape"] == list(SHAPE) and rows[0]["output"] == "a"
    assert sum(row["share"] for row in rows) == pytest.approx(1.0)
    for row in rows:  # clamping: negative differences count as 0 and are reported
        assert row["ms"] == max(row["raw_ms"], 0.0) and row["spread_ms"] >= 0
        assert row["low_ms"] <= row["raw_ms"] <= row["high_ms"]
    assert report["interval_coverage"] == 0.75  # 3 rounds: the range, which holds the median 3 times in 4
    assert report["num_clamped"] == sum(row["raw_ms"] < 0 for row in rows)
    assert report["clamped_ms"] == pytest.approx(-sum(min(row["raw_ms"], 0) for row in rows))
    assert report["ops_ms"] == pytest.approx(sum(row["ms"] for row in rows))
    assert report["total_ms"] == pytest.approx(report["ops_ms"] + report["invoke_overhead_ms"])
    assert report["num_ops"] == 5 and report["device"] == "cpu" and report["config"]["num_rounds"] == 3
    json.dumps(report)


def test_per_op_times_add_up_to_the_whole_coral_model(coral_report):
    # A generous bound, since the machine is shared; benchmarks/profile_sum.py measures the 10 %.
    assert 0.5 < coral_report["sum_ratio"] < 2.0, coral_report["sum_ratio"]
    assert coral_report["num_ops"] == 31
    ranked = sorted(coral_report["ops"], key=lambda row: row["rank"])
    assert ranked[0]["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D")  # not a RESHAPE or a SOFTMAX


def test_coral_join_agrees_with_the_edgetpu_prediction(coral_report):
    graph = read_graph(MOBILENET)
    # Coral's fused tensor names also name the next layer (op 0's: .../Conv2d_1_depthwise/depthwise_Fold):
    # the layer an op belongs to is the one its name gives first.
    layers = ["Conv2d_0", "Conv2d_1_depthwise", "Conv2d_12_pointwise", "Conv2d_13_depthwise", "Conv2d_13_pointwise"]
    drift = drift_by_op(graph, layers, {"Conv2d_0": 0.01, "Conv2d_13_pointwise": 0.4})
    assert drift[0] == ("Conv2d_0", 0.01) and 1 not in drift and drift[26] == ("Conv2d_13_pointwise", 0.4)
    joined = annotate(coral_report, graph, drift)
    placements = predict_mapping(graph).placements
    assert [row["edgetpu"] for row in joined["ops"]] == [p.on_edgetpu for p in placements]
    assert joined["edgetpu"]["compilable"] and joined["edgetpu"]["on_edgetpu"] == 31
    assert [FLAG_NOISY in row["flags"] for row in joined["ops"]] == [i == 26 for i in range(31)]
    slow = [row for row in joined["ops"] if FLAG_SLOW in row["flags"]]
    assert sum(row["share"] for row in slow) >= 0.5 and all(FLAG_CPU not in row["flags"] for row in joined["ops"])
    assert set(joined["flag_rules"]) == {FLAG_SLOW, FLAG_NOISY, FLAG_CPU}


def test_flags_on_a_model_with_an_op_the_edgetpu_lacks():
    from edgetpu_models import chain

    graph = parse_graph(chain(middle="LEAKY_RELU"))  # not in Coral's table: it and what follows run on the CPU
    placements = predict_mapping(graph).placements
    assert [p.on_edgetpu for p in placements] == [True, False, False]
    report = {"config": {}, "ops": [
        {"index": 0, "ms": 3.0, "share": 0.6, "rank": 1},
        {"index": 1, "ms": 1.5, "share": 0.3, "rank": 2},
        {"index": 2, "ms": 0.5, "share": 0.1, "rank": 3}]}
    joined = annotate(report, graph, {2: ("t6", 0.2)}, ProfileConfig(slow_share=0.5, noisy_drift=0.15))
    assert [row["flags"] for row in joined["ops"]] == [[FLAG_SLOW], [FLAG_CPU], [FLAG_NOISY, FLAG_CPU]]


def _fake_run(root: Path, drift: dict | None) -> Path:
    run = root / "run"
    (run / ".export-0123456789ab").mkdir(parents=True)
    (run / "export").symlink_to(".export-0123456789ab")  # as the export leaves it: a link to what it wrote atomically
    (run / "config.json").write_text("{}")
    shutil.copy(MOBILENET, run / "export" / "model_int8.tflite")
    (run / "export" / "report.json").write_text(json.dumps({"variants": {"int8": {"file": "model_int8.tflite"}}}))
    if drift is not None:
        (run / "layer_drift.json").write_text(json.dumps(drift))
    return run


def test_a_runs_model_joins_its_drift_and_the_command_shows_it(tmp_path):
    drift = {"run": "run", "layers": ["Conv2d_0", "Conv2d_12_pointwise", "Conv2d_13_depthwise", "Conv2d_13_pointwise"],
             "variants": {"int8-ptq": {"drift": {"Conv2d_0": 0.9}}, "int8": {"drift": {"Conv2d_13_pointwise": 0.3}}}}
    run = _fake_run(tmp_path, drift)
    model = run / "export" / "model_int8.tflite"
    args = ["profile", str(model), "--num-rounds", "2", "--runs-per-round", "1", "--num-warmup-runs", "0",
            "--threads", "1", "--top", "4"]
    result = CliRunner().invoke(app, args + ["--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["run"] == str(run) and report["drift_source"] == str(run / "layer_drift.json")
    # The file is the run's int8 variant (its export report says so): int8-ptq's 0.9 is not its drift.
    assert [row["index"] for row in report["ops"] if row["drift"] is not None] == [26]
    assert report["ops"][26]["drift"] == 0.3 and FLAG_NOISY in report["ops"][26]["flags"]
    assert [row["edgetpu"] for row in report["ops"]] == [True] * 31 and report["edgetpu"]["compilable"]
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[2].split() == ["op", "type", "output", "shape", "ms", "±", "share", "edge", "tpu", "drift", "flags"]
    rows = lines[3:lines.index("", 3)]
    assert len(rows) == 4 and all(row.split()[0].isdigit() for row in rows)
    assert "ops sum to" in table.stdout and "slow: among the costliest ops" in table.stdout


def test_drift_tables_from_the_benchmark_and_their_errors(tmp_path):
    table = {"runs": [{"run": "a", "layers": ["x"], "variants": {"int8": {"drift": {"x": 0.2}}}},
                      {"run": "b", "layers": ["y"], "variants": {"int8": {"drift": {"y": 0.1}}}}]}
    assert read_drift(table, "int8", "b") == (["y"], {"y": 0.1})
    assert read_drift(table, "float32", "a") == (["x"], {})  # the reference has no drift of its own
    with pytest.raises(ConfigError, match="RUN/layer_drift.json"):
        read_drift(table, "int8", "c")
    two = {"layers": [], "variants": {"int8": {}, "int8-ptq": {}}}
    with pytest.raises(ConfigError, match="--run RUN_DIR"):
        read_drift(two, None)
    path = tmp_path / "drift.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a layer drift table"):
        read_drift(path, "int8")


def test_outside_a_run_the_report_is_left_as_it_is(branch):
    report = {"ops": []}
    assert join_run(report, branch) is report


def test_median_interval_is_the_order_statistic_interval():
    # Conover's table of the sign-test interval: for n = 31 at 95 % the 10th and 22nd values,
    # for n = 15 the 4th and 12th; below 6 values no pair reaches 95 % and the range is given.
    rng = np.random.default_rng(0)
    values = rng.permutation(np.arange(1.0, 32.0))
    low, high, coverage = median_interval(values)
    assert (low, high) == (10.0, 22.0) and coverage == pytest.approx(0.97055, abs=1e-5)
    assert median_interval(np.arange(1.0, 16.0))[:2] == (4.0, 12.0)
    assert median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0, 0.75)
    assert median_interval(np.arange(1.0, 32.0), confidence=0.5)[:2] == (14.0, 18.0)
    # Semantics: over many samples of a skewed distribution, the interval holds the true median
    # at least as often as it says.
    samples = rng.exponential(size=(2000, 31))
    held = [lo <= np.log(2) <= hi for lo, hi, _ in map(median_interval, samples)]
    assert np.mean(held) >= coverage - 0.02
    with pytest.raises(ConfigError, match="confidence in"):
        median_interval([1.0], confidence=1.0)


def _profile(*intervals) -> dict:
    return {"ops": [{"index": i, "low_ms": low, "high_ms": high} for i, (low, high) in enumerate(intervals)]}


def test_order_stability_counts_only_orders_both_profiles_are_sure_of():
    # Op 0 is clearly costliest in both. Ops 1 and 2 swap places but overlap in the second
    # profile: a tie, not a conflict, however the plain ranks read.
    first = _profile((2.0, 2.2), (1.0, 1.1), (0.5, 0.9), (0.0, 0.1))
    tie = order_stability(first, _profile((2.0, 2.2), (0.8, 1.0), (0.85, 1.05), (0.0, 0.1)))
    assert tie["stable"] and tie["conflicts"] == [] and tie["num_pairs"] == 6 and tie["num_resolved"] == 5
    assert tie["resolved_share"] == pytest.approx(5 / 6)
    # Both profiles separate ops 1 and 2, in opposite orders: a conflict, named costlier-first
    # as the first profile has it.
    swapped = order_stability(first, _profile((2.0, 2.2), (0.5, 0.7), (0.8, 1.0), (0.0, 0.1)))
    assert not swapped["stable"] and swapped["conflicts"] == [[1, 2]] and swapped["num_resolved"] == 6
    # Intervals that touch do not separate; all-tie profiles are stable and resolve nothing.
    touching = order_stability(_profile((1.0, 2.0), (0.0, 1.0)), _profile((0.0, 1.0), (1.0, 2.0)))
    assert touching["stable"] and touching["num_resolved"] == 0
    with pytest.raises(ConfigError, match="same file twice"):
        order_stability(first, _profile((1.0, 2.0)))


def test_config_is_checked():
    with pytest.raises(ConfigError, match="num_rounds"):
        ProfileConfig(num_rounds=0)
    with pytest.raises(ConfigError, match="--threads 1"):
        ProfileConfig(clock="cpu")
    with pytest.raises(ConfigError, match="clock must be one of"):
        ProfileConfig(clock="tsc")
    with pytest.raises(ConfigError, match="slow_share"):
        ProfileConfig(slow_share=0)


def test_cpu_clock_and_render_without_a_run(branch):
    report = profile_model(branch, ProfileConfig(num_rounds=2, runs_per_round=1, num_threads=1, clock="cpu"))
    text = render_profile(report, top=2)
    assert text.splitlines()[2].split() == ["op", "type", "output", "shape", "ms", "±", "share"]
    assert "cpu clock" in text.splitlines()[0] and "flags" not in text


def test_on_a_remote_device_the_same_profile_runs_there_and_joins_here(tmp_path, monkeypatch):
    """ssh is the boundary: a stand-in runs the argv it is given with this machine's CLI."""
    import sys
    import types

    calls = []

    def run_remote(target, argv, files):
        calls.append((target, argv, files))
        result = CliRunner().invoke(app, [*argv, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    monkeypatch.setitem(sys.modules, "edgeship.runtime.remote", types.SimpleNamespace(run_remote=run_remote))
    run = _fake_run(tmp_path, None)
    model = run / "export" / "model_int8.tflite"
    result = CliRunner().invoke(app, ["profile", str(model), "--on", "pi@raspberrypi.local", "--threads", "1",
                                      "--num-rounds", "2", "--runs-per-round", "1", "--json"])
    assert result.exit_code == 0, result.output
    (target, argv, files), = calls
    assert target == "pi@raspberrypi.local" and files == [model] and argv[:2] == ["profile", str(model)]
    assert argv[argv.index("--threads") + 1] == "1" and argv[argv.index("--num-rounds") + 1] == "2"
    assert not {"--on", "--run", "--drift", "--json"} & set(argv)
    report = json.loads(result.stdout)
    assert report["run"] == str(run) and report["ops"][0]["edgetpu"] is True and "no layer drift" in report["drift_note"]


def test_profile_never_loads_tensorflow():
    import subprocess
    import sys

    script = f"""
import sys
from typer.testing import CliRunner
from edgeship.cli import app
result = CliRunner().invoke(app, ["profile", {str(MOBILENET)!r}, "--num-rounds", "1", "--runs-per-round", "1"])
assert result.exit_code == 0, result.output
print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "keras")))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED []" in result.stdout, result.stdout[-2000:]


def test_a_drift_file_joins_a_model_outside_any_run(coral_report, tmp_path):
    path = tmp_path / "drift.json"
    layers = ["Conv2d_12_pointwise", "Conv2d_13_depthwise", "Conv2d_13_pointwise"]  # a table lists every layer
    path.write_text(json.dumps({"layers": layers, "variants": {"int8": {"drift": {
        "Conv2d_13_pointwise": 0.05}}}}))
    joined = join_run(coral_report, MOBILENET, drift=path)
    assert joined["run"] is None and joined["drift_source"] == str(path) and joined["edgetpu"]["on_edgetpu"] == 31
    assert [row["drift"] for row in joined["ops"] if row["drift"] is not None] == [0.05]
    assert not any(FLAG_NOISY in row["flags"] for row in joined["ops"])
