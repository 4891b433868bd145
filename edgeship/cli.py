"""The ``edgeship`` command. Each command imports its stage lazily, so that
``edgeship bench`` on a Raspberry Pi never loads TensorFlow.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

from typer.core import TyperGroup

from edgeship.errors import EdgeshipError


class _Group(TyperGroup):
    """Prints an EdgeshipError as one clear line and exits 1; other exceptions are bugs
    and keep their traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeshipError as e:
            typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fine-tune, quantize, validate and benchmark image classifiers for edge devices.",
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs.")) -> None:
    logging.basicConfig(
        level=logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s",
        stream=sys.stderr,
        force=True,  # each invocation (also in-process, as in tests) gets a live handler
    )
    # edgeship's own progress at INFO; third-party INFO chatter (TensorFlow's) stays hidden.
    logging.getLogger("edgeship").setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        # TensorFlow's C++ and absl chatter would bury the progress lines.
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --------------------------------------------------------------------------- train / export


@app.command()
def train(
    data_dir: Optional[Path] = typer.Argument(None, help="Folder with one sub-folder of images per class."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory [default: runs/<data folder name>]."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file of TrainConfig fields; flags override it."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out."),
    val_dir: Optional[Path] = typer.Option(None, help="Ready-made validation folder (same classes)."),
    test_dir: Optional[Path] = typer.Option(None, help="Ready-made test folder (same classes)."),
    backbone: Optional[str] = typer.Option(None, help="mobilenet_v1 | mobilenet_v2 [mobilenet_v2]."),
    alpha: Optional[float] = typer.Option(None, help="Width multiplier [1.0]."),
    image_size: Optional[int] = typer.Option(None, help="Square input size in pixels [224]."),
    weights: Optional[str] = typer.Option(None, help="imagenet | none | PATH to no-top .h5 weights [imagenet]."),
    resize_method: Optional[str] = typer.Option(
        None, help="bilinear | nearest | area | bilinear-asymmetric (MediaPipe's sampling) [bilinear]."),
    augment: Optional[str] = typer.Option(None, help="none | light | medium | heavy [light]."),
    val_fraction: Optional[float] = typer.Option(None, help="Share of each class held out for validation [0.1]."),
    test_fraction: Optional[float] = typer.Option(None, help="Share of each class held out for testing [0.1]."),
    seed: Optional[int] = typer.Option(None, help="Seed of the split, shuffling and init [42]."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size per replica [32]."),
    epochs: Optional[int] = typer.Option(None, help="Phase 1 epochs, head only [5]."),
    learning_rate: Optional[float] = typer.Option(None, help="Phase 1 learning rate [1e-3]."),
    fine_tune_epochs: Optional[int] = typer.Option(None, help="Phase 2 epochs, top of backbone unfrozen; 0 skips [8]."),
    fine_tune_learning_rate: Optional[float] = typer.Option(None, help="Phase 2 learning rate [1e-4]."),
    fine_tune_fraction: Optional[float] = typer.Option(None, help="Share of backbone layers phase 2 trains [0.25]."),
    dropout: Optional[float] = typer.Option(None, help="Dropout before the classifier [0.2]."),
    label_smoothing: Optional[float] = typer.Option(None, help="Label smoothing [0.1]."),
    patience: Optional[int] = typer.Option(None, help="Early-stopping patience in epochs [3]."),
    class_weights: Optional[str] = typer.Option(None, help="balanced | none [balanced]."),
    strategy: Optional[str] = typer.Option(None, help="default | mirrored | multi-worker [default]."),
) -> None:
    """Fine-tune an ImageNet MobileNet on a folder of class sub-folders."""
    flags = {k: v for k, v in locals().items() if k not in ("config", "resume", "out", "data_dir", "val_dir", "test_dir")}
    from edgeship.train import load_config
    from edgeship.train import train as run_train

    for key, value in (("data_dir", data_dir), ("out_dir", out), ("val_dir", val_dir), ("test_dir", test_dir)):
        flags[key] = str(value) if value is not None else None
    cfg = load_config(config, **flags)
    result = run_train(cfg, resume=resume)
    typer.echo(f"float test accuracy {result.test_accuracy * 100:.2f} %  run: {result.run_dir}")


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run directory written by `edgeship train`."),
    formats: str = typer.Option(
        "int8,int8-ptq,float16,dynamic,float32", help="Comma-separated: int8 int8-ptq float16 dynamic float32."
    ),
    io: str = typer.Option("uint8", "--io", help="Input/output type of full-integer models: uint8 | int8."),
    qat_epochs: int = typer.Option(3, help="Quantization-aware training epochs."),
    qat_learning_rate: float = typer.Option(1e-5, help="QAT peak learning rate (Adam, cosine decay)."),
    qat_noise: float = typer.Option(1.0, help="Uniform noise on batch-norm outputs during QAT, in int8 steps (0: off)."),
    calibration_batches: int = typer.Option(16, help="Batches that calibrate activation ranges before QAT."),
    representative_samples: int = typer.Option(256, help="Train images that calibrate post-training int8."),
    batch_size: int = typer.Option(32, help="QAT batch size."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Quantize (QAT and post-training) and convert a trained run to .tflite files, each scored."""
    import json

    from edgeship.export import ExportConfig
    from edgeship.export import export as run_export
    from edgeship.export.exporter import render_markdown

    config = ExportConfig(
        run_dir=str(run_dir), formats=tuple(f.strip() for f in formats.split(",") if f.strip()), io=io,
        qat_epochs=qat_epochs, qat_learning_rate=qat_learning_rate, qat_noise=qat_noise, calibration_batches=calibration_batches,
        representative_samples=representative_samples, batch_size=batch_size,
    )
    report = run_export(config)
    typer.echo(json.dumps(dict(report), indent=2) if as_json else render_markdown(report))


@app.command("run")
def run_all(
    data_dir: Optional[Path] = typer.Argument(None, help="Class sub-folders of images; omit for the built-in demo."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory [runs/<data folder> or runs/demo]."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML with [train] and [export] tables."),
    backbone: Optional[str] = typer.Option(None, help="mobilenet_v1 | mobilenet_v2."),
    alpha: Optional[float] = typer.Option(None, help="Width multiplier."),
    image_size: Optional[int] = typer.Option(None, help="Square input size in pixels."),
    weights: Optional[str] = typer.Option(None, help="imagenet | none | PATH to no-top .h5 weights."),
    epochs: Optional[int] = typer.Option(None, help="Phase 1 epochs."),
    fine_tune_epochs: Optional[int] = typer.Option(None, help="Phase 2 epochs."),
    max_drop: Optional[float] = typer.Option(None, help="Exit 2 when int8 loses more than this (pp) vs float32."),
    min_agreement: float = typer.Option(0.0, help="With --max-drop: minimum top-1 agreement (0-1)."),
    threads: int = typer.Option(1, help="CPU threads for validation and bench."),
    bench_runs: int = typer.Option(50, help="Timed runs per variant."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Train, export, validate and bench in one go; prints one table per variant."""
    import json

    from edgeship.run_all import RunConfig, render_summary, run
    from edgeship.train.config import read_toml

    tables = read_toml(config) if config else {}
    train_values = dict(tables.get("train", {}))
    flags = dict(backbone=backbone, alpha=alpha, image_size=image_size, weights=weights, epochs=epochs,
                 fine_tune_epochs=fine_tune_epochs)
    train_values.update({k: v for k, v in flags.items() if v is not None})
    summary = run(RunConfig(
        data_dir=str(data_dir) if data_dir else "", out_dir=str(out) if out else "", train=train_values,
        export=dict(tables.get("export", {})), max_drop=max_drop, min_agreement=min_agreement,
        bench_runs=bench_runs, threads=threads,
    ))
    typer.echo(json.dumps(summary, indent=2) if as_json else render_summary(summary))
    gate = summary.get("gate")
    if gate and not gate["passed"]:
        typer.secho("gate failed: the int8 model lost more than --max-drop against float32", err=True, fg="red")
        raise typer.Exit(2)


# --------------------------------------------------------------------------- runtime


# Options shared by the commands that load a model.
_DEVICE = typer.Option("cpu", "--device", help="cpu | edgetpu | usb | usb:N | pci | pci:N.")
_THREADS = typer.Option(None, "--threads", help="CPU threads for the interpreter [LiteRT's default].")
_LABELS = typer.Option(None, "--labels", help="Label file (one per line, or '<index> <label>'); overrides embedded labels.")
_RESIZE = typer.Option(None, "--resize",
                       help="bilinear | nearest | area | bilinear-asymmetric [the manifest's, else bilinear].")
_MEAN = typer.Option(None, "--mean", help="Input normalisation mean [the manifest's; third-party: from the input quantization, or 127.5].")
_STD = typer.Option(None, "--std", help="Input normalisation std [as --mean].")
_JSON = typer.Option(False, "--json", help="Print JSON to stdout.")


def _load(model: Path, device: str, threads: Optional[int], labels: Optional[Path], resize: Optional[str],
          mean: Optional[float], std: Optional[float]):
    from edgeship.runtime.model import load_model

    return load_model(model, device=device, num_threads=threads, labels=labels, resize_method=resize, mean=mean, std=std)


def _dataset(data_dir: Optional[Path], run: Optional[Path], part: str = "test"):
    from edgeship.runtime.dataset import folder_dataset, run_dataset

    if data_dir is not None:
        return folder_dataset(data_dir)
    if run is not None:
        return run_dataset(run, part)
    raise typer.BadParameter("Pass a DATA_DIR of class folders, or --run RUN_DIR to use its recorded test split.")


def _run_labels(labels: Optional[Path], run: Optional[Path]) -> Optional[Path]:
    # A run's labels.txt names the classes of every model exported from it.
    if labels is None and run is not None and (run / "labels.txt").exists():
        return run / "labels.txt"
    return labels


def _progress(length: int, label: str):
    return typer.progressbar(length=length, label=label, file=sys.stderr)


@app.command()
def predict(
    model: Path = typer.Argument(..., help="A .tflite classifier."),
    images: List[Path] = typer.Argument(..., help="Image files and/or folders of images."),
    top_k: int = typer.Option(5, "--top-k", help="Classes per image."),
    threshold: float = typer.Option(0.0, "--threshold", help="Lowest score shown (inclusive)."),
    as_json: bool = _JSON,
    device: str = _DEVICE,
    threads: Optional[int] = _THREADS,
    labels: Optional[Path] = _LABELS,
    resize: Optional[str] = _RESIZE,
    mean: Optional[float] = _MEAN,
    std: Optional[float] = _STD,
) -> None:
    """Classify images: top-k labels with scores."""
    import json

    from edgeship.runtime.classify import predict as run_predict
    from edgeship.runtime.render import predictions_table

    loaded = _load(model, device, threads, labels, resize, mean, std)
    results = [p.to_dict() for p in run_predict(loaded, images, top_k=top_k, score_threshold=threshold)]
    if as_json:
        typer.echo(json.dumps({"model": str(model), "predictions": results}, indent=2))
    else:
        typer.echo(predictions_table(results))
    failed = sum("error" in r for r in results)
    if failed == len(results):
        raise EdgeshipError(f"None of the {failed} image(s) could be read.")
    if failed:
        logging.getLogger("edgeship").warning("%d of %d images could not be read.", failed, len(results))


@app.command(name="eval")
def evaluate(
    model: Path = typer.Argument(..., help="A .tflite classifier."),
    data_dir: Optional[Path] = typer.Argument(None, help="Folder of class sub-folders named after the model's labels."),
    run: Optional[Path] = typer.Option(None, "--run", help="Score the test split recorded in this run directory."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write eval.json, eval.md, confusion.png here [with --run: RUN_DIR/eval/<model>]."),
    as_json: bool = _JSON,
    device: str = _DEVICE,
    threads: Optional[int] = _THREADS,
    labels: Optional[Path] = _LABELS,
    resize: Optional[str] = _RESIZE,
    mean: Optional[float] = _MEAN,
    std: Optional[float] = _STD,
) -> None:
    """Accuracy, per-class precision/recall/F1 and confusion matrix on labelled images."""
    import json

    from edgeship.runtime.evaluation import evaluate as run_evaluate
    from edgeship.runtime.evaluation import eval_markdown, write_report

    data = _dataset(data_dir, run)
    loaded = _load(model, device, threads, _run_labels(labels, run), resize, mean, std)
    with _progress(len(data.samples), f"eval {model.name}") as bar:
        report = run_evaluate(loaded, data, progress=bar.update)
    if out is None and run is not None and data_dir is None:
        out = run / "eval" / model.stem
    if out is not None:
        paths = write_report(report, out)
        logging.getLogger("edgeship").info("Wrote %s", ", ".join(map(str, paths.values())))
    typer.echo(json.dumps(report, indent=2) if as_json else eval_markdown(report, f"Evaluation of {model.name}"))


@app.command()
def validate(
    model: Path = typer.Argument(..., help="The quantized .tflite to check."),
    data_dir: Optional[Path] = typer.Argument(None, help="Folder of class sub-folders [with --run: its test split]."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="The reference .tflite [with --run: RUN_DIR/export/model_float32.tflite]."),
    run: Optional[Path] = typer.Option(None, "--run", help="Run directory: its float32 export is the baseline, its test split the images."),
    max_drop: float = typer.Option(1.0, "--max-drop", help="Largest allowed accuracy drop, percentage points."),
    min_agreement: float = typer.Option(0.0, "--min-agreement", help="Smallest allowed top-1 agreement with the baseline, 0-1 (0: off)."),
    as_json: bool = _JSON,
    device: str = _DEVICE,
    threads: Optional[int] = _THREADS,
    labels: Optional[Path] = _LABELS,
) -> None:
    """CI gate: score MODEL and a baseline on the same images. Exit 2 when the gate fails, 1 on errors."""
    import json

    from edgeship.runtime.validation import GATE_FAILED_EXIT_CODE, ValidationGate
    from edgeship.runtime.validation import validate as run_validate
    from edgeship.runtime.render import validation_text

    gate = ValidationGate(max_drop=max_drop, min_agreement=min_agreement)
    if baseline is None:
        if run is None:
            raise typer.BadParameter("Pass --baseline PATH, or --run RUN_DIR to use its float32 export.")
        baseline = run / "export" / "model_float32.tflite"
    data = _dataset(data_dir, run)
    labels = _run_labels(labels, run)
    quantized = _load(model, device, threads, labels, None, None, None)
    reference = _load(baseline, "cpu", threads, labels, None, None, None)
    with _progress(len(data.samples), f"validate {model.name}") as bar:
        result = run_validate(quantized, reference, data, gate, progress=bar.update)
    typer.echo(json.dumps(result, indent=2) if as_json else validation_text(result))
    if not result["passed"]:
        typer.secho("validation failed: " + "; ".join(result["failures"]), err=True, fg=typer.colors.RED)
        raise typer.Exit(GATE_FAILED_EXIT_CODE)


@app.command()
def bench(
    models: List[Path] = typer.Argument(..., help="One or more .tflite files, timed side by side."),
    runs: int = typer.Option(100, "--runs", help="Timed invokes per model."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed invokes after the first one."),
    threads: Optional[int] = typer.Option(1, "--threads", help="CPU threads (LiteRT's benchmark default: 1)."),
    device: str = _DEVICE,
    as_json: bool = _JSON,
) -> None:
    """Latency (invoke only, after warm-up), initialisation time, size and peak memory."""
    import json
    from dataclasses import asdict

    from edgeship.runtime.bench import BenchConfig, benchmark_models
    from edgeship.runtime.render import bench_table

    config = BenchConfig(num_warmup_runs=warmup, num_runs=runs, num_threads=threads, device=device)
    log = logging.getLogger("edgeship")
    rows = benchmark_models(models, config, progress=lambda name: log.info("bench %s", name))
    typer.echo(json.dumps({"config": asdict(config), "results": rows}, indent=2) if as_json else bench_table(rows))
    if any("error" in row for row in rows):
        raise typer.Exit(1)


@app.command(name="inspect")
def inspect_file(
    model: Path = typer.Argument(..., help="A .tflite file."),
    as_json: bool = _JSON,
) -> None:
    """Tensors, quantization, ops, full-integer and Edge TPU readiness, labels and manifest."""
    import json

    from edgeship.runtime.inspection import inspect_model
    from edgeship.runtime.render import inspect_text

    info = inspect_model(model)
    typer.echo(json.dumps(info, indent=2) if as_json else inspect_text(info))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
