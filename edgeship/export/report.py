"""The export report rendered as markdown (``RUN/export/report.md``)."""

from __future__ import annotations

from pathlib import Path

from edgeship.edgetpu.reporting import markdown_lines
from edgeship.export.config import INT8_MIXED

__all__ = ["render_markdown"]


def render_markdown(report: dict) -> str:
    """The export report as a markdown table."""
    float_accuracy = report["float_keras"]["test_accuracy"]
    lines = [
        f"# Export report: {Path(report['run_dir']).name}",
        "",
        f"Test split: {report['num_test_images']} images (digest `{report['split_digest'][:12]}`). "
        f"Float Keras model: **{100 * float_accuracy:.2f} %**.",
        "",
        "| variant | file | accuracy | Δ vs float (pp) | agreement with float | probability distance | size "
        "| mean latency |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, row in report["variants"].items():
        lines.append(
            f"| {kind} | {row['file']} | {100 * row['test_accuracy']:.2f} % | {row['delta_pp']:+.2f} | "
            f"{100 * row['agreement']:.2f} % | {row.get('probability_distance', float('nan')):.4f} | "
            f"{row['size_bytes'] / 1024:.0f} KiB | {row['mean_latency_ms']:.2f} ms |"
        )
    if "int8_choice_reason" in report:
        lines += ["", f"**int8 choice.** {report['int8_choice_reason']}"]
        history = report.get("qat_history_val", {})
        if history:
            lines.append(
                "QAT on the validation split by epoch (0 = calibrated, before any step), accuracy / agreement "
                "with float: " + ", ".join(
                    f"{k}: {100 * v['accuracy']:.2f} / {100 * v['agreement']:.2f} %" for k, v in history.items()
                ) + f"; kept epoch {report.get('qat_best_epoch')}."
            )
        qat = report.get("qat_test")
        if qat:
            lines.append(
                f"The QAT file, not shipped, on the test split: {100 * qat['test_accuracy']:.2f} % "
                f"({qat['delta_pp']:+.2f} pp), {100 * qat['agreement']:.2f} % agreement with float."
            )
    lines += _mixed_lines(report)
    if report.get("int16x8_note"):
        lines += ["", f"**int16x8.** {report['int16x8_note']}"]
    lines += markdown_lines(report)
    steps = report.get("step_seconds", {})
    lines += ["", f"Export took {report['export_seconds']:.0f} s" + (
        ": " + ", ".join(f"{step.replace('_', ' ')} {seconds:.1f} s" for step, seconds in steps.items()) if steps
        else "") + "."]
    return "\n".join(lines) + "\n"


def _mixed_lines(report: dict) -> list[str]:
    """What int8-mixed kept in float, and why no Edge TPU target gets it."""
    mixed = report.get(INT8_MIXED)
    if not mixed:
        return []
    kept = ", ".join(f"`{name}`" for name in mixed["float_layers"]) or "none (post-training int8 reached it)"
    searched = {"val": "the validation split", "train+val": "the train and validation images"}.get(
        mixed.get("search_images", "val"), mixed.get("search_images"))
    reached = mixed.get("search_agreement", mixed["val_agreement"])
    if mixed["reached"]:
        outcome = (f"reached {100 * reached:.2f} % top-1 agreement with the float model on {searched} "
                   f"({mixed.get('num_search_images', '?')} images; target {100 * mixed['target']:g} %), "
                   f"{100 * mixed['val_agreement']:.2f} % on the validation split")
    else:
        outcome = (f"did NOT reach the target of {100 * mixed['target']:g} %: even with every layer in float its "
                   f"agreement on {searched} is {100 * reached:.2f} % (TFLite's float kernels and "
                   "Keras' differ on the closest calls)")
    return [
        "", f"**int8-mixed.** {mixed['num_float_layers']} of {mixed['num_layers']} layers kept in float: {kept}; "
        f"it {outcome}, after {mixed['num_conversions']} conversions. The layers were ranked by their error "
        "against the float op on the search images (noise-to-signal), the fewest top-ranked ones were found "
        "by bisection, then any that could return to int8 without missing the target did. It is a CPU variant: "
        "Edge TPU targets never get it, because a float op in the middle of the graph ends the Edge TPU segment "
        "there and everything after it runs on the CPU (its predicted mapping below shows the cut).",
    ]
