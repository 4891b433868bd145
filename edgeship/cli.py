"""The ``edgeship`` command. Each command imports its stage lazily, so that ``edgeship bench``
on a Raspberry Pi never loads TensorFlow.

The options of ``train``, ``export`` and ``run`` are made from the fields of ``TrainConfig``,
``ExportConfig`` and ``RunConfig`` (:func:`_config_flags`): one flag per field, named after it,
with the field's help and default, so that no default is typed twice. Flags override the
``--config`` file's tables, which override the defaults.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from edgeship.config import field_help, field_type, option
from edgeship.errors import EXIT_COMPILER_NOT_FOUND, EXIT_ERROR, EXIT_GATE_FAILED, EXIT_USAGE, EdgeshipError

EXIT_CODES_HELP = (
    f"Exit codes, the same for every command: 0 success; {EXIT_ERROR} the work could not be done (bad data, "
    f"a damaged model, a missing device); {EXIT_USAGE} the command line is wrong; {EXIT_GATE_FAILED} the "
    f"quantized model failed the quality gate (validate, run with a gate); {EXIT_COMPILER_NOT_FOUND} the Edge TPU "
    "compiler is not installed (compile, export --formats ...,edgetpu)."
)


class _Group(TyperGroup):
    """Prints an EdgeshipError as one clear line and exits with its code; other exceptions
    are bugs and keep their traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeshipError as e:
            typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
            raise typer.Exit(e.exit_code) from None


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show [defaults] and [tables] literally
    help="Fine-tune, quantize, validate and benchmark image classifiers for edge devices.\n\n" + EXIT_CODES_HELP,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs and the libraries' own messages.")) -> None:
    logging.basicConfig(
        level=logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s",
        stream=sys.stderr,
        force=True,  # each invocation (also in-process, as in tests) gets a live handler
    )
    # edgeship's own progress at INFO; the libraries' chatter stays hidden unless -v.
    logging.getLogger("edgeship").setLevel(logging.DEBUG if verbose else logging.INFO)
    from edgeship.quiet import configure

    configure(verbose)


def _echo_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


# --------------------------------------------------------------------------- options from dataclasses


def _flag_parameters(cls, exclude: tuple[str, ...]) -> list[inspect.Parameter]:
    """One keyword parameter per field of ``cls``: ``--field-name``, default None ("not given"),
    the field's help with its default shown."""
    parameters = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or f.default is dataclasses.MISSING:
            continue
        kind = field_type(f)
        default = ",".join(f.default) if isinstance(f.default, tuple) else f.default
        shown = "" if default in (None, "") else f" [default: {default}]"
        annotation = Optional[str if kind is tuple else kind]
        option_ = typer.Option(None, "--" + f.name.replace("_", "-"), help=field_help(f) + shown, show_default=False)
        parameters.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option_,
                                            annotation=annotation))
    return parameters


def _config_flags(*groups: tuple[type, tuple[str, ...]]):
    """Adds the fields of each ``(dataclass, excluded names)`` group as options; the command
    receives them in ``**flags``."""

    def decorate(func):
        signature = inspect.signature(func)
        own = [p for p in signature.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
        extra = [p for cls, exclude in groups for p in _flag_parameters(cls, exclude)]
        func.__signature__ = signature.replace(parameters=own + extra)
        return func

    return decorate


def _pick(flags: dict, cls) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in flags.items() if k in names and v is not None}


_CONFIG = typer.Option(None, "--config", help="TOML file with [train], [export] and [run] tables; flags override it.")
_JSON = typer.Option(False, "--json", help="Print JSON to stdout.")

# --------------------------------------------------------------------------- train / export / run


def _train_group():
    from edgeship.train.config import TrainConfig

    return TrainConfig, ("data_dir", "out_dir")  # the DATA_DIR argument and --out


def _export_group(*exclude: str):
    from edgeship.export.config import ExportConfig

    return ExportConfig, ("run_dir", *exclude)  # the RUN_DIR argument


