"""Where a model's time goes, op by op, measured with LiteRT on this device.

LiteRT's Python interpreter exposes no op profiler, so each op's time is measured as a
difference. For every op ``i`` (in execution order, the order of the operators in the file)
the model is cut after it: the same ops ``0..i``, whose outputs are every tensor those ops
produce that a later op or the model's output still reads (for a chain: op ``i``'s output;
past a branch: the other branch's tensors too, as the full model keeps them). An empty cut
(no ops; the inputs are the outputs) measures what an invoke costs by itself. Each cut is
written as a model of its own and loaded with the model's own device and threads.

All cuts and the whole model are then timed in interleaved rounds, round-robin, the direction
alternating from round to round, so that a busy spell of a shared machine hits every cut
alike. In a round each model runs ``runs_per_round`` invokes and keeps their median; op
``i``'s time in that round is the cut after it minus the cut before it, and its time is the
median of that difference over the rounds. Pairing within a round cancels the slow drift
that a difference of two overall medians would keep.

Noise makes the difference of an op that costs next to nothing negative now and then. Such an
op's ``ms`` is clamped to 0 (a time cannot be negative); its measured value stays in
``raw_ms``, and the report counts them (``num_clamped``) and totals what was clamped away
(``clamped_ms``), so that a reader sees how much of the sum is noise. Each row's ``spread_ms``
is half the interquartile range of its per-round differences (how much a round scatters).

How sure an op's time is: ``low_ms`` and ``high_ms`` bound the median of its per-round
differences with the distribution-free order-statistic interval (:func:`median_interval`: the
k-th smallest and k-th largest difference, k chosen from the binomial distribution). The
intervals are simultaneous: each op's is taken at ``1 - (1 - CONFIDENCE) / num_ops``, so that
all of a profile's intervals hold their true medians together with at least :data:`CONFIDENCE`
(Bonferroni; ``interval_coverage`` is each one's exact coverage, ``interval_joint_coverage``
the bound for all of them). A reader compares any two rows of the table, so one op's 95 % would
not do: among 67 ops, two or three intervals would miss. The method assumes only that rounds
are independent draws, which the interleaving is there to make true. The table's ``±`` column
is half an interval's width.

Which op costs more is settled only where the intervals separate: two ops whose intervals
overlap are a tie, whichever happens to print first. So two profiles of one model rank its ops
alike (:func:`order_stability`) when no pair of ops is ranked in opposite orders by two profiles
whose intervals both separate that pair. A plain comparison of the top five instead flips
whenever the fifth and sixth ops are within the noise of each other, however sound the profile.

The check that the method holds: the per-op times plus the invoke's own cost add up to the
whole model's median (``sum_ratio``; ``benchmarks/profile_sum.py`` measures it).
:mod:`edgeship.runtime.profile_join` adds what a run knows of each op and renders the table.

Example:
    >>> config = ProfileConfig(num_threads=1, num_rounds=5)
    >>> report = profile_model("mobilenet_v1_0.25_128_quant.tflite", config)
    >>> from edgeship.runtime.profile_join import render_profile
    >>> print(render_profile(report, top=2))
    mobilenet_v1_0.25_128_quant.tflite: 31 ops on cpu, 1 thread(s); 5 interleaved rounds of ... invokes, wall clock
    <BLANKLINE>
      op  type ...
    >>> "stable" in order_stability(report, profile_model("mobilenet_v1_0.25_128_quant.tflite", config))
    True
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgeship.config import option
from edgeship.errors import ConfigError, ModelFormatError
from edgeship.runtime.bench import fixed_input
from edgeship.runtime.device import interpreter_for_graph, invoke_error, parse_device
from edgeship.runtime.device_info import device_identity
from edgeship.runtime.graph import Graph, parse_graph, read_model_bytes

__all__ = ["CLOCKS", "CLOCK_CPU", "CLOCK_WALL", "CONFIDENCE", "ProfileConfig", "cut_models", "live_outputs",
           "median_interval", "order_stability", "profile_model"]

logger = logging.getLogger(__name__)

CLOCK_WALL = "wall"      # time.perf_counter: the latency a user sees
CLOCK_CPU = "cpu"        # time.thread_time: the invoking thread's CPU time, blind to other processes
CLOCKS = (CLOCK_WALL, CLOCK_CPU)
CONFIDENCE = 0.95        # that all of a profile's op intervals hold at once (at least: order statistics step)


@dataclass(frozen=True)
class ProfileConfig:
    """How to time each op of one model."""

    num_rounds: int = option(15, "Interleaved rounds; each op's time is the median over them.")
    runs_per_round: int = option(5, "Invokes of each cut model per round; the round keeps their median.")
    num_warmup_runs: int = option(3, "Untimed invokes of each cut model first (caches, lazy weight packing).")
    num_threads: int | None = option(None, "CPU threads [LiteRT's default].", int)
    device: str = option("cpu", "cpu | edgetpu | edgetpu:N | usb | usb:N | pci | pci:N.")
    seed: int = option(0, "Seed of the fixed random input.")
    clock: str = option("wall", "wall | cpu. cpu counts only the time the invoking thread ran, so that other "
                                "processes on a shared machine do not inflate it (needs --threads 1, no Edge TPU).")
    slow_share: float = option(0.5, "Flag as slow the costliest ops that together take this share of the op "
                                    "time.")
    # int8 layers of the benchmarked MobileNets drift 0.08-0.12 at the median (layer_drift.json);
    # above 0.15 a layer is among the worst quarter.
    noisy_drift: float = option(0.15, "Flag as noisy a layer whose int8 output drifts from the float model's by "
                                      "more than this (RMS difference / float std).")

    def __post_init__(self):
        for name in ("num_rounds", "runs_per_round"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1; received {getattr(self, name)}.")
        if self.num_warmup_runs < 0:
            raise ConfigError(f"num_warmup_runs must be >= 0; received {self.num_warmup_runs}.")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads must be at least 1; received {self.num_threads}.")
        if not 0 < self.slow_share <= 1:
            raise ConfigError(f"slow_share must be in (0, 1]; received {self.slow_share}.")
        if not self.noisy_drift >= 0:
            raise ConfigError(f"noisy_drift must be >= 0; received {self.noisy_drift}.")
        if self.clock not in CLOCKS:
            raise ConfigError(f"clock must be one of {', '.join(CLOCKS)}; received {self.clock!r}.")
        if self.clock == CLOCK_CPU and (self.num_threads != 1 or parse_device(self.device) is not None):
            raise ConfigError("clock 'cpu' measures the invoking thread only: pass --threads 1 and --device cpu "
                              "with it, or use the wall clock.")
        parse_device(self.device)


# --------------------------------------------------------------------------- cut models


def live_outputs(graph: Graph) -> list[tuple[int, ...]]:
    """For each op of the main subgraph, the tensors still needed once it has run: those the ops
    up to it produced that a later op or the model's output reads.

    Example:
        >>> from edgeship.runtime.graph import read_graph
        >>> live_outputs(read_graph("mobilenet_v1_0.25_128_quant.tflite"))[:2]  # a chain: one tensor each
        [(31,), (33,)]
    """
    ops = [op for op in graph.ops if op.subgraph == 0]
    last_use = {t: len(ops) for t in graph.outputs}  # the model's outputs are read after the last op
    for index, op in enumerate(ops):
        for t in op.inputs:
            last_use[t] = max(last_use.get(t, -1), index)
    produced: list[int] = []
    live = []
    for index, op in enumerate(ops):
        produced += [t for t in op.outputs if t not in produced]
        live.append(tuple(t for t in produced if last_use.get(t, -1) > index or t in op.outputs))
    return live


def cut_models(data: bytes, graph: Graph | None = None) -> list[bytes]:
    """The model cut after each op: ``cuts[k]`` runs the first ``k`` ops of the main subgraph
    (``cuts[0]`` none: its inputs are its outputs), and outputs the tensors live after them.

    Each cut keeps only the tensors and weights its ops use; signatures and metadata are left
    out (they name tensors of the whole model). Other subgraphs (the bodies of WHILE and IF)
    are kept as they are.

    Raises:
        ModelFormatError: see :func:`edgeship.runtime.graph.parse_graph`; or the model keeps
            its weights outside the flatbuffer (over 2 GB), which a cut cannot rewrite.

    Example:
        >>> cuts = cut_models(read_model_bytes("mobilenet_v1_0.25_128_quant.tflite"))
        >>> [len(parse_graph(cut).ops) for cut in cuts][:4], len(cuts)
        ([0, 1, 2, 3], 32)
    """
    graph = graph or parse_graph(data)
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    if any(buffer.offset > 1 for buffer in model.buffers or ()):
        raise ModelFormatError("The model keeps its weights outside the flatbuffer (a model over 2 GB); profile "
                               "cannot cut it. Profile a smaller model, or time it whole with `edgeship bench`.")
    model.signatureDefs, model.metadata, model.metadataBuffer = None, None, None
    main = model.subgraphs[0]
    live = live_outputs(graph)
    cuts = [_cut(model, main, 0, _ints(main.inputs))]
    cuts += [_cut(model, main, k, live[k - 1]) for k in range(1, len(main.operators or ()) + 1)]
    return cuts


def _cut(model, main, num_ops: int, outputs: Sequence[int]) -> bytes:
    """The model with the first ``num_ops`` ops of ``main``, its tensors renumbered densely."""
    ops = (main.operators or [])[:num_ops]
    inputs = _ints(main.inputs)
    used = sorted({*inputs, *outputs, *(t for op in ops for t in _tensor_refs(op) if t >= 0)})
    number = {old: new for new, old in enumerate(used)}
    subgraph = copy.copy(main)
    subgraph.tensors = [main.tensors[t] for t in used]
    subgraph.operators = [_renumbered(op, number) for op in ops]
    subgraph.inputs = [number[t] for t in inputs]
    subgraph.outputs = [number[t] for t in outputs]
    subgraphs = [subgraph] + list(model.subgraphs[1:])
    # Weights no kept tensor reads are emptied, not dropped, so that buffer numbers stay valid.
    kept = {t.buffer for g in subgraphs for t in g.tensors or ()}
    cut = copy.copy(model)
    cut.subgraphs = subgraphs
    cut.buffers = [b if i in kept or i == 0 else schema.BufferT() for i, b in enumerate(model.buffers or ())]
    builder = flatbuffers.Builder(1024)
    builder.Finish(cut.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _ints(values) -> list[int]:
    """A vector of the object API as a list: it unpacks them as numpy arrays, and ``[0]`` as an
    array is falsy, so ``values or ()`` would lose a model whose input is tensor 0."""
    return [] if values is None else [int(v) for v in values]


def _tensor_refs(op) -> list[int]:
    return [*_ints(op.inputs), *_ints(op.outputs), *_ints(op.intermediates)]


def _renumbered(op, number: dict[int, int]):
    op = copy.copy(op)
    for name in ("inputs", "outputs", "intermediates"):
        if getattr(op, name) is not None:
            setattr(op, name, [number[t] if t >= 0 else t for t in _ints(getattr(op, name))])
    return op


# --------------------------------------------------------------------------- timing


def _ready(data: bytes, name: str, config: ProfileConfig, inputs: list[np.ndarray] | None):
    """An interpreter with the fixed input set; returns it and the input values used."""
    interpreter = interpreter_for_graph(data, parse_graph(data, name), name, config.device, config.num_threads)
    details = interpreter.get_input_details()
    if inputs is None:
        rng = np.random.default_rng(config.seed)
        inputs = [fixed_input(detail, rng) for detail in details]
    for detail, value in zip(details, inputs):
        interpreter.set_tensor(detail["index"], value)
    return interpreter, inputs


def _time_rounds(invokes: list[Callable[[], None]], config: ProfileConfig,
                 progress: Callable[[], None] | None) -> tuple[np.ndarray, np.ndarray]:
    """Per round, each model's median invoke time (ms, shape rounds x models), and every single
    invoke time of the last model (the whole one), as ``edgeship bench`` takes them."""
    clock = time.thread_time if config.clock == CLOCK_CPU else time.perf_counter
    for invoke in invokes:
        for _ in range(config.num_warmup_runs):
            invoke()
    medians = np.empty((config.num_rounds, len(invokes)))
    whole = np.empty((config.num_rounds, config.runs_per_round))
    for r in range(config.num_rounds):
        # Alternate the direction: whatever the previous model leaves in the caches falls on
        # each cut from both sides.
        order = range(len(invokes)) if r % 2 == 0 else reversed(range(len(invokes)))
        for m in order:
            times = whole[r] if m == len(invokes) - 1 else np.empty(config.runs_per_round)
            invoke = invokes[m]
            for k in range(config.runs_per_round):
                start = clock()
                invoke()
                times[k] = clock() - start
            medians[r, m] = np.median(times)
        if progress is not None:
            progress()
    return medians * 1000, whole.ravel() * 1000


def profile_model(path: str | os.PathLike, config: ProfileConfig = ProfileConfig(),
                  progress: Callable[[], None] | None = None) -> dict:
    """Times every op of a model on this device (see the module's description for the method).

    Args:
        path: a ``.tflite`` file.
        config: rounds, invokes, device and threads.
        progress: called once per round.

    Returns:
        ``model``, ``device`` (where it ran: ``cpu`` for a model not compiled for the Edge TPU,
        with a ``note``), ``device_identity`` (as bench records it), ``num_threads``, ``config``,
        ``num_ops``, ``invoke_overhead_ms`` (an invoke of no op), ``ops_ms`` (the ops' times
        summed), ``total_ms`` (the two), ``whole_median_ms`` (the model's median invoke),
        ``sum_ratio`` (``total_ms / whole_median_ms``), ``num_clamped``, ``clamped_ms``,
        ``interval_coverage`` (each op's) and ``interval_joint_coverage`` (all at once, at least),
        and ``ops``: one row per op in execution order with ``index``, ``op``, ``output_shape``,
        ``output`` (tensor name), ``ms``, ``raw_ms``, ``low_ms`` and ``high_ms`` (its interval),
        ``spread_ms``, ``share`` (of ``ops_ms``) and ``rank`` (1: the costliest).

    Raises:
        ModelFormatError, DelegateError: see :func:`edgeship.runtime.device.make_interpreter`.

    Example:
        >>> report = profile_model("mobilenet_v1_0.25_128_quant.tflite", ProfileConfig(num_rounds=5))
        >>> 0.5 < report["sum_ratio"] < 1.5, len(report["ops"])
        (True, 31)
    """
    data = read_model_bytes(path)
    graph = parse_graph(data, str(path))
    cuts = cut_models(data, graph)
    interpreter, inputs = _ready(data, str(path), config, None)
    interpreters = [_ready(cut, f"{path} (cut after op {k - 1})", config, inputs)[0] for k, cut in enumerate(cuts)]
    on_edgetpu = parse_device(config.device) is not None and graph.is_edgetpu_compiled
    ran_on = config.device if on_edgetpu else "cpu"
    logger.debug("profile %s: %d cut models, %d rounds", path, len(cuts), config.num_rounds)
    try:
        medians, whole = _time_rounds([i.invoke for i in interpreters + [interpreter]], config, progress)
    except (RuntimeError, ValueError, TypeError) as e:
        raise invoke_error(path, ran_on, e) from e
    rows, noise = _rows(graph, np.diff(medians[:, :-1], axis=1))
    ops_ms = sum(row["ms"] for row in rows)
    overhead, whole_median = float(np.median(medians[:, 0])), float(np.median(whole))
    return {
        "model": str(path),
        "device": ran_on,
        "note": "" if on_edgetpu or ran_on == config.device else
        f"not compiled for the Edge TPU: ran on the CPU although {config.device} was asked for",
        "device_identity": device_identity(),
        "num_threads": config.num_threads,
        "config": dataclasses.asdict(config),
        "num_ops": len(rows),
        "invoke_overhead_ms": overhead,
        "ops_ms": ops_ms,
        "total_ms": overhead + ops_ms,
        "whole_median_ms": whole_median,
        "sum_ratio": (overhead + ops_ms) / whole_median if whole_median > 0 else None,
        **noise,
        "ops": rows,
    }


def _rows(graph: Graph, differences: np.ndarray) -> tuple[list[dict], dict]:
    """One row per op from its per-round time differences (rounds x ops, ms), and what the
    report says of their noise: what was clamped, and the intervals' coverage."""
    ops = [op for op in graph.ops if op.subgraph == 0]
    raw = np.median(differences, axis=0)
    low, high = np.percentile(differences, [25, 75], axis=0)
    each = 1 - (1 - CONFIDENCE) / max(len(ops), 1)  # Bonferroni: all ops' intervals at once
    intervals = [median_interval(differences[:, index], each) for index in range(len(ops))]
    coverage = intervals[0][2] if intervals else 1.0
    clamped = np.maximum(raw, 0.0)
    total = float(clamped.sum())
    ranks = np.empty(len(ops), dtype=int)
    ranks[np.argsort(-clamped, kind="stable")] = np.arange(1, len(ops) + 1)
    rows = []
    for index, op in enumerate(ops):
        output = graph.tensors[op.outputs[0]] if op.outputs else None
        rows.append({
            "index": index,
            "op": op.name,
            "output_shape": list(output.shape) if output else [],
            "output": output.name if output else "",
            "ms": float(clamped[index]),
            "raw_ms": float(raw[index]),
            "low_ms": intervals[index][0],
            "high_ms": intervals[index][1],
            "spread_ms": float(high[index] - low[index]) / 2,
            "share": float(clamped[index]) / total if total > 0 else 0.0,
            "rank": int(ranks[index]),
        })
    noise = {
        "num_clamped": sum(row["raw_ms"] < 0 for row in rows),
        "clamped_ms": -sum(min(row["raw_ms"], 0.0) for row in rows),
        "interval_coverage": coverage,
        "interval_joint_coverage": max(0.0, 1 - len(rows) * (1 - coverage)),
    }
    return rows, noise


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """A distribution-free interval of the median of ``values``, from their order statistics.

    With ``n`` values sorted, ``[x_(k), x_(n+1-k)]`` holds the true median unless at least
    ``n+1-k`` of the values fall on one side of it, so its coverage is ``1 - 2 P(B <= k-1)``
    with ``B ~ Binomial(n, 1/2)``, whatever the distribution (Conover, *Practical
    Nonparametric Statistics*, 3rd ed., section 3.2). ``k`` is the largest whose coverage is
    at least ``confidence``; when ``n`` is too small for any (below 6 at 95 %), the interval is
    the whole range, with the lower coverage it has.

    Args:
        values: the samples, e.g. an op's time in each round (ms).
        confidence: the coverage wanted, in (0, 1).

    Returns:
        ``(low, high, coverage)``.

    Raises:
        ConfigError: no values, or ``confidence`` outside (0, 1).

    Example:
        >>> low, high, coverage = median_interval(range(1, 32))  # 31 rounds: the 10th and 22nd
        >>> low, high, round(coverage, 3)
        (10.0, 22.0, 0.971)
    """
    ordered = np.sort(np.asarray(values, dtype=float))
    if ordered.size == 0 or not 0 < confidence < 1:
        raise ConfigError(f"median_interval needs values and a confidence in (0, 1); received {ordered.size} "
                          f"value(s) and {confidence}.")
    n = ordered.size
    # Exact binomial tails in integers (n is a number of rounds, small); the narrowest first.
    # k = (n+1)//2 is the median itself, whose "coverage" comes out <= 0: never enough.
    coverage_of = {k: 1 - 2 * sum(math.comb(n, j) for j in range(k)) / 2 ** n for k in range((n + 1) // 2, 0, -1)}
    k = next((k for k, coverage in coverage_of.items() if coverage >= confidence), 1)
    return float(ordered[k - 1]), float(ordered[n - k]), max(coverage_of[k], 0.0)


def order_stability(first: dict, second: dict) -> dict:
    """Whether two profiles of one model rank its ops alike, beyond their noise.

    Op ``a`` is *separated* above op ``b`` in a profile when ``a``'s interval lies wholly above
    ``b``'s (``low_ms`` of ``a`` > ``high_ms`` of ``b``); overlapping intervals are a tie. A pair
    is a *conflict* when one profile separates it one way and the other the other way. The two
    profiles are stable when there is no conflict. As each profile's intervals hold together
    with at least :data:`CONFIDENCE`, a conflict between profiles of unchanged costs has a
    chance below ``2 * (1 - CONFIDENCE)``: one means the ops' costs moved between the two
    (another load, another cache state), not that the ranking was unlucky. Stability alone says
    nothing when every interval is wide (all ties), so the pairs both profiles separate
    (``num_resolved``) are counted too.

    Args:
        first: a report of :func:`profile_model` (rows with ``index``, ``low_ms``, ``high_ms``).
        second: another report of the same model.

    Returns:
        ``stable``, ``conflicts`` (pairs ``[a, b]`` of op indices: ``a`` above ``b`` in
        ``first``, below it in ``second``), ``num_pairs`` (all pairs of ops), ``num_resolved``
        and ``resolved_share`` (of the pairs, those both profiles separate, either way).

    Raises:
        ConfigError: the two reports do not profile the same ops.

    Example:
        >>> def report(*intervals):
        ...     return {"ops": [{"index": i, "low_ms": lo, "high_ms": hi} for i, (lo, hi) in enumerate(intervals)]}
        >>> result = order_stability(report((2, 3), (1, 1.5), (0, 0.9)), report((2, 3), (1.1, 1.2), (1.3, 1.9)))
        >>> result["stable"], result["conflicts"], result["num_resolved"]
        (False, [[1, 2]], 3)
    """
    spans = [{row["index"]: (row["low_ms"], row["high_ms"]) for row in report["ops"]} for report in (first, second)]
    if set(spans[0]) != set(spans[1]):
        raise ConfigError("order_stability compares two profiles of one model; these profile different ops "
                          f"({len(spans[0])} and {len(spans[1])}). Profile the same file twice.")
    indices = sorted(spans[0])
    conflicts, resolved = [], 0
    for position, a in enumerate(indices):
        for b in indices[position + 1:]:
            # +1: a above b, -1: b above a, 0: a tie in that profile.
            orders = [(span[a][0] > span[b][1]) - (span[b][0] > span[a][1]) for span in spans]
            resolved += orders[0] != 0 and orders[1] != 0
            if orders[0] * orders[1] < 0:
                conflicts.append([a, b] if orders[0] > 0 else [b, a])
    num_pairs = len(indices) * (len(indices) - 1) // 2
    return {"stable": not conflicts, "conflicts": conflicts, "num_pairs": num_pairs, "num_resolved": resolved,
            "resolved_share": resolved / num_pairs if num_pairs else 1.0}
