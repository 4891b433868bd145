"""The report page's HTML: one self-contained file, no script, no network.

Everything is inline: the style sheet, the charts (SVG drawn here), the thumbnails (base64
JPEG). Sections are ``<details>`` so a run with thousands of test images opens quickly. Every
string that comes from a file (class names, paths, config values) goes through
:func:`html.escape`: labels are written by whoever made the data set.

Example:
    >>> svg = scatter_svg([("int8", 1.5, 91.0, "#0969da"), ("float32", 4.0, 92.0, "#cf222e")], "ms", "accuracy %")
    >>> svg.startswith("<svg") and svg.count("<circle") == 2
    True
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Sequence

__all__ = ["render_page", "scatter_svg"]

_PALETTE = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf3989", "#9a6700", "#0a3069", "#57606a")
_MATRIX_MAX_CLASSES = 30   # beyond this a matrix is unreadable: the most frequent confusions instead
_CLASS_TABLE_OPEN = 40     # per-class tables longer than this start folded
_DRIFT_SHADE = 0.5         # a drift this large is drawn fully shaded

_STYLE = """
:root{--ink:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#f6f8fa;--ok:#1a7f37;--bad:#cf222e;--bar:#ddf4ff}
*{box-sizing:border-box}
body{margin:0 auto;max-width:1120px;padding:12px 16px 40px;color:var(--ink);background:#fff;
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
h1{font-size:1.45em;margin:.3em 0 .1em;overflow-wrap:anywhere} h3{font-size:1em;margin:1em 0 .4em}
p{margin:.4em 0} .muted{color:var(--muted)} code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;
 font-size:12px;overflow-wrap:anywhere}
details{border:1px solid var(--line);border-radius:8px;margin:12px 0;padding:0 14px 10px}
summary{cursor:pointer;padding:10px 0;font-weight:600;font-size:1.1em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:4px 0}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600} .n{text-align:right;white-space:nowrap}
td .mono,.nw{white-space:nowrap;overflow-wrap:normal}
.verdict{padding:10px 14px;border-radius:8px;border:1px solid var(--line);background:var(--soft);margin:12px 0}
.verdict.pass{background:#dafbe1;border-color:var(--ok)} .verdict.fail{background:#ffebe9;border-color:var(--bad)}
.verdict strong{font-size:1.1em}
.charts{display:flex;flex-wrap:wrap;gap:16px} .charts svg{flex:1 1 320px;min-width:0;max-width:470px;height:auto}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px;vertical-align:-1px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,320px),1fr));gap:10px}
.photo{margin:0;border:1px solid var(--line);border-radius:8px;padding:8px;display:flex;gap:10px;min-width:0}
.thumb,.nophoto{width:112px;height:112px;object-fit:contain;background:var(--soft);flex:none;border-radius:4px}
.nophoto{display:flex;align-items:center;justify-content:center;text-align:center;font-size:12px;color:var(--muted)}
.photo figcaption{min-width:0;flex:1;font-size:13px}
.tops{display:grid;grid-template-columns:1fr 1fr;gap:6px;margin-top:4px}
.tops ol{margin:0;padding:0;list-style:none} .tops h4{margin:0;font-size:12px;color:var(--muted)}
.tops li{font-size:12px;padding:1px 4px;overflow-wrap:anywhere;border-radius:3px;
 background:linear-gradient(to right,var(--bar) var(--p),transparent var(--p))}
