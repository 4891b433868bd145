"""Is NEW slower than OLD? A latency regression check that knows how noisy its numbers are.

Cells of two bench results are matched by model file name and thread count. For each pair the
ratio of medians (NEW / OLD) gets a percentile bootstrap interval built from the per-round
samples: each resample draws rounds with replacement, then samples with replacement within each
drawn round (a two-stage, "cluster" bootstrap). Rounds are the unit because noise comes in
spells that move a whole round; resampling single invokes as if independent would make the
interval too narrow on a shared machine.

A cell **regressed** when its whole interval lies above 1 (slower beyond the noise) and its
ratio exceeds ``1 + max_slowdown`` (slower beyond the tolerance); ``edgeship bench --compare``
then exits 3.

Besides edgeship's own bench JSON, either side may be the text log of LiteRT's
``benchmark_model`` (:func:`parse_litert_log`), so that phone numbers join the same tables.

Example:
    >>> old = {"results": [{"model": "m.tflite", "num_threads": 1, "rounds": [[10.0, 10.2], [10.1, 9.9]]}]}
    >>> new = {"results": [{"model": "m.tflite", "num_threads": 1, "rounds": [[13.0, 13.1], [12.9, 13.2]]}]}
    >>> comparison = compare_results(old, new)
    >>> comparison["passed"], comparison["cells"][0]["verdict"]
    (False, 'slower')
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from edgeship.errors import ConfigError, DataError
from edgeship.runtime.files import read_regular_file

__all__ = ["compare_results", "load_result", "parse_litert_log", "ratio_of_medians_ci"]

NUM_RESAMPLES = 2000
_MAX_RESULT_BYTES = 64 << 20
_CHUNK_VALUES = 4_000_000  # values drawn at once: bounds memory whatever the sample counts


def ratio_of_medians_ci(old_rounds, new_rounds, num_resamples: int = NUM_RESAMPLES, confidence: float = 0.95,
                        seed: int = 0) -> tuple[float, float, float]:
    """The ratio of medians NEW / OLD and its two-stage bootstrap interval (rounds, then samples).

    Args:
        old_rounds: OLD's samples, one list per round.
        new_rounds: NEW's samples, likewise.
        num_resamples: bootstrap resamples.
        confidence: of the percentile interval.
        seed: of the resampling, so that the same results always get the same verdict.

    Returns:
        ``(ratio, low, high)``.

    Example:
        >>> ratio, low, high = ratio_of_medians_ci([[1.0, 1.1], [0.9, 1.0]], [[2.0, 2.1], [1.9, 2.0]])
        >>> ratio, low > 1.5
        (2.0, True)
    """
    rng = np.random.default_rng(seed)
    old, new = _padded(old_rounds), _padded(new_rounds)
    ratio = _median(old_rounds, new_rounds)
    medians_old = _bootstrap_medians(*old, num_resamples, rng)
    medians_new = _bootstrap_medians(*new, num_resamples, rng)
    ratios = medians_new / medians_old
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return ratio, float(low), float(high)


def _median(old_rounds, new_rounds) -> float:
    pooled = [np.concatenate([np.asarray(r, np.float64) for r in rounds]) for rounds in (old_rounds, new_rounds)]
    return float(np.median(pooled[1]) / np.median(pooled[0]))


def _padded(rounds) -> tuple[np.ndarray, np.ndarray]:
    """Rounds as rows of one array (padded with NaN, never drawn) and each round's length."""
    rounds = [np.asarray(r, np.float64) for r in rounds if len(r)]
    if not rounds:
        raise DataError("A cell to compare has no samples.")
    lengths = np.array([r.size for r in rounds])
    table = np.full((len(rounds), lengths.max()), np.nan)
    for i, r in enumerate(rounds):
        table[i, :r.size] = r
    return table, lengths


