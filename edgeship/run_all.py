"""One command from photos to a proven edge model: train → export → validate → bench.

Without a data folder it runs on the built-in generated demo set (``edgeship.demo``) with a
configuration sized to finish in a few minutes on a 2-core machine. Everything lands in the
run directory; the final table compares every variant with the float model on the recorded
test split.

Example:
    >>> from edgeship.run_all import RunConfig, run              # doctest: +SKIP
    >>> summary = run(RunConfig(data_dir="photos"))               # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeship.errors import ConfigError
from edgeship.runtime.files import atomic_write_json, atomic_write_text

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
    data_dir: str = ""               # empty: the generated demo set
    out_dir: str = ""                # default runs/<data folder name>, runs/demo for the demo
    train: dict = field(default_factory=dict)    # TrainConfig fields
    export: dict = field(default_factory=dict)   # ExportConfig fields
    max_drop: float | None = None    # gate: exit non-zero when int8 loses more (pp) than this
    min_agreement: float = 0.0
    bench_runs: int = 50
    threads: int = 1

    @property
    def is_demo(self) -> bool:
        return not self.data_dir


def _train_config(config: RunConfig):
    from edgeship.train import TrainConfig

    values = dict(DEMO_TRAIN) if config.is_demo else {}
    values.update(config.train)
    if config.is_demo:
        out = Path(config.out_dir or "runs/demo")
        from edgeship.demo import make_demo_data

        data_dir = make_demo_data(out.parent / f"{out.name}-data", images_per_class=DEMO_IMAGES_PER_CLASS)
        values.update(data_dir=str(data_dir), out_dir=str(out))
    else:
        values.update(data_dir=config.data_dir)
        if config.out_dir:
            values["out_dir"] = config.out_dir
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"Unknown TrainConfig field(s): {', '.join(unknown)}.")
    return TrainConfig(**values)


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


def run(config: RunConfig) -> dict:
    """Runs every stage; returns the summary also written to ``RUN/summary.json`` and ``summary.md``."""
    from edgeship.export import ExportConfig, export
    from edgeship.progress import progress
    from edgeship.runtime.bench import BenchConfig, benchmark
    from edgeship.runtime.dataset import run_dataset
    from edgeship.runtime.model import load_model
    from edgeship.runtime.validation import ValidationGate, validate
    from edgeship.train import train
    from edgeship.train.model import describe_weights

    start = time.perf_counter()
    train_config = _train_config(config)
    if config.is_demo and train_config.uses_imagenet and not _demo_weights_available(train_config):
        train_config = train_config.replace(weights="none", epochs=train_config.epochs + train_config.fine_tune_epochs)
    run_dir = train_config.run_dir
    finished = (run_dir / "metrics.json").exists()
    if (run_dir / "config.json").exists():  # an existing run keeps the config it was trained with
        recorded = json.loads((run_dir / "config.json").read_text())
        train_config = type(train_config)(**{**recorded, "out_dir": str(run_dir)})
    if finished:
        logger.info("Stage 1/4 train: %s is already trained; reusing it", run_dir)
    else:
        logger.info("Stage 1/4 train: %s on %s", train_config.backbone, train_config.data_dir)
        train(train_config, resume=(run_dir / "config.json").exists())
    stage_times = {"train": time.perf_counter() - start}

    logger.info("Stage 2/4 export: QAT and TFLite conversion")
    report = export(ExportConfig(run_dir=str(run_dir), **config.export))
    stage_times["export"] = time.perf_counter() - start - sum(stage_times.values())

    logger.info("Stage 3/4 validate: every variant against the float32 model on the test split")
    export_dir = run_dir / "export"
    data = run_dataset(run_dir, "test")
    baseline_path = export_dir / "model_float32.tflite"
    baseline = load_model(baseline_path, num_threads=config.threads) if baseline_path.exists() else None
    gate = ValidationGate(max_drop=config.max_drop if config.max_drop is not None else 100.0,
                          min_agreement=config.min_agreement)
    rows = {}
    for kind, variant in report["variants"].items():
        path = export_dir / variant["file"]
        row = {"file": variant["file"], "size_bytes": variant["size_bytes"],
               "test_accuracy": variant["test_accuracy"], "delta_pp": variant["delta_pp"],
               "agreement": variant["agreement"]}
        if baseline is not None and kind != "float32":
            with progress(len(data.samples), f"validate {variant['file']}") as update:
                result = validate(load_model(path, num_threads=config.threads), baseline, data, gate, progress=update)
            row.update(validated_accuracy=result["accuracy"], ci_pp=result["ci_pp"], passed=result["passed"],
                       failures=result["failures"])
        rows[kind] = row
    stage_times["validate"] = time.perf_counter() - start - sum(stage_times.values())

    logger.info("Stage 4/4 bench: %d timed runs per variant, %d thread(s)", config.bench_runs, config.threads)
    bench = BenchConfig(num_runs=config.bench_runs, num_threads=config.threads)
    for kind, row in rows.items():
        timing = benchmark(export_dir / row["file"], bench)
        row.update(median_ms=timing["median_ms"], p90_ms=timing["p90_ms"])
    stage_times["bench"] = time.perf_counter() - start - sum(stage_times.values())

    gate_failed = config.max_drop is not None and "int8" in rows and not rows["int8"].get("passed", True)
    summary = {
        "run_dir": str(run_dir),
        "data_dir": train_config.data_dir,
        "demo": config.is_demo,
        "backbone": f"{train_config.backbone} alpha {train_config.alpha:g} @ {train_config.image_size}px",
        "weights": describe_weights(train_config),
        "float_keras_test_accuracy": report["float_keras"]["test_accuracy"],
        "num_test_images": report["num_test_images"],
        "int8_source": report.get("int8_source"),
        "int8_choice_reason": report.get("int8_choice_reason"),
        "edgetpu": "not measured: no Edge TPU here (bench --device usb on a machine with one)",
        "variants": rows,
        "gate": None if config.max_drop is None else {"max_drop": config.max_drop, "min_agreement": config.min_agreement,
                                                       "passed": not gate_failed},
        "stage_seconds": {k: round(v, 1) for k, v in stage_times.items()},
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_json(run_dir / "summary.json", summary)
    atomic_write_text(run_dir / "summary.md", render_summary(summary))
    return summary


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
        gate = summary["gate"]
        lines += ["", f"Gate (int8 may lose at most {gate['max_drop']:g} pp): "
                      + ("PASSED" if gate["passed"] else "FAILED")]
    lines += ["", f"Weights: {summary['weights']}."]
    if summary["weights"].startswith("none"):
        lines += ["", "Trained from random initialisation (ImageNet weights unavailable): accuracy is far below "
                      "what pretrained weights give."]
    lines += ["", f"Edge TPU: {summary['edgetpu']}.",
              f"Run directory: {summary['run_dir']}  ({summary['total_seconds']:.0f} s: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in summary["stage_seconds"].items()) + ")"]
    return "\n".join(lines) + "\n"