@app.command()
@_config_flags(_train_group())
def train(
    data_dir: Optional[Path] = typer.Argument(None, help="Folder with one sub-folder of images per class."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory [runs/<data folder name>]."),
    config: Optional[Path] = _CONFIG,
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out."),
    as_json: bool = _JSON,
    **flags,
) -> None:
    """Fine-tune an ImageNet MobileNet or EfficientNet-Lite0 on a folder of class sub-folders."""
    from edgeship.train import load_config
    from edgeship.train import train as run_train
    from edgeship.train.config import TrainConfig

    paths = {"data_dir": str(data_dir) if data_dir else None, "out_dir": str(out) if out else None}
    result = run_train(load_config(config, **_pick(flags, TrainConfig), **paths), resume=resume)
    if as_json:
        _echo_json({"run_dir": str(result.run_dir), "model": str(result.model_path),
                    "test_accuracy": result.test_accuracy, "metrics": result.metrics})
    else:
        typer.echo(f"float test accuracy {result.test_accuracy * 100:.2f} %  run: {result.run_dir}")


@app.command()
@_config_flags(_export_group())
def export(
    run_dir: Path = typer.Argument(..., help="A run directory written by `edgeship train`."),
    config: Optional[Path] = _CONFIG,
    as_json: bool = _JSON,
    **flags,
) -> None:
    """Quantize (QAT and post-training) and convert a trained run to .tflite files, each scored."""
    from edgeship.export import ExportConfig, load_export_config, render_markdown
    from edgeship.export import export as run_export

    report = run_export(load_export_config(config, **_pick(flags, ExportConfig), run_dir=str(run_dir)))
    typer.echo(json.dumps(dict(report), indent=2) if as_json else render_markdown(report))
    compiled = report.get("edgetpu") or {}
    if compiled.get("error"):  # the other variants are written; the exit code tells CI what is missing
        from edgeship.errors import CompileError, CompilerNotFoundError

        raise (CompilerNotFoundError if compiled["compiler_missing"] else CompileError)(compiled["error"])


def _run_group():
    from edgeship.run_all import RunConfig

    return RunConfig, ("train", "export", "reports")


def _reports_group():
    """validate's and run's --junit, --summary and --no-step-summary: one definition."""
    from edgeship.runtime.gate_report import GateReports

    return GateReports, ()


@app.command("run")
# RunConfig's --min-agreement is also ExportConfig's (run_all._export_config): one flag, not two.
@_config_flags(_train_group(), _export_group("min_agreement"), _run_group(), _reports_group())
def run_all(
    data_dir: Optional[Path] = typer.Argument(None, help="Class sub-folders of images; omit for the built-in demo."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory [runs/<data folder> or runs/demo]."),
    config: Optional[Path] = _CONFIG,
    as_json: bool = _JSON,
    **flags,
) -> None:
    """Train, export, gate and bench in one go; prints one table of every variant."""
    from edgeship.config import from_values, read_config_file
    from edgeship.export import ExportConfig, load_export_config
    from edgeship.run_all import DEMO_TRAIN, RunConfig, render_summary, run
    from edgeship.runtime.gate_report import GateReports
    from edgeship.train import load_config
    from edgeship.train.config import TrainConfig

    tables = read_config_file(config)
    paths = {"data_dir": str(data_dir) if data_dir else None, "out_dir": str(out) if out else None}
    # Without a data folder: the demo, with its own defaults under the file's and the flags' values.
    train_config = load_config(config, DEMO_TRAIN if data_dir is None else None, **_pick(flags, TrainConfig), **paths)
    export_flags = {k: v for k, v in _pick(flags, ExportConfig).items() if k != "min_agreement"}
    export_config = load_export_config(config, **export_flags)
    values = {**tables.get("run", {}), **_pick(flags, RunConfig)}
    run_config = from_values(RunConfig, values, f"{config} [run]" if config else "the run options")
    reports = GateReports(**_pick(flags, GateReports))
    summary = run(dataclasses.replace(run_config, train=train_config, export=export_config, reports=reports))
    typer.echo(json.dumps(summary, indent=2) if as_json else render_summary(summary))
    if summary["gate"] is not None and not summary["gate"]["passed"]:
        typer.secho("gate failed: " + "; ".join(summary["gate"]["failures"]), err=True, fg=typer.colors.RED)
        raise typer.Exit(EXIT_GATE_FAILED)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="An exported run directory."),
    max_photos: Optional[int] = typer.Option(None, "--max-photos", help="Photos whose class int8 changed drawn on the "
                                                                       "page, closest calls first; the JSON beside it "
                                                                       "lists all [200].", show_default=False),
) -> None:
    """Write RUN/report.html: one self-contained page from float model to device (export and run write it too)."""
    from edgeship.runtime.report_page import GALLERY_CAP, write_report_page

    typer.echo(str(write_report_page(run_dir, GALLERY_CAP if max_photos is None else max_photos)))


