"""Progress of long steps, on stderr only: a live bar on a terminal, occasional lines otherwise.

On a terminal, :func:`progress` draws a rich bar with the count, the time spent and the time
left, and removes it when the step ends (the step's own summary line stays). When stderr is a
file or a pipe (CI, ``2> log``), a bar would be noise: a plain log line every
``LOG_EVERY_S`` seconds says how far the step is and how long it should still take. Nothing is
ever written to stdout, so ``--json`` output stays parseable. TensorFlow-free.

Example:
    >>> with progress(3, "scoring") as update:
    ...     for _ in range(3):
    ...         update()
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from typing import Iterator

__all__ = ["LOG_EVERY_S", "Progress", "progress"]

logger = logging.getLogger(__name__)

LOG_EVERY_S = 10.0


class Progress:
    """One step's progress; call it (or ``update``) to advance. Use :func:`progress` to make one."""

    def __init__(self, total: int | None, description: str, live: bool):
        self.total, self.description, self.completed, self.note = total, description, 0, ""
        self.start = self.last_log = time.perf_counter()
        self._bar = _LiveBar(total, description) if live else None

    def __call__(self, advance: int = 1, note: str | None = None) -> None:
        self.update(advance, note)

    def update(self, advance: int = 1, note: str | None = None) -> None:
        """Advances by ``advance`` items; ``note`` (e.g. the running loss) replaces the last one."""
        self.completed += advance
        self.note = note if note is not None else self.note
        if self._bar is not None:
            self._bar.update(self.completed, self.note)
        elif self.completed != self.total and time.perf_counter() - self.last_log >= LOG_EVERY_S:
            # (not at the end: the step's own summary line follows)
            self.last_log = time.perf_counter()
            logger.info("%s", self.status())

    def status(self) -> str:
        """``description: done/total (percent), time spent, time left`` in words."""
        spent = time.perf_counter() - self.start
        text = f"{self.description}: {self.completed}"
        if self.total:
            text += f"/{self.total} ({100 * self.completed / self.total:.0f} %)"
        text += f", {_duration(spent)}"
        if self.total and 0 < self.completed < self.total:
            text += f", about {_duration(spent / self.completed * (self.total - self.completed))} left"
        return text + (f"  {self.note}" if self.note else "")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


@contextmanager
def progress(total: int | None, description: str, *, live: bool | None = None) -> Iterator[Progress]:
    """Shows the progress of a step of ``total`` items (None: unknown, e.g. a conversion).

    Args:
        total: how many items the step has, or None when only the elapsed time is known.
        description: what the step does, e.g. ``"QAT epoch 2/3"``.
        live: draw a live bar; default: when stderr is a terminal.

    Yields:
        A :class:`Progress`; call it once per item done.
    """
    if live is None:
        live = _stderr_is_terminal()
    live = live and not _LiveBar.active
    tracker = Progress(total, description, live)
    try:
        yield tracker
    finally:
        tracker.close()


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class _LiveBar:
    """A transient rich bar on a duplicate of the terminal's descriptor, so that it keeps drawing
    while descriptor 2 is redirected (:mod:`edgeship.runtime.native_stderr`); log lines written
    meanwhile appear above it."""

    active = False  # rich draws one live display at a time; a step inside another logs plainly

    def __init__(self, total: int | None, description: str):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self._file = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), TextColumn("{task.fields[note]}")]
        if total is None:
            columns = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
        self._progress = Progress(*columns, console=Console(file=self._file, stderr=True), transient=True,
                                  redirect_stdout=False)
        self._task = self._progress.add_task(description, total=total, note="")
        original = sys.stderr
        self._progress.start()  # also routes sys.stderr above the bar
        self._handlers = _point_log_handlers_at(original, self._progress.console)
        _LiveBar.active = True

    def update(self, completed: int, note: str) -> None:
        self._progress.update(self._task, completed=completed, note=note)

    def close(self) -> None:
        self._progress.stop()
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._file.close()
        _LiveBar.active = False


def _point_log_handlers_at(original, console) -> list:
    """Sends the log handlers that write to ``original`` (stderr) through the live console, so
    their lines print above the bar; returns (handler, previous stream) pairs."""
    from rich.file_proxy import FileProxy

    proxy = sys.stderr if isinstance(sys.stderr, FileProxy) else FileProxy(console, original)
    swapped = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is original:
            swapped.append((handler, handler.setStream(proxy)))
    return swapped
