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
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        # TensorFlow's C++ and absl chatter would bury the progress lines.
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --------------------------------------------------------------------------- train / export


# --------------------------------------------------------------------------- runtime


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
