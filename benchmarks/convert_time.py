"""How much of the float variants' conversion time does one saved graph save?

Converts a run's float Keras model to float16, dynamic, float32 and post-training int8 twice per
round, in one process: one variant at a time (``convert``, which writes the model out as a
SavedModel for each, as TensorFlow's Keras entry point does) and all four from one saved graph
(``convert_variants``, what ``edgeship export`` does). Rounds alternate which goes first; the
flatbuffers of both ways are checked to be the same size.

    python benchmarks/convert_time.py [--run runs/bench-accuracy/mobilenet_v1_0.25-160-seed1] [--rounds 3]

Writes benchmarks/results/convert_time.json and convert_time.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, machine_line, write_results  # noqa: E402

RUN = Path("runs/bench-accuracy/mobilenet_v1_0.25-160-seed1")
KINDS = ("float16", "dynamic", "float32", "int8-ptq")


def measure(run: Path, rounds: int) -> dict:
    from edgeship.export.convert import convert, convert_variants
    from edgeship.train import load_data, load_float_model, load_run_config, normalize_tf

    model, data = load_float_model(run), load_data(run, load_run_config(run))

    def representative():
        for i in data.indices["train"][:64]:
            yield [normalize_tf(data.pixels[i : i + 1], data.normalization).numpy()]

    ways = {
        "one at a time": lambda: {k: convert(model, k, representative=representative) for k in KINDS},
        "one saved graph": lambda: convert_variants(model, KINDS, representative=representative),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    sizes = {}
    for index in range(rounds):
        for name in (list(ways) if index % 2 == 0 else list(reversed(ways))):
            start = time.perf_counter()
            built = ways[name]()
            seconds[name].append(time.perf_counter() - start)
            sizes[name] = {k: len(v) for k, v in built.items()}
    assert sizes["one at a time"] == sizes["one saved graph"], sizes
    return {"run": run.name, "kinds": list(KINDS), "seconds": seconds, "sizes": sizes["one saved graph"],
            "ratios": [b / a for a, b in zip(seconds["one at a time"], seconds["one saved graph"])]}


def render(result: dict) -> str:
    seconds = result["seconds"]
    return "\n".join([
        f"Converting the float model of run `{result['run']}` to {', '.join(result['kinds'])}, "
        f"{len(result['ratios'])} interleaved rounds. {machine_line(result['machine'])}",
        "",
        "| conversion | median | per round |",
        "| --- | ---: | --- |",
        *(f"| {name} | {statistics.median(values):.1f} s | {', '.join(f'{v:.1f}' for v in values)} s |"
          for name, values in seconds.items()),
        f"| **one saved graph / one at a time** | **{statistics.median(result['ratios']):.2f}** | "
        f"{', '.join(f'{r:.2f}' for r in result['ratios'])} |",
    ]) + "\n"


def goal(result: dict) -> list[dict]:
    """No goal of its own: one of the steps towards the export-time goal (accuracy benchmark)."""
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=RUN)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = {"benchmark": "convert_time", "machine": machine(), **measure(args.run, args.rounds)}
    result["ratios"] = [float(np.round(r, 4)) for r in result["ratios"]]
    write_results("convert_time", result, render(result))
    print(render(result))


if __name__ == "__main__":
    main()
