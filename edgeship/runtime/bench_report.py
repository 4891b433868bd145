"""A bench result on disk: ``bench.json`` (every round's samples), ``bench.md`` and ``bench.png``.

Saved results render the same way (``edgeship bench --render RESULT...``): :func:`merge_results`
puts the cells of several bench JSON files and LiteRT ``benchmark_model`` logs (a phone's
numbers) into one result, so that they share one table and one plot.

Example:
    >>> result = {"device": None, "devices": {}, "config": {}, "results": []}
    >>> bench_markdown(result).splitlines()[0]
    '# edgeship bench'
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from edgeship.errors import ConfigError, DataError
from edgeship.runtime.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgeship.runtime.plot import tradeoff_image
from edgeship.runtime.render import bench_columns, device_line

__all__ = ["BENCH_FILES", "bench_markdown", "merge_results", "tradeoff_points", "write_bench"]

logger = logging.getLogger(__name__)

BENCH_FILES = ("bench.json", "bench.md", "bench.png")


def bench_markdown(result: dict) -> str:
    """The bench table as markdown, under the device(s) it was measured on."""
    headers, lines = bench_columns(result["results"])
    config = result.get("config", {})
    devices = result.get("devices") or {"": result.get("device")}
    text = ["# edgeship bench", ""]
    text += [f"- {f'**{name}**: ' if name else ''}{device_line(identity)}" for name, identity in devices.items()]
    if config:
        text += ["", f"{config.get('rounds')} interleaved rounds of {config.get('runs_per_round')} timed invokes per "
                     f"cell (after {config.get('num_warmup_runs')} warm-up invokes); times in ms."]
    if result.get("sources"):
        text += ["", "Merged from " + ", ".join(f"`{Path(source).name}`" for source in result["sources"]) + ". A "
                 "benchmark_model log's cell has one round per run in the log (that run's median invoke)."]
    text += ["", "| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    text += ["| " + " | ".join(line) + " |" for line in lines]
    errors = [f"- {Path(str(c['model'])).name}: {c['error']}" for c in result["results"] if "error" in c]
    return "\n".join(text + ([""] + errors if errors else [])) + "\n"


def merge_results(results: Sequence[tuple[str, dict]], run: str | os.PathLike | None = None) -> dict:
    """Saved bench results as one: every cell of each, under the device it was measured on.

    A cell keeps its ``target`` (``local``, or the ``--on`` name it was benched on); a cell
    without one (a ``benchmark_model`` log's) takes its file's stem, so ``pixel7.log`` is
    target ``pixel7``. A log has no accuracy: with ``run``, each cell whose model file name is
    one of the run's exported variants gets that variant's test accuracy and agreement from the
    export report (the name a file had when pushed to the phone is the name it had in the run),
    which puts it on the plot; the Pareto front is marked again, per target.

    Args:
        results: ``(source, result)`` pairs: the file each came from and what
            :func:`edgeship.runtime.bench_compare.load_result` read of it.
        run: an exported run directory whose export report gives the accuracy.

    Returns:
        A bench result: ``devices`` (target -> identity; None for a log), ``sources``, ``results``.

    Raises:
        DataError: two results hold the same cell (model, threads, target).
        ConfigError: ``run`` is not an exported run directory.

    Example:
        >>> desk = {"devices": {"local": None}, "results": [{"model": "m.tflite", "num_threads": 1, "target": "local"}]}
        >>> phone = {"results": [{"model": "m.tflite", "num_threads": 4}]}
        >>> merged = merge_results([("desk.json", desk), ("pixel7.log", phone)])
        >>> [(c["target"], c["num_threads"]) for c in merged["results"]], sorted(merged["devices"])
        ([('local', 1), ('pixel7', 4)], ['local', 'pixel7'])
    """
    from edgeship.runtime.bench_matrix import join_accuracy, mark_pareto, resolve_models

    merged = {"device": None, "devices": {}, "config": {}, "sources": [], "results": []}
    seen: dict[tuple, str] = {}
    for source, result in results:
        stem = Path(source).stem
        cells = [dict(cell, target=cell.get("target") or stem) for cell in result.get("results", [])]
        for cell in cells:
            key = (Path(str(cell.get("model"))).name, cell.get("num_threads"), cell["target"])
            if key in seen:
                raise DataError(f"{seen[key]} and {source} both hold {key[0]} x{key[1] or 'auto'} on {key[2]}: "
                                "render one of them, or rename a log (its name is its target) to tell them apart.")
            seen[key] = str(source)
        devices = result.get("devices") or {}
        for target in dict.fromkeys(cell["target"] for cell in cells):
            merged["devices"][target] = devices.get(target, result.get("device"))
        merged["device"] = merged["device"] or result.get("device")
        merged["sources"].append(str(source))
        merged["results"] += cells
    if run is not None:
        if not Path(run).is_dir():
            raise ConfigError(f"--run takes an exported run directory; {run} is not a folder.")
        join_accuracy(merged["results"], resolve_models([run]))
    mark_pareto(merged["results"])
    return merged


def tradeoff_points(cells: list[dict]) -> list[dict]:
    """The plot's points: each timed cell with an accuracy (a run directory's variants)."""
    several_targets = len({c.get("target") for c in cells}) > 1
    points = []
    for cell in cells:
        if "median_ms" not in cell or not isinstance(cell.get("test_accuracy"), (int, float)):
            continue
        count = cell.get("num_threads")
        threads = "LiteRT's default threads" if count is None else f"{count} thread" + ("s" if count > 1 else "")
        points.append({"label": cell.get("variant") or Path(str(cell["model"])).stem, "latency_ms": cell["median_ms"],
                       "accuracy": 100 * cell["test_accuracy"], "front": bool(cell.get("pareto")),
                       "series": f"{cell.get('target')}: {threads}" if several_targets else threads,
                       "group": cell.get("target")})
    return points


def write_bench(result: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Writes ``bench.json``, ``bench.md`` and, when cells carry an accuracy, ``bench.png``.

    Raises:
        ConfigError: ``out_dir`` cannot be created or written.
    """
    out = Path(out_dir)
    json_name, markdown_name, plot_name = BENCH_FILES
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = [atomic_write_json(out / json_name, result), atomic_write_text(out / markdown_name,
                                                                                 bench_markdown(result))]
        points = tradeoff_points(result["results"])
        if points:
            devices = ", ".join(sorted({str(c.get("target")) for c in result["results"]}))
            image = tradeoff_image(points, f"edgeship bench: accuracy against latency ({devices})")
            written.append(atomic_write_bytes(out / plot_name, _png(image)))
        else:
            logger.info("No plot: no cell has a test accuracy (bench a run directory for the accuracy/latency trade)")
    except OSError as e:
        raise ConfigError(f"Cannot write the bench results to {out} ({e}); pass --out with a writable folder.") from e
    return written


def _png(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
