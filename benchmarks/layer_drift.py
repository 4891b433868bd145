"""Where, layer by layer, does each quantized variant drift from the float model?

Runs the float32 file and every quantized file of a run's export on the same validation photos
in LiteRT, keeping every intermediate tensor, and compares each layer's output with the float32
file's: the root-mean-square difference relative to the float output's standard deviation.
A fused op's output is matched to the last Keras layer it contains (``conv_pw_3_relu`` for a
convolution, batch norm and ReLU6 fused into one op). The top-1 agreement of each file with
the float32 one on the same photos is reported beside, to show what the drift costs.

    python benchmarks/layer_drift.py runs/bench-accuracy/mobilenet_v1_0.25-160-seed1 \\
        runs/bench-accuracy/mobilenet_v2_1.0-160-seed1 [--images 96]

Writes benchmarks/results/layer_drift.json and layer_drift.md, and each run's own table to
``RUN/layer_drift.json``, which the run's report page (``edgeship report``) shows.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, machine_line, write_results  # noqa: E402

from edgeship.runtime.files import atomic_write_json  # noqa: E402
from edgeship.runtime.rundir import RunDir  # noqa: E402

VARIANTS = ("float16", "dynamic", "int8-ptq", "int8")
FILES = {"float32": "model_float32.tflite", "float16": "model_fp16.tflite", "dynamic": "model_dynamic.tflite",
         "int8-ptq": "model_int8_ptq.tflite", "int8": "model_int8.tflite"}
CLOSE_CALL = 0.1  # a photo whose two best classes' probabilities differ by less than this
SHOWN = 8  # layers per model in the table: evenly spaced through the network, the last ones included


def _layer_names(run: Path) -> list[str]:
    """The Keras layer names of the run's float model, in graph order."""
    from edgeship.train import load_float_model

    return [layer.name for layer in load_float_model(run).layers]


def _owner(tensor_name: str, order: dict[str, int]) -> str | None:
    """The last Keras layer whose name appears in a TFLite tensor name (fused ops list several)."""
    found = [name for name in re.split(r"[/;:]", tensor_name) if name in order]
    found += [name[len("quant_"):] for name in re.split(r"[/;:]", tensor_name)
              if name.startswith("quant_") and name[len("quant_"):] in order]
    return max(found, key=order.get) if found else None


def layer_outputs(path: Path, pixels: np.ndarray, order: dict[str, int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each layer's dequantized output over the images, and the model's class scores."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeship.runtime.model import load_model

    interpreter = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    model = load_model(path)  # edgeship's own pixel-to-tensor step for this file
    input_index = interpreter.get_input_details()[0]["index"]
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    # Op outputs in execution order; where several ops belong to one layer, the last one's counts.
    owned = {}
    for op in interpreter._get_ops_details():
        for index in op["outputs"]:
            owner = _owner(details[index]["name"], order)
            if owner is not None and details[index]["dtype"] in (np.float32, np.int8, np.uint8):
                owned[owner] = details[index]
    outputs: dict[str, list[np.ndarray]] = {}
    scores = []
    for image in pixels:
        interpreter.set_tensor(input_index, model.input_tensor(image))
        interpreter.invoke()
        for owner, detail in owned.items():
            value = interpreter.get_tensor(detail["index"]).astype(np.float32)
            scale, zero = detail["quantization"]
            if detail["dtype"] != np.float32 and scale:
                value = (value - zero) * scale
            outputs.setdefault(owner, []).append(value)
        output = interpreter.get_output_details()[0]
        scores.append(interpreter.get_tensor(output["index"]).reshape(-1))
    return {name: np.stack(values) for name, values in outputs.items()}, np.stack(scores)


def drift(run: Path, images: int) -> dict:
    """Per variant, the relative drift of every matched layer and the top-1 agreement."""
    from edgeship.train import load_data, load_run_config

    names = _layer_names(run)
    order = {name: i for i, name in enumerate(names)}
    data = load_data(run, load_run_config(run))
    pixels = data.pixels[data.indices["val"][:images]]
    reference, reference_scores = layer_outputs(run / "export" / FILES["float32"], pixels, order)
    top2 = np.sort(reference_scores, axis=1)[:, -2:]
    result = {"run": run.name, "images": len(pixels), "layers": [], "variants": {},
              "close_calls": float(np.mean(top2[:, 1] - top2[:, 0] < CLOSE_CALL))}
    for variant in VARIANTS:
        outputs, scores = layer_outputs(run / "export" / FILES[variant], pixels, order)
        per_layer = {}
        for name in sorted(set(outputs) & set(reference), key=order.get):
            ours, theirs = outputs[name], reference[name]
            if ours.shape == theirs.shape:
                per_layer[name] = float(np.sqrt(np.mean((ours - theirs) ** 2)) / (np.std(theirs) + 1e-12))
        agreement = float(np.mean(np.argmax(scores, axis=1) == np.argmax(reference_scores, axis=1)))
        result["variants"][variant] = {"agreement": agreement, "drift": per_layer}
    result["layers"] = sorted({n for v in result["variants"].values() for n in v["drift"]}, key=order.get)
    return result


def _shown(layers: list[str]) -> list[str]:
    if len(layers) <= SHOWN:
        return layers
    picks = np.linspace(0, len(layers) - 1, SHOWN).round().astype(int)
    return [layers[i] for i in sorted(set(picks))]


def render(result: dict) -> str:
    lines = [
        "Relative drift of each layer's output from the float32 file's (RMS difference / standard deviation of the "
        "float output), on validation photos of one run per backbone; agreement = same top-1 class as the float32 "
        "file on those photos. The QAT file (int8) also carries the changes QAT made to the weights, which aim at "
        "the output only: an early layer of it can sit further from the float model than post-training int8's while "
        f"its output sits closer. {machine_line(result['machine'])}",
    ]
    for run in result["runs"]:
        variants = list(run["variants"])
        lines += ["", f"**{run['run']}** ({run['images']} photos; close calls, where the float model's two best "
                  f"classes are less than {CLOSE_CALL} apart in probability: {100 * run['close_calls']:.1f} %)", "",
                  "| layer | " + " | ".join(variants) + " |", "| --- |" + " ---: |" * len(variants)]
        for layer in _shown(run["layers"]):
            cells = [run["variants"][v]["drift"].get(layer) for v in variants]
            lines.append(f"| {layer} | " + " | ".join("" if c is None else f"{c:.3f}" for c in cells) + " |")
        lines.append("| top-1 agreement | " + " | ".join(f"{100 * run['variants'][v]['agreement']:.1f} %"
                                                        for v in variants) + " |")
    return "\n".join(lines) + "\n"


def goal(result: dict) -> list[dict]:
    """No goal of its own: it explains the accuracy benchmark's fidelity numbers."""
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories with an export")
    parser.add_argument("--images", type=int, default=96)
    args = parser.parse_args()
    result = {"benchmark": "layer_drift", "machine": machine(), "runs": [drift(run, args.images) for run in args.runs]}
    write_results("layer_drift", result, render(result))
    for run, measured in zip(args.runs, result["runs"]):
        atomic_write_json(RunDir(run).layer_drift_path, {**measured, "machine": result["machine"]})
    print(render(result))
    print(json.dumps({r["run"]: {v: r["variants"][v]["agreement"] for v in VARIANTS} for r in result["runs"]}))


if __name__ == "__main__":
    main()
