"""Latency of models on this device, measured the way LiteRT's own benchmark measures it.

Each model is loaded and allocated (timed: initialisation), given one fixed input, invoked
once (timed: first inference), warmed up, then invoked ``num_runs`` times with only
``invoke()`` inside the ``time.perf_counter`` window. Input preparation never enters the
timings, so the median matches ``ai_edge_litert.tools.benchmark_litert_model`` on the same
model and thread count (see ``benchmarks/latency_vs_litert.py``).

Example:
    >>> result = benchmark("model_int8.tflite", BenchConfig(num_runs=50, num_threads=2))
    >>> result["median_ms"] <= result["p99_ms"], result["num_runs"]
    (True, 50)
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgeship.errors import ConfigError, EdgeshipError
from edgeship.runtime.device import interpreter_for_graph, invoke_error, parse_device
from edgeship.runtime.graph import parse_graph, read_model_bytes

__all__ = ["BenchConfig", "benchmark", "benchmark_models", "fixed_input", "latency_stats", "peak_memory_mb", "prepare"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    """How to time each model."""

    num_warmup_runs: int = 10      # after the first inference: caches, CPU frequency, lazy packing
    num_runs: int = 100            # timed invokes; median and tails come from these
    num_threads: int | None = None  # None: LiteRT's default, as everywhere else
    device: str = "cpu"            # cpu | edgetpu | usb[:N] | pci[:N]
    seed: int = 0                  # of the fixed random input

    def __post_init__(self):
        if self.num_runs < 1:
            raise ConfigError(f"num_runs must be at least 1; received {self.num_runs}.")
        if self.num_warmup_runs < 0:
            raise ConfigError(f"num_warmup_runs must be >= 0; received {self.num_warmup_runs}.")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads must be at least 1; received {self.num_threads}.")
        parse_device(self.device)


def peak_memory_mb() -> float | None:
    """This process's peak resident memory so far, in MiB (None where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def fixed_input(detail: dict, rng: np.random.Generator) -> np.ndarray:
    """One input value for a tensor ``detail`` (as LiteRT describes it), seeded: timing never
    depends on which values reach the model, but the same seed gives the same tensor."""
    dtype = np.dtype(detail["dtype"])
    shape = tuple(int(v) for v in detail["shape"])
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -128), min(info.max, 255) + 1, size=shape).astype(dtype)
    return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)


def benchmark(path: str | os.PathLike, config: BenchConfig = BenchConfig()) -> dict:
    """Times one model. All times are in milliseconds.

    Returns:
        ``model``, ``size_bytes``, ``device`` (where it ran: ``cpu`` for a model that is not
        compiled for the Edge TPU, with a ``note``), ``num_threads``, ``init_ms`` (read, check,
        build and allocate), ``first_inference_ms`` (on an Edge TPU: the upload of the model to
        the device, reported apart from the steady state), ``median_ms``, ``mean_ms``, ``std_ms``,
        ``min_ms``, ``max_ms``, ``p90_ms``, ``p99_ms``, run counts, and ``peak_memory_mb``
        (this process's peak so far: with several models, a running maximum).

    Raises:
        ModelFormatError: see :func:`edgeship.runtime.device.make_interpreter`.
        DelegateError: see :func:`edgeship.runtime.device.make_interpreter`.
    """
    interpreter, loaded = prepare(path, config)
    try:
        first_ms, times = _time_invokes(interpreter.invoke, config)
    except (RuntimeError, ValueError, TypeError) as e:
        raise invoke_error(path, loaded["device"], e) from e
    return {
        **loaded,
        "first_inference_ms": first_ms,
        "num_warmup_runs": config.num_warmup_runs,
        "num_runs": config.num_runs,
        **latency_stats(times),
        "peak_memory_mb": peak_memory_mb(),
    }


def prepare(path: str | os.PathLike, config: BenchConfig) -> tuple[object, dict]:
    """Loads and allocates ``path`` (timed) and sets its fixed input; returns the interpreter and
    ``model``, ``size_bytes``, ``device``, ``note``, ``num_threads`` and ``init_ms``."""
    data = read_model_bytes(path)
    graph = parse_graph(data, str(path))
    start = time.perf_counter()
    interpreter = interpreter_for_graph(data, graph, str(path), config.device, config.num_threads)
    init_ms = (time.perf_counter() - start) * 1000
    # A model not compiled for the Edge TPU runs every op on the CPU whatever device was asked for.
    asked_edgetpu = parse_device(config.device) is not None
    on_edgetpu = asked_edgetpu and graph.is_edgetpu_compiled
    rng = np.random.default_rng(config.seed)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], fixed_input(detail, rng))
    return interpreter, {
        "model": str(path),
        "size_bytes": len(data),
        "device": config.device if on_edgetpu else "cpu",
        "note": f"not compiled for the Edge TPU: ran on the CPU although {config.device} was asked for"
        if asked_edgetpu and not on_edgetpu else "",
        "num_threads": config.num_threads,
        "init_ms": init_ms,
    }


def latency_stats(times_ms: np.ndarray) -> dict:
    """Median, mean, standard deviation, extremes and tail percentiles of invoke times in ms.

    Example:
        >>> latency_stats(np.array([1.0, 2.0, 3.0, 4.0]))["median_ms"]
        2.5
    """
    times = np.asarray(times_ms, dtype=np.float64)
    return {
        "median_ms": float(np.median(times)),
        "mean_ms": float(times.mean()),
        "std_ms": float(times.std(ddof=1)) if times.size > 1 else 0.0,
        "min_ms": float(times.min()),
        "max_ms": float(times.max()),
        "p90_ms": float(np.percentile(times, 90)),
        "p99_ms": float(np.percentile(times, 99)),
    }


def _time_invokes(invoke, config: BenchConfig) -> tuple[float, np.ndarray]:
    """The first invoke (on an Edge TPU: the model's upload to the device) apart, then the
    steady state after warm-up, in milliseconds."""
    clock = time.perf_counter
    start = clock()
    invoke()
    first_ms = (clock() - start) * 1000
    for _ in range(config.num_warmup_runs):
        invoke()
    times = np.empty(config.num_runs, dtype=np.float64)
    for i in range(config.num_runs):
        start = clock()
        invoke()
        times[i] = clock() - start
    return first_ms, times * 1000


def benchmark_models(
    paths: Sequence[str | os.PathLike],
    config: BenchConfig = BenchConfig(),
) -> list[dict]:
    """Times several models one after another with the same settings.

    A model that cannot run here (an Edge TPU build on the CPU, a corrupt file, a device that
    fails mid-run) gives a row ``{"model", "error"}`` instead of stopping the others.

    Example:
        >>> rows = benchmark_models(["model_int8.tflite", "missing.tflite"], BenchConfig(num_runs=5))
        >>> ["median_ms" in rows[0], rows[1]["error"][:40]]
        [True, 'Model file not found: missing.tflite...']
    """
    rows = []
    for path in paths:
        try:
            rows.append(benchmark(path, config))
        except EdgeshipError as e:
            rows.append({"model": str(path), "error": str(e)})
    return rows