.tops li.right{font-weight:600}
.cm td{text-align:center;min-width:2.2em} .cm td.diag{outline:2px solid #1f2328;outline-offset:-2px}
.cm td.changed{box-shadow:inset 0 0 0 2px var(--bad)}
.matrices{display:flex;flex-wrap:wrap;gap:20px}
.bad{color:var(--bad)} .ok{color:var(--ok)}
@media (max-width:520px){.photo{flex-direction:column}.thumb,.nophoto{width:100%;height:160px}}
"""


def _e(value) -> str:
    return html.escape(str(value))


def _pct(value, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f} %"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = (), css: str = "") -> str:
    """A table of already escaped cells, in a box that scrolls sideways on a narrow screen."""
    head = "".join(f'<th class="n">{h}</th>' if i in numeric else f"<th>{h}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="scroll"><table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _section(title: str, body: str, open_: bool = True, anchor: str = "") -> str:
    return (f'<details id="{anchor}"{" open" if open_ else ""}><summary>{title}</summary>{body}</details>')


# --------------------------------------------------------------------------- the chart


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering ``[low, high]``."""
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step + 1e-9) * step
    return [first + i * step for i in range(math.ceil((high - first) / step - 1e-9) + 1)]


def _log_ticks(low: float, high: float) -> list[float]:
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    ticks = [10.0 ** d for d in decades]
    if len(ticks) <= 3:  # few decades: 2 and 5 in between keep the axis readable
        ticks = sorted(t * m for t in ticks for m in (1, 2, 5) if t * m <= 10 ** decades[-1])
    return ticks


def _format_tick(value: float) -> str:
    return f"{value:g}" if abs(value) >= 0.01 or value == 0 else f"{value:.0e}"


def _free_line(baseline: float, left: float, right: float, placed: list, dots: list) -> float:
    """The baseline nearest ``baseline`` where a name spanning ``[left, right]`` overprints neither
    another name nor another dot: variants often sit on the same spot (equal accuracy)."""
    for shift in (0, 13, -13, 26, -26, 39, -39, 52, -52):
        y = baseline + shift
        if not any(a < right and left < b and abs(y - line) < 13 for a, b, line in placed) and \
                not any(left - 6 < dx < right + 6 and -16 < dy - y < 9 for dx, dy in dots):
            return y
    return baseline + 65


def scatter_svg(points: Sequence[tuple[str, float, float, str]], x_label: str, y_label: str,
                log_x: bool = False) -> str:
    """An inline SVG scatter plot: one labelled dot per ``(name, x, y, colour)``.

    Args:
        points: the dots; names are escaped here.
        x_label: the horizontal axis' title.
        y_label: the vertical axis' title.
        log_x: a logarithmic horizontal axis (latencies spread over decades).
    """
    width, height, left, right, top, bottom = 470, 300, 58, 18, 14, 46
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    x_ticks = _log_ticks(min(xs), max(xs)) if log_x else _ticks(min(0.0, min(xs)), max(xs))
    y_ticks = _ticks(min(ys), max(ys))
    x_low, x_high = (math.log10(x_ticks[0]), math.log10(x_ticks[-1])) if log_x else (x_ticks[0], x_ticks[-1])
    x_high = x_high if x_high > x_low else x_low + 1

    def sx(x: float) -> float:
        value = math.log10(x) if log_x else x
        return left + (value - x_low) / (x_high - x_low) * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{_e(y_label)} against {_e(x_label)}" font-size="12" font-family="system-ui,sans-serif">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
             'fill="#fff" stroke="#d1d9e0"/>']
    for tick in x_ticks:
        x = sx(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}" stroke="#eef1f4"/>'
                     f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle" fill="#59636e">'
                     f"{_format_tick(tick)}</text>")
    for tick in y_ticks:
        y = sy(tick)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eef1f4"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#59636e">'
                     f"{_format_tick(tick)}</text>")
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle">{_e(x_label)}</text>'
                 f'<text transform="translate(14 {(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle">'
                 f"{_e(y_label)}</text>")
    dots = [(sx(x), sy(y)) for _, x, y, _ in points]
    placed: list[tuple[float, float, float]] = []  # (left, right, baseline) of each name drawn
    for (name, x, y, colour), (cx, cy) in zip(points, dots):
        anchor, dx = ("end", -9) if cx > width - right - 80 else ("start", 9)
        span = 6.5 * len(name)  # about the width of the name at 12 px
        left_x = cx + dx - span if anchor == "end" else cx + dx
        label_y = _free_line(cy + 4, left_x, left_x + span, placed, [d for d in dots if d != (cx, cy)])
        placed.append((left_x, left_x + span, label_y))
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="{colour}" fill-opacity="0.85" stroke="#fff">'
                     f"<title>{_e(name)}: {x:g}, {y:.2f}</title></circle>"
                     f'<text x="{cx + dx:.1f}" y="{label_y:.1f}" text-anchor="{anchor}" fill="{colour}">'
                     f"{_e(name)}</text>")
    return "".join(parts) + "</svg>"


