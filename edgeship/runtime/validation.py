"""The CI gate: does a quantized model keep its baseline's accuracy on the same images?

Both models score the same images (each decoded once). The accuracy difference gets a
confidence interval from the *paired* outcomes, Newcombe's hybrid score interval for a
difference of paired proportions (Newcombe 1998, "Improved confidence intervals for the
difference between binomial proportions based on paired data", method 10: the Wilson
intervals of both accuracies, combined through the continuity-corrected correlation of the
paired outcomes). Unlike the Wald interval it stays sensible when the models disagree on few images (it never collapses
to zero width) and stays inside [-1, 1].

The gate fails when the point estimate of the drop exceeds ``max_drop`` percentage points,
or when top-1 agreement falls below ``min_agreement``. The CLI exits with code 2 on a failed
gate (1 stays for errors), so CI can tell "worse model" from "broken input".

Example:
    >>> low, high = paired_difference_ci([1, 1, 0, 1], [1, 1, 1, 1])
    >>> round(low, 3), round(high, 3)
    (-0.699, 0.281)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Callable, Sequence

import numpy as np

from edgeship.config import option
from edgeship.errors import ConfigError
from edgeship.runtime.dataset import Dataset
from edgeship.runtime.evaluation import dataset_report, score_models
from edgeship.runtime.model import Model

__all__ = ["CI_METHOD", "ValidationGate", "apply_gate", "paired_difference_ci", "validate"]

CI_METHOD = "Newcombe (1998) method 10: hybrid Wilson score interval for paired proportions"


@dataclass(frozen=True)
class ValidationGate:
    """What the quantized model must keep."""

    max_drop: float = option(1.0, "Largest allowed accuracy drop against the baseline, percentage points.")
    min_agreement: float = option(0.0, "Smallest allowed share of images with the baseline's top-1 class (0: off).")
    confidence: float = option(0.95, "Coverage of the interval on the accuracy difference.")

    def __post_init__(self):
        if not self.max_drop >= 0:
            raise ConfigError(f"max_drop is in percentage points and must be >= 0; received {self.max_drop}.")
        if not 0 <= self.min_agreement <= 1:
            raise ConfigError(f"min_agreement is a share in [0, 1]; received {self.min_agreement}.")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence must be in (0, 1); received {self.confidence}.")


def _wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference_ci(
    correct: Sequence[bool] | np.ndarray,
    baseline_correct: Sequence[bool] | np.ndarray,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Interval for ``accuracy(correct) - accuracy(baseline_correct)`` over the same images.

    Args:
        correct: per image, whether the model was right.
        baseline_correct: per image, whether the baseline was right.
        confidence: coverage of the interval.

    Returns:
        ``(low, high)`` as fractions (multiply by 100 for percentage points).
    """
    a = np.asarray(correct, dtype=bool)
    b = np.asarray(baseline_correct, dtype=bool)
    n = a.size
    if n == 0 or b.size != n:
        raise ValueError("Need the same, non-zero number of outcomes for both models.")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    both, only_a, only_b = int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum())
    neither = n - both - only_a - only_b
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    low1, high1 = _wilson(both + only_a, n, z)
    low2, high2 = _wilson(both + only_b, n, z)
    # Correlation of the paired outcomes, with Newcombe's continuity correction of a positive
    # association (it keeps the interval from being too narrow); 0 when a margin is empty.
    product = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    association = both * neither - only_a * only_b
    if association > 0:
        association = max(0.0, association - n / 2)
    phi = association / math.sqrt(product) if product else 0.0
    difference = p1 - p2
    below = math.sqrt(max(0.0, (p1 - low1) ** 2 - 2 * phi * (p1 - low1) * (high2 - p2) + (high2 - p2) ** 2))
    above = math.sqrt(max(0.0, (high1 - p1) ** 2 - 2 * phi * (high1 - p1) * (p2 - low2) + (p2 - low2) ** 2))
    return max(-1.0, difference - below), min(1.0, difference + above)


