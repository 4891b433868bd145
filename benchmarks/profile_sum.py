"""Does `edgeship profile` account for the whole model's time, and does it rank the ops alike twice?

Profiles each model twice (the profiles of all models interleaved: A, B, C, then A, B, C again)
and reports, per profile, the sum of the per-op times plus the invoke's own cost against the
whole model's median invoke timed in the same rounds (goal: within 10 %), and across the two
profiles whether they order the ops alike.

The order is judged beyond the noise (``edgeship.runtime.profile.order_stability``): each op's
time carries an order-statistic interval of its median over the rounds, simultaneous over the
model's ops (all of a profile's intervals hold together with at least 95 %), ops whose intervals
overlap are a tie, and two profiles are stable when no pair of ops is ranked in opposite orders
where both profiles' intervals separate it. The share of pairs that both profiles separate says
how much of the order that claim covers. The plain comparison of the five costliest ops is
reported too: it flips whenever the fifth and sixth ops are within a few percent of each other,
inside the noise, so it measures luck as much as the profiler. Ops of identical work (same
type, input and output shapes: MobileNet v1's five 14x14-class pointwise layers) tie in truth,
so the top-5 is also compared as a multiset of (type, shapes), with the overlap and the Spearman
rank correlation of all ops' times.

Both clocks are measured: ``wall`` (the default, the latency a user sees) and ``cpu`` (the
invoking thread's CPU time, which other processes on this shared machine cannot inflate).

Usage:
    python benchmarks/profile_sum.py                       # Coral's CPU models
    python benchmarks/profile_sum.py --model runs/x/export/model_int8.tflite --rounds 21

The results file's third model is an edgeship export with branches (residual ADDs): the demo
data (``make_demo_data(root, images_per_class=12, image_size=96, seed=1)``) trained with
``TrainConfig.tiny(backbone="mobilenet_v2", alpha=0.35, image_size=96, epochs=1)`` and exported
with ``ExportConfig.tiny(formats=("int8",))``, passed with ``--model``.

Writes benchmarks/results/profile_sum.json and profile_sum.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from common import CORAL, ROOT, default_models, machine, machine_line, write_results

GOAL = 0.10     # |sum / whole - 1|
TOP = 5
CLOCKS = ("wall", "cpu")
VENDORED = ROOT / "tests" / "data" / "coral"


def _signature(graph, index: int) -> tuple:
    """What an op computes: its type and the shapes of its inputs and outputs."""
    op = graph.ops[index]
    shapes = tuple(tuple(graph.tensors[t].shape) if t >= 0 else () for t in op.inputs + op.outputs)
    return (op.name, shapes)


def stability(graph, first: dict, second: dict) -> dict:
    """How alike two profiles of one model rank its ops: beyond the noise, and as plain top-5 sets."""
    from edgeship.runtime.profile import order_stability

    top = [sorted(row["index"] for row in report["ops"] if row["rank"] <= TOP) for report in (first, second)]
    kinds = [sorted(map(str, (_signature(graph, i) for i in indices))) for indices in top]
    ms = [np.array([row["ms"] for row in report["ops"]]) for report in (first, second)]
    ranks = [np.argsort(np.argsort(-values, kind="stable")) for values in ms]
    spearman = float(np.corrcoef(ranks[0], ranks[1])[0, 1]) if len(ms[0]) > 1 else 1.0
    # How far the 5th op stands above the 6th, relative to the 5th: a near-tie there makes the
    # top-5 set a coin toss however precise the profile is.
    gaps = []
    for values in ms:
        ordered = np.sort(values)[::-1]
        gaps.append(float((ordered[TOP - 1] - ordered[TOP]) / ordered[TOP - 1]) if len(ordered) > TOP and
                    ordered[TOP - 1] > 0 else None)
    order = order_stability(first, second)
    return {
        "order_stable": order["stable"],
        "order_conflicts": order["conflicts"],
        "resolved_share": order["resolved_share"],
        "top": top,
        "gap_5th_6th": gaps,
        "top_identical": top[0] == top[1],
        "top_identical_up_to_ties": kinds[0] == kinds[1],
        "top_overlap": len(set(top[0]) & set(top[1])),
        "spearman": spearman,
    }


def _summary(report: dict) -> dict:
    keep = ("whole_median_ms", "invoke_overhead_ms", "ops_ms", "total_ms", "sum_ratio", "num_clamped", "clamped_ms")
    return {key: report[key] for key in keep}


def measure(models: list[Path], args) -> list[dict]:
    from edgeship.runtime.graph import read_graph
    from edgeship.runtime.profile import ProfileConfig, profile_model

    rows = {str(m): {"model": m.name, "num_ops": None, "clocks": {}} for m in models}
    for clock in CLOCKS:
        config = ProfileConfig(num_rounds=args.rounds, runs_per_round=args.runs, num_threads=1, clock=clock)
        profiles: dict[str, list[dict]] = {str(m): [] for m in models}
        for attempt in range(2):
            for model in models:
                report = profile_model(model, config)
                profiles[str(model)].append(report)
                print(f"{clock} {attempt + 1}/2 {model.name:40s} ratio {report['sum_ratio']:.3f} "
                      f"whole {report['whole_median_ms']:.3f} ms", file=sys.stderr)
        for model in models:
            first, second = profiles[str(model)]
            rows[str(model)]["num_ops"] = first["num_ops"]
            rows[str(model)]["clocks"][clock] = {
                "profiles": [_summary(first), _summary(second)],
                "max_sum_error": max(abs(p["sum_ratio"] - 1) for p in (first, second)),
                **stability(read_graph(model), first, second),
                "ops_ms": [[row["ms"] for row in p["ops"]] for p in (first, second)],
                "ops_interval_ms": [[[row["low_ms"], row["high_ms"]] for row in p["ops"]] for p in (first, second)],
                "interval_coverage": first["interval_coverage"],
            }
    return list(rows.values())


def render(report: dict) -> str:
    """The markdown table: per model and clock, the two profiles' sums and their top-5 agreement."""
    settings = report["settings"]
    caption = (
        f"`edgeship profile`, 1 thread, {settings['rounds']} interleaved rounds of {settings['runs']} invokes, each "
        "model profiled twice. Sum = the per-op times plus an invoke's own cost, over the whole model's median "
        f"invoke in the same rounds (goal: within {GOAL:.0%}). Order stable: no pair of ops ranked in opposite "
        "orders by the two profiles where both profiles' intervals of the op times (the order-statistic interval of "
        f"the median over the rounds, {_coverage(report)} each, so that all of a profile's hold together with at "
        "least 95 %) separate the pair; ops whose intervals overlap are a tie. Pairs separated: "
        "the share of all pairs of ops that both profiles separate. Top-5: the five costliest ops in both profiles; "
        "'up to ties' compares them as (op type, shapes), since ops of identical work tie in truth; '5th vs 6th "
        "op' is how far the 5th costliest op's time stands above the 6th's in each profile. Load average "
        f"during the run: {report['load_average'][0]:.1f} to {report['load_average'][1]:.1f} on "
        f"{report['machine']['cores']} cores."
    )
    lines = [
        caption,
        f"Machine: {machine_line(report['machine'])}",
        "",
        ("| model | ops | clock | whole ms | sum / whole (1st, 2nd) | order stable | pairs separated | top-5 same | "
         "up to ties | overlap | 5th vs 6th op | Spearman |"),
        "| --- | ---: | --- | ---: | --- | --- | ---: | --- | --- | ---: | --- | ---: |",
    ]
    for row in report["results"]:
        for clock, cell in row["clocks"].items():
            first, second = cell["profiles"]
            lines.append(
                f"| {row['model']} | {row['num_ops']} | {clock} | {first['whole_median_ms']:.3f} | "
                f"{first['sum_ratio']:.3f}, {second['sum_ratio']:.3f} | {_order(cell)} | {cell['resolved_share']:.0%} | "
                f"{'yes' if cell['top_identical'] else 'no'} | "
                f"{'yes' if cell['top_identical_up_to_ties'] else 'no'} | {cell['top_overlap']}/{TOP} | "
                f"{_gaps(cell['gap_5th_6th'])} | {cell['spearman']:.2f} |")
    return "\n".join(lines) + "\n"