def _bootstrap_medians(table: np.ndarray, lengths: np.ndarray, num_resamples: int, rng) -> np.ndarray:
    num_rounds, width = table.shape
    medians = np.empty(num_resamples)
    chunk = max(1, _CHUNK_VALUES // (num_rounds * width))
    for start in range(0, num_resamples, chunk):
        size = min(chunk, num_resamples - start)
        picked = rng.integers(num_rounds, size=(size, num_rounds))
        # Every drawn round contributes `width` draws from its own samples: rounds weigh alike.
        within = np.floor(rng.random((size, num_rounds, width)) * lengths[picked][..., None]).astype(np.int64)
        values = table[picked[..., None], within]
        medians[start:start + size] = np.median(values.reshape(size, -1), axis=1)
    return medians


# --------------------------------------------------------------------------- matching and verdicts


def _cells(result: dict, side: str) -> list[dict]:
    cells = [c for c in result.get("results", []) if isinstance(c, dict) and c.get("rounds") and "error" not in c]
    if not cells:
        raise DataError(f"The {side} result has no timed cells with per-round samples: compare bench JSON written by "
                        "edgeship bench (--json or --out), or benchmark_model logs.")
    return cells


def _key(cell: dict, with_target: bool) -> tuple:
    name = Path(str(cell.get("model", ""))).name
    return (cell.get("target") if with_target else None, name, cell.get("num_threads"))


def compare_results(old: dict, new: dict, max_slowdown: float = 0.05, num_resamples: int = NUM_RESAMPLES,
                    confidence: float = 0.95, seed: int = 0) -> dict:
    """Compares every cell that OLD and NEW share; a regression fails the comparison.

    Args:
        old: a bench result (:func:`edgeship.runtime.bench_matrix.bench_matrix`, or :func:`load_result`).
        new: likewise.
        max_slowdown: tolerated slowdown, a fraction (0.05: 5 %).
        num_resamples: bootstrap resamples per cell.
        confidence: of each interval.
        seed: of the bootstrap.

    Returns:
        ``passed``, ``max_slowdown``, ``confidence``, ``cells`` (``model``, ``num_threads``,
        ``target``, both medians, ``ratio``, ``ci``, ``verdict``: ``slower`` (a regression),
        ``slower within tolerance``, ``faster`` or ``same``), ``only_old``, ``only_new``, and
        both results' ``device`` blocks.

    Raises:
        ConfigError: ``max_slowdown`` is negative, or no cell is in both results.
    """
    if max_slowdown < 0:
        raise ConfigError(f"max_slowdown must be >= 0 (a fraction: 0.05 is 5 %); received {max_slowdown}.")
    old_cells, new_cells = _cells(old, "OLD"), _cells(new, "NEW")
    with_target = len({c.get("target") for c in old_cells}) > 1 and len({c.get("target") for c in new_cells}) > 1
    old_by_key = {_key(c, with_target): c for c in old_cells}
    new_by_key = {_key(c, with_target): c for c in new_cells}
    shared = [key for key in old_by_key if key in new_by_key]
    if not shared:
        raise ConfigError(
            "OLD and NEW share no cell: cells are matched by model file name and thread count (OLD has "
            f"{_names(old_by_key)}; NEW has {_names(new_by_key)}). Bench the same files with the same --threads.")
    rows = [_compare_cell(old_by_key[key], new_by_key[key], max_slowdown, num_resamples, confidence, seed)
            for key in shared]
    return {
        "passed": not any(row["verdict"] == "slower" for row in rows), "max_slowdown": max_slowdown,
        "confidence": confidence, "num_resamples": num_resamples, "cells": rows,
        "only_old": [_names({k: None}) for k in old_by_key if k not in new_by_key],
        "only_new": [_names({k: None}) for k in new_by_key if k not in old_by_key],
        "old_device": old.get("device"), "new_device": new.get("device"),
    }


def _names(keys: dict) -> str:
    return ", ".join(f"{name} x{threads or 'auto'}" + (f" on {target}" if target else "")
                     for target, name, threads in keys) or "none"


def _compare_cell(old: dict, new: dict, max_slowdown: float, num_resamples: int, confidence: float,
                  seed: int) -> dict:
    ratio, low, high = ratio_of_medians_ci(old["rounds"], new["rounds"], num_resamples, confidence, seed)
    if low > 1:
        verdict = "slower" if ratio > 1 + max_slowdown else "slower within tolerance"
    else:
        verdict = "faster" if high < 1 else "same"
    return {
        "model": Path(str(new.get("model", ""))).name, "num_threads": new.get("num_threads"),
        "target": new.get("target"), "old_median_ms": float(np.median(np.concatenate(old["rounds"]))),
        "new_median_ms": float(np.median(np.concatenate(new["rounds"]))), "old_rounds": len(old["rounds"]),
        "new_rounds": len(new["rounds"]), "ratio": ratio, "ci": [low, high], "verdict": verdict,
    }


# --------------------------------------------------------------------------- reading results


def load_result(path: str | os.PathLike) -> dict:
    """A bench result from a file: edgeship's bench JSON, or a ``benchmark_model`` text log.

    Raises:
        DataError: the file is missing, too large, or neither format.
    """
    try:
        text = read_regular_file(path, _MAX_RESULT_BYTES, follow_links=True).decode("utf-8", "replace")
    except FileNotFoundError as e:
        raise DataError(f"{path} does not exist: pass a bench JSON (edgeship bench --json or --out) or a "
                        "benchmark_model log.") from e
    except (OSError, ValueError) as e:
        raise DataError(f"Cannot read {path}: {e}.") from e
    if text.lstrip().startswith("{"):
        try:
            result = json.loads(text)
        except (ValueError, RecursionError) as e:  # RecursionError: arrays nested thousands deep
            raise DataError(f"{path} is not valid JSON ({e}); pass the output of `edgeship bench --json`.") from e
        if not isinstance(result, dict) or not isinstance(result.get("results"), list):
            raise DataError(f"{path} is JSON but not a bench result (no \"results\" list).")
        return result
    result = parse_litert_log(text, default_model=Path(path).stem)
    if not result["results"]:
        raise DataError(f"{path} is neither bench JSON nor a benchmark_model log (no 'Inference timings in us' line).")
    return result


_SUMMARY = re.compile(r"Inference timings in us: Init: ([\d.e+]+), First inference: ([\d.e+]+), "
                      r"Warmup \(avg\): ([\d.e+]+), Inference \(avg\): ([\d.e+]+)")
_STATS = re.compile(r"count=(\d+)(?: first=([\d.e+]+))? curr=([\d.e+]+)(?: min=([\d.e+]+) max=([\d.e+]+) "
                    r"avg=([\d.e+]+) std=([\d.e+]+))?(?: p5=[\d.e+]+ median=([\d.e+]+))?")
_GRAPH = re.compile(r"Graph: \[([^\]]*)\]")
_THREADS = re.compile(r"Num threads: \[(-?\d+)\]")
_PEAK = re.compile(r"(?:Overall peak memory footprint \(MB\) via periodic monitoring: |"
                   r"Peak memory footprint \(MB\): init=[\d.e+]+ overall=)([\d.e+]+)")
_DELEGATE = re.compile(r"Use (gpu|nnapi|hexagon|coreml) ?: \[(?:1|true)\]", re.IGNORECASE)


def parse_litert_log(text: str, default_model: str = "model") -> dict:
    """Cells of a bench result from the text log of LiteRT's ``benchmark_model`` (also through
    ``adb logcat``): each ``Inference timings in us`` summary is one run.

    Runs of the same graph and thread count become one cell with one round per run; a round's
    sample is the run's median invoke time (``avg`` where the log has no median), since the log
    holds no single invokes. So: run ``benchmark_model`` several times into one log for an
    interval that reflects run-to-run noise.

    Example:
        >>> log = ("INFO: Graph: [/data/local/tmp/m.tflite]\\nINFO: Num threads: [4]\\n"
        ...        "INFO: count=50 first=9100 curr=8800 min=8700 max=9400 avg=8900 std=120\\n"
        ...        "INFO: Inference timings in us: Init: 15000, First inference: 21000, "
        ...        "Warmup (avg): 9500, Inference (avg): 8900\\n")
        >>> cell = parse_litert_log(log)["results"][0]
        >>> cell["model"], cell["num_threads"], cell["median_ms"], cell["init_ms"]
        ('m.tflite', 4, 8.9, 15.0)
    """
    runs, state = [], {"graph": None, "threads": None, "stats": None, "device": "cpu"}
    for line in text.splitlines():
        if match := _GRAPH.search(line):
            state.update(graph=match.group(1), device="cpu")
        elif match := _THREADS.search(line):
            state["threads"] = int(match.group(1)) if int(match.group(1)) > 0 else None
        elif match := _DELEGATE.search(line):
            state["device"] = match.group(1).lower()
        elif match := _STATS.search(line):
            state["stats"] = match
        elif match := _SUMMARY.search(line):
            runs.append(_litert_run(match, state, default_model))
            state["stats"] = None
        elif (match := _PEAK.search(line)) and runs:
            runs[-1]["peak_memory_mb"] = float(match.group(1))
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["model"], run["num_threads"], run["device"]), []).append(run)
    return {"device": None, "source": "benchmark_model", "results": [_litert_cell(group) for group in groups.values()]}


