"""The offline Edge TPU mapping prediction against what Google's compiler really did.

For every (source, compiled) pair found (``X.tflite`` beside ``X_edgetpu.tflite``), the truth is
read from the compiled file (ops left outside ``edgetpu-custom-op`` ran on the CPU) and set
beside :func:`edgeship.edgetpu.predict_mapping` of the source: ops on the Edge TPU, ops on the
CPU by name, and whether they agree. Pairs from Google's Coral test data
(github.com/google-coral/test_data) are the reference; any folder of pairs can be added.

    python benchmarks/edgetpu_mapping.py [--pairs FOLDER ...]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, machine, machine_line, write_results  # noqa: E402

DEFAULT_FOLDERS = [ROOT.parent / "shared" / "external" / "coral", ROOT.parent / "shared" / "external" / "edgetpu"]


def find_pairs(folders: list[Path]) -> list[tuple[Path, Path]]:
    pairs = {}
    for folder in folders:
        for compiled in sorted(folder.glob("*_edgetpu.tflite")):
            source = compiled.with_name(compiled.name.replace("_edgetpu.tflite", ".tflite"))
            if source.exists() and source.stat().st_size and compiled.stat().st_size:
                # The same model may sit in two folders under two names: count it once.
                pairs.setdefault(hashlib.sha256(source.read_bytes()).hexdigest(), (source, compiled))
    return list(pairs.values())


def measure(source: Path, compiled: Path) -> dict:
    from edgeship.edgetpu.mapping import compiled_mapping, predict_mapping
    from edgeship.runtime.graph import read_graph

    truth = compiled_mapping(compiled)
    num_ops = len(read_graph(source).ops)
    report = predict_mapping(source)
    actual_on_edgetpu = num_ops - sum(truth["on_cpu"].values())
    return {
        "model": source.name, "num_ops": num_ops, "compilable": report.compilable,
        "predicted_on_edgetpu": report.on_edgetpu, "actual_on_edgetpu": actual_on_edgetpu,
        "predicted_on_cpu": report.on_cpu, "actual_on_cpu": truth["on_cpu"],
        "predicted_before_segment": report.num_before_segment, "actual_before_segment": truth["num_before_segment"],
        "actual_segments": truth["num_edgetpu_segments"], "actual_cpu_inside": truth["num_cpu_inside"],
        "min_runtime_version": report.min_runtime_version,
        "uncertain": sum(p.uncertain for p in report.placements),
        "agrees": report.compilable and report.on_cpu == truth["on_cpu"] and report.on_edgetpu == actual_on_edgetpu
        and report.num_before_segment == truth["num_before_segment"],
    }


def render(report: dict) -> str:
    """The results as a markdown table (``report``: this script's JSON)."""
    rows, info = report["pairs"], report["machine"]

    def cpu(counts: dict) -> str:
        return ", ".join(f"{k} x{v}" for k, v in counts.items()) or "-"

    lines = ["| model | ops | on Edge TPU predicted / actual | on CPU predicted | on CPU actual | runtime | agrees |",
             "| --- | ---: | ---: | --- | --- | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['num_ops']} | {r['predicted_on_edgetpu']} / {r['actual_on_edgetpu']} | "
                     f"{cpu(r['predicted_on_cpu'])} | {cpu(r['actual_on_cpu'])} | {r['min_runtime_version']} | "
                     f"{'yes' if r['agrees'] else '**no**'} |")
    agreed = sum(r["agrees"] for r in rows)
    return "\n".join([f"Prediction agrees with the compiled file on {agreed} of {len(rows)} pairs.", "", *lines, "",
                      machine_line(info)]) + "\n"


def goal(report: dict) -> dict:
    """Where the goal stands: the prediction agrees with the compiler on every pair."""
    pairs = report["pairs"]
    agree = sum(row["agrees"] for row in pairs)
    return {
        "claim": "offline Edge TPU mapping vs Google's compiler (ops on the Edge TPU and on the CPU)",
        "goal": "agrees on every pair",
        "measured": f"{agree} of {len(pairs)} pairs",
        "verdict": "met" if agree == len(pairs) else "missed",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, nargs="*", default=[], help="More folders of (X, X_edgetpu) pairs.")
    args = parser.parse_args()
    pairs = find_pairs(DEFAULT_FOLDERS + args.pairs)
    if not pairs:
        sys.exit("No (X.tflite, X_edgetpu.tflite) pairs found; pass --pairs FOLDER.")
    rows = [measure(source, compiled) for source, compiled in pairs]
    report = {"machine": machine(), "pairs": rows}
    path = write_results("edgetpu_mapping", report, render(report))
    print(path.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
