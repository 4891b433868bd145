"""One error hierarchy, and the exit codes of the ``edgeship`` command.

The CLI prints an :class:`EdgeshipError` as one line, without a traceback, and exits with the
error's ``exit_code``; anything else is a bug and keeps its traceback.
"""

__all__ = [
    "EXIT_ERROR",
    "EXIT_GATE_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "ConfigError",
    "DataError",
    "DelegateError",
    "EdgeshipError",
    "ModelFormatError",
    "RunBusyError",
]

# One meaning each, the same for every command, so a CI job can tell them apart.
EXIT_OK = 0
EXIT_ERROR = 1          # the work could not be done: bad data, a damaged model, a missing device
EXIT_USAGE = 2          # the command line is wrong (click's convention for usage errors)
EXIT_GATE_FAILED = 3    # the work was done and the model fell short of the quality gate


class EdgeshipError(Exception):
    """Base of every error a user can fix by changing their input or environment."""

    exit_code = EXIT_ERROR


class ConfigError(EdgeshipError, ValueError):
    """A configuration value is out of range or not one of the allowed choices."""


class DataError(EdgeshipError, ValueError):
    """Images or a data folder are missing, unreadable or laid out wrongly."""


class ModelFormatError(EdgeshipError, ValueError):
    """A model file is missing, truncated, foreign or needs an op this runtime lacks."""


class DelegateError(EdgeshipError, RuntimeError):
    """A hardware delegate (the Edge TPU) could not be loaded or used."""


class RunBusyError(EdgeshipError, RuntimeError):
    """Another process is training or exporting the same run directory."""
