"""Classification metrics from predicted and true class indices (numpy only).

Shared by the train stage (the float model's test score) and the runtime's eval/validate, so
every number in a report is computed one way.

Example:
    >>> r = classification_report([0, 1, 1], [0, 1, 0], ["cat", "dog"])
    >>> round(r["accuracy"], 3), r["confusion_matrix"]
    (0.667, [[1, 0], [1, 1]])
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["classification_report", "confusion_matrix", "matrix_report", "report_markdown"]


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """Accuracy, per-class precision / recall / F1 / support, macro averages and the confusion matrix."""
    return matrix_report(confusion_matrix(y_true, y_pred, len(labels)), labels)


def matrix_report(matrix: np.ndarray, labels: Sequence[str]) -> dict:
    """:func:`classification_report` from a confusion matrix, which a stream of results can
    count up without holding one entry per image.

    Example:
        >>> matrix = confusion_matrix([0, 1, 1], [0, 1, 0], 2)
        >>> matrix_report(matrix, ["cat", "dog"]) == classification_report([0, 1, 1], [0, 1, 0], ["cat", "dog"])
        True
    """
    labels = list(labels)
    true_positive = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    # Zero when undefined (no prediction / no example of the class), as scikit-learn does by default.
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    total = int(matrix.sum())
    present = support > 0
    return {
        "num_images": total,
        "accuracy": float(true_positive.sum() / total) if total else 0.0,
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "labels": labels,
        "confusion_matrix": matrix.tolist(),
    }


def report_markdown(report: dict, title: str = "Evaluation") -> str:
    """A markdown rendering of :func:`classification_report`'s result."""
    lines = [
        f"## {title}",
        "",
        f"Accuracy **{report['accuracy'] * 100:.2f} %** on {report['num_images']} images "
        f"(macro F1 {report['macro_f1']:.3f}).",
        "",
        "| class | precision | recall | F1 | support |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, row in report["per_class"].items():
        lines.append(f"| {label} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    labels = report["labels"]
    lines += ["", "Confusion matrix (rows: true, columns: predicted)", "", "| | " + " | ".join(labels) + " |"]
    lines.append("| --- " * (len(labels) + 1) + "|")
    for label, row in zip(labels, report["confusion_matrix"]):
        lines.append(f"| **{label}** | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
