"""How long do the conversions of an export take, TensorFlow's way and edgeship's?

Converts a run's float Keras model to float16, dynamic, float32 and post-training int8, and its
QAT model (calibrated, no training step) to int8, in one process, three ways per round:
- **Keras entry point**: ``TFLiteConverter.from_keras_model`` for each variant, which writes the
  whole Keras model out as a SavedModel on every call and reads it back;
- **one Keras SavedModel**: that SavedModel written once, every variant converted from it;
- **one inference graph** (what ``edgeship export`` does, ``convert_variants``): only the
  model's inference function written once, every variant converted from it.
Rounds rotate which way goes first. The flatbuffers of all three ways are checked to compute
the same outputs on test photos.

    python benchmarks/convert_time.py [--run runs/bench-accuracy/mobilenet_v1_0.25-160-seed1] [--rounds 3]

Writes benchmarks/results/convert_time.json and convert_time.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, machine_line, write_results  # noqa: E402

RUN = Path("runs/bench-accuracy/mobilenet_v1_0.25-160-seed1")
KINDS = ("float16", "dynamic", "float32", "int8-ptq")
WAYS = ("Keras entry point", "one Keras SavedModel", "one inference graph")


def _outputs(flatbuffer: bytes, images: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    given, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for image in images:
        x = image[None].astype(given["dtype"]) if given["dtype"] == np.uint8 else (image[None] - 128.0) / 128.0
        interpreter.set_tensor(given["index"], x.astype(given["dtype"]))
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"]).copy())
    return np.asarray(results)


def measure(run: Path, rounds: int) -> dict:
    from edgeship.export import ExportConfig
    from edgeship.export.convert import _configure, _run, convert_variants
    from edgeship.export.qat import fit_qat
    from edgeship.train import load_data, load_float_model, load_run_config, normalize_tf, predict_probabilities
    from edgeship.train.tfkeras import tf

    model, data = load_float_model(run), load_data(run, load_run_config(run))
    qat = fit_qat(model, predict_probabilities(model, data, "val", 32), data, ExportConfig(qat_epochs=0), 1)[0]

    def representative():
        for i in data.indices["train"][:64]:
            yield [normalize_tf(data.pixels[i : i + 1], data.normalization).numpy()]

    def keras_entry(keras_model, kinds):
        return {k: _run(_configure(tf.lite.TFLiteConverter.from_keras_model(keras_model), k, representative, "uint8"),
                        k) for k in kinds}

    def keras_saved_model(keras_model, kinds):
        with tempfile.TemporaryDirectory() as folder:
            tf.saved_model.save(keras_model, folder)
            return {k: _run(_configure(tf.lite.TFLiteConverter.from_saved_model(folder), k, representative, "uint8"),
                            k) for k in kinds}

    def inference_graph(keras_model, kinds):
        return convert_variants(keras_model, kinds, representative=representative)

    models = {"float model": (model, KINDS), "QAT model": (qat, ("int8",))}
    functions = dict(zip(WAYS, (keras_entry, keras_saved_model, inference_graph)))
    seconds = {name: {way: [] for way in WAYS} for name in models}
    images = data.pixels[data.indices["test"][:32]]
    for index in range(rounds):
        order = WAYS[index % len(WAYS):] + WAYS[:index % len(WAYS)]
        for name, (keras_model, kinds) in models.items():
            built = {}
            for way in order:
                start = time.perf_counter()
                built[way] = functions[way](keras_model, kinds)
                seconds[name][way].append(time.perf_counter() - start)
            for kind in kinds:  # the three ways make files that compute the same thing
                reference = _outputs(built[WAYS[0]][kind], images)
                for way in WAYS[1:]:
                    assert np.array_equal(_outputs(built[way][kind], images), reference), (name, kind, way)
    return {"run": run.name, "kinds": {name: list(kinds) for name, (_, kinds) in models.items()}, "seconds": seconds,
            "ratios": {name: [b / a for a, b in zip(by_way[WAYS[0]], by_way[WAYS[-1]])]
                       for name, by_way in seconds.items()}}


def render(result: dict) -> str:
    lines = [
        f"Converting run `{result['run']}`: its float model to {', '.join(result['kinds']['float model'])}; its "
        f"QAT model to int8. {len(next(iter(result['ratios'].values())))} rounds, the order of the ways rotating. "
        f"{machine_line(result['machine'])}",
        "",
        "| model | conversion | median | per round |",
        "| --- | --- | ---: | --- |",
    ]
    for name, by_way in result["seconds"].items():
        for way, values in by_way.items():
            lines.append(f"| {name} | {way} | {statistics.median(values):.1f} s | "
                         f"{', '.join(f'{v:.1f}' for v in values)} s |")
        ratios = result["ratios"][name]
        lines.append(f"| {name} | **{WAYS[-1]} / {WAYS[0]}** | **{statistics.median(ratios):.2f}** | "
                     f"{', '.join(f'{r:.2f}' for r in ratios)} |")
    return "\n".join(lines) + "\n"


def goal(result: dict) -> list[dict]:
    """No goal of its own: one of the steps towards the export-time goal (export_time benchmark)."""
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=RUN)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = {"benchmark": "convert_time", "machine": machine(), **measure(args.run, args.rounds)}
    result["ratios"] = {name: [float(np.round(r, 4)) for r in values] for name, values in result["ratios"].items()}
    write_results("convert_time", result, render(result))
    print(render(result))


if __name__ == "__main__":
    main()
