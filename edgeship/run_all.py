"""One command from photos to a proven edge model: train → export → gate → bench.

Without a data folder it runs on the built-in generated demo set (``edgeship.demo``) with a
configuration sized to finish in a few minutes on a 2-core machine. Everything lands in the
run directory; the final table compares every variant with the float model on the recorded
test split. Each variant is scored once, by the export stage; the gate reads those scores.

Example (minutes; the README's first Python snippet runs it)::

    from edgeship.run_all import RunConfig, run
    summary = run(RunConfig(train=TrainConfig(data_dir="photos"), max_drop=1.0))
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from edgeship.config import option
from edgeship.errors import ConfigError
from edgeship.export.config import INT8, ExportConfig
from edgeship.runtime.files import atomic_write_json, atomic_write_text
from edgeship.runtime.gate_report import GateReports, write_gate_reports
from edgeship.runtime.report_page import write_report_page_or_warn
from edgeship.runtime.rundir import RunDir
from edgeship.runtime.validation import ValidationGate, apply_gate
from edgeship.train.config import TrainConfig, load_run_config

__all__ = ["DEMO_TRAIN", "RunConfig", "render_summary", "run"]

logger = logging.getLogger(__name__)

# The demo: a narrow MobileNet v1 at 96 px, fine-tuned from ImageNet weights (Keras' cache or
# download, else the copy embedded in edgeship.weights). 250 images per class with a 20 % test
# share gives 200 test images: one image moves accuracy by 0.5 pp, so the int8-vs-float
# comparison means something.
DEMO_TRAIN = dict(backbone="mobilenet_v1", alpha=0.25, image_size=96, epochs=8, fine_tune_epochs=8,
                  fine_tune_fraction=0.5, batch_size=32, val_fraction=0.12, test_fraction=0.2)
DEMO_IMAGES_PER_CLASS = 250


@dataclass(frozen=True)
class RunConfig:
    train: TrainConfig = field(default_factory=TrainConfig)     # no data_dir: the generated demo set
    export: ExportConfig = field(default_factory=ExportConfig)  # its run_dir is the train stage's
    reports: GateReports = field(default_factory=GateReports)   # the gate's JUnit / markdown, as validate's
    # The gate is validate's, with validate's defaults; it is on when any of its values is given.
    max_drop: float | None = option(None, "Gate: exit 3 when int8 loses more accuracy than this (pp) against the "
                                          "float model [validate's 1.0 when only --min-agreement is given].", float)
    # One value for both: ExportConfig's own min_agreement is the same idea on int8-mixed's search images.
    min_agreement: float | None = option(None, "Gate: smallest share of test images where int8 keeps the float "
                                               "model's top-1 class [0: off]; also int8-mixed's target on its "
                                               "search images [export's 0.99].", float)
    max_class_drop: float | None = option(None, "Gate: exit 3 when int8 loses more recall than this (pp) on any "
                                                "one class [off].", float)
    bench_runs: int = option(50, "Timed invokes per variant.")
    threads: int | None = option(None, "CPU threads for bench [as predict and bench].", int)

    def __post_init__(self) -> None:
        if self.gate is not None and INT8 not in self.export.formats:
            raise ConfigError("The gate checks the int8 variant: add int8 to --formats, or drop --max-drop, "
                              "--min-agreement and --max-class-drop.")
        if self.gate is None and (self.reports.junit or self.reports.summary):
            raise ConfigError("--junit and --summary report the gate, which is off: add --max-drop (validate's "
                              "1.0 is a common start), --min-agreement or --max-class-drop.")
        if self.bench_runs < 1:
            raise ConfigError(f"`bench_runs` must be at least 1; received {self.bench_runs}.")

    @property
    def is_demo(self) -> bool:
        return not self.train.data_dir

    @property
    def gate(self) -> ValidationGate | None:
        values = {"max_drop": self.max_drop, "min_agreement": self.min_agreement,
                  "max_class_drop": self.max_class_drop}
        given = {k: v for k, v in values.items() if v is not None}
        return ValidationGate(**given) if given else None


def _baseline(config: RunConfig) -> TrainConfig:
    return TrainConfig(**DEMO_TRAIN) if config.is_demo else TrainConfig()


def _train_config(config: RunConfig) -> TrainConfig:
    """The train stage's config: the demo's data drawn first; an existing run keeps its own."""
    train_config = config.train
    if config.is_demo:
        from edgeship.demo import make_demo_data

        out = Path(train_config.out_dir or "runs/demo")
        data_dir = make_demo_data(out.parent / f"{out.name}-data", images_per_class=DEMO_IMAGES_PER_CLASS)
        train_config = train_config.replace(data_dir=str(data_dir), out_dir=str(out))
        if train_config.uses_imagenet and not _demo_weights_available(train_config):
            train_config = train_config.replace(weights="none",
                                                epochs=train_config.epochs + train_config.fine_tune_epochs)
    run = RunDir(train_config.run_dir)
    if not run.is_started:
        return train_config
    recorded = load_run_config(run.path)
    baseline = _baseline(config)
    conflicts = [f.name for f in fields(TrainConfig) if f.name not in ("out_dir", "data_dir")
                 and getattr(config.train, f.name) != getattr(recorded, f.name)
                 and getattr(config.train, f.name) != getattr(baseline, f.name)]
    if conflicts:
        raise ConfigError(
            f"{run.path} was trained with " + ", ".join(f"{k}={getattr(recorded, k)!r}" for k in conflicts)
            + "; this command asks for " + ", ".join(f"{k}={getattr(config.train, k)!r}" for k in conflicts)
            + ". Drop those options to continue that run, or pass --out to start a new one."
        )
    return recorded


def _demo_weights_available(train_config) -> bool:
    """Whether weights='imagenet' can be had: in Keras' cache, or by download."""
    from edgeship.train.model import build_model

    try:
        build_model(train_config, 2)
        return True
    except ConfigError as e:
        logger.warning(
            "ImageNet weights are unavailable (%s). The demo trains from random initialisation instead: it "
            "runs end to end, but expect far lower accuracy than with pretrained weights.", str(e).split(":")[0],
        )
        return False


