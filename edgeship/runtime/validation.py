"""The CI gate: does a quantized model keep its baseline's accuracy on the same images?

Both models score the same images (each decoded once). The accuracy difference gets a
confidence interval from the *paired* outcomes, Newcombe's hybrid score interval for a
difference of paired proportions (Newcombe 1998, "Improved confidence intervals for the
difference between binomial proportions based on paired data", method 10: the Wilson
intervals of both accuracies, combined through the continuity-corrected correlation of the
paired outcomes). Unlike the Wald interval it stays sensible when the models disagree on few
images (it never collapses to zero width) and stays inside [-1, 1].

Beside the interval, McNemar's exact test asks whether the two models differ at all: only the
discordant images (one model right, the other wrong) carry that information, and under "no
difference" each is equally likely to favour either model. Its p-value is reported, not gated
on: a tiny p says a drop is real, not that it is large, and a large p on few images says
nothing about a drop being small. The interval answers the gate's question, "how much could
this cost?".

The gate fails when the point estimate of the drop exceeds ``max_drop`` percentage points,
when top-1 agreement falls below ``min_agreement``, or, with ``max_class_drop``, when any
class's recall drops by more than that many points. The CLI exits with code 3 on a failed
gate (1 stays for errors, 2 for a wrong command line), so CI can tell "worse model" from
"broken input". Each rule is one entry of the result's ``checks``, which
:mod:`edgeship.runtime.gate_report` renders as JUnit XML and markdown.

Example:
    >>> low, high = paired_difference_ci([1, 1, 0, 1], [1, 1, 1, 1])
    >>> round(low, 3), round(high, 3)
    (-0.699, 0.281)
    >>> round(mcnemar_exact_p(1, 7), 4)
    0.0703
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Callable, Sequence

import numpy as np

from edgeship.config import option
from edgeship.errors import ConfigError
from edgeship.runtime.dataset import Dataset
from edgeship.runtime.evaluation import dataset_report, score_models
from edgeship.runtime.model import Model

__all__ = ["CI_METHOD", "P_METHOD", "ValidationGate", "apply_gate", "class_recalls", "mcnemar_exact_p",
           "paired_difference_ci", "validate"]

CI_METHOD = "Newcombe (1998) method 10: hybrid Wilson score interval for paired proportions"
P_METHOD = "McNemar's exact test: two-sided binomial test on the discordant images"

# The names of the gate's checks, as the result's ``checks`` and the JUnit test cases spell them.
ACCURACY_CHECK = "accuracy drop"
AGREEMENT_CHECK = "top-1 agreement"
CLASS_CHECK = "recall drop"


@dataclass(frozen=True)
class ValidationGate:
    """What the quantized model must keep.

    Example:
        >>> ValidationGate(max_drop=0.5, max_class_drop=5.0).max_class_drop
        5.0
    """

    max_drop: float = option(1.0, "Largest allowed accuracy drop against the baseline, percentage points.")
    min_agreement: float = option(0.0, "Smallest allowed share of images with the baseline's top-1 class (0: off).")
    confidence: float = option(0.95, "Coverage of the interval on the accuracy difference.")
    max_class_drop: float | None = option(None, "Largest allowed recall drop of any one class, percentage points "
                                                "[off].", float)

    def __post_init__(self):
        if not self.max_drop >= 0:
            raise ConfigError(f"max_drop is in percentage points and must be >= 0; received {self.max_drop}.")
        if not 0 <= self.min_agreement <= 1:
            raise ConfigError(f"min_agreement is a share in [0, 1]; received {self.min_agreement}.")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence must be in (0, 1); received {self.confidence}.")
        if self.max_class_drop is not None and not 0 <= self.max_class_drop <= 100:
            raise ConfigError(f"max_class_drop is in percentage points and must be in [0, 100]; received "
                              f"{self.max_class_drop}. Leave it unset to turn the per-class check off.")


def _wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact_p(model_only_correct: int, baseline_only_correct: int) -> float:
    """Two-sided p-value of McNemar's exact (conditional) test on the discordant pairs.

    Given ``n = b + c`` images that exactly one model got right, "the models are equally good"
    makes ``b`` binomial(n, 1/2); the two-sided p-value doubles the smaller tail
    (``2 * P(X <= min(b, c))``, capped at 1), as in Fagerland, Lydersen & Laake (2013), "The
    McNemar test for binary matched-pairs data: mid-p and asymptotic are better than exact
    conditional", BMC Medical Research Methodology 13:91, equation (1).

    Args:
        model_only_correct: ``b``, images only the model got right.
        baseline_only_correct: ``c``, images only the baseline got right.

    Returns:
        The p-value; 1.0 when there is no discordant image.

    Example:
        Fagerland et al.'s worked example (Bentur et al. 2009, 21 children: 1 and 7 discordant
        pairs) has an exact p-value of 0.070:

        >>> round(mcnemar_exact_p(1, 7), 3)
        0.07
    """
    if model_only_correct < 0 or baseline_only_correct < 0:
        raise ValueError("Discordant counts cannot be negative.")
    n = model_only_correct + baseline_only_correct
    smaller = min(model_only_correct, baseline_only_correct)
    # Exact integers: float tails of 0.5**n underflow past n ~ 1000 discordant images.
    tail = sum(math.comb(n, k) for k in range(smaller + 1))
    return min(1.0, 2 * tail / 2**n) if n else 1.0


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


def _discordant(correct: np.ndarray, baseline_correct: np.ndarray) -> dict[str, int]:
    return {"model_only_correct": int((correct & ~baseline_correct).sum()),
            "baseline_only_correct": int((~correct & baseline_correct).sum())}


def _paired(correct: np.ndarray, baseline_correct: np.ndarray, confidence: float) -> dict:
    """Interval (pp) and McNemar's p of the paired outcomes."""
    low, high = paired_difference_ci(correct, baseline_correct, confidence)
    discordant = _discordant(correct, baseline_correct)
    p_value = mcnemar_exact_p(discordant["model_only_correct"], discordant["baseline_only_correct"])
    return {"ci_pp": [low * 100, high * 100], "mcnemar_p": p_value}


