"""Predict, from a ``.tflite`` file alone, what the Edge TPU compiler will put on the Edge TPU.

The compiler (without ``-a``/``-n``) maps one segment. Ops it cannot map at the very start,
such as the QUANTIZE of a float input or a CAST of an input, run on the CPU before the segment;
from the first op it cannot map inside the model on, every op that depends on that op runs on
the CPU too, even ops the Edge TPU supports (log status "More than one subgraph is not
supported"). Coral describes this at https://coral.ai/docs/edgetpu/models-intro/#compiling.
The cut follows dependencies, not file order: in Coral's compiled MoveNet, ops stored after the
first CPU op but independent of it are still on the Edge TPU. Ops placed before the segment are
marked (``OpPlacement.before_segment``), and :func:`compiled_mapping` reads the same split from a
compiled file, so that both sides of the segment can be checked against the compiler.

Some models cannot be compiled at all: not quantized (no op computes on 8-bit integers),
sizes unknown until run time, more than one subgraph, or already compiled. A float op inside an
otherwise quantized model does not stop the compiler: Coral's own MoveNet build keeps its float
post-processing on the CPU. Those are ``problems``; ``compilable`` is False.

Example:
    >>> report = predict_mapping("mobilenet_v1_0.25_128_quant.tflite")
    >>> report.compilable, report.on_edgetpu, report.on_cpu
    (True, 31, {})
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from edgeship.edgetpu.rules import (
    INT8_RUNTIME,
    OLDEST_RUNTIME,
    STATUS_MAPPED,
    STATUS_NOT_SUPPORTED,
    STATUS_SUBGRAPH,
    Verdict,
    check_op,
)
from edgeship.runtime.graph import EDGETPU_CUSTOM_OP, FLOAT_TYPES, Graph, parse_graph, read_graph

__all__ = ["MappingReport", "OpPlacement", "compiled_mapping", "int16_activation_ops", "mapping_rows",
           "predict_mapping", "render_mapping", "render_rows"]


@dataclass(frozen=True)
class OpPlacement:
    """Where one op of the source model runs, and why."""

    index: int
    name: str
    status: str
    detail: str = ""
    uncertain: bool = False
    before_segment: bool = False   # on the CPU, feeding the Edge TPU segment (a float input's QUANTIZE)

    @property
    def on_edgetpu(self) -> bool:
        return self.status == STATUS_MAPPED


@dataclass(frozen=True)
class MappingReport:
    """The predicted partition of one model. ``on_cpu`` names builtin ops by their schema name
    (``RESIZE_BILINEAR``) and custom ops by their custom code (``PosenetDecoderOp``)."""

    model: str
    compilable: bool
    problems: tuple[str, ...]
    placements: tuple[OpPlacement, ...]
    min_runtime_version: int
    notes: tuple[str, ...] = ()

    @property
    def on_edgetpu(self) -> int:
        return sum(p.on_edgetpu for p in self.placements)

    @property
    def on_cpu(self) -> dict[str, int]:
        return dict(Counter(p.name for p in self.placements if not p.on_edgetpu).most_common())

    @property
    def num_before_segment(self) -> int:
        return sum(p.before_segment for p in self.placements)

    @property
    def rows(self) -> list[dict]:
        return mapping_rows(self.placements)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "compilable": self.compilable,
            "problems": list(self.problems),
            "on_edgetpu": self.on_edgetpu,
            "on_cpu": self.on_cpu,
            "num_before_segment": self.num_before_segment,
            "min_runtime_version": self.min_runtime_version,
            "uncertain": [f"{p.name} (op {p.index}): {p.detail}" for p in self.placements if p.uncertain],
            "notes": list(self.notes),
            "ops": self.rows,
        }


def mapping_rows(placements) -> list[dict]:
    """Rows in the compiler log's layout: one per (operator, status), counts summed."""
    counts = Counter((p.name, p.status) for p in placements)
    return [{"operator": name, "count": count, "status": status} for (name, status), count in counts.items()]


def render_rows(rows: list[dict]) -> str:
    """The rows as the compiler prints them (``Operator  Count  Status``)."""
    lines = [f"{'Operator':<30} {'Count':<10} Status", ""]
    lines += [f"{r['operator']:<30} {r['count']:<10} {r['status']}" for r in rows]
    return "\n".join(lines)


def _producers(graph: Graph) -> dict[int, int]:
    return {t: i for i, op in enumerate(graph.ops) if op.subgraph == 0 for t in op.outputs}