# --------------------------------------------------------------------------- runtime


@dataclass(frozen=True)
class LoadOptions:
    """How the runtime commands load a model: the same options, names and defaults in each."""

    device: str = option("cpu", "cpu | edgetpu | edgetpu:N | usb | usb:N | pci | pci:N.")
    threads: Optional[int] = option(None, "CPU threads for the interpreter [LiteRT's default: 1 thread in LiteRT "
                                          "2.x].", int)
    labels: Optional[str] = option(None, "Label file (one per line, or '<index> <label>'); overrides embedded "
                                         "labels.", str)
    resize: Optional[str] = option(None, "bilinear | nearest | area | bilinear-asymmetric [the model file's, else "
                                         "bilinear].", str)
    mean: Optional[float] = option(None, "Input normalisation mean [the model file's; third-party: from the input "
                                         "quantization, or 127.5].", float)
    std: Optional[float] = option(None, "Input normalisation std [as --mean].", float)


_LOAD_FLAGS = (LoadOptions, ())


def _load(model: Path, flags: dict, labels: Optional[Path] = None, device: Optional[str] = None):
    """Loads ``model`` with the LoadOptions in ``flags``; ``labels``/``device`` are defaults."""
    from edgeship.runtime.model import load_model

    options = LoadOptions(**_pick(flags, LoadOptions))
    return load_model(model, device=device or options.device, num_threads=options.threads,
                      labels=options.labels or labels, resize_method=options.resize, mean=options.mean,
                      std=options.std)


def _dataset(data_dir: Optional[Path], run: Optional[Path], part: str = "test"):
    from edgeship.runtime.dataset import folder_dataset, run_dataset

    if data_dir is not None:
        return folder_dataset(data_dir)
    if run is not None:
        return run_dataset(run, part)
    raise typer.BadParameter("Pass a DATA_DIR of class folders, or --run RUN_DIR to use its recorded test split.")


def _run_labels(run: Optional[Path]) -> Optional[Path]:
    """A run's labels.txt names the classes of every model exported from it."""
    from edgeship.runtime.rundir import RunDir

    path = RunDir(run).labels_path if run is not None else None
    return path if path is not None and path.exists() else None


def _progress(length: int, label: str):
    from edgeship.progress import progress

    return progress(length, label)


_RUN = typer.Option(None, "--run", help="Score the test split recorded in this run directory (checked against its "
                                        "recorded digests).")


@app.command()
@_config_flags(_LOAD_FLAGS)
def predict(
    model: Path = typer.Argument(..., help="A .tflite classifier."),
    images: List[Path] = typer.Argument(..., help="Image files and/or folders of images."),
    top_k: int = typer.Option(5, "--top-k", help="Classes per image."),
    score_threshold: float = typer.Option(0.0, "--score-threshold", help="Lowest score shown (inclusive)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write one JSON line per image to this file as results "
                                                           "come (big folders: flat memory, nothing on stdout but a "
                                                           "summary)."),
    resume: bool = typer.Option(False, "--resume", help="With --out: keep the results the file holds and skip "
                                                        "those images (a stopped run continues)."),
    as_json: bool = _JSON,
    **flags,
) -> None:
    """Classify images: top-k labels with scores."""
    from edgeship.runtime.classify import predict as run_predict
    from edgeship.runtime.render import predictions_table

    if resume and out is None:
        raise typer.BadParameter("--resume continues the file of --out: pass --out FILE too.")
    loaded = _load(model, flags)
    predictions = run_predict(loaded, images, top_k=top_k, score_threshold=score_threshold,
                              skip=_done(out) if resume else ())
    if out is not None:
        failed, count = _predict_to_file(predictions, out, resume)
    else:
        results = [p.to_dict() for p in predictions]
        if as_json:
            _echo_json({"model": str(model), "predictions": results})
        else:
            typer.echo(predictions_table(results))
        failed, count = sum("error" in r for r in results), len(results)
    if count and failed == count:
        raise EdgeshipError(f"None of the {failed} image(s) could be read.")
    if failed:
        logging.getLogger("edgeship").warning("%d of %d images could not be read.", failed, count)


