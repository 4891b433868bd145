"""Real-data acceptance on flowers5 (minutes): `make test-slow`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import FLOWERS, WEIGHTS, needs_shared
from edgeship.runtime.validation import paired_difference_ci

pytestmark = [
    pytest.mark.slow,
    needs_shared(FLOWERS),
    needs_shared(WEIGHTS / "mobilenet_v2_1.0_224_no_top.h5"),
]


@pytest.fixture(scope="module")
def flowers_run(tmp_path_factory):
    from edgeship.train import TrainConfig, train

    out = tmp_path_factory.mktemp("flowers") / "v2"
    config = TrainConfig(
        data_dir=str(FLOWERS), out_dir=str(out), backbone="mobilenet_v2", alpha=1.0, image_size=160,
        weights=str(WEIGHTS / "mobilenet_v2_1.0_224_no_top.h5"), deterministic=True,
    )
    train(config)
    return out


def test_flowers_float_model_reaches_90_percent(flowers_run):
    metrics = json.loads((flowers_run / "metrics.json").read_text())
    assert metrics["num_test"] == 264
    assert metrics["accuracy"] >= 0.90, metrics["accuracy"]
    assert metrics["macro_f1"] >= 0.88


def test_flowers_int8_keeps_the_float_accuracy(flowers_run):
    from edgeship.export import ExportConfig, export

    report = export(ExportConfig(run_dir=str(flowers_run)))
    float_accuracy = report["float_keras"]["test_accuracy"]
    int8, ptq = report["variants"]["int8"], report["variants"]["int8-ptq"]
    predictions = json.loads((flowers_run / "export" / "predictions.json").read_text())
    targets = np.asarray(predictions["targets"])

    def not_worse_beyond_chance(kind: str, baseline: str) -> bool:
        return paired_difference_ci(np.asarray(predictions[kind]) == targets,
                                    np.asarray(predictions[baseline]) == targets)[1] >= 0

    # One split of 264 photos cannot hold a mean goal of 0.3 pp (one photo is 0.38 pp): before
    # training and QAT were seeded, exports of one configuration landed from two photos below float
    # to one above. Here: no more than two photos lost, nothing lost beyond chance, and 98 % of the
    # float model's decisions kept; the accuracy benchmark holds the means over seeds to the goal.
    assert int8["test_accuracy"] >= float_accuracy - 2.5 / report["num_test_images"], report
    assert not_worse_beyond_chance("int8", "float_keras"), report
    assert int8["agreement"] >= 0.98, report
    # Against post-training int8: closer to the float model, and not less accurate beyond chance
    # (on one split the two differ by a close call or two either way).
    assert int8["probability_distance"] < ptq["probability_distance"], report
    assert not_worse_beyond_chance("int8", "int8-ptq"), report
    assert report["export_seconds"] < 15 * 60, report["export_seconds"]
