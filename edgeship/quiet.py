"""How loud the libraries under edgeship are: quiet by default, everything with ``-v``.

At default verbosity the terminal shows edgeship's own progress and results, and nothing of
TensorFlow's C++ logging, absl, oneDNN or CUDA probing (environment variables that TensorFlow
reads at import, and :mod:`edgeship.runtime.native_stderr` for what it prints before reading
them), LiteRT's delegate notice, or Python warnings raised inside libraries. Verbose mode
undoes all of it, so a bug report can show what the libraries said.

TensorFlow reads its variables once, at import: call :func:`configure` before anything imports
``edgeship.train`` (the CLI's root callback does).

Example:
    >>> configure(verbose=False)
    >>> import logging; logging.getLogger("tensorflow").level == logging.ERROR
    True
"""

from __future__ import annotations

import logging
import os
import warnings

from edgeship.runtime import native_stderr

__all__ = ["LIBRARY_LOGGERS", "configure"]

# Python loggers of the libraries edgeship drives; their warnings are about their own internals.
LIBRARY_LOGGERS = ("tensorflow", "absl", "h5py", "PIL", "tensorflow_model_optimization")


def configure(verbose: bool) -> None:
    """Silences library noise (``verbose=False``) or lets all of it through (``verbose=True``)."""
    native_stderr.set_enabled(not verbose)
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        warnings.resetwarnings()
        warnings.simplefilter("default")
        logging.captureWarnings(True)
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Warnings that libraries raise about themselves (legacy HDF5, converter statistics,
    # deprecations) mean nothing to a user of edgeship; edgeship's own still show.
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"edgeship(\.|$)")
    logging.captureWarnings(False)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
