"""What edgeship knows about a profiled model's ops, joined to its times, and the table.

:func:`edgeship.runtime.profile.profile_model` measures each op; for a model of a run this
module adds the op's predicted Edge TPU placement and its layer's int8 drift from the float
model, flags each row (slow, noisy, falls back to the CPU), and renders the table.

Example:
    >>> from edgeship.runtime.profile import ProfileConfig, profile_model
    >>> path = "runs/flowers/export/model_int8.tflite"
    >>> report = join_run(profile_model(path, ProfileConfig(num_rounds=3, runs_per_round=2)), path)
    >>> print(render_profile(report, top=2))
    runs/flowers/export/model_int8.tflite: ... ops on cpu, ...
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from edgeship.errors import ConfigError
from edgeship.runtime.graph import Graph, parse_graph, read_model_bytes
from edgeship.runtime.profile import ProfileConfig

__all__ = ["FLAG_CPU", "FLAG_NOISY", "FLAG_SLOW", "annotate", "drift_by_op", "join_run", "model_variant",
           "read_drift", "render_profile", "run_of_model"]

logger = logging.getLogger(__name__)

FLAG_SLOW = "slow"      # among the costliest ops that together take ``slow_share`` of the op time
FLAG_NOISY = "noisy"    # the layer's int8 output drifts from the float model's by more than ``noisy_drift``
FLAG_CPU = "cpu"        # predicted to fall back to the CPU when compiled for the Edge TPU
_MAX_DRIFT_BYTES = 64 << 20  # a drift table is a few kB per variant


# --------------------------------------------------------------------------- what a run knows


def run_of_model(model: str | os.PathLike, run: str | os.PathLike | None = None):
    """The run a model belongs to: ``run`` when given, else the run whose ``export/`` folder
    holds the model; None for a model outside any run.

    Example:
        >>> run_of_model("runs/flowers/export/model_int8.tflite")
        RunDir('runs/flowers')
        >>> run_of_model("model_int8.tflite") is None
        True
    """
    from edgeship.runtime.rundir import RunDir

    if run is not None:
        return RunDir(run)
    # Not resolved: a run's export/ is a link to the folder the export wrote atomically.
    for folder in dict.fromkeys((Path(model).parent, Path(model).absolute().parent)):
        candidate = RunDir(folder.parent)
        if candidate.export_dir == folder and candidate.is_started:
            return candidate
    return None


def model_variant(run, model: str | os.PathLike) -> str | None:
    """The export variant (``int8``, ``int8-ptq``...) whose file is ``model``, from the run's
    export report; None when the run has no report or does not list the file."""
    if not run.report_path.exists():
        return None
    variants = run.read_json(run.report_path).get("variants")
    names = {row.get("file"): kind for kind, row in variants.items() if isinstance(row, dict)} \
        if isinstance(variants, dict) else {}
    return names.get(Path(model).name)


def read_drift(source: str | os.PathLike | dict, variant: str | None, run_name: str | None = None,
               ) -> tuple[list[str], dict[str, float]]:
    """The layer drift of one variant: the layers in graph order, and each one's drift.

    ``source`` is ``RUN/layer_drift.json`` (one run, as ``benchmarks/layer_drift.py`` leaves it),
    the benchmark's ``results/layer_drift.json`` (several runs: the one named ``run_name``, or
    the only one), or either already loaded. The drift is the RMS difference of the layer's
    output from the float model's over the float output's standard deviation, inherited error
    included. ``variant`` None is the table's only variant; a variant the table lacks (the
    float32 file, the reference) has no drift: empty values.

    Raises:
        ConfigError: the file is unreadable or not a drift table, or names no such run or variant.
    """
    where = str(source) if not isinstance(source, dict) else "the drift table"
    data = source if isinstance(source, dict) else _read_json_file(source)
    if isinstance(data.get("runs"), list):
        runs = [r for r in data["runs"] if isinstance(r, dict)]
        named = [r for r in runs if r.get("run") == run_name] or (runs if len(runs) == 1 else [])
        if not named:
            raise ConfigError(f"{where} holds the drift of runs {[r.get('run') for r in runs]}, none named "
                              f"{run_name!r}; pass the run's own RUN/layer_drift.json.")
        data = named[0]
    variants, layers = data.get("variants"), data.get("layers")
    if not isinstance(variants, dict) or not isinstance(layers, list):
        raise ConfigError(f"{where} is not a layer drift table (no 'variants' and 'layers'); write one with "
                          "`python benchmarks/layer_drift.py RUN_DIR`.")
    if variant is None and len(variants) == 1:
        variant = next(iter(variants))
    if variant is not None and variant not in variants:
        return [str(layer) for layer in layers], {}  # the float32 reference, or a variant not measured
    if variant not in variants:
        raise ConfigError(f"{where} has the drift of {sorted(variants)}, not of {variant or 'this model'}; pass "
                          "--run RUN_DIR so that the model's variant is known, or profile one of those files.")
    entry = variants[variant]
    drift = entry.get("drift") if isinstance(entry, dict) else None
    values = {str(k): float(v) for k, v in drift.items() if isinstance(v, (int, float))} \
        if isinstance(drift, dict) else {}
    return [str(layer) for layer in layers], values


def _read_json_file(path: str | os.PathLike) -> dict:
    from edgeship.runtime.files import read_json_object

    try:
        return read_json_object(path, _MAX_DRIFT_BYTES)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is not a layer drift table that can be read ({e}). Pass a layer_drift.json.") from e


def drift_by_op(graph: Graph, layers: Sequence[str], drift: Mapping[str, float]) -> dict[int, tuple[str, float]]:
    """Each op's layer and that layer's drift. A fused op's output tensor names every layer it
    holds (``model/conv_pw_3_relu/Relu6;model/conv_pw_3_bn/...;model/conv_pw_3/Conv2D``): the
    layer is the last of them in graph order, as ``benchmarks/layer_drift.py`` matches them,
    taken from the name's first part when it names one (Coral's TF1 names list the next layer's
    folded weights after the op's own: ``Conv2d_0/Relu6;...;Conv2d_1_depthwise/depthwise_Fold``).

    Example:
        >>> from edgeship.runtime.graph import read_graph
        >>> graph = read_graph("mobilenet_v1_0.25_128_quant.tflite")
        >>> drift_by_op(graph, ["Conv2d_0", "Conv2d_1_depthwise"], {"Conv2d_0": 0.02, "Conv2d_1_depthwise": 0.3})
        {0: ('Conv2d_0', 0.02), 1: ('Conv2d_1_depthwise', 0.3)}
    """
    order = {name: i for i, name in enumerate(layers)}
    found = {}
    for index, op in enumerate(op for op in graph.ops if op.subgraph == 0):
        for t in op.outputs:
            name = graph.tensors[t].name
            layer = _layer_named(name.split(";")[0], order) or _layer_named(name, order)
            if layer is not None:
                if layer in drift:
                    found[index] = (layer, float(drift[layer]))
                break
    return found


def _layer_named(tensor_name: str, order: Mapping[str, int]) -> str | None:
    """The last layer, in graph order, that a tensor name names (``quant_conv1`` names ``conv1``)."""
    parts = re.split(r"[/;:]", tensor_name)
    names = [p for p in parts if p in order] + [p[6:] for p in parts if p.startswith("quant_") and p[6:] in order]
    return max(names, key=order.get) if names else None


def join_run(report: dict, model: str | os.PathLike, run: str | os.PathLike | None = None,
             drift: str | os.PathLike | None = None) -> dict:
    """:func:`annotate` with what the model's run knows, when it has one (``run``, or the run
    whose ``export/`` holds ``model``) or when a drift table is given: the Edge TPU prediction,
    and the layer drift of the model's variant from ``drift`` or else ``RUN/layer_drift.json``
    (written by ``benchmarks/layer_drift.py``). A model outside any run, without ``drift``,
    comes back as it was.

    Raises:
        ConfigError: the drift table is unreadable, or does not say which variant the model is.

    Example:
        >>> from edgeship.runtime.graph import read_graph
        >>> from edgeship.runtime.profile import ProfileConfig, profile_model
        >>> path = "runs/flowers/export/model_int8.tflite"
        >>> report = join_run(profile_model(path, ProfileConfig(num_rounds=3, runs_per_round=2)), path)
        >>> report["run"], report["drift_source"]  # no layer_drift.json measured for this run
        ('runs/flowers', None)
    """
    run_dir = run_of_model(model, run)
    if run_dir is None and drift is None:
        return report
    graph = parse_graph(read_model_bytes(model), str(model))
    if drift is None and run_dir.layer_drift_path.exists():
        drift = run_dir.layer_drift_path
    by_op, note = None, ""
    if drift is None:
        note = (f"no layer drift measured for {run_dir.path}: `python benchmarks/layer_drift.py {run_dir.path}` "
                "writes it, or pass --drift FILE")
    else:
        variant = model_variant(run_dir, model) if run_dir is not None else None
        layers, values = read_drift(drift, variant, run_dir.path.name if run_dir is not None else None)
        by_op = drift_by_op(graph, layers, values) if values else None
        if not values:
            note = f"{drift} has no drift for {variant} (the float32 file is the reference it is measured against)"
    if note:
        logger.info("%s", note)
    joined = annotate(report, graph, by_op)
    return {**joined, "run": None if run_dir is None else str(run_dir.path),
            "drift_source": None if drift is None else str(drift), "drift_note": note}


def _slow_ops(rows: list[dict], share: float) -> set[int]:
    """The costliest ops that together take ``share`` of the op time (the one crossing it included)."""
    slow, taken = set(), 0.0
    for row in sorted(rows, key=lambda r: r["rank"]):
        if taken >= share or row["ms"] <= 0:
            break
        slow.add(row["index"])
        taken += row["share"]
    return slow


def annotate(report: dict, graph: Graph, drift: Mapping[int, tuple[str, float]] | None = None,
             config: ProfileConfig | None = None, edgetpu: bool = True) -> dict:
    """Joins each op's time with what edgeship knows of it, and flags the ops worth a look.

    Each row gains ``flags`` (a list of :data:`FLAG_SLOW`, :data:`FLAG_NOISY`, :data:`FLAG_CPU`),
    with ``edgetpu`` and ``edgetpu_status`` (the offline prediction of the Edge TPU compiler's
    mapping; None when the model cannot be compiled at all, e.g. a float model) and ``layer``
    and ``drift`` (from ``drift``, see :func:`drift_by_op`; None where unmeasured). The report
    gains ``edgetpu`` (compilable, problems, counts) and ``flag_rules`` (what each flag means).

    Example:
        >>> from edgeship.runtime.graph import read_graph
        >>> from edgeship.runtime.profile import ProfileConfig, profile_model
        >>> path = "mobilenet_v1_0.25_128_quant.tflite"
        >>> report = annotate(profile_model(path, ProfileConfig(num_rounds=3, runs_per_round=2)), read_graph(path), {})
        >>> report["edgetpu"]["on_edgetpu"], sorted(report["flag_rules"])
        (31, ['cpu', 'noisy', 'slow'])
    """
    config = config or ProfileConfig(**{k: v for k, v in report.get("config", {}).items()
                                        if k in {f.name for f in dataclasses.fields(ProfileConfig)}})
    placements, summary = _placements(graph) if edgetpu else ({}, None)
    slow = _slow_ops(report["ops"], config.slow_share)
    rows = []
    for row in report["ops"]:
        placement = placements.get(row["index"])
        layer, value = (drift or {}).get(row["index"], (None, None))
        flags = [FLAG_SLOW] * (row["index"] in slow) + [FLAG_NOISY] * (value is not None and value > config.noisy_drift)
        flags += [FLAG_CPU] * (placement is not None and not placement.on_edgetpu)
        rows.append({**row, "edgetpu": None if placement is None else placement.on_edgetpu,
                     "edgetpu_status": None if placement is None else placement.status,
                     "layer": layer, "drift": value, "flags": flags})
    rules = {FLAG_SLOW: f"among the costliest ops that together take {config.slow_share:.0%} of the op time"}
    if drift is not None:
        rules[FLAG_NOISY] = f"its layer's int8 output drifts from the float model's by more than {config.noisy_drift}"
    if summary is not None and summary["compilable"]:
        rules[FLAG_CPU] = "predicted to run on the CPU when the model is compiled for the Edge TPU"
    return {**report, "edgetpu": summary, "flag_rules": rules, "ops": rows}


def _placements(graph: Graph) -> tuple[dict, dict]:
    """Each op's predicted Edge TPU placement by index (none when the model cannot be compiled)."""
    from edgeship.edgetpu.mapping import predict_mapping

    mapping = predict_mapping(graph)
    summary = {"compilable": mapping.compilable, "problems": list(mapping.problems),
               "on_edgetpu": mapping.on_edgetpu, "on_cpu": mapping.on_cpu}
    if not mapping.compilable or graph.is_edgetpu_compiled:
        return {}, summary
    return {p.index: p for p in mapping.placements}, summary


