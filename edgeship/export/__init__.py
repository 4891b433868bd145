"""The export stage: QAT and TFLite conversion into self-describing, scored model files.

Example:
    >>> from edgeship.export import ExportConfig, export            # doctest: +SKIP
    >>> report = export(ExportConfig(run_dir="runs/flowers"))       # doctest: +SKIP

Importing this package is light; TensorFlow loads when export starts.
"""

from edgeship.export.config import FORMATS, ExportConfig

__all__ = ["FORMATS", "ExportConfig", "export"]


def export(config: ExportConfig):
    """Exports per ``config``; see :func:`edgeship.export.exporter.export`."""
    from edgeship.export.exporter import export as _export

    return _export(config)