def _export_config(config: RunConfig, run_dir: Path) -> ExportConfig:
    """The export stage's config for ``run_dir``. Run's one ``min_agreement`` is both the gate's
    (int8, test split) and int8-mixed's search target (its search images); 0, which turns the
    gate's agreement check off, leaves the target as the export config has it."""
    values = {**config.export.to_dict(), "run_dir": str(run_dir)}
    if config.min_agreement:
        values["min_agreement"] = config.min_agreement
    return ExportConfig(**values)


def _gate(run: RunDir, gate: ValidationGate, int8_file: str) -> dict:
    """The gate on the export's own test-split scores: int8 against the float Keras model."""
    predictions = run.read_json(run.predictions_path)
    targets, reference, int8 = (np.asarray(predictions[k]) for k in ("targets", "float_keras", INT8))
    verdict = apply_gate(int8 == targets, reference == targets, float(np.mean(int8 == reference)), gate, targets,
                         run.read_split().classes)
    # What validate's result names too, so that the JUnit and markdown reports read the same.
    names = {"model": str(run.export_dir / int8_file), "baseline": str(run.model_path),
             "data": f"the test split of {run.path}", "num_images": int(targets.size)}
    return {**names, **verdict}


def _bench(run: RunDir, variants: dict, config: RunConfig) -> dict:
    from edgeship.runtime.bench import BenchConfig, benchmark

    bench = BenchConfig(num_runs=config.bench_runs, num_threads=config.threads)
    timings = {}
    for kind, variant in variants.items():
        timing = benchmark(run.export_dir / variant["file"], bench)
        timings[kind] = {"median_ms": timing["median_ms"], "p90_ms": timing["p90_ms"]}
    return timings


