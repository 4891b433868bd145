"""The gate's verdict in CI's own formats: JUnit XML for test reporters, markdown for job summaries.

Jenkins, GitLab (``artifacts: reports: junit:``) and GitHub's test-report actions all read
JUnit XML: ``<testsuites>``, one ``<testsuite>`` per validated model, one ``<testcase>`` per
check of the gate (the accuracy drop; top-1 agreement when asked; each class's recall when
``max_class_drop`` is set). A failed check is a ``<failure>`` whose message carries the measured
value, the limit, the interval and, for accuracy and recall, McNemar's exact p-value.

The markdown summary puts the verdict first, then the checks as a table. GitHub Actions shows
whatever a step appends to the file named by ``$GITHUB_STEP_SUMMARY`` on the run's page, so
:func:`write_gate_reports` appends the summary there whenever that variable is set (unless
``no_step_summary``), and never otherwise.

Example:
    >>> import numpy as np
    >>> from edgeship.runtime.validation import ValidationGate, apply_gate
    >>> result = apply_gate(np.array([1, 1, 0, 1], bool), np.array([1, 1, 1, 1], bool), 0.75, ValidationGate())
    >>> print(gate_summary(result).splitlines()[0])
    ### ❌ edgeship gate failed: model vs baseline
    >>> "<failure" in junit_xml(result)
    True
"""

from __future__ import annotations

import os
import re
import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

from edgeship.config import option
from edgeship.errors import ConfigError, EdgeshipError
from edgeship.runtime.files import atomic_write_text, display_path

__all__ = ["STEP_SUMMARY_VARIABLE", "GateReports", "gate_summary", "junit_xml", "write_gate_reports"]

STEP_SUMMARY_VARIABLE = "GITHUB_STEP_SUMMARY"  # set by GitHub Actions runners for every step
FAILURE_TYPE = "edgeship.GateFailed"

# XML 1.0 cannot carry most control characters, not even escaped; a class folder may contain them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class GateReports:
    """Where the gate's verdict goes besides the terminal.

    Example:
        >>> GateReports(junit="gate.xml", summary="gate.md").no_step_summary
        False
    """

    junit: str | None = option(None, "Write the gate as JUnit XML here (one test case per check), for CI test "
                                     "reporters.", str)
    summary: str | None = option(None, "Write the gate as a markdown summary here (verdict first, then the "
                                       "checks).", str)
    no_step_summary: bool = option(False, f"Do not append the summary to ${STEP_SUMMARY_VARIABLE} (appended by "
                                          "default when GitHub Actions sets it).")

    def __post_init__(self):
        if self.junit and self.summary and Path(self.junit) == Path(self.summary):
            raise ConfigError(f"junit and summary both name {self.junit}; give each report its own file.")


def _name(result: Mapping, key: str) -> str:
    return Path(str(result[key])).name if result.get(key) else key


def _drop_interval(check: Mapping) -> tuple[float, float] | None:
    """The interval of what the check measures: a drop is minus the (model - baseline) difference."""
    if "ci_pp" in check:
        low, high = check["ci_pp"]
        return -high, -low
    return tuple(check["ci_percent"]) if "ci_percent" in check else None


def _context(check: Mapping, confidence: float) -> str:
    parts = []
    interval = _drop_interval(check)
    if interval is not None:
        what = "CI of the drop" if "ci_pp" in check else "CI"
        parts.append(f"{confidence * 100:g} % {what} [{interval[0]:.2f}, {interval[1]:.2f}] {check['unit']}")
    if "mcnemar_p" in check:
        parts.append(f"McNemar exact p = {check['mcnemar_p']:.3g}")
    return "; ".join(parts)


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", str(text))


def _properties(suite: ET.Element, result: Mapping) -> None:
    keys = ("model", "baseline", "data", "split_digest", "num_images", "num_skipped", "accuracy",
            "baseline_accuracy", "difference_pp", "ci_pp", "confidence", "ci_method", "mcnemar_p", "p_method",
            "agreement")
    properties = ET.SubElement(suite, "properties")
    values = [(key, result[key]) for key in keys if result.get(key) is not None]
    values += [(f"gate.{key}", value) for key, value in result["gate"].items() if value is not None]
    for key, value in values:
        ET.SubElement(properties, "property", name=key, value=_clean(value))