def apply_gate(correct: np.ndarray, baseline_correct: np.ndarray, agreement: float, gate: ValidationGate) -> dict:
    """The gate's verdict from per-image outcomes of a model and its baseline on the same images.

    Returns:
        ``accuracy``, ``baseline_accuracy``, ``difference_pp``, ``ci_pp``, ``agreement``,
        ``passed`` and ``failures`` (why it failed), with the interval's method.

    Example:
        >>> r = apply_gate(np.array([1, 1, 0, 1], bool), np.array([1, 1, 1, 1], bool), 0.75, ValidationGate())
        >>> r["passed"], round(r["difference_pp"], 1), r["failures"][0][:32]
        (False, -25.0, 'accuracy dropped 25.00 pp (100.0')
    """
    correct, baseline_correct = np.asarray(correct, bool), np.asarray(baseline_correct, bool)
    low, high = paired_difference_ci(correct, baseline_correct, gate.confidence)
    accuracy, baseline_accuracy = float(correct.mean()), float(baseline_correct.mean())
    difference = accuracy - baseline_accuracy
    failures = []
    if -difference * 100 > gate.max_drop + 1e-9:
        failures.append(
            f"accuracy dropped {-difference * 100:.2f} pp ({baseline_accuracy * 100:.2f} % -> "
            f"{accuracy * 100:.2f} %), more than the allowed {gate.max_drop:g} pp"
        )
    if agreement < gate.min_agreement:
        failures.append(f"top-1 agreement {agreement * 100:.2f} % is below the required {gate.min_agreement * 100:g} %")
    return {
        "accuracy": accuracy,
        "baseline_accuracy": baseline_accuracy,
        "difference_pp": difference * 100,
        "ci_pp": [low * 100, high * 100],
        "confidence": gate.confidence,
        "ci_method": CI_METHOD,
        "discordant": {
            "model_only_correct": int((correct & ~baseline_correct).sum()),
            "baseline_only_correct": int((~correct & baseline_correct).sum()),
        },
        "agreement": agreement,
        "gate": asdict(gate),
        "passed": not failures,
        "failures": failures,
    }


def validate(
    model: Model,
    baseline: Model,
    data: Dataset,
    gate: ValidationGate = ValidationGate(),
    num_workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Scores ``model`` and ``baseline`` on the same images and applies ``gate``.

    Returns:
        A report with ``accuracy``, ``baseline_accuracy``, ``difference_pp`` (model minus
        baseline, percentage points), ``ci_pp`` (its interval), ``agreement``, per-model
        classification reports, ``passed`` and ``failures`` (why it failed).

    Example:
        >>> result = validate(load_model("model_int8.tflite"), load_model("model_float32.tflite"),
        ...                   run_dataset("runs/flowers"), ValidationGate(max_drop=1.0))  # doctest: +SKIP
        >>> result["passed"], result["difference_pp"]                                     # doctest: +SKIP
        (True, -0.38)
    """
    targets, predictions, texts, errors = score_models([model, baseline], data, num_workers, progress)
    agreement = float(np.mean([a == b for a, b in zip(*texts)]))
    result = apply_gate(predictions[0] == targets, predictions[1] == targets, agreement, gate)
    recorded = baseline.manifest.float_test_accuracy if baseline.manifest is not None else None
    if recorded is None and model.manifest is not None:
        recorded = model.manifest.float_test_accuracy
    return {
        "model": model.path,
        "baseline": baseline.path,
        "data": data.source,
        "split_digest": data.digest,
        "num_images": int(targets.size),
        "num_skipped": len(errors),
        "skipped": errors,
        "recorded_float_accuracy": recorded,
        **result,
        "reports": {
            "model": dataset_report(data, targets, predictions[0]),
            "baseline": dataset_report(data, targets, predictions[1]),
        },
    }