def _coverage(report: dict) -> str:
    """Each interval's coverage, which depends only on the rounds and the number of ops."""
    coverages = {(row["num_ops"], cell["interval_coverage"]) for row in report["results"]
                 for cell in row["clocks"].values()}
    return ", ".join(f"{coverage:.2%} for {num_ops} ops" for num_ops, coverage in sorted(coverages))


def _order(cell: dict) -> str:
    conflicts = len(cell["order_conflicts"])
    return "yes" if cell["order_stable"] else f"no ({conflicts} pair{'s' * (conflicts > 1)})"


def _gaps(gaps: list) -> str:
    return ", ".join("-" if gap is None else f"{gap:.0%} apart" for gap in gaps)


def goal(report: dict) -> list[dict]:
    """The sum claim on the default (wall) clock; the order claim, beyond the noise, and the plain
    top-5 comparison on both clocks."""
    wall = [row["clocks"]["wall"] for row in report["results"]]
    worst = max(cell["max_sum_error"] for cell in wall)
    cells = [cell for row in report["results"] for cell in row["clocks"].values()]
    ties = [cell["top_identical_up_to_ties"] for cell in cells]
    stable = [cell["order_stable"] for cell in cells]
    resolved = [cell["resolved_share"] for cell in cells]
    return [
        {"claim": "`edgeship profile`: per-op times add up to the whole model", "goal": f"within {GOAL:.0%}",
         "measured": f"worst {worst:.1%} off ({len(wall)} models, 2 profiles each)",
         "verdict": "met" if worst <= GOAL else "missed"},
        {"claim": "`edgeship profile`: two profiles order the ops alike, beyond the noise",
         "goal": "no pair of ops in opposite orders where both profiles' intervals (jointly >= 95 %) separate it",
         "measured": f"{sum(stable)} of {len(stable)} model x clock pairs; {min(resolved):.0%} to {max(resolved):.0%} "
                     "of op pairs separated in both",
         "verdict": "met" if all(stable) else "missed"},
        {"claim": "`edgeship profile`: the five costliest ops, two profiles (a tie at 5th place flips it)",
         "goal": "same (up to ops of identical work)",
         "measured": f"{sum(ties)} of {len(ties)} model x clock pairs",
         "verdict": "met" if all(ties) else "missed"},
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", type=Path, default=[], help="Extra .tflite (repeatable).")
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--runs", type=int, default=9, help="Invokes per cut model per round.")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    models = (default_models() or sorted(p for p in VENDORED.glob("*.tflite") if not p.stem.endswith("_edgetpu")))
    models += args.model
    if not models:
        parser.error(f"No models: {CORAL} is absent; pass --model PATH.")
    start_load = os.getloadavg()[0]
    results = measure(models, args)
    report = {
        "description": "`edgeship profile`: per-op sum vs the whole model's median, and top-5 stability over two "
                       "profiles, on each clock.",
        "goal_sum_error_at_most": GOAL,
        "settings": {"threads": 1, "rounds": args.rounds, "runs": args.runs},
        "machine": machine(),
        "load_average": [start_load, os.getloadavg()[0]],
        "results": results,
    }
    markdown = render(report)
    write_results("profile_sum", report, markdown, args.out)
    print(markdown)
    return 0 if all(row["verdict"] == "met" for row in goal(report)) else 1


if __name__ == "__main__":
    sys.exit(main())
