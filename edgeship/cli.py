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
    resize_method: Optional[str] = typer.Option(None, help="bilinear | nearest | area [bilinear]."),
    augment: Optional[str] = typer.Option(None, help="none | light | medium | heavy [light]."),
    val_fraction: Optional[float] = typer.Option(None, help="Share of each class held out for validation [0.1]."),
    test_fraction: Optional[float] = typer.Option(None, help="Share of each class held out for testing [0.1]."),
    seed: Optional[int] = typer.Option(None, help="Seed of the split, shuffling and init [42]."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size per replica [32]."),
    epochs: Optional[int] = typer.Option(None, help="Phase 1 epochs, head only [5]."),
    learning_rate: Optional[float] = typer.Option(None, help="Phase 1 learning rate [1e-3]."),
    fine_tune_epochs: Optional[int] = typer.Option(None, help="Phase 2 epochs, top of backbone unfrozen; 0 skips [5]."),
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


# --------------------------------------------------------------------------- runtime


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
