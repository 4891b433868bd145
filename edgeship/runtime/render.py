"""Plain-text renderings of the runtime's results for the terminal (``--json`` prints the dicts).

Example:
    >>> print(table(["model", "ms"], [["a.tflite", "1.25"]]))
    model     ms
    --------  ----
    a.tflite  1.25
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["bench_columns", "bench_table", "compare_table", "device_line", "inspect_text", "predictions_table", "table",
           "validation_text"]


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Aligned columns; column indices in ``right`` are right-aligned (numbers)."""
    rows = [list(map(str, row)) for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]

    def line(cells):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(cells).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(row) for row in rows])


def predictions_table(predictions: Iterable[dict]) -> str:
    """One row per (image, class); unreadable images are listed after the table with their error."""
    rows, errors = [], []
    for prediction in predictions:
        name = prediction["path"]
        if "error" in prediction:
            errors.append(f"{name}: {prediction['error']}")
            continue
        if not prediction["classes"]:
            rows.append([name, "", "(no class above the threshold)", ""])
        for rank, c in enumerate(prediction["classes"], 1):
            rows.append([name if rank == 1 else "", str(c["id"]), c["label"], f"{c['score']:.4f}"])
    text = table(["image", "id", "label", "score"], rows, right=(1, 3)) if rows else ""
    return "\n\n".join(part for part in (text, "\n".join(errors) and "unreadable:\n" + "\n".join(errors)) if part)