# --------------------------------------------------------------------------- sections


def _verdict(data: dict) -> str:
    gate, photos, rows = data["gate"], data["photos"], {r["kind"]: r for r in data["variants"]}
    changed = ""
    if data["has_int8"] and "int8" in rows:
        changed = (f"<p>The shipped int8 model changed the class of <strong>{len(photos)}</strong> of "
                   f"{len(data['split'].test)} test photos ({_pct(rows['int8']['agreement'])} top-1 agreement with "
                   f'the float model; <a href="#photos">the photos</a>).</p>')
    note = f'<p class="muted">{_e(data["summary_note"])}</p>' if data["summary_note"] else ""
    if not gate:
        return (f'<div class="verdict"><strong>No gate was applied.</strong> <span class="muted">'
                "<code>edgeship run --max-drop 1</code> gates int8 against the float model (exit 3 when it falls "
                f"short).</span>{changed}{note}</div>")
    passed = bool(gate.get("passed"))
    limits = gate.get("gate", {})
    checks = gate.get("checks") or [{"passed": False, "message": m} for m in gate.get("failures", [])]
    items = "".join(f'<li class="{"ok" if c.get("passed") else "bad"}">{"✓" if c.get("passed") else "✗"} '
                    f'{_e(c.get("message", ""))}</li>' for c in checks)
    minimum = float(limits.get("min_agreement") or 0)
    agreement = f"at least {100 * minimum:g} % top-1 agreement" if minimum else "agreement not gated"
    ci = gate.get("ci_pp")
    interval = f" (95 % interval {ci[0]:+.2f} to {ci[1]:+.2f} pp)" if isinstance(ci, list) and len(ci) == 2 else ""
    return (f'<div class="verdict {"pass" if passed else "fail"}"><strong>Gate {"PASSED" if passed else "FAILED"}'
            f"</strong>: int8 against the float model, at most {_e(limits.get('max_drop', '?'))} pp lost, "
            f"{agreement}. Accuracy "
            f"{float(gate.get('difference_pp', 0)):+.2f} pp{interval}, agreement {_pct(gate.get('agreement'))}."
            f"<ul>{items}</ul>{changed}{note}</div>")


def _variants(data: dict, colours: dict[str, str]) -> str:
    rows, bench = data["variants"], any(r["median_ms"] is not None for r in data["variants"])
    cells = []
    for r in rows:
        ci = f" [{r['ci_pp'][0]:+.1f}, {r['ci_pp'][1]:+.1f}]" if r["ci_pp"] else ""
        latency = r["median_ms"] if bench else r["export_ms"]
        cells.append([f'<span class="nw"><span class="dot" style="background:{colours[r["kind"]]}"></span>'
                      f'{_e(r["kind"])}</span><br><span class="mono muted">{_e(r["file"])}</span>', _pct(r["accuracy"]),
                      "–" if r["delta_pp"] is None else f"{r['delta_pp']:+.2f}{ci}", _pct(r["agreement"]),
                      "–" if r["size_bytes"] is None else f"{r['size_bytes'] / 1024:,.0f} KiB",
                      "–" if latency is None else f"{latency:.2f} ms"]
                     + ([("–" if r["p90_ms"] is None else f"{r['p90_ms']:.2f} ms")] if bench else []))
    headers = ["variant and file", "accuracy", "Δ vs float, pp [95 % interval]", "agreement", "size",
               "median latency" if bench else "mean latency"] + (["p90"] if bench else [])
    float_accuracy = data["report"].get("float_keras", {}).get("test_accuracy")
    source = ("CPU latencies from <code>edgeship run</code>'s bench (summary.json)." if bench else
              "No bench numbers yet (<code>edgeship run</code> times every variant): the latency is the mean of "
              "one classification while the export scored the test split, 2 threads.")
    intro = (f"<p>Every variant scored by the LiteRT runtime on the same {len(data['split'].test)} test images; the "
             f"float Keras model scores {_pct(float_accuracy)}. The interval is the paired one (Newcombe's hybrid "
             f"score interval) on those images; agreement is the share of images given the float model's class. "
             f"{source}</p>")
    return intro + _table(headers, cells, numeric=(1, 2, 3, 4, 5, 6)) + _charts(rows, bench, colours)


