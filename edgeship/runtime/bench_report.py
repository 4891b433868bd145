"""A bench result on disk: ``bench.json`` (every round's samples), ``bench.md`` and ``bench.png``.

Example:
    >>> result = {"device": None, "devices": {}, "config": {}, "results": []}
    >>> bench_markdown(result).splitlines()[0]
    '# edgeship bench'
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from edgeship.errors import ConfigError
from edgeship.runtime.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgeship.runtime.plot import tradeoff_image
from edgeship.runtime.render import bench_columns, device_line

__all__ = ["BENCH_FILES", "bench_markdown", "tradeoff_points", "write_bench"]

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
    text += ["", "| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    text += ["| " + " | ".join(line) + " |" for line in lines]
    errors = [f"- {Path(str(c['model'])).name}: {c['error']}" for c in result["results"] if "error" in c]
    return "\n".join(text + ([""] + errors if errors else [])) + "\n"


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
                       "series": f"{cell.get('target')}: {threads}" if several_targets else threads})
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