def _done(out: Path) -> set:
    from edgeship.runtime.jsonl import read_done

    done = read_done(out)
    logging.getLogger("edgeship").info("Resuming %s: %d image(s) done before, skipped", out, len(done))
    return done


def _predict_to_file(predictions, out: Path, append: bool) -> tuple[int, int]:
    """Streams predictions to ``out`` as JSON lines; returns (unreadable, written)."""
    from edgeship.runtime.jsonl import JsonLines

    failed = count = 0
    with JsonLines(out, append=append) as lines, _progress(None, f"predict -> {out.name}") as bar:
        for prediction in predictions:
            lines.write(prediction.to_dict())
            failed += prediction.error is not None
            count += 1
            bar.update()
    typer.echo(f"{count} image(s) classified into {out}" + (f", {failed} unreadable" if failed else ""))
    return failed, count


@app.command(name="eval")
@_config_flags(_LOAD_FLAGS)
def evaluate(
    model: Path = typer.Argument(..., help="A .tflite classifier."),
    data_dir: Optional[Path] = typer.Argument(None, help="Folder of class sub-folders named after the model's labels."),
    run: Optional[Path] = _RUN,
    out: Optional[Path] = typer.Option(None, "--out", help="Write eval.json, eval.md, confusion.png here "
                                                           "[with --run: RUN_DIR/eval/<model>]; or, for FILE.jsonl, "
                                                           "one JSON line per image as results come (big folders)."),
    resume: bool = typer.Option(False, "--resume", help="With --out FILE.jsonl: keep the results the file holds and "
                                                        "score only the other images (a stopped run continues)."),
    as_json: bool = _JSON,
    **flags,
) -> None:
    """Accuracy, per-class precision/recall/F1 and confusion matrix on labelled images."""
    from edgeship.runtime.evaluation import eval_markdown, evaluate_to_file, write_report
    from edgeship.runtime.evaluation import evaluate as run_evaluate
    from edgeship.runtime.rundir import RunDir

    lines = out if out is not None and out.suffix == ".jsonl" else None
    if resume and lines is None:
        raise typer.BadParameter("--resume continues the file of --out: pass --out FILE.jsonl too.")
    data = _dataset(data_dir, run)
    loaded = _load(model, flags, labels=_run_labels(run))
    if lines is not None:
        with _progress(None, f"eval {model.name} -> {lines.name}") as bar:
            report = evaluate_to_file(loaded, data, lines, resume=resume, progress=bar.update)
        out = None
    else:
        with _progress(len(data.samples), f"eval {model.name}") as bar:
            report = run_evaluate(loaded, data, progress=bar.update)
    if out is None and run is not None and data_dir is None:
        out = RunDir(run).eval_output_dir(model.stem)
    if out is not None:
        paths = write_report(report, out)
        logging.getLogger("edgeship").info("Wrote %s", ", ".join(map(str, paths.values())))
    typer.echo(json.dumps(report, indent=2) if as_json else eval_markdown(report, f"Evaluation of {model.name}"))


def _gate_group():
    from edgeship.runtime.validation import ValidationGate

    return ValidationGate, ()


@app.command()
@_config_flags(_LOAD_FLAGS, _gate_group(), _reports_group())
def validate(
    model: Path = typer.Argument(..., help="The quantized .tflite to check."),
    data_dir: Optional[Path] = typer.Argument(None, help="Folder of class sub-folders [with --run: its test split]."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="The reference .tflite [with --run: its float32 "
                                                                     "export]."),
    run: Optional[Path] = _RUN,
    as_json: bool = _JSON,
    **flags,
) -> None:
    """CI gate: score MODEL and a baseline on the same images; exit 3 when the gate fails.
    --junit and --summary write the verdict for CI; in GitHub Actions the summary is also
    appended to the job summary."""
    from edgeship.export.config import FILE_NAMES, FLOAT32
    from edgeship.runtime.gate_report import GateReports, write_gate_reports
    from edgeship.runtime.render import validation_text
    from edgeship.runtime.rundir import RunDir
    from edgeship.runtime.validation import ValidationGate
    from edgeship.runtime.validation import validate as run_validate

    gate = ValidationGate(**_pick(flags, ValidationGate))
    reports = GateReports(**_pick(flags, GateReports))
    if baseline is None:
        if run is None:
            raise typer.BadParameter("Pass --baseline PATH, or --run RUN_DIR to use its float32 export.")
        baseline = RunDir(run).export_dir / FILE_NAMES[FLOAT32]
    data = _dataset(data_dir, run)
    labels = _run_labels(run)
    quantized = _load(model, flags, labels=labels)
    reference = _load(baseline, flags, labels=labels, device="cpu")
    with _progress(len(data.samples), f"validate {model.name}") as bar:
        result = run_validate(quantized, reference, data, gate, progress=bar.update)
    typer.echo(json.dumps(result, indent=2) if as_json else validation_text(result))
    for path in write_gate_reports(result, reports):  # before the exit code: CI reads them when it fails
        logging.getLogger("edgeship").info("Wrote %s", path)
    if not result["passed"]:
        typer.secho("validation failed: " + "; ".join(result["failures"]), err=True, fg=typer.colors.RED)
        raise typer.Exit(EXIT_GATE_FAILED)