def _charts(rows: list[dict], bench: bool, colours: dict[str, str]) -> str:
    latency_key = "median_ms" if bench else "export_ms"
    by_latency = [(r["kind"], r[latency_key], 100 * r["accuracy"], colours[r["kind"]]) for r in rows
                  if r.get(latency_key) and r["accuracy"] is not None]
    by_size = [(r["kind"], r["size_bytes"] / 1024, 100 * r["accuracy"], colours[r["kind"]]) for r in rows
               if r["size_bytes"] and r["accuracy"] is not None]
    charts = []
    if by_latency:
        spread = max(p[1] for p in by_latency) / min(p[1] for p in by_latency)
        charts.append(scatter_svg(by_latency, f"{'median' if bench else 'mean'} latency, ms"
                                  + (" (log scale)" if spread > 20 else ""), "test accuracy, %", log_x=spread > 20))
    if by_size:
        charts.append(scatter_svg(by_size, "file size, KiB", "test accuracy, %"))
    legend = "".join(f'<span><span class="dot" style="background:{c}"></span>{_e(k)}</span>'
                     for k, c in colours.items())
    return f'<h3>Accuracy against latency and size</h3><div class="charts">{"".join(charts)}</div>' \
           f'<div class="legend">{legend}</div>' if charts else ""


def _top_list(title: str, classes: list, target: int) -> str:
    items = "".join(f'<li class="{"right" if c.id == target else ""}" '
                    f'style="--p:{100 * max(0.0, min(1.0, c.score)):.0f}%">'
                    f'{_e(c.label)} <span class="muted">{c.score:.3f}</span></li>' for c in classes)
    return f"<div><h4>{title}</h4><ol>{items or '<li>–</li>'}</ol></div>"


def _photo_card(photo, classes: list[str]) -> str:
    image = (f'<img class="thumb" src="{photo.thumbnail}" alt="{_e(photo.path)}" width="112" height="112" '
             'decoding="async">' if photo.thumbnail else
             f'<div class="nophoto">{_e(photo.missing or "no thumbnail")}</div>')
    notes = []
    for name, top, recorded in (("model_float32.tflite", photo.float_top, photo.float_class),
                                ("model_int8.tflite", photo.int8_top, photo.int8_class)):
        if top and top[0].id != recorded:  # the recorded top-1 and the file's disagree: say so
            notes.append(f"{name} ranks {_e(top[0].label)} first (the export recorded {_e(classes[recorded])})")
    margin = "" if photo.margin is None else f" · float margin {photo.margin:.3f}"
    return (f'<figure class="photo">{image}<figcaption><div class="mono muted">{_e(photo.path)}</div>'
            f"<p>true <strong>{_e(classes[photo.target])}</strong>{margin}<br>"
            f"float → {_e(classes[photo.float_class])}, int8 → <strong>{_e(classes[photo.int8_class])}</strong></p>"
            + "".join(f'<p class="muted">{n}.</p>' for n in notes)
            + f'<div class="tops">{_top_list("float", photo.float_top, photo.target)}'
            f'{_top_list("int8", photo.int8_top, photo.target)}</div></figcaption></figure>')


