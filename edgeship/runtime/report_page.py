"""The report page: ``RUN/report.html``, one self-contained file showing what the trip from
the float model to the device cost.

It gathers what the run already holds (the export report, every variant's test-split top-1 in
``predictions.json``, ``summary.json`` from ``edgeship run`` with its bench numbers and gate, the
layer drift when measured) and adds one thing: the photos whose class the shipped int8 model
changed. ``predictions.json`` keeps only top-1, so those photos go through
``model_float32.tflite`` and ``model_int8.tflite`` again, for their top-3 and a thumbnail, and
are sorted by how close the float model's call was. :mod:`edgeship.runtime.report_html` draws
the page; the full list of photos goes beside it as JSON.

Example:
    >>> write_report_page("runs/flowers")
    PosixPath('runs/flowers/report.html')
    >>> sort_by_margin([Photo(0, "a.jpg", 0, 0, 1, [Class(0, "a", 0.9), Class(1, "b", 0.1)]),
    ...                 Photo(1, "b.jpg", 1, 1, 0, [Class(1, "b", 0.5), Class(0, "a", 0.4)])])[0].path
    'b.jpg'
"""

from __future__ import annotations

import base64
import datetime
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from edgeship.errors import ConfigError, EdgeshipError
from edgeship.runtime.classify import Class, get_classes
from edgeship.runtime.device_info import device_identity
from edgeship.runtime.files import atomic_write_json, atomic_write_text, sha256_file
from edgeship.runtime.image import load_image
from edgeship.runtime.metrics import classification_report
from edgeship.runtime.rundir import RunDir, Split
from edgeship.runtime.validation import paired_difference_ci

__all__ = ["GALLERY_CAP", "Photo", "find_disagreements", "page_data", "sort_by_margin", "write_report_page",
           "write_report_page_or_warn"]

logger = logging.getLogger(__name__)

GALLERY_CAP = 200      # photos drawn on the page; the JSON beside it lists every one
THUMBNAIL_PX = 112     # longest side of a thumbnail: enough to recognise a photo, ~3 KB as JPEG
TOP_K = 3
SHIPPED = "int8"
REFERENCE = "float_keras"  # the float model the export's agreement and the gate measure int8 against
FLOAT_FILE = "float32"     # the float model as a .tflite: the runtime can give its probabilities


@dataclass
class Photo:
    """One test image on which the shipped int8 model and the float model disagree."""

    index: int                  # position in the test split (and in predictions.json)
    path: str                   # relative to the split's data root
    target: int
    float_class: int            # the float model's top-1, as the export recorded it
    int8_class: int
    float_top: list[Class] = field(default_factory=list)  # top-3 of model_float32.tflite
    int8_top: list[Class] = field(default_factory=list)
    thumbnail: str = ""         # a data: URI of a small JPEG
    missing: str = ""           # why the photo could not be read

    @property
    def margin(self) -> float | None:
        """The float model's top-1 minus top-2 probability: how close its call was."""
        return self.float_top[0].score - self.float_top[1].score if len(self.float_top) > 1 else None

    def to_dict(self, classes: list[str]) -> dict:
        return {
            "index": self.index, "path": self.path, "target": classes[self.target],
            "float": classes[self.float_class], SHIPPED: classes[self.int8_class], "margin": self.margin,
            "float_top": [c._asdict() for c in self.float_top], "int8_top": [c._asdict() for c in self.int8_top],
            **({"missing": self.missing} if self.missing else {}),
        }


def find_disagreements(predictions: dict[str, np.ndarray], split: Split) -> list[Photo]:
    """The test images where the shipped int8 model's top-1 differs from the float model's."""
    int8, reference, targets = predictions[SHIPPED], predictions[REFERENCE], predictions["targets"]
    return [Photo(int(i), split.test[i][0], int(targets[i]), int(reference[i]), int(int8[i]))
            for i in np.flatnonzero(int8 != reference)]


def sort_by_margin(photos: list[Photo]) -> list[Photo]:
    """Closest calls of the float model first; photos without scores last, in split order."""
    return sorted(photos, key=lambda p: (p.margin is None, p.margin or 0.0, p.index))


def _read_predictions(run: RunDir, kinds: Iterable[str], num_classes: int, num_test: int) -> dict[str, np.ndarray]:
    """The top-1 lists of ``predictions.json`` the page uses (targets, the float model and each of
    ``kinds``), checked: class indices, one per test image of the split."""
    data = run.read_json(run.predictions_path)
    arrays = {}
    for key in ("targets", REFERENCE, *kinds):
        if key not in data:
            continue
        values = data[key]
        if not isinstance(values, list) or not all(type(v) is int and 0 <= v < num_classes for v in values) \
                or len(values) != num_test:
            raise ConfigError(f"{run.predictions_path} is damaged: {key!r} is not one class index (0 to "
                              f"{num_classes - 1}) for each of the {num_test} test images of {run.split_path}. "
                              f"Export the run again: `edgeship export {run.path}`.")
        arrays[key] = np.asarray(values, np.int64)
    if "targets" not in arrays or REFERENCE not in arrays:
        raise ConfigError(f"{run.predictions_path} lacks the targets or the float model's predictions. Export the "
                          f"run again: `edgeship export {run.path}`.")
    return arrays