def _litert_run(summary: re.Match, state: dict, default_model: str) -> dict:
    init_us, first_us, _, avg_us = (float(v) for v in summary.groups())
    stats = state["stats"]
    median_us = float(stats.group(8)) if stats and stats.group(8) else None
    return {
        "model": Path(state["graph"]).name if state["graph"] else default_model, "num_threads": state["threads"],
        "device": state["device"], "init_ms": init_us / 1000, "first_inference_ms": first_us / 1000,
        "sample_ms": (median_us if median_us is not None else avg_us) / 1000, "avg_ms": avg_us / 1000,
        "statistic": "median" if median_us is not None else "avg",
        "count": int(stats.group(1)) if stats else None,
        "std_ms": float(stats.group(7)) / 1000 if stats and stats.group(7) else None,
        "min_ms": float(stats.group(4)) / 1000 if stats and stats.group(4) else None,
        "max_ms": float(stats.group(5)) / 1000 if stats and stats.group(5) else None,
    }


def _litert_cell(runs: list[dict]) -> dict:
    samples = [run["sample_ms"] for run in runs]
    median = float(np.median(samples))

    def present(key: str) -> list[float]:
        return [run[key] for run in runs if run.get(key) is not None]

    return {
        "model": runs[0]["model"], "num_threads": runs[0]["num_threads"], "device": runs[0]["device"],
        "source": "benchmark_model", "statistic": runs[0]["statistic"],
        "init_ms": float(np.median(present("init_ms"))),
        "first_inference_ms": float(np.median(present("first_inference_ms"))),
        "num_rounds": len(runs), "num_runs": sum(present("count")) or None, "median_ms": median,
        "mean_ms": float(np.mean(present("avg_ms"))),
        "std_ms": float(np.mean(present("std_ms"))) if present("std_ms") else None,  # within a run, over invokes
        "min_ms": min(present("min_ms"), default=None), "max_ms": max(present("max_ms"), default=None),
        "p90_ms": None, "p99_ms": None, "images_per_s": 1000 / median if median > 0 else None,
        "peak_memory_mb": max(present("peak_memory_mb"), default=None), "rounds": [[s] for s in samples],
    }