def class_recalls(
    correct: np.ndarray, baseline_correct: np.ndarray, targets: np.ndarray, classes: Sequence[str],
    confidence: float = 0.95,
) -> dict[str, dict]:
    """Per class, both recalls on that class's images and what the model lost.

    Classes without an image are left out (their recall is undefined).

    Returns:
        ``{class: {"baseline_recall", "recall", "drop_pp", "support", "ci_pp", "mcnemar_p"}}``,
        ``drop_pp`` positive when the model recalls less; ``ci_pp`` is the paired interval of
        the recall difference (model minus baseline) and ``mcnemar_p`` its exact test.

    Example:
        >>> r = class_recalls(np.array([1, 0, 1, 1], bool), np.array([1, 1, 1, 1], bool), np.array([0, 0, 1, 1]),
        ...                   ["cat", "dog"])
        >>> r["cat"]["recall"], r["cat"]["drop_pp"], r["dog"]["support"]
        (0.5, 50.0, 2)
    """
    correct, baseline_correct = np.asarray(correct, bool), np.asarray(baseline_correct, bool)
    targets = np.asarray(targets)
    recalls = {}
    for index, name in enumerate(classes):
        mine = targets == index
        if not mine.any():
            continue
        recall, baseline_recall = float(correct[mine].mean()), float(baseline_correct[mine].mean())
        recalls[name] = {"baseline_recall": baseline_recall, "recall": recall,
                         "drop_pp": (baseline_recall - recall) * 100, "support": int(mine.sum()),
                         **_paired(correct[mine], baseline_correct[mine], confidence)}
    return recalls


def _check(name: str, passed: bool, value: float, limit: float, unit: str, message: str, **context) -> dict:
    return {"name": name, "passed": passed, "value": value, "limit": limit, "unit": unit, "message": message,
            **context}


def _accuracy_check(accuracy: float, baseline_accuracy: float, paired: dict, gate: ValidationGate) -> dict:
    drop = (baseline_accuracy - accuracy) * 100
    passed = drop <= gate.max_drop + 1e-9
    change = f"({baseline_accuracy * 100:.2f} % -> {accuracy * 100:.2f} %)"
    message = (f"accuracy dropped {drop:.2f} pp {change}, within the allowed {gate.max_drop:g} pp" if passed else
               f"accuracy dropped {drop:.2f} pp {change}, more than the allowed {gate.max_drop:g} pp")
    return _check(ACCURACY_CHECK, passed, drop, gate.max_drop, "pp", message, **paired)


def _agreement_check(agreement: float, n: int, gate: ValidationGate) -> dict:
    low, high = _wilson(round(agreement * n), n, NormalDist().inv_cdf(0.5 + gate.confidence / 2))
    passed = agreement >= gate.min_agreement
    message = (f"top-1 agreement {agreement * 100:.2f} % is "
               + ("at least" if passed else "below") + f" the required {gate.min_agreement * 100:g} %")
    return _check(AGREEMENT_CHECK, passed, agreement * 100, gate.min_agreement * 100, "%", message,
                  ci_percent=[low * 100, high * 100])


