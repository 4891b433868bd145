"""Hiding the C++ libraries' routine chatter on stderr, and nothing else.

TensorFlow prints absl INFO lines at import (oneDNN, CUDA probing) before any setting can stop
them, the TFLite converter prints its quantization parameters, and LiteRT announces its XNNPACK
delegate. They are written by C++ straight to file descriptor 2, where Python's logging and
warnings cannot reach. :func:`filtered_native_stderr` points descriptor 2 at a temporary file
around such a call, then writes back every line that is not known chatter: errors, fatal
messages and anything unrecognised still show, only later.

``set_enabled(False)`` (``edgeship -v``) turns the filter off.

Example:
    >>> is_chatter("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    True
    >>> is_chatter("E0000 00:00:1.2 3 op_kernel.cc:1] Invalid argument: bad shape")
    False
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["filtered_native_stderr", "is_chatter", "set_enabled"]

_CHATTER = re.compile(
    r"(?:[IW]\d{4} "                                # absl INFO / WARNING lines
    r"|E\d{4} .*\bcuda_?\w*\.cc:.*cuInit"            # CUDA probing on a machine without a GPU
    r"|WARNING: All log messages before absl::InitializeLog"
    r"|To enable the following instructions: .* rebuild TensorFlow"  # tail of cpu_feature_guard's INFO
    r"|INFO: Created TensorFlow Lite XNNPACK delegate"
    r"|fully_quantize: \d+, inference_type: )"      # the converter's parameter echo
)
_state = {"enabled": True}
_lock = threading.Lock()  # one redirection of descriptor 2 at a time


def set_enabled(enabled: bool) -> None:
    """Filter (True, the default) or let everything through (False: verbose)."""
    _state["enabled"] = enabled


def is_chatter(line: str) -> bool:
    """Whether ``line`` is routine library output, safe to hide at default verbosity."""
    return _CHATTER.match(line) is not None


@contextmanager
def filtered_native_stderr() -> Iterator[None]:
    """Captures descriptor 2 for the duration of the block, then replays what is not chatter."""
    if not _state["enabled"]:
        yield
        return
    with _lock, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no descriptor 2 at all (a detached process): nothing to filter
            saved = None
        if saved is None:
            yield
            return
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            _replay(capture)


def _replay(capture) -> None:
    capture.seek(0)
    kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True) if not is_chatter(line)]
    if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()