def _model_file(run: RunDir, report: dict, kind: str) -> Path | None:
    """The exported file of ``kind``, if it was exported; only a plain name inside ``export/``."""
    name = str(report.get("variants", {}).get(kind, {}).get("file", ""))
    path = run.export_dir / name
    return path if name and Path(name).name == name and path.is_file() else None


def _thumbnail(pixels: np.ndarray) -> str:
    image = Image.fromarray(pixels)
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _read_photo(split: Split, photo: Photo) -> np.ndarray | None:
    """The photo's pixels, or None with ``photo.missing`` set; a photo whose content changed since
    training is another photo, and is not shown under the old one's predictions."""
    path = Path(split.data_root) / photo.path
    try:
        if split.test[photo.index][2] and sha256_file(path) != split.test[photo.index][2]:
            photo.missing = "changed since training"
            return None
        return load_image(path)
    except (OSError, EdgeshipError) as e:
        photo.missing = "missing or unreadable" if isinstance(e, OSError) else str(e)
        return None


def _load_models(run: RunDir, report: dict, notes: list[str]) -> dict:
    """The exported float32 and int8 files that load; a note on the page for each that does not."""
    from edgeship.runtime.model import load_model

    models = {}
    for kind in (FLOAT_FILE, SHIPPED):
        path = _model_file(run, report, kind)
        try:
            if path is not None:
                models[kind] = load_model(path, num_threads=2)
        except EdgeshipError as e:
            notes.append(f"{path.name} could not be loaded ({e}); its top-3 are not shown.")
    if FLOAT_FILE not in models:
        notes.append("No loadable model_float32.tflite in the export, so the float model's probabilities are not "
                     "shown and the photos are in split order: add float32 to `edgeship export --formats`.")
    return models


def _score_photos(run: RunDir, report: dict, split: Split, photos: list[Photo], num_thumbnails: int) -> list[str]:
    """Fills in each photo's top-3 from the exported float32 and int8 files, sorts the photos by
    the float model's margin and draws thumbnails of the first ``num_thumbnails``.

    Returns:
        Notes for the page: what could not be shown, and why.
    """
    notes: list[str] = []
    models = _load_models(run, report, notes)
    if photos and not Path(split.data_root).is_dir():
        notes.append(f"The test photos are no longer in {split.data_root}: no thumbnails or top-3 are shown. "
                     "Put the data folder back there and run `edgeship report` again.")
        return notes
    logger.info("Report page: top-3 of the %d photo(s) whose class int8 changed", len(photos))
    for photo in photos:
        pixels = _read_photo(split, photo)
        if pixels is None:
            continue
        try:
            for kind, model in models.items():
                top = get_classes(model.classify(model.preprocess(pixels)), TOP_K, labels=split.classes)
                setattr(photo, "float_top" if kind == FLOAT_FILE else "int8_top", top)
        except EdgeshipError as e:  # a photo the model cannot take stays listed, with the reason
            photo.missing = str(e)
    photos[:] = sort_by_margin(photos)
    for photo in photos[:num_thumbnails]:
        pixels = None if photo.missing else _read_photo(split, photo)
        photo.thumbnail = _thumbnail(pixels) if pixels is not None else ""
    unreadable = sum(bool(p.missing) for p in photos)
    if unreadable:
        notes.append(f"{unreadable} of these {len(photos)} photos could not be read (moved, or changed since "
                     "training): they are listed without a thumbnail or top-3.")
    return notes


def _variant_rows(report: dict, predictions: dict[str, np.ndarray], bench: dict | None) -> list[dict]:
    """One row per variant: accuracy, Δ against the float model with its paired interval, size, latency."""
    targets = predictions["targets"]
    reference_correct = predictions[REFERENCE] == targets
    rows = []
    for kind, row in report.get("variants", {}).items():
        ci = None
        if kind in predictions and targets.size:
            low, high = paired_difference_ci(predictions[kind] == targets, reference_correct)
            ci = [100 * low, 100 * high]
        timing = (bench or {}).get(kind, {})
        rows.append({
            "kind": kind, "file": row.get("file", ""), "accuracy": row.get("test_accuracy"),
            "delta_pp": row.get("delta_pp"), "ci_pp": ci, "agreement": row.get("agreement"),
            "size_bytes": row.get("size_bytes"), "median_ms": timing.get("median_ms"), "p90_ms": timing.get("p90_ms"),
            "export_ms": row.get("mean_latency_ms"),
        })
    return rows


