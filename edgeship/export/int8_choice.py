"""Which int8 file ships: the QAT model or post-training int8, decided on the validation split.

Example:
    >>> import numpy as np
    >>> scores = np.eye(3)[[0, 1, 2, 0]]
    >>> choose_int8(scores, scores, np.array([0, 1, 2, 0]), scores)["use_qat"]
    True
"""

from __future__ import annotations

import numpy as np

from edgeship.runtime.validation import paired_difference_ci

__all__ = ["choose_int8", "probability_distance"]


def probability_distance(scores: np.ndarray, float_scores: np.ndarray) -> float:
    """Mean total-variation distance between two models' class probabilities, image by image:
    0 when identical, 1 when they never share any probability mass.

    Example:
        >>> probability_distance(np.array([[0.9, 0.1]]), np.array([[0.7, 0.3]]))
        0.2
    """
    return round(float(np.mean(0.5 * np.abs(np.asarray(scores, np.float64) - float_scores).sum(axis=1))), 12)


def choose_int8(qat: np.ndarray, ptq: np.ndarray, labels: np.ndarray, float_scores: np.ndarray) -> dict:
    """Which int8 file ships, from both candidates' validation class scores, and why.

    The more accurate one ships when the paired 95 % interval of the accuracy difference
    excludes zero. Otherwise the accuracies differ by a few images either way, which chance
    alone moves on a split of a few hundred (two quantized copies of one float model differ
    only on its close calls), and the one closer to the float model ships: the lower mean
    total-variation distance between its class probabilities and the float model's, a smooth
    measure where top-1 agreement moves in steps of whole images. QAT wins a tie.
    """
    float_top = np.argmax(float_scores, axis=1)
    values, right = {}, {}
    for name, scores in (("qat", qat), ("ptq", ptq)):
        top = np.argmax(scores, axis=1)
        right[name] = top == labels
        values[f"{name}_val_accuracy"] = float(np.mean(right[name]))
        values[f"{name}_val_agreement"] = float(np.mean(top == float_top))
        values[f"{name}_val_distance"] = probability_distance(scores, float_scores)
    low, high = paired_difference_ci(right["qat"], right["ptq"])
    values["qat_minus_ptq_val_ci_pp"] = [100 * low, 100 * high]
    summary = (
        f"On the validation split ({len(labels)} images), QAT int8: {100 * values['qat_val_accuracy']:.2f} % accuracy, "
        f"{100 * values['qat_val_agreement']:.2f} % agreement with float, distance {values['qat_val_distance']:.4f}; "
        f"post-training int8: {100 * values['ptq_val_accuracy']:.2f} %, {100 * values['ptq_val_agreement']:.2f} %, "
        f"{values['ptq_val_distance']:.4f}. Accuracy, QAT minus post-training: 95 % interval "
        f"[{100 * low:+.2f}, {100 * high:+.2f}] pp."
    )
    if high < 0:
        use_qat, why = False, "Shipping post-training int8: it is more accurate beyond chance, and QAT fell short of it."
    elif low > 0:
        use_qat, why = True, "Shipping QAT: it is more accurate beyond chance."
    else:
        use_qat = values["qat_val_distance"] <= values["ptq_val_distance"]
        why = ("The accuracies are equal within chance; shipping the one closer to the float model's probabilities: "
               + ("QAT." if use_qat else "post-training int8, because QAT is further from them."))
    return {"use_qat": use_qat, "reason": f"{summary} {why}", **values}
