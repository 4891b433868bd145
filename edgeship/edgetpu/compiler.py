"""Run Google's ``edgetpu_compiler`` when it is installed, read its log, and set what it did
beside what :mod:`edgeship.edgetpu.mapping` predicted.

The compiler exists only for x86-64 Linux (the ``edgetpu-compiler`` Debian package from Coral's
apt repository, https://coral.ai/docs/edgetpu/compiler/). Where it is missing,
:class:`~edgeship.errors.CompilerNotFoundError` says where to get it, and the offline
prediction stands in for it.

Example (needs ``edgetpu_compiler``, x86-64 Linux only)::

    result = compile_model("model_int8.tflite")
    result["output"], result["agrees"]  # ('model_int8_edgetpu.tflite', True)
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from edgeship.edgetpu.mapping import compiled_mapping, int16_activation_ops, predict_mapping
from edgeship.edgetpu.rules import STATUS_MAPPED
from edgeship.errors import CompileError, CompilerNotFoundError, ConfigError
from edgeship.runtime.files import atomic_write_bytes, atomic_write_text
from edgeship.runtime.graph import parse_graph, read_model_bytes
from edgeship.runtime.manifest import embed, read_embedded

__all__ = ["COMPILER", "compile_model", "find_compiler", "parse_compiler_log", "render_comparison"]

logger = logging.getLogger(__name__)

COMPILER = "edgetpu_compiler"
RUNTIME_VERSIONS = (10, 11, 12, 13, 14)   # what --min_runtime_version accepts (compiler 16)
_TIMEOUT_S = 600
_ROW = re.compile(r"^(?P<operator>[A-Za-z_][\w\-]*)\s+(?P<count>\d+)\s+(?P<status>\S.*?)\s*$")
_SUMMARY = {
    "compiler_version": re.compile(r"Edge TPU Compiler version (\S+)"),
    "on_edgetpu": re.compile(r"Number of operations that will run on Edge TPU:\s*(\d+)"),
    "num_on_cpu": re.compile(r"Number of operations that will run on CPU:\s*(\d+)"),
    "num_segments": re.compile(r"Number of Edge TPU subgraphs:\s*(\d+)"),
    "num_ops": re.compile(r"Total number of operations:\s*(\d+)"),
}


def find_compiler() -> str | None:
    """The path of ``edgetpu_compiler`` on PATH, or None."""
    return shutil.which(COMPILER)


def compiler_missing_message() -> str:
    return (
        f"{COMPILER} is not installed (not found on PATH). Google ships it only for x86-64 Linux: "
        "the Debian package edgetpu-compiler from Coral's apt repository (https://coral.ai/docs/edgetpu/compiler/). "
        "On a Pi, a Mac or an ARM runner, run it in an x86-64 Linux container "
        "(e.g. `docker run --platform linux/amd64 debian:bookworm`, then install the package). "
        "Until then `edgeship inspect MODEL --edgetpu` predicts its mapping offline."
    )


def parse_compiler_log(text: str) -> dict:
    """Reads the compiler's output (``-s``) or its ``.log`` file.

    Returns:
        ``rows`` (``{"operator", "count", "status"}`` as in the log), ``on_cpu`` (op name ->
        count of rows whose status is not "Mapped to Edge TPU"), and whichever summary numbers
        the text holds: ``compiler_version``, ``on_edgetpu``, ``num_on_cpu``, ``num_segments``,
        ``num_ops``.

    Example:
        >>> log = "Operator   Count   Status\\n\\nCONV_2D   3   Mapped to Edge TPU\\nARG_MAX  1  Operation not supported"
        >>> parse_compiler_log(log)["on_cpu"]
        {'ARG_MAX': 1}
    """
    rows, in_table = [], False
    for line in text.splitlines():
        if re.match(r"^\s*Operator\s+Count\s+Status\s*$", line):
            in_table = True
            continue
        match = _ROW.match(line.strip()) if in_table else None
        if match:
            rows.append({"operator": match["operator"], "count": int(match["count"]), "status": match["status"]})
        elif in_table and rows and line.strip():
            in_table = False  # the table ended
    on_cpu = Counter()
    for row in rows:
        if row["status"] != STATUS_MAPPED:
            on_cpu[row["operator"]] += row["count"]
    parsed: dict = {"rows": rows, "on_cpu": dict(on_cpu.most_common())}
    for key, pattern in _SUMMARY.items():
        found = pattern.search(text)
        if found:
            parsed[key] = found.group(1) if key == "compiler_version" else int(found.group(1))
    return parsed


def _run(compiler: str, model: Path, out_dir: Path, min_runtime_version: int | None) -> str:
    command = [compiler, "--show_operations", "--out_dir", str(out_dir)]
    if min_runtime_version is not None:
        command += ["--min_runtime_version", str(min_runtime_version)]
    # An absolute path: a file named like an option (``./--out_dir=x.tflite``) stays a file name.
    command.append(str(model.absolute()))
    logger.info("Running %s", " ".join(command))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise CompileError(f"{COMPILER} did not finish {model} within {_TIMEOUT_S} s.") from e
    except OSError as e:
        raise CompilerNotFoundError(f"{compiler_missing_message()} ({e})") from e
    output = done.stdout + done.stderr
    if done.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-5:]) or "(no output)"
        raise CompileError(
            f"{COMPILER} refused {model} (exit {done.returncode}):\n{tail}\n"
            f"`edgeship inspect {model} --edgetpu` lists the model-level problems and what to do about each."
        )
    return output


def _check_runtime(value: int | None) -> None:
    if value is not None and value not in RUNTIME_VERSIONS:
        raise ConfigError(f"min_runtime_version must be one of {', '.join(map(str, RUNTIME_VERSIONS))}; received {value}.")


def compile_model(
    model: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    min_runtime_version: int | None = None,
) -> dict:
    """Compiles ``model`` with ``edgetpu_compiler`` into ``<stem>_edgetpu.tflite`` (labels and
    manifest embedded again) and keeps the compiler's log beside it as ``<stem>_edgetpu.log``.

    Args:
        model: a full-integer ``.tflite``.
        out_dir: where to write [default: beside ``model``].
        min_runtime_version: the oldest Edge TPU runtime the output must run on (``-m``).

    Returns:
        ``model``, ``output``, ``log``, ``compiler_version``, ``predicted`` (the offline
        :class:`~edgeship.edgetpu.mapping.MappingReport` as a dict), ``actual``
        (``on_edgetpu``, ``on_cpu``, ``rows``, ``num_segments``), ``agrees`` and ``disagreements``.

    Raises:
        CompilerNotFoundError: ``edgetpu_compiler`` is not on PATH (exit code 4 in the CLI).
        CompileError: the compiler refused the model or produced no output.
        ModelFormatError: ``model`` is missing or not a TFLite file.
    """
    _check_runtime(min_runtime_version)
    source = Path(model)
    data = read_model_bytes(source)
    graph = parse_graph(data, str(source))
    if int16_activation_ops(graph):
        raise CompileError(f"{source.name} has 16-bit activations (16x8 quantization, edgeship's int16x8), which "
                           "the Edge TPU does not run: it computes on 8-bit integers only. Compile the int8 "
                           "variant (model_int8.tflite) instead.")
    predicted = predict_mapping(graph, str(source), min_runtime_version).to_dict()
    compiler = find_compiler()
    if compiler is None:
        raise CompilerNotFoundError(compiler_missing_message())
    target_dir = Path(out_dir) if out_dir is not None else source.parent
    output = target_dir / f"{source.stem}_edgetpu.tflite"
    with tempfile.TemporaryDirectory(prefix="edgeship-compile-") as tmp:
        console = _run(compiler, source, Path(tmp), min_runtime_version)
        produced = Path(tmp) / output.name
        if not produced.exists():
            raise CompileError(f"{COMPILER} reported success but wrote no {produced.name}. Its output:\n{console[-800:]}")
        log_file = produced.with_suffix(".log")
        log_text = log_file.read_text(errors="replace") if log_file.exists() else console
        compiled = produced.read_bytes()
    labels, manifest = read_embedded(data)
    if labels:
        compiled = embed(compiled, labels, manifest)  # the compiler drops the appended archive
    atomic_write_bytes(output, compiled)
    kept = console if log_text == console else f"{console}\n{log_text}"
    log_path = atomic_write_text(output.with_suffix(".log"), kept)
    actual = _actual(compiled, output, parse_compiler_log(console + "\n" + log_text))
    disagreements = _disagreements(predicted, actual)
    return {
        "model": str(source), "output": str(output), "log": str(log_path),
        "compiler_version": actual.pop("compiler_version", None),
        "predicted": predicted, "actual": actual,
        "agrees": not disagreements, "disagreements": disagreements,
    }


def _actual(compiled: bytes, output: Path, log: dict) -> dict:
    """The truth: the compiled file's ops outside ``edgetpu-custom-op``; the log's rows."""
    from_file = compiled_mapping(parse_graph(compiled, str(output)))
    num_cpu = sum(from_file["on_cpu"].values())
    on_edgetpu = log.get("on_edgetpu")
    if on_edgetpu is None and "num_ops" in log:
        on_edgetpu = log["num_ops"] - num_cpu
    rows = _dedupe(log["rows"])
    return {"on_edgetpu": on_edgetpu, "on_cpu": from_file["on_cpu"], "rows": rows,
            "num_segments": from_file["num_edgetpu_segments"], "compiler_version": log.get("compiler_version")}


def _dedupe(rows: list[dict]) -> list[dict]:
    seen, unique = set(), []
    for row in rows:  # the table appears both on stdout and in the .log file
        key = (row["operator"], row["count"], row["status"])
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def _disagreements(predicted: dict, actual: dict) -> list[str]:
    found = []
    if actual["on_edgetpu"] is not None and actual["on_edgetpu"] != predicted["on_edgetpu"]:
        found.append(f"ops on the Edge TPU: predicted {predicted['on_edgetpu']}, compiler {actual['on_edgetpu']}")
    for name in sorted(set(predicted["on_cpu"]) | set(actual["on_cpu"])):
        want, got = predicted["on_cpu"].get(name, 0), actual["on_cpu"].get(name, 0)
        if want != got:
            found.append(f"{name} on the CPU: predicted {want}, compiler {got}")
    return found


def render_comparison(result: dict) -> str:
    """Predicted and actual mapping side by side; disagreements are listed, never hidden."""
    predicted, actual = result["predicted"], result["actual"]
    names = list(dict.fromkeys(list(predicted["on_cpu"]) + list(actual["on_cpu"])))
    lines = [f"{result['model']} -> {result['output']}  (compiler {result['compiler_version'] or '?'}; log {result['log']})",
             "", f"{'':<30} {'predicted':>10} {'compiler':>10}",
             f"{'ops on the Edge TPU':<30} {predicted['on_edgetpu']:>10} {str(actual['on_edgetpu']):>10}"]
    for name in names:
        want, got = predicted["on_cpu"].get(name, 0), actual["on_cpu"].get(name, 0)
        lines.append(f"{name + ' on the CPU':<30} {want:>10} {got:>10}" + ("   <- differs" if want != got else ""))
    if result["disagreements"]:
        lines += ["", "The prediction disagrees with the compiler:"] + [f"  {d}" for d in result["disagreements"]]
    else:
        lines += ["", "The prediction agrees with the compiler."]
    return "\n".join(lines + ["", "Operation log, predicted and the compiler's:", _side_by_side(predicted["ops"], actual["rows"])])


def _side_by_side(predicted: list[dict], actual: list[dict]) -> str:
    """One line per (operator, status) of either log, with both counts."""
    counts: dict[tuple[str, str], list[int]] = {}
    for column, rows in enumerate((predicted, actual)):
        for row in rows:
            counts.setdefault((row["operator"], row["status"]), [0, 0])[column] += row["count"]
    lines = [f"{'Operator':<30} {'predicted':>9} {'compiler':>9}  Status"]
    for (operator, status), (want, got) in counts.items():
        lines.append(f"{operator:<30} {want:>9} {got:>9}  {status}" + ("" if want == got else "   <- differs"))
    return "\n".join(lines)