def _summary(run: RunDir, report: dict) -> tuple[dict | None, str]:
    """``summary.json`` of ``edgeship run`` when it describes this export; else None and why not."""
    if not run.summary_path.exists():
        return None, ""
    try:
        summary = run.read_json(run.summary_path)
    except ConfigError as e:
        return None, f"summary.json is not used: {e}"
    variants = summary.get("variants") if isinstance(summary.get("variants"), dict) else {}
    same = all(isinstance(variants.get(kind), dict) and variants[kind].get("size_bytes") == row.get("size_bytes")
               and variants[kind].get("test_accuracy") == row.get("test_accuracy")
               for kind, row in report.get("variants", {}).items())
    if not same:
        return None, ("summary.json describes an earlier export (its variants differ from export/report.json): its "
                      "bench numbers and gate are not shown. `edgeship run` on this run writes a new one.")
    return summary, ""


def _optional_json(run: RunDir, path: Path) -> dict | None:
    try:
        return run.read_json(path) if path.exists() else None
    except ConfigError as e:
        logger.warning("%s", e)
        return None


def page_data(run_dir: str | os.PathLike, max_photos: int = GALLERY_CAP) -> dict:
    """Everything the page shows, gathered from the run (and the photos it recorded).

    Raises:
        ConfigError: the run has no export yet, or its files are damaged.
        DataError: the run's recorded split is missing or malformed.
    """
    run = RunDir(run_dir)
    if not run.report_path.is_file():
        raise ConfigError(f"{run.path} has no export report ({run.report_path}): run `edgeship export {run.path}` "
                          "first; it writes the report page itself.")
    report = run.read_json(run.report_path)
    split = run.read_split()
    predictions = _read_predictions(run, report.get("variants", {}), len(split.classes), len(split.test))
    summary, summary_note = _summary(run, report)
    photos = find_disagreements(predictions, split) if SHIPPED in predictions else []
    notes = _score_photos(run, report, split, photos, max_photos) if photos else []
    reports = {kind: classification_report(predictions["targets"], predictions[kind], split.classes)
               for kind in (REFERENCE, SHIPPED) if kind in predictions}
    return {
        "run": run, "report": report, "split": split, "classes": split.classes, "summary": summary,
        "summary_note": summary_note, "gate": (summary or {}).get("gate"),
        "variants": _variant_rows(report, predictions, (summary or {}).get("variants")),
        "reports": reports, "photos": photos, "max_photos": max_photos, "photo_notes": notes,
        "has_int8": SHIPPED in predictions, "train_config": _optional_json(run, run.config_path),
        "layer_drift": _optional_json(run, run.layer_drift_path), "machine": device_identity(),
        "written": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_report_page(run_dir: str | os.PathLike, max_photos: int = GALLERY_CAP) -> Path:
    """Writes ``RUN/report.html`` and, beside it, every disagreement in ``RUN/report_disagreements.json``.

    Args:
        run_dir: an exported run directory.
        max_photos: photos drawn on the page, closest calls first; the JSON lists all of them.

    Returns:
        The page's path.

    Raises:
        ConfigError: the run has no export yet, or its files are damaged.

    Example:
        >>> page = write_report_page("runs/flowers", max_photos=10)
        >>> page.name, "<html" in page.read_text()
        ('report.html', True)
    """
    from edgeship.runtime.report_html import render_page

    if max_photos < 0:
        raise ConfigError(f"`max_photos` must be 0 or more; received {max_photos}.")
    data = page_data(run_dir, max_photos)
    run, classes = data["run"], data["classes"]
    atomic_write_json(run.disagreements_path, {
        "reference": REFERENCE, "model": SHIPPED,
        "order": "float model's top-1 minus top-2 probability, smallest first",
        "num_test_images": len(data["split"].test), "num_disagreements": len(data["photos"]),
        "photos": [photo.to_dict(classes) for photo in data["photos"]],
    })
    atomic_write_text(run.report_page_path, render_page(data))
    logger.info("Report page: %s", run.report_page_path)
    return run.report_page_path


def write_report_page_or_warn(run_dir: str | os.PathLike) -> Path | None:
    """:func:`write_report_page` for ``export`` and ``run``: their results stand without the page,
    so any failure to draw it is a warning, never a failed export."""
    try:
        return write_report_page(run_dir)
    except Exception as e:  # noqa: BLE001 - the page is a by-product; the export is already published
        logger.warning("The report page was not written (%s: %s); the export is complete. Retry with "
                       "`edgeship report %s`.", type(e).__name__, e, run_dir)
        logger.debug("Report page failure", exc_info=True)
        return None
