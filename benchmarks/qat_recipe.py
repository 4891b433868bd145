"""Which QAT settings bring the converted int8 model closest to the float model?

Exports one finished training run once per QAT setting (``edgeship.export`` with that
setting's ``qat_epochs``, ``qat_learning_rate`` and ``qat_noise``; formats ``int8`` and
``int8-ptq``), each into its own scratch copy of the run, so the run's own export is left
alone. Every int8 file is converted and scored by LiteRT, as ``edgeship export`` scores it:

- on the validation split: accuracy, top-1 agreement with the float model and the mean
  total-variation distance between its class probabilities and the float model's (the
  export's int8 choice records them for both candidates);
- on the test split: accuracy and agreement;
- the Keras simulation's logit distance on validation after each QAT epoch, and the epoch kept.

The QAT file is scored on test whichever candidate the validation choice prefers (this script
ships QAT in every scratch export), so that every setting has its own test scores; post-training
int8 is the same in every export and is reported once.

On the flowers5 MobileNetV2 1.0 @ 160 run this takes about an hour on 2 cores (one export per
setting). Without ``--run``, a tiny run is made first (as ``keras_vs_tflite.py`` does) and
exported with ``ExportConfig.tiny``: the numbers then show the mechanics only.

Usage:
    python benchmarks/qat_recipe.py --run runs/bench-accuracy/mobilenet_v2_1.0-160-seed1
    python benchmarks/qat_recipe.py --out /tmp/qat_recipe.json          # tiny run, mechanics only

Writes benchmarks/results/qat_recipe.json and qat_recipe.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from common import copy_run, machine, machine_line, write_results

# (label, ExportConfig overrides); the last is ExportConfig's default recipe.
SETTINGS = (
    ("QAT, calibrated, no step", dict(qat_epochs=0, qat_noise=0.0)),
    ("QAT, logit matching, 1e-5, 1 epoch", dict(qat_epochs=1, qat_learning_rate=1e-5, qat_noise=0.0)),
    ("QAT, logit matching, 1e-5, 2 epochs", dict(qat_epochs=2, qat_learning_rate=1e-5, qat_noise=0.0, qat_focus=1.0)),
    ("QAT, logit matching, 3e-5, 2 epochs", dict(qat_epochs=2, qat_learning_rate=3e-5, qat_noise=0.0, qat_focus=1.0)),
    ("QAT, logit matching, 1e-5, 3 epochs", dict(qat_epochs=3, qat_learning_rate=1e-5, qat_noise=0.0, qat_focus=1.0)),
    ("QAT, logit matching, 3e-5, 3 epochs, rounding noise of 1 step", dict(qat_epochs=3, qat_learning_rate=3e-5,
                                                                            qat_noise=1.0, qat_focus=1.0)),
    ("QAT, logit matching, 1e-5, 5 epochs, rounding noise of 1 step", dict(qat_epochs=5, qat_learning_rate=1e-5,
                                                                            qat_noise=1.0, qat_focus=1.0)),
    ("QAT, logit matching, 1e-5, 3 epochs, rounding noise of 1 step", dict(qat_epochs=3, qat_learning_rate=1e-5,
                                                                            qat_noise=1.0, qat_focus=1.0)),
    ("QAT, logit matching, 1e-5, 3 epochs, rounding noise of 1 step, epochs 2 and 3 on the half of the images "
     "furthest from float (default)", dict(qat_epochs=3, qat_learning_rate=1e-5, qat_noise=1.0, qat_focus=0.5)),
)
def ship_qat():
    """Makes every export in this process ship its QAT file, so that each setting is scored on test."""
    from edgeship.export import exporter

    choose = exporter.choose_int8
    exporter.choose_int8 = lambda *args: {**choose(*args), "use_qat": True}


def export_setting(run_dir: Path, folder: Path, overrides: dict, tiny: bool) -> dict:
    """One scratch export with ``overrides``; the scores of its QAT and post-training files."""
    from edgeship.export import ExportConfig, export

    make = ExportConfig.tiny if tiny else ExportConfig
    config = make(run_dir=str(copy_run(run_dir, folder)), formats=("int8", "int8-ptq"), **overrides)
    report = export(config)
    scores = {}
    for name, variant in (("qat", "int8"), ("ptq", "int8-ptq")):
        scores[name] = {
            **{key: report[f"{name}_val_{key}"] for key in ("accuracy", "agreement", "distance")},
            "test_accuracy": report["variants"][variant]["test_accuracy"],
            "test_agreement": report["variants"][variant]["agreement"],
        }
    return {
        "settings": {key: config.to_dict()[key]
                     for key in ("qat_epochs", "qat_learning_rate", "qat_noise", "qat_focus")},
        "qat": scores["qat"],
        "ptq": scores["ptq"],
        "simulation_val_logit_distance": [report["qat_history_val"][str(e)]["logit_distance"]
                                          for e in range(config.qat_epochs + 1)],
        "qat_best_epoch": report["qat_best_epoch"],
        "export_seconds": report["export_seconds"],
    }


def measure(run_dir: Path, folder: Path, tiny: bool) -> dict:
    ship_qat()
    rows = []
    for index, (label, overrides) in enumerate(SETTINGS):
        print(f"setting {index + 1}/{len(SETTINGS)}: {label}", file=sys.stderr)
        rows.append({"label": label, **export_setting(run_dir, folder / f"setting{index}", overrides, tiny)})
    run_config = json.loads((run_dir / "config.json").read_text())
    return {
        "description": "int8 models of one run exported once per QAT setting and scored by LiteRT against the "
                       "float model: validation and test accuracy and agreement, validation distance.",
        "run_dir": str(run_dir),
        "tiny_run": tiny,
        "model": {key: run_config.get(key) for key in ("backbone", "alpha", "image_size")},
        "machine": machine(),
        "post_training": rows[0]["ptq"],
        "results": rows,
    }


def render(report: dict) -> str:
    """The markdown table of a QAT recipe report."""
    model = report["model"]
    what = "a tiny demo run (mechanics only)" if report["tiny_run"] else f"run `{Path(report['run_dir']).name}`"
    lines = [
        f"{model['backbone']} {model['alpha']:g} @{model['image_size']}, {what}: one export per setting, every int8 "
        "file scored by LiteRT; agreement = same top-1 class as the float Keras model; distance = mean "
        "total-variation distance between its class probabilities and the float model's on validation; "
        "simulation = the Keras QAT model's logit distance on validation after each epoch (kept epoch in bold).",
        f"Machine: {machine_line(report['machine'])}",
        "",
        "| int8 model | val accuracy / agreement | test accuracy / agreement | val distance | simulation |",
        "| --- | ---: | ---: | ---: | --- |",
    ]

    def cells(scores: dict) -> str:
        return (f"{100 * scores['accuracy']:.2f} / {100 * scores['agreement']:.2f} % | "
                f"{100 * scores['test_accuracy']:.2f} / {100 * scores['test_agreement']:.2f} % | "
                f"{scores['distance']:.4f}")

    lines.append(f"| post-training int8 | {cells(report['post_training'])} | |")
    for row in report["results"]:
        simulation = [f"**{d:.4f}**" if e == row["qat_best_epoch"] else f"{d:.4f}"
                      for e, d in enumerate(row["simulation_val_logit_distance"])]
        lines.append(f"| {row['label']} | {cells(row['qat'])} | {', '.join(simulation)} |")
    return "\n".join(lines) + "\n"


def goal(report: dict) -> None:
    """No goal: the comparison chose the default recipe; the accuracy benchmark holds it to one."""
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=None, help="A finished training run (model.h5, split, cache).")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("edgeship").setLevel(logging.INFO)

    from keras_vs_tflite import make_tiny_run

    with tempfile.TemporaryDirectory() as folder:
        run_dir = args.run.resolve() if args.run else make_tiny_run(Path(folder), exported=False)
        report = measure(run_dir, Path(folder) / "scratch", tiny=args.run is None)
    markdown = render(report)
    write_results("qat_recipe", report, markdown, args.out)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