# --------------------------------------------------------------------------- output


def render_profile(report: dict, top: int = 10) -> str:
    """The ``top`` slowest ops as a table, with the totals that show whether the times add up.

    Example:
        >>> from edgeship.runtime.graph import read_graph
        >>> from edgeship.runtime.profile import ProfileConfig, profile_model
        >>> report = profile_model("model_int8.tflite", ProfileConfig(num_rounds=3, runs_per_round=2))
        >>> render_profile(report, top=3).splitlines()[2].split()[:2]
        ['op', 'type']
    """
    joined = "flag_rules" in report
    rows = sorted(report["ops"], key=lambda r: r["rank"])[:max(top, 0)]
    threads = report["num_threads"] or "default"
    config = report["config"]
    title = (f"{report['model']}: {report['num_ops']} ops on {report['device']}, {threads} thread(s); "
             f"{config['num_rounds']} interleaved rounds of {config['runs_per_round']} invokes, "
             f"{config['clock']} clock")
    lines = [title, ""]
    header = f"{'op':>4}  {'type':<24} {'output shape':<16} {'ms':>8} {'±':>7} {'share':>7}"
    lines.append(header + ("  edge tpu  drift  flags" if joined else ""))
    for row in rows:
        shape = "x".join(map(str, row["output_shape"])) or "-"
        line = (f"{row['index']:>4}  {row['op'][:24]:<24} {shape:<16} {row['ms']:>8.3f} {_plus_minus(row):>7} "
                f"{row['share']:>7.1%}")
        if joined:
            tpu = {True: "yes", False: "no", None: "-"}[row["edgetpu"]]
            drift = "-" if row["drift"] is None else f"{row['drift']:.3f}"
            line += f"  {tpu:<8}  {drift:>5}  {' '.join(row['flags'])}"
        lines.append(line.rstrip())
    lines += ["", _totals(report)]
    if "interval_coverage" in report:
        # Floored: the joint coverage is a lower bound, and rounding must not raise it.
        joint = math.floor(100 * report.get("interval_joint_coverage", report["interval_coverage"]))
        lines.append(f"±: half an op's interval of its median over the rounds (all hold together with at least "
                     f"{joint}%); ops whose intervals overlap are a tie.")
    if joined:
        lines += [f"{flag}: {rule}" for flag, rule in report["flag_rules"].items()]
    if report.get("note"):
        lines.append(f"note: {report['note']}")
    return "\n".join(lines)


def _plus_minus(row: dict) -> str:
    """Half the interval's width; '-' for a report written before intervals were kept."""
    if row.get("low_ms") is None or row.get("high_ms") is None:
        return "-"
    return f"{(row['high_ms'] - row['low_ms']) / 2:.3f}"


def _totals(report: dict) -> str:
    ratio = "" if report["sum_ratio"] is None else f" = {report['sum_ratio']:.3f} x"
    text = (f"{report['num_ops']} ops sum to {report['ops_ms']:.3f} ms, + {report['invoke_overhead_ms']:.3f} ms "
            f"per invoke = {report['total_ms']:.3f} ms;\nthe whole model's median: {report['whole_median_ms']:.3f} "
            f"ms{ratio}.")
    if report["num_clamped"]:
        text += (f"\n{report['num_clamped']} op(s) measured below 0 (noise) count as 0 ms: "
                 f"{report['clamped_ms']:.3f} ms clamped away in all.")
    return text