def junit_xml(result: Mapping, suite_name: str | None = None) -> str:
    """The gate's checks as a JUnit XML document (one test case per check).

    Args:
        result: what :func:`edgeship.runtime.validation.validate` or ``apply_gate`` returned.
        suite_name: the test suite's name [``edgeship gate: MODEL vs BASELINE``].

    Example:
        >>> import numpy as np
        >>> from edgeship.runtime.validation import ValidationGate, apply_gate
        >>> ok = apply_gate(np.ones(4, bool), np.ones(4, bool), 1.0, ValidationGate(min_agreement=0.9))
        >>> import xml.etree.ElementTree as ET
        >>> [case.get("name") for case in ET.fromstring(junit_xml(ok)).iter("testcase")]
        ['accuracy drop', 'top-1 agreement']
    """
    checks = result["checks"]
    failed = sum(not check["passed"] for check in checks)
    seconds = f"{result['seconds']:.3f}" if result.get("seconds") is not None else None
    counts = {"tests": str(len(checks)), "failures": str(failed), "errors": "0"}
    root = ET.Element("testsuites", name="edgeship gate", **counts, **({"time": seconds} if seconds else {}))
    suite = ET.SubElement(root, "testsuite", name=_clean(suite_name or _title(result)), **counts, skipped="0",
                          timestamp=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
                          hostname=_clean(socket.gethostname()), **({"time": seconds} if seconds else {}))
    _properties(suite, result)
    classname = "edgeship.gate." + re.sub(r"[^\w.-]", "_", _name(result, "model"))
    for check in checks:
        case = ET.SubElement(suite, "testcase", name=_clean(check["name"]), classname=_clean(classname))
        details = "; ".join(part for part in (check["message"], _context(check, result["confidence"])) if part)
        if check["passed"]:
            ET.SubElement(case, "system-out").text = _clean(details)
        else:
            failure = ET.SubElement(case, "failure", message=_clean(details), type=FAILURE_TYPE)
            failure.text = _clean(f"{details}\nmeasured {check['value']:.2f} {check['unit']}, limit "
                                  f"{check['limit']:g} {check['unit']}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _title(result: Mapping) -> str:
    return f"edgeship gate: {_name(result, 'model')} vs {_name(result, 'baseline')}"


def _cell(text: str) -> str:
    """Markdown table cells cannot hold a pipe or a line break."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _check_row(check: Mapping) -> str:
    unit, interval = check["unit"], _drop_interval(check)
    comparison = "≥" if check["name"].startswith("top-1") else "≤"
    cells = [check["name"], f"{check['value']:.2f} {unit}", f"{comparison} {check['limit']:g} {unit}",
             f"[{interval[0]:.2f}, {interval[1]:.2f}] {unit}" if interval else "",
             f"{check['mcnemar_p']:.3g}" if "mcnemar_p" in check else "",
             "✅ pass" if check["passed"] else "❌ fail"]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def gate_summary(result: Mapping) -> str:
    """The gate as markdown: the verdict and why, then one row per check, then the numbers behind it.

    Example:
        >>> import numpy as np
        >>> from edgeship.runtime.validation import ValidationGate, apply_gate
        >>> ok = apply_gate(np.ones(4, bool), np.ones(4, bool), 1.0, ValidationGate())
        >>> gate_summary(ok).splitlines()[0]
        '### ✅ edgeship gate passed: model vs baseline'
    """
    verdict = "✅ edgeship gate passed" if result["passed"] else "❌ edgeship gate failed"
    lines = [f"### {verdict}: {_name(result, 'model')} vs {_name(result, 'baseline')}", ""]
    lines += [f"- {_cell(failure)}" for failure in result["failures"]] + ([""] if result["failures"] else [])
    lines += [f"| check | measured | limit | {result['confidence'] * 100:g} % CI | McNemar p | result |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]
    lines += [_check_row(check) for check in result["checks"]]
    low, high = result["ci_pp"]
    discordant = result["discordant"]
    images = f" on {result['num_images']} images" if "num_images" in result else ""
    lines += ["", f"Accuracy {result['accuracy'] * 100:.2f} % against {result['baseline_accuracy'] * 100:.2f} % "
                  f"for the baseline{images}: difference {result['difference_pp']:+.2f} pp, "
                  f"{result['confidence'] * 100:g} % CI [{low:+.2f}, {high:+.2f}] pp. Top-1 agreement "
                  f"{result['agreement'] * 100:.2f} %. McNemar's exact p = {result['mcnemar_p']:.3g} "
                  f"({discordant['model_only_correct']} images only the model got right, "
                  f"{discordant['baseline_only_correct']} only the baseline): reported, not gated on."]
    if result.get("class_recall") and result["gate"].get("max_class_drop") is None:
        lines += ["", "<details><summary>Recall per class</summary>", "",
                  "| class | baseline | model | drop (pp) | images |", "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {_cell(name)} | {row['baseline_recall'] * 100:.2f} % | {row['recall'] * 100:.2f} % | "
                  f"{row['drop_pp']:.2f} | {row['support']} |" for name, row in result["class_recall"].items()]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def write_gate_reports(result: Mapping, reports: GateReports, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Writes the JUnit file and the summary that ``reports`` asks for (atomically), and appends
    the summary to ``$GITHUB_STEP_SUMMARY`` when that is set and not turned off.

    Args:
        result: what :func:`edgeship.runtime.validation.validate` or ``apply_gate`` returned.
        reports: the files to write.
        environ: the environment to read ``GITHUB_STEP_SUMMARY`` from [``os.environ``].

    Returns:
        The files written or appended to.

    Raises:
        EdgeshipError: a file cannot be written (a missing folder, no permission).

    Example:
        >>> from edgeship.runtime.dataset import run_dataset
        >>> from edgeship.runtime.model import load_model
        >>> from edgeship.runtime.validation import ValidationGate, validate
        >>> result = validate(load_model("model_int8.tflite"), load_model("model_float32.tflite"),
        ...                   run_dataset("runs/flowers"), ValidationGate(max_drop=100.0))
        >>> write_gate_reports(result, GateReports(junit="gate.xml"), environ={})  # on GitHub, the job summary too
        [PosixPath('gate.xml')]
    """
    environ = os.environ if environ is None else environ
    written = []
    try:
        if reports.junit:
            written.append(atomic_write_text(reports.junit, junit_xml(result)))
        markdown = gate_summary(result)
        if reports.summary:
            written.append(atomic_write_text(reports.summary, markdown))
        step_summary = environ.get(STEP_SUMMARY_VARIABLE)
        if step_summary and not reports.no_step_summary:
            # Appended, as GitHub asks: earlier steps' summaries share the file. One write keeps it whole.
            with open(step_summary, "a", encoding="utf-8") as file:
                file.write(markdown + "\n")
            written.append(Path(step_summary))
    except OSError as e:
        raise EdgeshipError(f"Cannot write the gate's report to {display_path(e.filename or '?')}: "
                            f"{e.strerror or e}. Point --junit/--summary into a writable folder.") from e
    return written
