"""The export stage: QAT and TFLite conversion into self-describing, scored model files.

Example:
    >>> from edgeship.export import ExportConfig, export            # doctest: +SKIP
    >>> report = export(ExportConfig(run_dir="runs/flowers"))       # doctest: +SKIP

Importing this package is light; TensorFlow loads when export starts.
"""

from edgeship.export.config import FORMATS, ExportConfig, load_export_config

__all__ = ["FORMATS", "ExportConfig", "export", "load_export_config", "render_markdown"]


def export(config: ExportConfig, *, report_page: bool = True):
    """Exports per ``config``; see :func:`edgeship.export.exporter.export`."""
    from edgeship.export.exporter import export as _export

    return _export(config, report_page=report_page)


def render_markdown(report: dict) -> str:
    """The export report as markdown; see :func:`edgeship.export.report.render_markdown`."""
    from edgeship.export.report import render_markdown as _render

    return _render(report)
