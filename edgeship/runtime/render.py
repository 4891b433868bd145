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

__all__ = ["bench_table", "inspect_text", "predictions_table", "table", "validation_text"]


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


def bench_table(rows: Sequence[dict]) -> str:
    """Models side by side, times in milliseconds."""
    lines = []
    for row in rows:
        if "error" in row:
            lines.append([Path(row["model"]).name, "", "error"] + [""] * 9)
            continue
        memory = row.get("peak_memory_mb")
        lines.append([
            Path(row["model"]).name,
            row.get("device", "cpu"),
            f"{row['size_bytes'] / 1e6:.2f}",
            f"{row['init_ms']:.1f}",
            f"{row['first_inference_ms']:.2f}",
            f"{row['median_ms']:.3f}",
            f"{row['mean_ms']:.3f}",
            f"{row['std_ms']:.3f}",
            f"{row['p90_ms']:.3f}",
            f"{row['p99_ms']:.3f}",
            f"{memory:.0f}" if memory is not None else "-",
            str(row["num_threads"] or "auto"),
        ])
    headers = ["model", "device", "MB", "init ms", "first ms", "median ms", "mean ms", "std ms", "p90 ms", "p99 ms",
               "peak RSS MiB", "threads"]
    text = table(headers, lines, right=range(2, 12))
    notes = [f"{Path(r['model']).name}: {r['error']}" for r in rows if "error" in r]
    notes += [f"{Path(r['model']).name}: {r['note']}" for r in rows if r.get("note")]
    return text + ("\n\n" + "\n".join(notes) if notes else "")


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
        f"top-1 agreement {result['agreement'] * 100:.2f} %",
        f"gate: drop <= {gate['max_drop']:g} pp" + (
            f", agreement >= {gate['min_agreement'] * 100:g} %" if gate["min_agreement"] else ""),
    ]
    if result.get("recorded_float_accuracy") is not None:
        lines.insert(4, f"recorded float test accuracy {result['recorded_float_accuracy'] * 100:.2f} %")
    lines.append("PASSED" if result["passed"] else "FAILED: " + "; ".join(result["failures"]))
    return "\n".join(lines)


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
