"""Runs ``inspect``, ``predict`` and ``bench`` through the CLI on each model path read from stdin.

Prints one JSON line when it starts a model and one when it is done with it, flushed, so that
the parent test can tell which model crashed the process (a signal) or hung it (no line in
time). A finished model is a failure when a command raised (a traceback), exited with another
code than 0 or 1, or failed without a one-line ``error:`` message that names the file.

Usage: python mutation_worker.py IMAGE < paths
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

from typer.testing import CliRunner

from edgeship.cli import app

_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>")


def check(args: list[str], path: str) -> str | None:
    """Why running the CLI with ``args`` was not a clean result or a clean error, or None."""
    logging.getLogger().handlers.clear()
    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"{args[0]} raised {type(result.exception).__name__}: {result.exception}"
    if _OBJECT_REPR.search(result.output) or "Traceback" in result.output:
        return f"{args[0]} printed a traceback or an object's repr: {result.output[-300:]}"
    if result.exit_code == 0:
        return None
    # bench reports a model it cannot time as a row and a "<file>: <why>" line, then exits 1.
    prefix = f"{Path(path).name}: " if args[0] == "bench" else "error: "
    errors = [line for line in result.output.splitlines() if line.startswith(prefix)]
    if result.exit_code != 1 or len(errors) != 1:
        return f"{args[0]} exited {result.exit_code} with {result.output[-300:]!r}"
    if Path(path).name not in errors[0]:
        return f"{args[0]}'s error does not name the file: {errors[0]}"
    return None


def main() -> None:
    image = sys.argv[1]
    for line in sys.stdin:
        path = line.strip()
        print(json.dumps({"start": path}), flush=True)
        problems = [check(["inspect", path], path), check(["predict", path, image], path),
                    check(["bench", path, "--num-runs", "1", "--num-warmup-runs", "0"], path)]
        print(json.dumps({"done": path, "problems": [p for p in problems if p]}), flush=True)


if __name__ == "__main__":
    main()
