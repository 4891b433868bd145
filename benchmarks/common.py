"""What every benchmark records: the machine it ran on, timing summaries, and its result files.

Imported by the benchmark scripts (run as ``python benchmarks/<name>.py``, so this folder is
on ``sys.path``) and by ``render.py``. It imports neither TensorFlow nor LiteRT.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["CORAL", "FLOWERS", "MACHINE_KEYS", "RESULTS", "ROOT", "default_models", "flower_photos", "machine",
           "machine_line", "summarize", "write_results"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
CORAL = ROOT.parent / "shared" / "external" / "coral"
FLOWERS = ROOT.parent / "shared" / "data" / "flowers5"
_PACKAGES = ("numpy", "pillow", "ai-edge-litert", "tensorflow", "tf-keras")
# What every results file records about its machine (a test checks each JSON for these).
MACHINE_KEYS = ("cpu", "cores", "platform", "python", *_PACKAGES, "date")


def default_models() -> list[Path]:
    """Coral's CPU models in ../shared/external/coral (their Edge TPU twins left out), or none."""
    if not CORAL.exists():
        return []
    return sorted(p for p in CORAL.glob("*.tflite") if not p.stem.endswith("_edgetpu"))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine() -> dict:
    """CPU model, core count, OS, Python and package versions, and today's date (UTC)."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **{name: _package_version(name) for name in _PACKAGES},
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
    }


def machine_line(info: dict) -> str:
    """One line naming the machine for a markdown table's caption."""
    versions = ", ".join(f"{name} {info[name]}" for name in _PACKAGES if info.get(name))
    return f"{info['cpu']}, {info['cores']} cores, Python {info['python']}, {versions}; {info['date']}."


def summarize(seconds: Sequence[float]) -> dict:
    """Median, mean, p90, p99, min and max of per-item times, in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    return {
        "median_ms": float(np.median(ms)),
        "mean_ms": float(ms.mean()),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "count": int(ms.size),
    }


def flower_photos(count: int) -> list[Path]:
    """``count`` flowers5 photos, taken from every class in turn (sorted, so every run reads the same)."""
    if not FLOWERS.is_dir():
        raise SystemExit(f"{FLOWERS} is absent: the benchmarks read the shared flowers5 photos.")
    per_class = [sorted(folder.glob("*.jpg")) for folder in sorted(FLOWERS.iterdir()) if folder.is_dir()]
    photos = [group[i] for i in range(max(map(len, per_class))) for group in per_class if i < len(group)]
    return photos[:count]


def write_results(name: str, report: dict, markdown: str, out: Path | None = None) -> Path:
    """Writes ``results/<name>.json`` and the rendered ``.md`` beside it; returns the JSON path."""
    out = out or RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": name, **report}, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    return out


def ratio_goal(report: dict, claim: str) -> dict:
    """The goal row of a benchmark whose results each have a ``ratio`` held to
    ``report["goal_ratio_at_most"]``: the claim, the goal, what was measured, met or missed."""
    ratios = [row["ratio"] for row in report["results"]]
    return {
        "claim": claim,
        "goal": f"ratio ≤ {report['goal_ratio_at_most']}",
        "measured": " and ".join(f"{ratio:.3f}" for ratio in ratios),
        "verdict": "met" if report["all_within_goal"] else "missed",
    }


def ratio_arguments(doc: str, rounds: int, runs_help: str):
    """The command line shared by the benchmarks that time one invoke two ways, side by side."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--model", action="append", type=Path, default=[], help="Extra .tflite (repeatable).")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200, help=runs_help)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--out", type=Path, default=None)
    return parser


def ratio_report(description: str, args, rows: list[dict], goal_ratio: float) -> dict:
    """The results JSON of such a benchmark: its settings, the machine, and each model's ratio."""
    return {
        "description": description,
        "goal_ratio_at_most": goal_ratio,
        "settings": {"threads": args.threads, "runs": args.runs, "warmup": args.warmup, "rounds": args.rounds},
        "machine": machine(),
        "results": rows,
        "max_ratio": max(row["ratio"] for row in rows),
        "all_within_goal": all(row["within_goal"] for row in rows),
    }


def copy_run(run_dir: Path, folder: Path) -> Path:
    """A copy of a finished run without its export, to export into (its own export is left alone).
    A copy, not links: a run directory holding links edgeship did not make is refused."""
    import shutil

    return Path(shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns("export", "checkpoints", ".*")))


def require_finished_runs(runs: Sequence[Path]) -> None:
    """Exits naming any of ``runs`` that is not a finished training run; then logs edgeship's
    progress to stderr, as a benchmark over runs does."""
    import logging

    missing = [str(run) for run in runs if not (Path(run) / "metrics.json").exists()]
    if missing:
        raise SystemExit(f"Not finished training runs: {', '.join(missing)}. Run benchmarks/accuracy.py first.")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("edgeship").setLevel(logging.INFO)