def _partition(graph: Graph, verdicts: list[Verdict]) -> list[OpPlacement]:
    """Applies the one-segment rule to the per-op verdicts of subgraph 0, by dependency rather
    than by file order: an op the Edge TPU cannot run, fed only by the model's inputs, constants
    or other such ops, runs on the CPU before the segment; one fed by the segment cuts it, and
    every op that depends on a cut op runs on the CPU after it. Ops independent of every cut op
    stay on the Edge TPU wherever the file stores them and whichever branch they sit on, so a
    branch that rejoins after a cut is cut at the join, and an unrolled recurrent cell is cut
    from the first step that depends on the cut op.

    Every compiled pair we have agrees: one segment, and no CPU op that depends on the segment
    feeds it (see :func:`compiled_mapping`)."""
    producers = _producers(graph)
    leading: set[int] = set()   # unmappable ops before the segment: their outputs feed it
    on_cpu: set[int] = set()    # ops after the cut
    placements = []
    for index, (op, verdict) in enumerate(zip(graph.ops, verdicts)):
        sources = {producers[t] for t in op.inputs if t in producers}
        status, detail = verdict.status, verdict.detail
        if not verdict.mappable:
            (leading if sources <= leading else on_cpu).add(index)
        elif sources & on_cpu:
            on_cpu.add(index)
            status, detail = STATUS_SUBGRAPH, "it depends on an op that runs on the CPU."
        placements.append(OpPlacement(index, op.name, status, detail, verdict.uncertain, index in leading))
    return placements


def _is_float_op(op, tensors) -> bool:
    return any(t >= 0 and tensors[t].dtype in FLOAT_TYPES for t in op.inputs + op.outputs)


def _float_body_ops(graph: Graph) -> tuple[list[int], bool]:
    """Builtin ops that compute in float between integer ops, and whether any op computes in
    integers at all. Float ops at the edges (the QUANTIZE of a float input, a DEQUANTIZE before a
    float output) and custom ops (a detection post-process) run on the CPU and are allowed."""
    tensors, ops = graph.tensors, [op for op in graph.ops if op.subgraph == 0]
    integer = [not op.custom and not _is_float_op(op, tensors) for op in ops]
    producers, consumers = {}, {}
    for i, op in enumerate(ops):
        for t in op.outputs:
            producers[t] = i
        for t in op.inputs:
            consumers.setdefault(t, []).append(i)
    after_int = [False] * len(ops)    # some integer op runs before it (an ancestor)
    for i, op in enumerate(ops):
        after_int[i] = any(integer[p] or after_int[p] for p in (producers.get(t) for t in op.inputs) if p is not None)
    # Per tensor rather than per (op, reader) pair: ops that all feed the same readers would
    # otherwise cost the product of their numbers.
    read_by_int = {t: any(integer[c] for c in readers) for t, readers in consumers.items()}
    read_before_int: set[int] = set()  # tensors read by a later op that some integer op needs
    before_int = [False] * len(ops)   # some integer op needs its result (a descendant)
    for i in reversed(range(len(ops))):
        before_int[i] = any(read_by_int.get(t, False) or t in read_before_int for t in ops[i].outputs)
        if before_int[i]:
            read_before_int.update(ops[i].inputs)
    body = [i for i, op in enumerate(ops)
            if not op.custom and _is_float_op(op, tensors) and after_int[i] and before_int[i]]
    return body, any(integer)


# Ops whose output size comes from an input tensor's values: with that input computed at run time
# (from a SHAPE op, as Keras's Reshape/Flatten emit for a batch of None) the output is dynamic.
_SIZE_INPUTS = {"RESHAPE": 1, "BROADCAST_TO": 1, "FILL": 0, "TILE": 1, "RESIZE_BILINEAR": 1,
                "RESIZE_NEAREST_NEIGHBOR": 1, "PAD": 1, "PADV2": 1}


def _dynamic_shapes(graph: Graph) -> str:
    """Why some size is known only at run time, or "". A -1 batch in the signatures alone is not
    enough: the interpreter (and so the compiler) uses the stored size 1, as for edgeship's exports."""
    tensors = graph.tensors
    inner = [t.name for t in tensors if any(d < 0 for d in t.shape_signature[1:])]
    if inner:
        return f"{len(inner)} tensor(s) have a non-batch dimension of unknown size (first: {inner[0]!r})"
    if not any(t.shape_signature[:1] == (-1,) for t in tensors):
        return ""
    for i, op in enumerate(graph.ops):
        if op.subgraph:
            continue
        position = _SIZE_INPUTS.get(op.name)
        computed = position is not None and len(op.inputs) > position and op.inputs[position] >= 0 \
            and not tensors[op.inputs[position]].constant
        if op.name == "SHAPE" or computed:
            return (f"the batch size is dynamic (-1) and {op.name} (op {i}) computes a size from it at run time, "
                    "as Keras layers do for a batch of None")
    return ""


