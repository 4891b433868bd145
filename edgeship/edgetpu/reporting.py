"""The Edge TPU part of the export report: each full-integer variant's predicted mapping, and
the compiled ``model_int8_edgetpu.tflite`` when the export asked for the ``edgetpu`` format.

Example:
    >>> summary = variant_mapping(open("model_int8.tflite", "rb").read(), "model_int8.tflite")
    >>> summary["compilable"], summary["on_cpu"]
    (True, {})
"""

from __future__ import annotations

import logging
from pathlib import Path

from edgeship.edgetpu.compiler import compile_model
from edgeship.edgetpu.mapping import predict_mapping
from edgeship.errors import CompileError, CompilerNotFoundError

__all__ = ["compile_variant", "markdown_lines", "variant_mapping"]

logger = logging.getLogger(__name__)


def variant_mapping(model: bytes, name: str) -> dict:
    """The offline mapping prediction of one exported variant, as the report stores it."""
    return predict_mapping(model, name=name).to_dict()


def compile_variant(path: Path) -> dict:
    """Compiles an exported int8 file beside itself. A missing compiler or a refusal is recorded
    (``error``, ``compiler_missing``) rather than raised, so the other variants are still written."""
    try:
        result = compile_model(path)
    except CompilerNotFoundError as e:
        logger.warning("%s", e)
        return {"file": None, "error": str(e), "compiler_missing": True}
    except CompileError as e:
        logger.warning("%s", e)
        return {"file": None, "error": str(e), "compiler_missing": False}
    return {
        "file": Path(result["output"]).name, "log": Path(result["log"]).name,
        "size_bytes": Path(result["output"]).stat().st_size, "compiler_version": result["compiler_version"],
        "on_edgetpu": result["actual"]["on_edgetpu"], "on_cpu": result["actual"]["on_cpu"],
        "agrees": result["agrees"], "disagreements": result["disagreements"],
    }


def markdown_lines(report: dict) -> list[str]:
    """Report lines: the predicted mapping of each full-integer variant, then the compile."""
    lines = []
    for kind, row in report.get("variants", {}).items():
        mapping = row.get("edgetpu")
        if mapping:
            cpu = ", ".join(f"{k} x{v}" for k, v in mapping["on_cpu"].items()) or "none"
            state = "compilable" if mapping["compilable"] else "not compilable: " + "; ".join(mapping["problems"])
            lines.append(f"- {kind}: {state}; {mapping['on_edgetpu']} op(s) predicted on the Edge TPU, on the CPU: "
                         f"{cpu}; runtime >= {mapping['min_runtime_version']}")
    compiled = report.get("edgetpu")
    if compiled:
        if compiled.get("error"):
            lines.append(f"- edgetpu: not compiled. {compiled['error']}")
        else:
            verdict = "agrees" if compiled["agrees"] else "DISAGREES: " + "; ".join(compiled["disagreements"])
            lines.append(f"- edgetpu: {compiled['file']} (compiler {compiled['compiler_version']}), "
                         f"{compiled['on_edgetpu']} op(s) on the Edge TPU; the prediction {verdict}")
    return ["", "## Edge TPU", ""] + lines if lines else []
