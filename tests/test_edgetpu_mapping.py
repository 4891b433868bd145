"""The offline Edge TPU mapping prediction, against what Google's compiler really did and
against one tiny model per rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edgetpu_models as models
from conftest import CORAL, needs_shared
from edgeship.cli import app
from edgeship.edgetpu.mapping import compiled_mapping, predict_mapping
from edgeship.edgetpu.rules import (
    RULES,
    STATUS_DATA_TYPE,
    STATUS_MAPPED,
    STATUS_NOT_SUPPORTED,
    STATUS_RANK,
    STATUS_SUBGRAPH,
)
from edgeship.runtime.graph import read_graph

EDGETPU = Path(__file__).resolve().parent / "data" / "edgetpu"  # vendored, Apache-2.0
PAIRS = [
    CORAL / "mobilenet_v1_0.25_128_quant.tflite",
    CORAL / "mobilenet_v1_0.5_160_quant.tflite",
    EDGETPU / "deeplabv3_mnv2_dm05_pascal_quant.tflite",
    EDGETPU / "posenet_mobilenet_v1_075_353_481_16_quant_decoder.tflite",
    EDGETPU / "coral_test_data" / "keras_lstm_mnist_ptq.tflite",
    EDGETPU / "coral_test_data" / "split_concat.tflite",
]


@needs_shared(EDGETPU)
@pytest.mark.parametrize("source", PAIRS, ids=lambda p: p.stem)
def test_prediction_matches_the_compiled_file(source: Path):
    compiled = source.with_name(source.stem + "_edgetpu.tflite")
    truth = compiled_mapping(compiled)
    num_ops = len(read_graph(source).ops)
    report = predict_mapping(source)
    assert truth["num_edgetpu_segments"] == 1
    assert report.compilable and not report.problems
    assert report.on_cpu == truth["on_cpu"]
    assert report.on_edgetpu == num_ops - sum(truth["on_cpu"].values())


@needs_shared(EDGETPU)
def test_deeplab_tail_is_cut_at_the_resize_and_says_so():
    report = predict_mapping(EDGETPU / "deeplabv3_mnv2_dm05_pascal_quant.tflite")
    cut = next(p for p in report.placements if not p.on_edgetpu)
    assert cut.name == "RESIZE_BILINEAR" and cut.uncertain
    downstream = [p for p in report.placements[cut.index + 1:] if p.name == "CONCATENATION"]
    assert downstream[0].status == STATUS_SUBGRAPH
    assert any("cut at op" in note for note in report.notes)


def _statuses(report) -> list[tuple[str, str]]:
    return [(p.name, p.status) for p in report.placements]


def test_unsupported_op_in_the_middle_cuts_the_graph_there():
    report = predict_mapping(models.chain(middle="LEAKY_RELU"))
    assert _statuses(report) == [("CONV_2D", STATUS_MAPPED), ("LEAKY_RELU", STATUS_NOT_SUPPORTED),
                                 ("CONV_2D", STATUS_SUBGRAPH)]
    assert report.compilable and report.on_edgetpu == 1
    assert report.on_cpu == {"LEAKY_RELU": 1, "CONV_2D": 1}


def test_a_supported_middle_op_keeps_one_segment():
    report = predict_mapping(models.chain(middle="RELU"))
    assert report.on_edgetpu == 3 and report.on_cpu == {} and report.min_runtime_version == 10


def test_a_float_model_is_not_compilable():
    report = predict_mapping(models.chain(dtype="float32"))
    assert not report.compilable
    assert "not quantized" in report.problems[0] and "full-integer" in report.problems[0]
    assert report.on_edgetpu == 0


def test_a_float_op_inside_runs_on_the_cpu_and_is_named():
    report = predict_mapping(models.float_op_inside())
    assert dict(_statuses(report)[1:3]) == {"DEQUANTIZE": STATUS_DATA_TYPE, "CONV_2D": STATUS_DATA_TYPE}
    assert report.on_edgetpu == 1
    assert any("compute in float" in note and "DEQUANTIZE (op 1)" in note for note in report.notes)


def test_float_input_quantize_stays_before_the_segment():
    report = predict_mapping(models.float_input())
    assert _statuses(report)[0] == ("QUANTIZE", STATUS_DATA_TYPE)
    assert report.compilable and report.on_edgetpu == 2 and report.on_cpu == {"QUANTIZE": 1}


def test_dynamic_batch_is_a_hard_failure():
    report = predict_mapping(models.dynamic_batch())
    assert not report.compilable
    assert "dynamic shapes" in report.problems[0] and "SHAPE (op 1)" in report.problems[0]
    assert "batch size of 1" in report.problems[0]


def test_a_dynamic_image_size_is_a_hard_failure():
    report = predict_mapping(models.chain(signature=(1, -1, -1, 4)))
    assert not report.compilable and "non-batch dimension" in report.problems[0]


def test_a_minus_one_batch_signature_alone_compiles():
    # What TensorFlow writes for a Keras model with a batch of None and no size computed from it.
    report = predict_mapping(models.chain(signature=(-1, 8, 8, 4)))
    assert report.compilable and report.on_cpu == {}


def test_five_dimensional_tensor_gets_the_rank_status():
    report = predict_mapping(models.five_dimensional())
    assert [p.status for p in report.placements[1:3]] == [STATUS_RANK, STATUS_RANK]
    assert report.on_cpu == {"RESHAPE": 2, "CONV_2D": 1}


def test_second_subgraph_is_not_compilable():
    report = predict_mapping(models.two_subgraphs())
    assert not report.compilable and "2 subgraphs" in report.problems[0]
    assert report.placements[-1].status == STATUS_SUBGRAPH


def test_int8_io_needs_a_newer_runtime_than_uint8():
    uint8, int8 = predict_mapping(models.chain("uint8")), predict_mapping(models.chain("int8"))
    assert uint8.on_cpu == int8.on_cpu == {}
    assert uint8.min_runtime_version == 10 < int8.min_runtime_version == 13


def test_an_older_target_runtime_leaves_newer_ops_to_the_cpu():
    model = models.chain(middle="TRANSPOSE")  # runtime 14 in Coral's table
    assert predict_mapping(model).on_cpu == {} and predict_mapping(model).min_runtime_version == 14
    older = predict_mapping(model, min_runtime_version=13)
    assert older.on_cpu == {"TRANSPOSE": 1, "CONV_2D": 1} and older.placements[1].uncertain


def test_custom_op_is_counted_by_its_custom_code():
    report = predict_mapping(models.custom_tail())
    assert report.compilable and report.on_cpu == {"PosenetDecoderOp": 1} and report.on_edgetpu == 2


@needs_shared(CORAL)
def test_an_already_compiled_model_is_refused():
    report = predict_mapping(CORAL / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")
    assert not report.compilable and "already compiled" in report.problems[0]
    assert report.notes == ("compiled file: 1 Edge TPU segment(s); on the CPU: nothing.",)


def test_inspect_edgetpu_json_and_text(tmp_path):
    path = tmp_path / "cut.tflite"
    path.write_bytes(models.chain(middle="HARD_SWISH"))
    result = CliRunner().invoke(app, ["inspect", str(path), "--edgetpu", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)["edgetpu"]
    assert info["compilable"] is True and info["problems"] == []
    assert info["on_edgetpu"] == 1 and info["on_cpu"] == {"HARD_SWISH": 1, "CONV_2D": 1}
    assert info["min_runtime_version"] == 10
    assert {"operator": "HARD_SWISH", "count": 1, "status": STATUS_NOT_SUPPORTED} in info["ops"]
    text = CliRunner().invoke(app, ["inspect", str(path), "--edgetpu"]).output
    assert "Operator" in text and "More than one subgraph is not supported" in text


def test_inspect_edgetpu_on_a_foreign_file_is_a_clear_error(tmp_path):
    path = tmp_path / "photo.tflite"
    path.write_bytes(b"\xff\xd8\xff\xe0 jpeg bytes")
    result = CliRunner().invoke(app, ["inspect", str(path), "--edgetpu"])
    assert result.exit_code == 1 and "not a TFLite model" in result.output
    assert "Traceback" not in result.output



def test_split_along_the_batch_is_not_mapped_but_along_channels_is():
    assert predict_mapping(models.split(-1)).on_cpu == {}
    assert predict_mapping(models.split(-4)).on_cpu == {"SPLIT": 1, "CONCATENATION": 1, "CONV_2D": 1}


# Coral's table, op by op: every row's op maps in a tiny model, with the row's runtime, and each
# documented limitation, broken, keeps the op on the CPU. The rows come from the rule table itself.
PUBLISHED = sorted(name for name, rule in RULES.items() if rule.published)
# (op, variant): a model that breaks one documented limitation.
BROKEN_LIMITS = [
    ("AVERAGE_POOL_2D", "limit"), ("MAX_POOL_2D", "limit"), ("CONCATENATION", "limit"), ("CONV_2D", "limit"),
    ("DEPTHWISE_CONV_2D", "limit"), ("FULLY_CONNECTED", "limit"), ("MEAN", "limit"), ("MEAN", "z"),
    ("PACK", "limit"), ("PAD", "limit"), ("PRELU", "limit"), ("REDUCE_MAX", "limit"), ("REDUCE_MIN", "limit"),
    ("SOFTMAX", "limit"), ("SPLIT", "limit"), ("STRIDED_SLICE", "limit"), ("SUM", "limit"),
    ("TRANSPOSE_CONV", "limit"),
]
# (op, variant, runtime): cases that map only on a newer runtime than the row's "All".
NEWER_RUNTIME = [("DEPTHWISE_CONV_2D", "dilated", 13), ("MEAN", "", 10), ("PAD", "z", 13), ("PAD", "", 10),
                 ("SQUEEZE", "relayout", 13), ("SQUEEZE", "", 10)]


def _verdict(name: str, variant: str = ""):
    report = predict_mapping(models.single_op(name, variant))
    return report, next(p for p in report.placements if p.name == name and p.index > 0)


def test_the_table_has_every_row_of_corals_list():
    rows = {rule.published for rule in RULES.values() if rule.published}
    assert len(rows) == 40 and {"LSTM", "Squared-difference", "TransposeConv", "ReLUN1To1"} <= rows
    assert all(rule.departure for name, rule in RULES.items() if not rule.published)


@pytest.mark.parametrize("name", PUBLISHED)
def test_each_published_op_maps_with_its_runtime(name: str):
    report, placement = _verdict(name)
    assert placement.status == STATUS_MAPPED, placement.detail
    assert report.compilable and report.on_cpu == {}
    assert report.min_runtime_version == RULES[name].min_runtime
    # Only the undocumented criteria (resize sizes) and rows no compiled file shows are uncertain.
    assert placement.uncertain == (name.startswith("RESIZE") or name == "LSTM")


@pytest.mark.parametrize("name, variant", BROKEN_LIMITS, ids=lambda value: str(value))
def test_each_broken_limitation_keeps_the_op_on_the_cpu(name: str, variant: str):
    report, placement = _verdict(name, variant)
    assert not placement.on_edgetpu and placement.detail
    # Every op before it maps (the helpers that shape its input); the op after it does not.
    assert report.on_edgetpu == placement.index and not report.placements[-1].on_edgetpu


@pytest.mark.parametrize("name, variant, runtime", NEWER_RUNTIME, ids=lambda value: str(value))
def test_runtime_notes_raise_the_runtime(name: str, variant: str, runtime: int):
    report, placement = _verdict(name, variant)
    assert placement.on_edgetpu and report.on_cpu == {}
    assert report.min_runtime_version == runtime


def test_a_one_piece_split_along_a_batch_of_one_maps():
    # As in Coral's compiled YAMNet; a real split of the batch does not.
    assert _verdict("SPLIT", "batch1")[1].on_edgetpu
    assert not _verdict("SPLIT", "limit")[1].on_edgetpu


def test_axis_zero_of_a_rank_three_tensor_is_not_a_batch():
    # PACK of two [64, 4] rows along axis 0: [2, 64, 4] has no batch dimension.
    assert _verdict("PACK")[1].on_edgetpu
    assert not _verdict("PACK", "limit")[1].on_edgetpu  # [2, 1, 8, 8, 4]: a batch of 2


def test_an_op_outside_the_table_needs_evidence_and_maps_with_it():
    assert not RULES["TILE"].published and "compiled" in RULES["TILE"].departure
    report, placement = _verdict("TILE")
    assert placement.on_edgetpu and report.min_runtime_version == 14


def test_a_cut_on_one_branch_cuts_the_rejoin_and_spares_the_other_branch():
    report = predict_mapping(models.branches())
    assert _statuses(report) == [
        ("CONV_2D", STATUS_MAPPED), ("LEAKY_RELU", STATUS_NOT_SUPPORTED), ("CONV_2D", STATUS_SUBGRAPH),
        ("CONV_2D", STATUS_MAPPED), ("CONV_2D", STATUS_MAPPED),    # stored after the cut, independent of it
        ("ADD", STATUS_SUBGRAPH), ("CONV_2D", STATUS_SUBGRAPH)]
    assert report.num_before_segment == 0 and report.on_cpu == {"CONV_2D": 2, "LEAKY_RELU": 1, "ADD": 1}


def test_an_unsupported_op_fed_by_the_input_runs_before_the_segment():
    report = predict_mapping(models.branches(cut="input"))
    assert report.on_cpu == {"LEAKY_RELU": 1} and report.on_edgetpu == 6
    assert [p.name for p in report.placements if p.before_segment] == ["LEAKY_RELU"]
    assert not any("cut at op" in note for note in report.notes)


def test_an_unrolled_lstm_maps_whole():
    # Splitting and packing its [steps, 4] sequence along axis 0 is no batch operation.
    report = predict_mapping(models.unrolled_lstm(steps=3))
    assert report.compilable and report.on_cpu == {} and report.on_edgetpu == 1 + 12 * 3 + 1


def test_an_unrolled_lstm_is_cut_from_the_step_that_needs_the_cut_op():
    report = predict_mapping(models.unrolled_lstm(steps=3, cut_step=1))
    # The split, step 0 and the 10 ops of step 1 that do not need its LEAKY_RELU stay mapped;
    # the LEAKY_RELU, the MUL after it, all of step 2 and the PACK run on the CPU.
    assert report.on_edgetpu == 1 + 12 + 10
    assert report.on_cpu == {"LEAKY_RELU": 1, "MUL": 1 + 3, "LOGISTIC": 3, "TANH": 2, "CONCATENATION": 1,
                             "FULLY_CONNECTED": 1, "SPLIT": 1, "ADD": 1, "PACK": 1}
    cut = next(p for p in report.placements if not p.on_edgetpu)
    assert cut.name == "LEAKY_RELU" and cut.index == 1 + 12 + 10


@needs_shared(CORAL)
def test_compiled_files_hold_one_segment_with_nothing_of_the_cpu_inside():
    for source in PAIRS:
        truth = compiled_mapping(source.with_name(source.stem + "_edgetpu.tflite"))
        assert truth["num_edgetpu_segments"] == 1 and truth["num_cpu_inside"] == 0
        assert truth["num_before_segment"] == predict_mapping(source).num_before_segment


def test_every_departure_from_corals_table_is_documented():
    page = (Path(__file__).resolve().parents[1] / "docs" / "edgetpu.md").read_text()
    section = page.split("\n## The supported-op table, audited", 1)[1].split("\n## ", 1)[0]
    departed = [name for name, rule in RULES.items() if rule.departure]
    assert departed and all(name in section for name in departed)