def _photos(data: dict) -> str:
    photos, cap, classes = data["photos"], data["max_photos"], data["classes"]
    if not data["has_int8"]:
        return "<p>No int8 variant was exported, so there is nothing to compare with the float model.</p>"
    if not photos:
        return "<p>The shipped int8 model gives every test photo the float model's class.</p>"
    shown = photos[:cap]
    lines = ["<p>Every test photo where model_int8.tflite's class differs from the float model's, closest calls "
             "first (the float model's top-1 minus top-2 probability, from model_float32.tflite): where the float "
             "model hesitated, quantization's small shifts flip the answer. Bold: the true class.</p>"]
    lines += [f"<p><strong>{_e(note)}</strong></p>" for note in data["photo_notes"]]
    if len(photos) > len(shown):
        lines.append(f"<p>Showing the {len(shown)} closest of {len(photos)}; {len(photos) - len(shown)} more are "
                     f"listed with their top-3 in <code>{_e(data['run'].disagreements_path.name)}</code> beside this "
                     "page.</p>")
    cards = "".join(_photo_card(photo, classes) for photo in shown)
    return "".join(lines) + f'<div class="gallery">{cards}</div>'


def _class_table(reports: dict) -> str:
    float_report, int8_report = reports.get("float_keras"), reports.get("int8")
    rows = []
    for label, row in float_report["per_class"].items():
        other = int8_report["per_class"][label] if int8_report else None
        values = [row["precision"], row["recall"], row["f1"]] + (
            [other["precision"], other["recall"], other["f1"], other["f1"] - row["f1"]] if other else [])
        delta = f'<span class="{"bad" if values[-1] < 0 else ""}">{values[-1]:+.3f}</span>' if other else None
        rows.append([_e(label), str(row["support"])] + [f"{v:.3f}" for v in values[:6]] + ([delta] if other else []))
    headers = ["class", "images", "float precision", "float recall", "float F1"] + (
        ["int8 precision", "int8 recall", "int8 F1", "Δ F1"] if int8_report else [])
    return _table(headers, rows, numeric=tuple(range(1, len(headers))))