def _number(value, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def bench_columns(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """The bench table's headers and cells; the target, accuracy and front columns appear
    when some row has them (a run directory's variants, remote devices)."""
    targets = any(row.get("target") not in (None, "local") for row in rows)
    scored = any(row.get("test_accuracy") is not None for row in rows)
    headers = (["target"] if targets else []) + ["model", "threads", "device", "MB", "init ms", "first ms", "median ms",
                                                 "p90 ms", "p99 ms", "std ms", "img/s", "peak RSS MiB"]
    headers += ["accuracy %", "agreement %", "front"] if scored else []
    lines = []
    for row in rows:
        line = ([str(row.get("target") or "")] if targets else []) + [
            Path(str(row["model"])).name, str(row.get("num_threads") or "auto")]
        if "error" in row:
            line += ["", "error"] + [""] * (len(headers) - len(line) - 2)
        else:
            line += [row.get("device") or "cpu", _number(row.get("size_bytes"), ".2f", 1e-6),
                     _number(row.get("init_ms"), ".1f"), _number(row.get("first_inference_ms"), ".2f")]
            line += [_number(row.get(key), ".3f") for key in ("median_ms", "p90_ms", "p99_ms", "std_ms")]
            rate = row.get("images_per_s")
            line += [_number(rate, ".0f" if rate and rate >= 100 else ".1f"), _number(row.get("peak_memory_mb"), ".0f")]
            if scored:
                line += [_number(row.get("test_accuracy"), ".2f", 100), _number(row.get("agreement"), ".2f", 100),
                         "*" if row.get("pareto") else ""]
        lines.append(line)
    return headers, lines


def bench_table(rows: Sequence[dict]) -> str:
    """Models side by side (each at each thread count), times in milliseconds; errors and notes below.

    Example:
        >>> print(bench_table([{"model": "m.tflite", "num_threads": 2, "size_bytes": 2e6, "init_ms": 3.0,
        ...                     "first_inference_ms": 5.0, "median_ms": 1.5, "p90_ms": 1.7, "p99_ms": 2.0,
        ...                     "std_ms": 0.1, "images_per_s": 666.7, "peak_memory_mb": 80}]))
        model     threads  device    MB  init ms  first ms  median ms  p90 ms  p99 ms  std ms  img/s  peak RSS MiB
        --------  -------  ------  ----  -------  --------  ---------  ------  ------  ------  -----  ------------
        m.tflite        2  cpu     2.00      3.0      5.00      1.500   1.700   2.000   0.100    667            80
    """
    headers, lines = bench_columns(rows)
    numeric = [i for i, h in enumerate(headers) if h not in ("target", "model", "device", "front")]
    text = table(headers, lines, right=numeric)
    notes = [f"{Path(str(r['model'])).name}: {r['error']}" for r in rows if "error" in r]
    notes += sorted({f"{Path(str(r['model'])).name}: {r['note']}" for r in rows if r.get("note")})
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def device_line(identity: dict | None) -> str:
    """One line naming a device: CPU, cores, int8 ISA features, board, OS, versions.

    Example:
        >>> device_line({"cpu_model": "Cortex-A76", "cores": 4, "isa_features": ["asimddp"],
        ...              "board": "Raspberry Pi 5", "os": "Debian 12", "python": "3.11.2",
        ...              "versions": {"ai-edge-litert": "2.3.0"}})
        'Cortex-A76, 4 cores (asimddp), Raspberry Pi 5; Debian 12; Python 3.11.2, ai-edge-litert 2.3.0'
    """
    if not identity:
        return "unknown device (not recorded)"
    features = ", ".join(identity.get("isa_features") or []) or "no int8 dot-product features"
    cpu = f"{identity.get('cpu_model') or 'unknown CPU'}, {identity.get('cores')} cores ({features})"
    versions = ", ".join(f"{name} {version}" for name, version in (identity.get("versions") or {}).items()
                         if version and name != "numpy")
    parts = [cpu + (f", {identity['board']}" if identity.get("board") else ""), identity.get("os") or "",
             f"Python {identity.get('python')}" + (f", {versions}" if versions else "")]
    return "; ".join(part for part in parts if part)


def compare_table(comparison: dict) -> str:
    """Each shared cell: both medians, NEW/OLD with its interval, and the verdict."""
    level = round(100 * comparison["confidence"])
    lines = [[c["model"], str(c["num_threads"] or "auto"), f"{c['old_median_ms']:.3f}", f"{c['new_median_ms']:.3f}",
              f"{c['ratio']:.3f}", f"{c['ci'][0]:.3f} .. {c['ci'][1]:.3f}", c["verdict"]]
             for c in comparison["cells"]]
    text = table(["model", "threads", "old median ms", "new median ms", "new/old", f"{level} % interval", "verdict"],
                 lines, right=(1, 2, 3, 4, 5))
    notes = [f"only in OLD: {', '.join(comparison['only_old'])}"] if comparison["only_old"] else []
    notes += [f"only in NEW: {', '.join(comparison['only_new'])}"] if comparison["only_new"] else []
    verdict = ("passed" if comparison["passed"] else "FAILED") + (
        f": a cell is slower when its whole interval lies above 1 and new/old exceeds "
        f"{1 + comparison['max_slowdown']:.3f} (--max-slowdown {comparison['max_slowdown']:g})")
    notes += [f"old: {device_line(comparison.get('old_device'))}", f"new: {device_line(comparison.get('new_device'))}",
              verdict]
    return text + "\n\n" + "\n".join(notes)


def validation_text(result: dict) -> str:
    """A short human summary of :func:`edgeship.runtime.validation.validate`."""
    low, high = result["ci_pp"]
    gate = result["gate"]
    lines = [
        f"model     {result['model']}",
        f"baseline  {result['baseline']}",
        f"images    {result['num_images']} ({result['num_skipped']} unreadable skipped) from {result['data']}",
        "",
        table(
            ["", "accuracy %"],
            [["model", f"{result['accuracy'] * 100:.2f}"], ["baseline", f"{result['baseline_accuracy'] * 100:.2f}"]],
            right=(1,),
        ),
        "",
        f"difference {result['difference_pp']:+.2f} pp, {result['confidence'] * 100:g} % CI "
        f"[{low:+.2f}, {high:+.2f}] pp ({result['ci_method']})",
        _mcnemar_line(result),
        f"top-1 agreement {result['agreement'] * 100:.2f} %",
    ]
    if result.get("class_recall"):
        lines += ["", _class_recall_table(result["class_recall"]), ""]
    lines.append(f"gate: drop <= {gate['max_drop']:g} pp"
                 + (f", agreement >= {gate['min_agreement'] * 100:g} %" if gate["min_agreement"] else "")
                 + (f", class recall drop <= {gate['max_class_drop']:g} pp"
                    if gate.get("max_class_drop") is not None else ""))
    if result.get("recorded_float_accuracy") is not None:
        lines.insert(4, f"recorded float test accuracy {result['recorded_float_accuracy'] * 100:.2f} %")
    lines.append("PASSED" if result["passed"] else "FAILED: " + "; ".join(result["failures"]))
    return "\n".join(lines)


def _mcnemar_line(result: dict) -> str:
    discordant = result["discordant"]
    return (f"McNemar exact p = {result['mcnemar_p']:.3g} ({discordant['model_only_correct']} images only the model "
            f"got right, {discordant['baseline_only_correct']} only the baseline; reported, not gated on)")


_MAX_CLASS_ROWS = 20  # a 1000-class model would bury the verdict; --json has every class


def _class_recall_table(recalls: dict) -> str:
    shown = list(recalls.items())
    if len(shown) > _MAX_CLASS_ROWS:
        shown = sorted(shown, key=lambda item: -item[1]["drop_pp"])[:10]
    rows = [[name, f"{row['baseline_recall'] * 100:.2f}", f"{row['recall'] * 100:.2f}", f"{row['drop_pp']:.2f}",
             str(row["support"])] for name, row in shown]
    text = table(["class", "baseline recall %", "recall %", "drop pp", "images"], rows, right=(1, 2, 3, 4))
    if len(shown) < len(recalls):
        text += f"\n({len(shown)} of {len(recalls)} classes, largest drops first; --json lists all)"
    return text


def inspect_text(info: dict) -> str:
    """A readable summary of :func:`edgeship.runtime.inspection.inspect_model`."""

    def tensors(items):
        out = []
        for t in items:
            quant = t.get("quantization")
            q = f" scale {quant['scale'][0]:g} zero point {quant['zero_point'][0] if quant['zero_point'] else 0}" \
                if quant else ""
            out.append(f"  {t['name'] or '(unnamed)'}: {t['dtype']} {t['shape']}{q}")
        return out

    labels = info["labels"]
    lines = [f"{info['model']}  ({info['size_bytes'] / 1e6:.2f} MB)", "inputs:"] + tensors(info["inputs"])
    lines += ["outputs:"] + tensors(info["outputs"])
    lines.append(f"ops: {info['num_ops']}  " + ", ".join(f"{k} x{v}" for k, v in info["op_counts"].items()))
    lines.append(f"full-integer: {'yes' if info['full_integer'] else 'no'}"
                 + ("" if info["full_integer"] else f" ({info['num_float_tensors']} float tensor uses)"))
    lines.append(f"compiled for the Edge TPU: {'yes' if info['edgetpu_compiled'] else 'no'}")
    if labels["count"]:
        lines.append(f"labels: {labels['count']} ({labels['source']}): {' | '.join(labels['first'][:5])} | ...")
    else:
        lines.append("labels: none embedded (pass --labels FILE)")
    manifest = info["manifest"]
    if manifest:
        lines.append(
            f"manifest: {manifest['quantization']}, {manifest.get('backbone') or 'unknown backbone'}, "
            f"input {manifest['image_size']}, {manifest['resize_method']} resize, mean {manifest['mean']:g}, "
            f"std {manifest['std']:g}"
        )
    else:
        lines.append("manifest: none (third-party model: bilinear resize, defaults below)")
    lines.append(_metadata_line(info.get("tflite_metadata")))
    if info.get("input_feed"):
        lines.append(f"input feed: {info['input_feed']['description']}")
    return "\n".join(lines)


def _metadata_line(metadata: dict | None) -> str:
    if not metadata:
        return "TFLite Metadata: none (MediaPipe Tasks shows no label names, and refuses a float input)"
    text = f"TFLite Metadata: {metadata['name'] or '(unnamed)'}"
    text += f" {metadata['version']}" if metadata["version"] else ""
    text += f" by {metadata['author']}" if metadata["author"] else ""
    if metadata["mean"]:
        text += f"; input {metadata['color_space'] or 'tensor'}, mean {metadata['mean']}, std {metadata['std']}"
    if metadata["input_range"]:
        text += f", range {metadata['input_range']}"
    text += f"; labels file {metadata['labels_file'] or 'none'}"
    return text + f"; parser >= {metadata['min_parser_version'] or '?'}"
