"""One error hierarchy. The CLI prints these without a traceback; anything else is a bug."""

__all__ = [
    "EdgeshipError", "ConfigError", "DataError", "ModelFormatError", "DelegateError", "CompileError",
    "CompilerNotFoundError", "COMPILER_NOT_FOUND_EXIT_CODE",
]

# The CLI exits with this code when `edgetpu_compiler` is missing, so that a CI job can tell
# "install the compiler" from a failed command (1) or a failed quality gate.
COMPILER_NOT_FOUND_EXIT_CODE = 4


class EdgeshipError(Exception):
    """Base of every error a user can fix by changing their input or environment."""


class ConfigError(EdgeshipError, ValueError):
    """A configuration value is out of range or not one of the allowed choices."""


class DataError(EdgeshipError, ValueError):
    """Images or a data folder are missing, unreadable or laid out wrongly."""


class ModelFormatError(EdgeshipError, ValueError):
    """A model file is missing, truncated, foreign or needs an op this runtime lacks."""


class DelegateError(EdgeshipError, RuntimeError):
    """A hardware delegate (the Edge TPU) could not be loaded or used."""


class CompileError(EdgeshipError, RuntimeError):
    """The Edge TPU compiler ran and refused the model, or failed."""


class CompilerNotFoundError(EdgeshipError, RuntimeError):
    """``edgetpu_compiler`` is not installed here; the offline prediction stands in for it."""

    exit_code = COMPILER_NOT_FOUND_EXIT_CODE