# An int8 LSTM keeps its cell state in int16 and still maps (rules.py): not 16-bit activations.
_INT16_STATE_OPS = ("UNIDIRECTIONAL_SEQUENCE_LSTM", "LSTM")


def int16_activation_ops(graph: Graph) -> int:
    """How many ops compute on int16 activations (TFLite's 16x8 quantization), which the Edge
    TPU never runs: it computes on 8-bit integers only."""
    tensors = graph.tensors
    return sum(1 for op in graph.ops if op.name not in _INT16_STATE_OPS
               and any(t >= 0 and not tensors[t].constant and tensors[t].dtype == "int16" for t in op.inputs))


def _model_problems(graph: Graph) -> list[str]:
    """Failures that stop the compiler before it maps anything, each with what to do."""
    if graph.is_edgetpu_compiled:
        return ["the model is already compiled for the Edge TPU (it holds edgetpu-custom-op); "
                "compile the CPU build it came from instead."]
    problems = []
    if graph.num_subgraphs > 1:
        problems.append(
            f"the model has {graph.num_subgraphs} subgraphs (control flow such as WHILE or IF, or "
            "signatures); the compiler takes one. Convert without control flow (unroll loops, "
            "fixed sequence lengths).")
    dynamic = _dynamic_shapes(graph)
    if dynamic:
        problems.append(
            f"dynamic shapes: {dynamic}; the Edge TPU needs every size fixed at compile time. Convert with a "
            "fixed batch size of 1 (e.g. a Keras Input with batch_size=1, or a concrete function with a fixed input signature).")
    wide = int16_activation_ops(graph)
    if wide:
        problems.append(
            f"16-bit activations: {wide} op(s) compute on int16 tensors (16x8 quantization, edgeship's int16x8); "
            "the Edge TPU computes on 8-bit integers only. Export int8 (model_int8.tflite) for it.")
    body, any_integer = _float_body_ops(graph)
    if not graph.ops or not any_integer:
        problems.append("model not quantized: no op computes on 8-bit integers. Export a full-integer "
                        "int8 model (quantization-aware training or post-training quantization with a representative dataset).")
    return problems


def _runtime(graph: Graph, placements: list[OpPlacement], verdicts: list[Verdict]) -> int:
    needed = [v.min_runtime for p, v in zip(placements, verdicts) if p.on_edgetpu]
    mapped = [graph.ops[p.index] for p in placements if p.on_edgetpu]
    if any(graph.tensors[t].dtype == "int8" for op in mapped for t in op.inputs + op.outputs if t >= 0
           and not graph.tensors[t].constant):
        needed.append(INT8_RUNTIME)
    return max(needed, default=OLDEST_RUNTIME)


def _notes(graph: Graph, placements: list[OpPlacement]) -> list[str]:
    if graph.is_edgetpu_compiled:
        done = compiled_mapping(graph)
        cpu = ", ".join(f"{k} x{v}" for k, v in done["on_cpu"].items()) or "nothing"
        return [f"compiled file: {done['num_edgetpu_segments']} Edge TPU segment(s); on the CPU: {cpu}."]
    notes = []
    body, _ = _float_body_ops(graph)
    if body:
        names = ", ".join(f"{graph.ops[i].name} (op {i})" for i in body[:5])
        notes.append(f"{len(body)} op(s) compute in float between integer ops ({names}); they run on the CPU. "
                     "A full-integer conversion (representative dataset, TFLITE_BUILTINS_INT8 only) would let them map.")
    cut = _first_cut(placements)
    if cut is not None:
        notes.append(f"the Edge TPU segment is cut at op {cut.index} ({cut.name}: {cut.status.lower()}); "
                     "every op that depends on it runs on the CPU.")
    if any(p.uncertain for p in placements):
        notes.append("some verdicts depend on undocumented compiler criteria (see 'uncertain'); "
                     "compile with edgetpu_compiler to confirm.")
    return notes


def _first_cut(placements: list[OpPlacement]) -> OpPlacement | None:
    """The first op the Edge TPU cannot run that the segment feeds: where the segment ends. One pass,
    since a hostile model can have as many ops as its file has bytes."""
    mapped_before = False
    for placement in placements:
        cut = not (placement.on_edgetpu or placement.before_segment or placement.status == STATUS_SUBGRAPH)
        if cut and mapped_before:
            return placement
        mapped_before = mapped_before or placement.on_edgetpu
    return None


def _for_runtime(verdict: Verdict, runtime: int | None) -> Verdict:
    if runtime is None or not verdict.mappable or verdict.min_runtime <= runtime:
        return verdict
    return Verdict(STATUS_NOT_SUPPORTED, f"needs Edge TPU runtime {verdict.min_runtime}; compiling for {runtime}.",
                   uncertain=True, min_runtime=verdict.min_runtime)