def _bench_group():
    from edgeship.runtime.bench_matrix import MatrixConfig

    return MatrixConfig, ("threads", "device")  # --threads takes "all"; --device is LoadOptions'


@app.command()
@_config_flags((LoadOptions, ("labels", "resize", "mean", "std", "threads")), _bench_group())
def bench(
    models: List[Path] = typer.Argument(..., help="A run directory (every exported variant, with its test accuracy) "
                                                  "or .tflite files; with --compare: OLD NEW; with --render: saved "
                                                  "results."),
    threads: Optional[str] = typer.Option(None, "--threads", help="Thread counts to sweep, e.g. 1,2,4; 'all': the "
                                                                  "cores this process may use [LiteRT's default]."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write bench.json, bench.md and bench.png (accuracy "
                                                           "against latency) here [RUN/bench for a run directory]."),
    on: List[str] = typer.Option([], "--on", help="Bench on this device over ssh (user@host or a name from "
                                                  "~/.ssh/config); repeat for several; 'local' is this machine."),
    compare: bool = typer.Option(False, "--compare", help="Compare two results (bench JSON or benchmark_model logs): "
                                                          "bench --compare OLD NEW; exit 3 when NEW is slower."),
    max_slowdown: float = typer.Option(0.05, "--max-slowdown", help="With --compare: the tolerated slowdown, a "
                                                                    "fraction (0.05: 5 %)."),
    render: bool = typer.Option(False, "--render", help="Render saved results (bench JSON and benchmark_model logs, "
                                                        "a log's target named by its file) into one table, and "
                                                        "with --out bench.md and bench.png; nothing is timed."),
    run: Optional[Path] = typer.Option(None, "--run", help="With --render: the run whose export report gives each "
                                                           "model file's accuracy, matched by file name (for the plot)."),
    as_json: bool = _JSON,
    **flags,
) -> None:
    """Latency of every model at every thread count, in interleaved rounds: median and tails, init,
    first invoke, images/s, peak memory, and a run's accuracy beside them."""
    if compare and render:
        raise typer.BadParameter("--compare and --render are two different uses of bench: pass one.")
    if run is not None and not render:
        raise typer.BadParameter("--run goes with --render; to bench a run's variants, pass the run directory itself.")
    if compare:
        _bench_compare(models, max_slowdown, as_json)
        return
    if render:
        _bench_render(models, out, run, as_json)
        return
    from edgeship.runtime.bench_matrix import LOCAL, MatrixConfig, bench_targets, parse_threads, resolve_models
    from edgeship.runtime.render import bench_table

    options = LoadOptions(**_pick(flags, LoadOptions))
    chosen = {**_pick(flags, MatrixConfig), "threads": parse_threads(threads), "device": options.device}
    config = MatrixConfig(**chosen)
    targets = list(on) or [LOCAL]
    out = out if out is not None else _default_bench_dir(models)
    num_blocks = len(resolve_models(models)) * len(config.threads) * (config.rounds + 1)
    with _progress(num_blocks if targets == [LOCAL] else None, "bench") as bar:
        result = bench_targets(models, targets, config, threads, progress=lambda *_: bar.update())
    if out is not None:
        from edgeship.runtime.bench_report import write_bench

        for path in write_bench(result, out):
            logging.getLogger("edgeship").info("Wrote %s", path)
    typer.echo(json.dumps(result, indent=2, default=str) if as_json else bench_table(result["results"]))
    if any("error" in row for row in result["results"]):
        raise typer.Exit(EXIT_ERROR)


def _default_bench_dir(models: List[Path]) -> Optional[Path]:
    """``RUN/bench`` when the one thing benched is an exported run directory."""
    from edgeship.runtime.rundir import RunDir

    if len(models) != 1 or not RunDir(models[0]).report_path.is_file():
        return None
    run = RunDir(models[0])
    run.check_links()  # writes go only to real folders inside the run
    return run.bench_dir


def _bench_compare(paths: List[Path], max_slowdown: float, as_json: bool) -> None:
    from edgeship.runtime.bench_compare import compare_results, load_result
    from edgeship.runtime.render import compare_table

    if len(paths) != 2:
        raise typer.BadParameter(f"--compare takes two results, OLD and NEW; received {len(paths)}.")
    comparison = compare_results(load_result(paths[0]), load_result(paths[1]), max_slowdown=max_slowdown)
    typer.echo(json.dumps(comparison, indent=2, default=str) if as_json else compare_table(comparison))
    if not comparison["passed"]:
        slower = [f"{c['model']} x{c['num_threads'] or 'auto'}" for c in comparison["cells"] if c["verdict"] == "slower"]
        typer.secho(f"latency regression: {', '.join(slower)}", err=True, fg=typer.colors.RED)
        raise typer.Exit(EXIT_GATE_FAILED)


def _bench_render(paths: List[Path], out: Optional[Path], run: Optional[Path], as_json: bool) -> None:
    from edgeship.runtime.bench_compare import load_result
    from edgeship.runtime.bench_report import merge_results, write_bench
    from edgeship.runtime.render import bench_table

    merged = merge_results([(path, load_result(path)) for path in paths], run)
    if out is not None:
        for path in write_bench(merged, out):
            logging.getLogger("edgeship").info("Wrote %s", path)
    typer.echo(json.dumps(merged, indent=2, default=str) if as_json else bench_table(merged["results"]))


def _profile_group():
    from edgeship.runtime.profile import ProfileConfig

    return ProfileConfig, ("num_threads", "device")  # --threads and --device are LoadOptions', as in bench


@app.command()
@_config_flags((LoadOptions, ("labels", "resize", "mean", "std")), _profile_group())
def profile(
    model: Path = typer.Argument(..., help="A .tflite model."),
    top: int = typer.Option(10, "--top", help="Slowest ops in the table (the JSON lists every op)."),
    run: Optional[Path] = typer.Option(None, "--run", help="The run MODEL belongs to [the run whose export/ holds "
                                                           "MODEL]: joins the Edge TPU prediction and layer drift."),
    drift: Optional[Path] = typer.Option(None, "--drift", help="A layer_drift.json to join [the run's "
                                                               "layer_drift.json, when measured]."),
    on: Optional[str] = typer.Option(None, "--on", help="Profile on this device over ssh (user@host or an ssh "
                                                        "config name); the join with the run stays local."),
    as_json: bool = _JSON,
    **flags,
) -> None:
    """Time per op on this device: the slowest ops with their share, and for a run's model its
    predicted Edge TPU placement and layer drift, flagged slow / noisy / cpu."""
    from edgeship.runtime.profile import ProfileConfig, profile_model
    from edgeship.runtime.profile_join import join_run, render_profile

    options = LoadOptions(**_pick(flags, LoadOptions))
    config = ProfileConfig(**{**_pick(flags, ProfileConfig), "num_threads": options.threads, "device": options.device})
    if on is not None:
        # ssh and its checks load only when a device is asked for.
        from edgeship.runtime.remote import run_remote

        # The device says what it is (device_identity); the name it was reached by is ours.
        report = {**run_remote(on, _profile_argv(model, config), [model]), "target": on}
    else:
        with _progress(config.num_rounds, f"profile {model.name}") as bar:
            report = profile_model(model, config, progress=bar.update)
    report = join_run(report, model, run, drift)
    typer.echo(json.dumps(report, indent=2) if as_json else render_profile(report, top))


def _profile_argv(model: Path, config) -> list[str]:
    """The same profile for a remote device: its flags from the resolved config, MODEL as given."""
    argv = ["profile", str(model), "--device", config.device]
    if config.num_threads is not None:
        argv += ["--threads", str(config.num_threads)]
    for f in dataclasses.fields(config):
        if f.name not in ("device", "num_threads"):
            argv += ["--" + f.name.replace("_", "-"), str(getattr(config, f.name))]
    return argv


@app.command(name="inspect")
def inspect_file(
    model: Path = typer.Argument(..., help="A .tflite file."),
    edgetpu: bool = typer.Option(False, "--edgetpu", help="Predict the Edge TPU compiler's op mapping, offline."),
    as_json: bool = _JSON,
) -> None:
    """Tensors, quantization, ops, full-integer and Edge TPU readiness, labels and manifest."""
    from edgeship.runtime.inspection import inspect_model
    from edgeship.runtime.render import inspect_text

    info = inspect_model(model)
    if edgetpu:
        from edgeship.edgetpu.mapping import predict_mapping, render_mapping

        info["edgetpu"] = predict_mapping(model).to_dict()
    text = inspect_text(info) + ("\n\n" + render_mapping(info["edgetpu"]) if edgetpu else "")
    typer.echo(json.dumps(info, indent=2) if as_json else text)


@app.command(name="compile")
def compile_file(
    model: Path = typer.Argument(..., help="A full-integer .tflite file."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Where to write <name>_edgetpu.tflite and its log "
                                                                   "[beside MODEL]."),
    min_runtime_version: Optional[int] = typer.Option(
        None, "--min-runtime-version", "-m", help="Oldest Edge TPU runtime the output must run on, 10-14 (the "
                                                  "compiler's -m) [the compiler's own]."),
    as_json: bool = _JSON,
) -> None:
    """Compile for the Edge TPU with edgetpu_compiler; predicted and actual mapping side by side.
    Exit 4 when the compiler is not installed (the offline prediction is printed instead)."""
    from edgeship.edgetpu.compiler import compile_model, render_comparison
    from edgeship.edgetpu.mapping import predict_mapping, render_mapping
    from edgeship.errors import CompilerNotFoundError

    try:
        result = compile_model(model, out_dir, min_runtime_version)
    except CompilerNotFoundError:
        predicted = predict_mapping(model).to_dict()
        typer.echo(json.dumps({"model": str(model), "compiled": False, "predicted": predicted}, indent=2)
                   if as_json else render_mapping(predicted))
        raise
    typer.echo(json.dumps(result, indent=2) if as_json else render_comparison(result))


@app.command()
def doctor(
    device: str = typer.Option("cpu", "--device", help="The device you mean to use: cpu | edgetpu | edgetpu:N | "
                                                       "usb[:N] | pci[:N]."),
    as_json: bool = _JSON,
) -> None:
    """Check this machine before the first run: OS, Python, LiteRT, libedgetpu, Edge TPUs, delegates.
    Exit 1 when the requested device cannot be used."""
    from edgeship.edgetpu.doctor import DoctorConfig, diagnose, render_doctor

    report = diagnose(DoctorConfig(device=device))
    typer.echo(json.dumps(report, indent=2) if as_json else render_doctor(report))
    if not report["usable"]:
        raise typer.Exit(EXIT_ERROR)


# --------------------------------------------------------------------------- the decode cache

cache_app = typer.Typer(cls=_Group, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                        help="The decode cache shared by every run on this machine: each photo decoded once per "
                             "size and resize method.")
app.add_typer(cache_app, name="cache")
_CACHE_DIR = typer.Option(None, "--cache-dir", help="The cache folder [$EDGESHIP_CACHE_DIR, else "
                                                    "$XDG_CACHE_HOME/edgeship, else ~/.cache/edgeship].")


@cache_app.command("info")
def cache_info(cache_dir: Optional[Path] = _CACHE_DIR, as_json: bool = _JSON) -> None:
    """Where the decode cache is, how many photos and bytes it holds, and its size limit."""
    from edgeship.runtime.decode_cache import DecodeCache, info_text

    info = DecodeCache(cache_dir).info()
    typer.echo(json.dumps(info, indent=2) if as_json else info_text(info))


@cache_app.command("clear")
def cache_clear(cache_dir: Optional[Path] = _CACHE_DIR) -> None:
    """Remove every decoded photo from the cache (the next run decodes its photos again)."""
    from edgeship.runtime.decode_cache import DecodeCache

    cache = DecodeCache(cache_dir)
    typer.echo(f"removed {cache.clear()} decoded photo(s) from {cache.root}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