def _matrix(report: dict, title: str, reference: dict | None = None) -> str:
    matrix, labels = report["confusion_matrix"], report["labels"]
    head = "".join(f'<th class="n" title="{_e(label)}">{i}</th>' for i, label in enumerate(labels))
    body = []
    for i, (label, row) in enumerate(zip(labels, matrix)):
        total = max(1, sum(row))
        cells = []
        for j, count in enumerate(row):
            share = count / total
            changed = reference is not None and reference["confusion_matrix"][i][j] != count
            css = ["diag"] * (i == j) + ["changed"] * changed
            style = f"background:rgba(9,105,218,{0.08 + 0.8 * share:.2f});" + ("color:#fff;" if share > 0.5 else "")
            cells.append(f'<td class="{" ".join(css)}" style="{style if count else ""}">{count or ""}</td>')
        body.append(f'<tr><th>{i} {_e(label)}</th>{"".join(cells)}</tr>')
    return (f"<div><h3>{title}</h3><div class=\"scroll\"><table class=\"cm\"><thead><tr><th>true \\ predicted</th>"
            f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div></div>")


def _confusions(report: dict, title: str, count: int = 15) -> str:
    matrix, labels = report["confusion_matrix"], report["labels"]
    pairs = sorted(((n, i, j) for i, row in enumerate(matrix) for j, n in enumerate(row) if i != j and n),
                   reverse=True)[:count]
    rows = [[_e(labels[i]), _e(labels[j]), str(n)] for n, i, j in pairs]
    return f"<div><h3>{title}</h3>" + _table(["true class", "predicted", "images"], rows, numeric=(2,)) + "</div>"


def _classes(data: dict) -> str:
    reports = data["reports"]
    if "float_keras" not in reports:
        return "<p>predictions.json holds no float model predictions.</p>"
    int8 = reports.get("int8")
    if len(data["classes"]) <= _MATRIX_MAX_CLASSES:
        matrices = _matrix(reports["float_keras"], "Float model") + (
            _matrix(int8, "int8 (red outline: a count that differs from the float model's)", reports["float_keras"])
            if int8 else "")
        explain = "Rows: true class; columns: predicted class (numbered as the rows); shade: share of the row."
    else:
        matrices = _confusions(reports["float_keras"], "Float model: most frequent confusions") + (
            _confusions(int8, "int8: most frequent confusions") if int8 else "")
        explain = f"{len(data['classes'])} classes: the most frequent confusions instead of the full matrices."
    return (_class_table(reports) + f'<h3>Confusion matrices</h3><p class="muted">{explain}</p>'
            f'<div class="matrices">{matrices}</div>')


def _edgetpu(report: dict) -> str:
    parts = []
    for kind, row in report.get("variants", {}).items():
        mapping = row.get("edgetpu")
        if not isinstance(mapping, dict):
            continue
        cpu = ", ".join(f"{_e(op)} ×{_e(n)}" for op, n in (mapping.get("on_cpu") or {}).items()) or "none"
        state = ('<span class="ok">compilable</span>' if mapping.get("compilable") else
                 '<span class="bad">not compilable</span>: ' + _e("; ".join(map(str, mapping.get("problems", [])))))
        ops = _table(["operator", "count", "predicted status"],
                     [[_e(op.get("operator")), _e(op.get("count")), _e(op.get("status"))]
                      for op in mapping.get("ops", []) if isinstance(op, dict)], numeric=(1,))
        notes = "".join(f"<li>{_e(note)}</li>" for note in mapping.get("notes", []))
        parts.append(f"<h3>{_e(kind)}</h3><p>{state}; {_e(mapping.get('on_edgetpu', '?'))} op(s) predicted on the "
                     f"Edge TPU; on the CPU: {cpu}; Edge TPU runtime ≥ {_e(mapping.get('min_runtime_version', '?'))}"
                     f".</p>{f'<ul>{notes}</ul>' if notes else ''}{ops}")
    compiled = report.get("edgetpu")
    if isinstance(compiled, dict):
        text = compiled.get("error") or (f"{compiled.get('file')} compiled by edgetpu_compiler "
                                         f"{compiled.get('compiler_version')}: {compiled.get('on_edgetpu')} op(s) on "
                                         "the Edge TPU; the prediction " + ("agrees" if compiled.get("agrees") else
                                         "DISAGREES: " + "; ".join(map(str, compiled.get("disagreements", [])))))
        parts.append(f"<h3>Compiled</h3><p>{_e(text)}</p>")
    return "".join(parts)


def _layer_drift(drift: dict) -> str:
    variants, layers = drift.get("variants"), drift.get("layers")
    if not isinstance(variants, dict) or not isinstance(layers, list):
        return "<p>layer_drift.json has an unexpected layout; run benchmarks/layer_drift.py again.</p>"
    names = list(variants)
    rows = []
    for layer in layers:
        cells = []
        for name in names:
            value = (variants[name].get("drift") or {}).get(layer)
            shade = min(1.0, float(value) / _DRIFT_SHADE) if isinstance(value, (int, float)) else 0.0
            cells.append("" if not isinstance(value, (int, float)) else f'<span style="background:rgba(207,34,46,{0.6 * shade:.2f});'
                                                  f'padding:0 4px">{float(value):.3f}</span>')
        rows.append([_e(layer)] + cells)
    rows.append(["<strong>top-1 agreement</strong>"] + [_pct(variants[n].get("agreement"), 1) for n in names])
    machine = drift.get("machine") if isinstance(drift.get("machine"), dict) else {}
    where = f" Measured on {_e(machine.get('cpu'))}, {_e(machine.get('date'))}." if machine else ""
    return (f"<p>Relative drift of each layer's output from the float32 file's (RMS difference over the float "
            f"output's standard deviation) on {_e(drift.get('images', '?'))} validation photos; darker is further."
            f"{where}</p>"
            + _table(["layer"] + [_e(n) for n in names], rows, numeric=tuple(range(1, len(names) + 1))))


def _key_values(values: dict) -> str:
    shown = {k: ", ".join(map(str, v)) if isinstance(v, list) else v for k, v in values.items()}
    return _table(["field", "value"], [[_e(k), f'<span class="mono">{_e(v)}</span>'] for k, v in shown.items()])


def _details(data: dict) -> str:
    report, split, machine = data["report"], data["split"], data["machine"]
    data_rows = {"data root": split.data_root, "split digest": split.digest,
                 "export's split digest": report.get("split_digest", "–"),
                 "images (train / val / test)": f"{len(split.train)} / {len(split.val)} / {len(split.test)}",
                 "classes": len(split.classes), "undecodable files skipped": len(split.skipped)}
    board = f", {machine['board']}" if machine.get("board") else ""
    machine_rows = {"OS": machine["os"], "CPU": f"{machine['cpu_model']} ({machine['cores']} cores{board})",
                    "Python": machine["python"], **machine["versions"]}
    parts = ["<h3>Data</h3>", _key_values(data_rows)]
    if report.get("int8_choice_reason"):
        parts.append(f"<h3>Which int8 ships</h3><p>{_e(report['int8_choice_reason'])}</p>")
    if data["train_config"]:
        parts += ["<h3>Training config (config.json)</h3>", _key_values(data["train_config"])]
    if isinstance(report.get("config"), dict):
        parts += ["<h3>Export config</h3>", _key_values(report["config"])]
    parts += ["<h3>Machine that wrote this page</h3>", _key_values(machine_rows)]
    return "".join(parts)


def render_page(data: dict) -> str:
    """The whole page, from :func:`edgeship.runtime.report_page.page_data`'s result."""
    report, run = data["report"], data["run"]
    colours = {r["kind"]: _PALETTE[i % len(_PALETTE)] for i, r in enumerate(data["variants"])}
    config = data["train_config"] or {}
    model = (f"{config.get('backbone')} alpha {config.get('alpha')} at {config.get('image_size')} px"
             if config.get("backbone") else "")
    sections = [
        _section("Variants side by side", _variants(data, colours), anchor="variants"),
        _section(f"Photos whose class int8 changed ({len(data['photos'])})", _photos(data), anchor="photos"),
        _section("Per-class precision, recall and F1; confusion matrices", _classes(data),
                 open_=len(data["classes"]) <= _CLASS_TABLE_OPEN, anchor="classes"),
    ]
    edgetpu = _edgetpu(report)
    if edgetpu:
        sections.append(_section("Edge TPU mapping (predicted offline)", edgetpu, open_=False, anchor="edgetpu"))
    if data["layer_drift"]:
        sections.append(_section("Layer drift from the float model", _layer_drift(data["layer_drift"]), open_=False,
                                 anchor="drift"))
    sections.append(_section("Run, data, machine and versions", _details(data), open_=False, anchor="details"))
    title = f"edgeship report: {Path(str(run.path)).name}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><p class=\"muted\">{_e(model)}{' · ' if model else ''}"
            f"{len(data['split'].test)} test images · split {_e(str(data['split'].digest)[:12])} · written "
            f"{_e(data['written'])} · <span class=\"mono\">{_e(run.path)}</span></p></header>"
            f"{_verdict(data)}{''.join(sections)}</body></html>\n")
