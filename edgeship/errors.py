"""One error hierarchy. The CLI prints these without a traceback; anything else is a bug."""

__all__ = ["EdgeshipError", "ConfigError", "DataError", "ModelFormatError", "DelegateError", "ClusterError"]


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


class ClusterError(EdgeshipError, RuntimeError):
    """A multi-worker training cluster lost a worker or cannot reach one."""