def _class_checks(recalls: dict[str, dict], gate: ValidationGate) -> list[dict]:
    checks = []
    for name, row in recalls.items():
        passed = row["drop_pp"] <= gate.max_class_drop + 1e-9
        message = (f"class {name!r}: recall dropped {row['drop_pp']:.2f} pp ({row['baseline_recall'] * 100:.2f} % "
                   f"-> {row['recall'] * 100:.2f} % of {row['support']} images), "
                   + ("within" if passed else "more than") + f" the allowed {gate.max_class_drop:g} pp")
        checks.append(_check(f"{CLASS_CHECK}: {name}", passed, row["drop_pp"], gate.max_class_drop, "pp", message,
                             ci_pp=row["ci_pp"], mcnemar_p=row["mcnemar_p"], label=name))
    return checks


def apply_gate(
    correct: np.ndarray,
    baseline_correct: np.ndarray,
    agreement: float,
    gate: ValidationGate,
    targets: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
) -> dict:
    """The gate's verdict from per-image outcomes of a model and its baseline on the same images.

    Args:
        correct: per image, whether the model was right.
        baseline_correct: per image, whether the baseline was right.
        agreement: share of images where both models give the same top-1 class.
        gate: the limits.
        targets: per image, the true class index into ``classes``; with ``classes``, the
            result gets per-class recalls (``gate.max_class_drop`` needs them).
        classes: the class names.

    Returns:
        ``accuracy``, ``baseline_accuracy``, ``difference_pp``, ``ci_pp``, ``mcnemar_p``,
        ``agreement``, ``class_recall`` (when ``targets`` are given), ``checks`` (one per rule:
        name, passed, value, limit, message), ``passed`` and ``failures`` (the failed checks'
        messages), with the methods of the interval and the p-value.

    Raises:
        ConfigError: ``gate.max_class_drop`` is set but ``targets`` or ``classes`` are not.

    Example:
        >>> r = apply_gate(np.array([1, 1, 0, 1], bool), np.array([1, 1, 1, 1], bool), 0.75, ValidationGate())
        >>> r["passed"], round(r["difference_pp"], 1), r["failures"][0][:32], r["mcnemar_p"]
        (False, -25.0, 'accuracy dropped 25.00 pp (100.0', 1.0)
    """
    correct, baseline_correct = np.asarray(correct, bool), np.asarray(baseline_correct, bool)
    if gate.max_class_drop is not None and (targets is None or classes is None):
        raise ConfigError("max_class_drop needs each image's class: pass targets and classes to apply_gate.")
    paired = _paired(correct, baseline_correct, gate.confidence)
    accuracy, baseline_accuracy = float(correct.mean()), float(baseline_correct.mean())
    checks = [_accuracy_check(accuracy, baseline_accuracy, paired, gate)]
    if gate.min_agreement:
        checks.append(_agreement_check(agreement, correct.size, gate))
    recalls = None if targets is None else class_recalls(correct, baseline_correct, targets, classes,
                                                         gate.confidence)
    if gate.max_class_drop is not None:
        checks += _class_checks(recalls, gate)
    failures = [check["message"] for check in checks if not check["passed"]]
    return {
        "accuracy": accuracy,
        "baseline_accuracy": baseline_accuracy,
        "difference_pp": (accuracy - baseline_accuracy) * 100,
        **paired,
        "confidence": gate.confidence, "ci_method": CI_METHOD, "p_method": P_METHOD,
        "discordant": _discordant(correct, baseline_correct),
        "agreement": agreement,
        **({"class_recall": recalls} if recalls is not None else {}),
        "gate": asdict(gate),
        "checks": checks,
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
        baseline, percentage points), ``ci_pp`` (its interval), ``mcnemar_p``, ``agreement``,
        ``class_recall`` (per class: both recalls, the drop, the support), per-model
        classification reports, ``checks``, ``passed``, ``failures`` (why it failed) and
        ``seconds`` (the scoring's wall time).

    Example:
        >>> from edgeship.runtime.dataset import run_dataset
        >>> from edgeship.runtime.model import load_model
        >>> result = validate(load_model("model_int8.tflite"), load_model("model_float32.tflite"),
        ...                   run_dataset("runs/flowers"), ValidationGate(max_drop=100.0))
        >>> result["passed"], [check["name"] for check in result["checks"]]
        (True, ['accuracy drop'])
    """
    start = time.perf_counter()
    targets, predictions, texts, errors = score_models([model, baseline], data, num_workers, progress)
    agreement = float(np.mean([a == b for a, b in zip(*texts)]))
    result = apply_gate(predictions[0] == targets, predictions[1] == targets, agreement, gate, targets,
                        data.classes)
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
        "seconds": time.perf_counter() - start,
    }