def run(config: RunConfig) -> dict:
    """Runs every stage; returns the summary also written to ``RUN/summary.json`` and ``summary.md``.

    Raises:
        ConfigError: flags that contradict an existing run's recorded config, or a bad value,
            before any work starts.
    """
    from edgeship.export import export
    from edgeship.train import train

    start, times = time.perf_counter(), {}
    train_config = _train_config(config)
    run_dir = RunDir(train_config.run_dir)
    if run_dir.is_trained:
        logger.info("Stage 1/4 train: %s is already trained; reusing it", run_dir.path)
    else:
        logger.info("Stage 1/4 train: %s on %s", train_config.backbone, train_config.data_dir)
        train(train_config, resume=run_dir.is_started)
    times["train"] = time.perf_counter() - start
    logger.info("Stage 2/4 export: QAT and TFLite conversion, each variant scored on the test split")
    report = export(_export_config(config, run_dir.path), report_page=False)
    times["export"] = time.perf_counter() - start - sum(times.values())
    gate = config.gate
    logger.info("Stage 3/4 gate: %s", "int8 against the float model" if gate else "off (no --max-drop, "
                "--min-agreement or --max-class-drop)")
    verdict = _gate(run_dir, gate, report["variants"][INT8]["file"]) if gate else None
    if verdict is not None:
        for path in write_gate_reports(verdict, config.reports):
            logger.info("Wrote %s", path)
    logger.info("Stage 4/4 bench: %d timed runs per variant", config.bench_runs)
    timings = _bench(run_dir, report["variants"], config)
    times["bench"] = time.perf_counter() - start - sum(times.values())
    summary = _summary(config, train_config, report, verdict, timings, times)
    atomic_write_json(run_dir.summary_path, summary)
    atomic_write_text(run_dir.summary_markdown_path, render_summary(summary))
    write_report_page_or_warn(run_dir.path)  # once, with the bench numbers and the gate's verdict
    return summary


def _summary(config: RunConfig, train_config: TrainConfig, report: dict, verdict, timings, times) -> dict:
    from edgeship.train.model import describe_weights

    variants = {kind: {**{k: row[k] for k in ("file", "size_bytes", "test_accuracy", "delta_pp", "agreement")},
                       **timings[kind]} for kind, row in report["variants"].items()}
    return {
        "run_dir": report["run_dir"],
        "data_dir": train_config.data_dir,
        "demo": config.is_demo,
        "backbone": f"{train_config.backbone} alpha {train_config.alpha:g} @ {train_config.image_size}px",
        "weights": describe_weights(train_config),
        "float_keras_test_accuracy": report["float_keras"]["test_accuracy"],
        "num_test_images": report["num_test_images"],
        "int8_source": report.get("int8_source"),
        "int8_choice_reason": report.get("int8_choice_reason"),
        "edgetpu": "not measured: no Edge TPU here (bench --device usb on a machine with one)",
        "variants": variants,
        "gate": verdict,
        "stage_seconds": {k: round(v, 1) for k, v in times.items()},
        "total_seconds": round(sum(times.values()), 1),
    }


def render_summary(summary: dict) -> str:
    """The final table, readable at a glance."""
    lines = [
        f"# {Path(summary['run_dir']).name}: {summary['backbone']}" + (" (demo data)" if summary["demo"] else ""),
        "",
        f"Float Keras model: {100 * summary['float_keras_test_accuracy']:.2f} % on {summary['num_test_images']} "
        "test images. Every variant below is scored on the same images by the LiteRT runtime.",
        "",
        "| variant | accuracy | Δ vs float (pp) | agreement | size | median latency (CPU) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, row in summary["variants"].items():
        lines.append(
            f"| {kind} | {100 * row['test_accuracy']:.2f} % | {row['delta_pp']:+.2f} | {100 * row['agreement']:.2f} % | "
            f"{row['size_bytes'] / 1024:.0f} KiB | {row.get('median_ms', float('nan')):.2f} ms |"
        )
    if summary.get("int8_choice_reason"):
        lines += ["", f"int8: {summary['int8_choice_reason']}"]
    if summary.get("gate"):
        verdict, gate = summary["gate"], summary["gate"]["gate"]
        per_class = (f", at most {gate['max_class_drop']:g} pp of any class's recall"
                     if gate.get("max_class_drop") is not None else "")
        lines += ["", f"Gate (int8 against the float model: at most {gate['max_drop']:g} pp lost, at least "
                      f"{100 * gate['min_agreement']:g} % agreement{per_class}; McNemar exact p "
                      f"{verdict['mcnemar_p']:.3g}): "
                      + ("PASSED" if verdict["passed"] else "FAILED: " + "; ".join(verdict["failures"]))]
    lines += ["", f"Weights: {summary['weights']}."]
    if summary["weights"].startswith("none"):
        lines += ["", "Trained from random initialisation (ImageNet weights unavailable): accuracy is far below "
                      "what pretrained weights give."]
    lines += ["", f"Edge TPU: {summary['edgetpu']}.",
              f"Run directory: {summary['run_dir']}  ({summary['total_seconds']:.0f} s: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in summary["stage_seconds"].items()) + ")"]
    return "\n".join(lines) + "\n"
