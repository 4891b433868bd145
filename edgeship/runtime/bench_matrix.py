"""The benchmark matrix: every model at every thread count, timed in interleaved rounds.

A shared machine is noisy, and noise comes in spells (another job starts, the CPU clocks
down). Timing model A for a minute and then model B would charge a spell to one of them. Here
each round times every model × threads cell once, a block of invokes each, and the rounds
repeat, so a spell hurts all cells alike; the result keeps every round's samples so that
:func:`edgeship.runtime.bench_compare.compare_results` can tell noise from a regression.

A run directory stands for its exported variants, each with the test accuracy and agreement
with the float model from its export report: one table, and one plot, of the trade.

Example:
    >>> result = bench_matrix(["runs/flowers"], MatrixConfig(threads=(1, 2), rounds=2, num_runs=4))
    >>> [(c["variant"], c["num_threads"]) for c in result["results"]][:3]
    [('int8', 1), ('int8', 2), ('int8-ptq', 1)]
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np

from edgeship.config import option
from edgeship.errors import ConfigError, EdgeshipError
from edgeship.runtime.bench import BenchConfig, latency_stats, peak_memory_mb, prepare
from edgeship.runtime.device import invoke_error, parse_device
from edgeship.runtime.device_info import device_identity, usable_cores
from edgeship.runtime.rundir import RunDir, is_inside_relative

__all__ = ["ALL_THREADS", "LOCAL", "MatrixConfig", "bench_matrix", "bench_targets", "join_accuracy", "mark_pareto",
           "pareto_front", "parse_threads"]

logger = logging.getLogger(__name__)

ALL_THREADS = "all"   # in --threads: as many threads as this process may use cores
LOCAL = "local"       # the target name of this machine


@dataclass(frozen=True)
class MatrixConfig:
    """How to time the cells of the matrix."""

    threads: tuple = option((None,), "Thread counts to sweep; None: LiteRT's default (see parse_threads).", tuple)
    rounds: int = option(5, "Rounds: each times every model x threads cell once, interleaved.")
    num_runs: int = option(100, "Timed invokes per cell in total, split evenly over the rounds.")
    num_warmup_runs: int = option(10, "Untimed invokes after each cell's first, before the first round.")
    # The previous cell's weights fill the caches: one invoke makes this cell's samples warm again.
    num_round_warmup_runs: int = option(1, "Untimed invokes per cell at the start of each round.")
    device: str = option("cpu", "cpu | edgetpu | usb[:N] | pci[:N].")
    seed: int = option(0, "Seed of the fixed random input.")

    def __post_init__(self):
        if not self.threads:
            raise ConfigError("threads must name at least one thread count, e.g. (1, 2, 4), or (None,) for LiteRT's "
                              "default.")
        for count in self.threads:
            if count is not None and (not isinstance(count, int) or count < 1):
                raise ConfigError(f"threads must be positive integers or None; received {self.threads!r}.")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be at least 1; received {self.rounds}.")
        if self.num_runs < 1:
            raise ConfigError(f"num_runs must be at least 1; received {self.num_runs}.")
        if self.num_warmup_runs < 0 or self.num_round_warmup_runs < 0:
            raise ConfigError("num_warmup_runs and num_round_warmup_runs must be >= 0; received "
                              f"{self.num_warmup_runs} and {self.num_round_warmup_runs}.")
        parse_device(self.device)

    @property
    def runs_per_round(self) -> int:
        return math.ceil(self.num_runs / self.rounds)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["threads"] = list(self.threads)
        values["runs_per_round"] = self.runs_per_round
        # The single-setting bench's key, for readers of its JSON.
        values["num_threads"] = self.threads[0] if len(self.threads) == 1 else None
        return values


def parse_threads(text: str | None) -> tuple:
    """``--threads``: comma-separated counts; ``all`` is the cores this process may use.

    Example:
        >>> parse_threads("4,1,2,4"), parse_threads(None)
        ((1, 2, 4), (None,))
    """
    if text is None or not text.strip():
        return (None,)
    counts = set()
    for item in text.split(","):
        item = item.strip().lower()
        if item == ALL_THREADS:
            counts.add(usable_cores())
        elif item.isdigit() and int(item) >= 1:
            counts.add(int(item))
        else:
            raise ConfigError(f"--threads takes thread counts such as 1,2,4, or {ALL_THREADS!r} (the {usable_cores()} "
                              f"usable cores here); received {text!r}.")
    return tuple(sorted(counts))


# --------------------------------------------------------------------------- which models


def _run_variants(run: RunDir) -> list[tuple[Path, dict]]:
    """Each exported variant of ``run`` with what its export report says of it."""
    report = run.read_json(run.report_path)
    variants = report.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise ConfigError(f"{run.report_path} lists no variants; run `edgeship export {run.path}` again.")
    models = []
    for kind, row in variants.items():
        name = row.get("file") if isinstance(row, dict) else None
        # The report is data: a file name in it must stay inside the export folder.
        if not isinstance(name, str) or not is_inside_relative(name) or len(PurePosixPath(name).parts) != 1:
            raise ConfigError(f"{run.report_path} is damaged (variant {kind!r} names file {name!r}); export again.")
        models.append((run.export_dir / name, {"variant": str(kind), "test_accuracy": row.get("test_accuracy"),
                                               "agreement": row.get("agreement")}))
    return models


def resolve_models(paths: Sequence[str | os.PathLike]) -> list[tuple[Path, dict]]:
    """Model files to time: a run directory stands for its exported variants (with their accuracy).

    Raises:
        ConfigError: a folder that is not an exported run directory, or a damaged report.
    """
    models = []
    for path in map(Path, paths):
        if path.is_dir():
            run = RunDir(path)
            if not run.report_path.is_file():
                raise ConfigError(f"{path} is a folder but not an exported run directory (no {run.report_path}): "
                                  f"pass .tflite files, or run `edgeship export {path}` first.")
            models += _run_variants(run)
        else:
            models.append((path, {}))
    return models


# --------------------------------------------------------------------------- timing


class _Cell:
    """One model at one thread count: its interpreter stays loaded across the rounds."""

    def __init__(self, path: Path, info: dict, threads: int | None, config: MatrixConfig):
        self.path, self.row, self.rounds = path, {**info}, []
        self.bench = BenchConfig(num_warmup_runs=config.num_warmup_runs, num_runs=config.runs_per_round,
                                 num_threads=threads, device=config.device, seed=config.seed)
        self.interpreter = None
        self.label = f"{path.name} x{threads or 'auto'}"

    def load(self) -> None:
        try:
            self.interpreter, loaded = prepare(self.path, self.bench)
            self.row.update(loaded)
            self.row["batch"] = max(1, int(self.interpreter.get_input_details()[0]["shape"][0]))
            start = time.perf_counter()
            self.interpreter.invoke()
            self.row["first_inference_ms"] = (time.perf_counter() - start) * 1000
            self._invoke(self.bench.num_warmup_runs)
            self.row["peak_memory_mb"] = peak_memory_mb()  # a running maximum, as in `benchmark`
        except EdgeshipError as e:
            self._fail(e)
        except (RuntimeError, ValueError, TypeError) as e:
            self._fail(invoke_error(self.path, self.row.get("device", self.bench.device), e))

    def _invoke(self, count: int) -> None:
        for _ in range(count):
            self.interpreter.invoke()

    def _fail(self, error: EdgeshipError) -> None:
        self.row = {"model": str(self.path), "num_threads": self.bench.num_threads, **{
            k: v for k, v in self.row.items() if k in ("variant", "test_accuracy", "agreement")}, "error": str(error)}
        self.interpreter = None

    def time_round(self, num_warmup: int) -> None:
        """One block: warm-up, then ``runs_per_round`` invokes, each alone in its timing window."""
        clock, times = time.perf_counter, np.empty(self.bench.num_runs, dtype=np.float64)
        try:
            self._invoke(num_warmup)
            for i in range(times.size):
                start = clock()
                self.interpreter.invoke()
                times[i] = clock() - start
        except (RuntimeError, ValueError, TypeError) as e:
            self._fail(invoke_error(self.path, self.row.get("device", "cpu"), e))
            return
        self.rounds.append((times * 1000).tolist())

    def result(self) -> dict:
        if self.interpreter is None:
            return self.row
        samples = np.concatenate([np.asarray(r) for r in self.rounds])
        stats = latency_stats(samples)
        return {**self.row, "num_rounds": len(self.rounds), "num_runs": int(samples.size), **stats,
                "images_per_s": self.row["batch"] * 1000 / stats["median_ms"] if stats["median_ms"] > 0 else None,
                "rounds": self.rounds}


def bench_matrix(
    models: Sequence[str | os.PathLike],
    config: MatrixConfig = MatrixConfig(),
    progress: Callable[[int, str], None] | None = None,
) -> dict:
    """Times every model (or run directory's variants) at every thread count, in interleaved rounds.

    Args:
        models: ``.tflite`` files and run directories.
        config: thread counts, rounds, invokes.
        progress: called as ``progress(round_index, cell_label)`` before each block of invokes
            (round -1: loading), in the order the blocks run.

    Returns:
        ``device`` (:func:`~edgeship.runtime.device_info.device_identity`), ``devices``
        (``{"local": device}``), ``config`` and ``results``: one cell per model × threads, in
        that order, with the fields of :func:`edgeship.runtime.bench.benchmark` over all
        rounds, ``num_rounds``, ``rounds`` (each round's samples in ms), ``images_per_s``,
        ``target`` and, for a run's variants, ``variant``, ``test_accuracy``, ``agreement``
        and ``pareto`` (on the latency/accuracy front). A cell that cannot run is
        ``{"model", "num_threads", "error"}``.

    Example:
        >>> result = bench_matrix(["model_int8.tflite"], MatrixConfig(threads=(1, 2), rounds=3, num_runs=3))
        >>> [len(cell["rounds"]) for cell in result["results"]]
        [3, 3]
    """
    cells = [_Cell(path, info, threads, config) for path, info in resolve_models(models) for threads in config.threads]
    for cell in cells:
        if progress is not None:
            progress(-1, cell.label)
        cell.load()
    for round_index in range(config.rounds):
        for cell in cells:
            if cell.interpreter is None:
                continue
            if progress is not None:
                progress(round_index, cell.label)
            cell.time_round(config.num_round_warmup_runs)
    results = [dict(cell.result(), target=LOCAL) for cell in cells]
    mark_pareto(results)
    identity = device_identity()
    return {"device": identity, "devices": {LOCAL: identity}, "config": config.to_dict(), "results": results}


# --------------------------------------------------------------------------- the trade


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which ``(latency, accuracy)`` points no other point beats: as fast or faster and as
    accurate or more, better in one.

    Example:
        >>> pareto_front([(1.0, 0.90), (2.0, 0.95), (3.0, 0.93), (1.0, 0.90)])
        [True, True, False, True]
    """
    front = []
    for latency, accuracy in points:
        beaten = any(other_latency <= latency and other_accuracy >= accuracy
                     and (other_latency < latency or other_accuracy > accuracy)
                     for other_latency, other_accuracy in points)
        front.append(not beaten)
    return front


def mark_pareto(cells: list[dict]) -> None:
    """Sets ``pareto`` on each timed cell with an accuracy, per target (devices are not rivals)."""
    for target in {cell.get("target") for cell in cells}:
        scored = [cell for cell in cells if cell.get("target") == target and "median_ms" in cell
                  and isinstance(cell.get("test_accuracy"), (int, float))]
        for cell, on_front in zip(scored, pareto_front([(c["median_ms"], c["test_accuracy"]) for c in scored])):
            cell["pareto"] = on_front


# --------------------------------------------------------------------------- devices over ssh


def remote_argv(model_files: Sequence[Path], threads_text: str | None, config: MatrixConfig) -> list[str]:
    """The ``edgeship`` arguments that run this matrix on another device (``all`` resolves there)."""
    argv = ["bench", *map(str, model_files), "--rounds", str(config.rounds), "--num-runs", str(config.num_runs),
            "--num-warmup-runs", str(config.num_warmup_runs), "--num-round-warmup-runs",
            str(config.num_round_warmup_runs), "--seed", str(config.seed), "--device", config.device]
    return argv + (["--threads", threads_text] if threads_text else [])


def bench_targets(
    models: Sequence[str | os.PathLike],
    targets: Sequence[str],
    config: MatrixConfig = MatrixConfig(),
    threads_text: str | None = None,
    progress: Callable[[int, str], None] | None = None,
) -> dict:
    """The matrix on each target (``local``: here; else an ssh destination), merged in one result.

    Each remote target gets the model files over ``ssh`` (:func:`edgeship.runtime.remote.run_remote`)
    and runs ``edgeship bench`` there; its cells are recorded with ``target`` set to its name
    and its identity under ``devices``. A run directory's accuracy joins the remote cells by
    file name.

    Raises:
        RemoteError: a target could not be reached or its bench failed.
    """
    resolved = resolve_models(models)
    merged = {"device": None, "devices": {}, "config": config.to_dict(), "results": []}
    for target in dict.fromkeys(targets):
        if target == LOCAL:
            result = bench_matrix(models, config, progress)
        else:
            from edgeship.runtime.remote import run_remote  # the ssh transport, only when asked for

            files = [path for path, _ in resolved]
            result = run_remote(target, remote_argv(files, threads_text, config), files)
            join_accuracy(result.get("results", []), resolved)
        merged["devices"][target] = result.get("device")
        merged["device"] = merged["device"] or result.get("device")
        merged["results"] += [dict(cell, target=target) for cell in result.get("results", [])]
    mark_pareto(merged["results"])
    return merged


def join_accuracy(cells: list[dict], resolved: list[tuple[Path, dict]]) -> None:
    """Gives each cell what :func:`resolve_models` knows of its model file (a run's variant,
    accuracy and agreement), matched by file name: a copy on a device keeps the name.

    Example:
        >>> cells = [{"model": "/data/local/tmp/model_int8.tflite", "median_ms": 8.0}]
        >>> join_accuracy(cells, [(Path("runs/a/export/model_int8.tflite"), {"test_accuracy": 0.91})])
        >>> cells[0]["test_accuracy"]
        0.91
    """
    by_name = {path.name: info for path, info in resolved}
    for cell in cells:
        cell.update(by_name.get(Path(str(cell.get("model", ""))).name, {}))
