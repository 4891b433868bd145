"""One error hierarchy, and the exit codes of the ``edgeship`` command.

The CLI prints an :class:`EdgeshipError` as one line, without a traceback, and exits with the
error's ``exit_code``; anything else is a bug and keeps its traceback.
"""

__all__ = [
    "EXIT_COMPILER_NOT_FOUND",
    "EXIT_ERROR",
    "EXIT_GATE_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "ClusterError",
    "CompileError",
    "CompilerNotFoundError",
    "ConfigError",
    "DataError",
    "DelegateError",
    "EdgeshipError",
    "ModelFormatError",
    "RemoteError",
    "RunBusyError",
]

# One meaning each, the same for every command, so a CI job can tell them apart.
EXIT_OK = 0
EXIT_ERROR = 1          # the work could not be done: bad data, a damaged model, a missing device
EXIT_USAGE = 2          # the command line is wrong (click's convention for usage errors)
EXIT_GATE_FAILED = 3    # the work was done and the model fell short of the quality gate
EXIT_COMPILER_NOT_FOUND = 4  # edgetpu_compiler is not installed here; the offline prediction stood in


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


class CompileError(EdgeshipError, RuntimeError):
    """The Edge TPU compiler ran and refused the model, or failed."""


class CompilerNotFoundError(EdgeshipError, RuntimeError):
    """``edgetpu_compiler`` is not installed here; the offline prediction stands in for it."""

    exit_code = EXIT_COMPILER_NOT_FOUND
class ClusterError(EdgeshipError, RuntimeError):
    """A multi-worker training cluster lost a worker or cannot reach one."""


class RemoteError(EdgeshipError, RuntimeError):
    """A device reached over ssh could not run edgeship: ssh failed, or the device's edgeship is
    missing, of another version, or failed.

    ``result`` holds the JSON the device printed before failing (a bench with one broken model
    still times the others), ``remote_exit_code`` the device's own exit code; both may be None.
    """

    def __init__(self, message: str, *, result: dict | None = None, remote_exit_code: int | None = None):
        super().__init__(message)
        self.result = result
        self.remote_exit_code = remote_exit_code