def predict_mapping(
    model: Graph | bytes | str | os.PathLike,
    name: str | None = None,
    min_runtime_version: int | None = None,
) -> MappingReport:
    """Predicts the Edge TPU compiler's partition of ``model`` (a path, its bytes or a Graph).

    ``min_runtime_version`` predicts for ``edgetpu_compiler -m N``: ops that need a newer
    runtime are left to the CPU (the compiler's wording for that case is not documented, so
    those rows are flagged uncertain).

    Raises:
        ModelFormatError: the file is missing, empty, not a TFLite model or truncated.

    Example:
        >>> report = predict_mapping("deeplabv3_mnv2_dm05_pascal_quant.tflite")
        >>> report.on_cpu["RESIZE_BILINEAR"], report.compilable
        (3, True)
    """
    if isinstance(model, Graph):
        graph, label = model, name or "model"
    elif isinstance(model, (bytes, bytearray)):
        graph, label = parse_graph(bytes(model), name or "model"), name or "model"
    else:
        graph, label = read_graph(model), name or str(model)
    main = [op for op in graph.ops if op.subgraph == 0]
    verdicts = [_for_runtime(check_op(op, graph), min_runtime_version) for op in main]
    placements = _partition(graph, verdicts)
    others = [OpPlacement(len(main) + i, op.name, STATUS_SUBGRAPH, "it belongs to another subgraph.")
              for i, op in enumerate(graph.ops[len(main):])]
    return MappingReport(
        model=label,
        compilable=not (problems := _model_problems(graph)),
        problems=tuple(problems),
        placements=tuple(placements + others),
        min_runtime_version=_runtime(graph, placements, verdicts),
        notes=tuple(_notes(graph, placements)),
    )


def _ancestors(ops, targets: set[int]) -> set[int]:
    """The ops whose outputs ``targets`` need, directly or through others."""
    producers = {t: i for i, op in enumerate(ops) for t in op.outputs}
    found: set[int] = set()
    pending = [producers[t] for i in targets for t in ops[i].inputs if t in producers]
    while pending:
        index = pending.pop()
        if index not in found:
            found.add(index)
            pending += [producers[t] for t in ops[index].inputs if t in producers]
    return found


def _descendants(ops, sources: set[int]) -> set[int]:
    """The ops that need an output of ``sources``, directly or through others: one pass, since
    TFLite stores ops in an order that runs them."""
    producers: dict[int, int] = {}
    found: set[int] = set()
    for index, op in enumerate(ops):
        if any(producers.get(t) in sources or producers.get(t) in found for t in op.inputs):
            found.add(index)
        producers.update((t, index) for t in op.outputs)
    return found


def compiled_mapping(model: Graph | str | os.PathLike) -> dict:
    """What a compiled file shows: ops inside ``edgetpu-custom-op`` ran on the Edge TPU, every
    op left outside it on the CPU. Returns ``{"num_edgetpu_segments", "on_cpu",
    "num_before_segment", "num_cpu_inside"}``: the CPU ops that feed a segment, and of those the
    ones that also depend on one (a CPU op between two parts of the Edge TPU's work)."""
    graph = model if isinstance(model, Graph) else read_graph(model)
    ops = [op for op in graph.ops if op.subgraph == 0]
    segments = {i for i, op in enumerate(ops) if op.name == EDGETPU_CUSTOM_OP}
    before = _ancestors(ops, segments) - segments
    after_a_segment = _descendants(ops, segments)
    on_cpu = Counter(op.name for op in graph.ops if op.name != EDGETPU_CUSTOM_OP)
    return {"num_edgetpu_segments": len(segments), "on_cpu": dict(on_cpu.most_common()),
            "num_before_segment": len(before), "num_cpu_inside": len(before & after_a_segment)}


def render_mapping(report: dict) -> str:
    """A :meth:`MappingReport.to_dict` as text: verdict, problems, then the compiler-style rows."""
    cpu = sum(report["on_cpu"].values())
    verdict = "compilable" if report["compilable"] else "NOT compilable"
    lines = [f"Edge TPU (predicted offline): {verdict}; {report['on_edgetpu']} op(s) on the Edge TPU, "
             f"{cpu} on the CPU; needs Edge TPU runtime >= {report['min_runtime_version']}"]
    lines += [f"  problem: {p}" for p in report["problems"]]
    lines += [f"  note: {n}" for n in report["notes"]]
    lines += [f"  uncertain: {u}" for u in report["uncertain"]]
    return "\n".join(lines + ["", render_rows(report["ops"])])
