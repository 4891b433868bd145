"""The built-in demo: enough test images for the int8-vs-float comparison, the weights it names;
the examples in the first-run modules' docstrings."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

from edgeship.demo import DEMO_CLASSES
from edgeship.run_all import DEMO_IMAGES_PER_CLASS, DEMO_TRAIN, render_summary
from edgeship.train.data import split_items


def test_demo_split_holds_out_at_least_200_test_images():
    """One image must move accuracy by at most 0.5 pp, or a quantization drop means nothing."""
    labels = np.repeat(np.arange(len(DEMO_CLASSES)), DEMO_IMAGES_PER_CLASS)
    split = split_items(labels, DEMO_TRAIN["val_fraction"], DEMO_TRAIN["test_fraction"], seed=42)
    assert len(split["test"]) >= 200 and len(split["val"]) >= 100
    assert sorted(np.bincount(labels[split["test"]])) == [len(split["test"]) // len(DEMO_CLASSES)] * len(DEMO_CLASSES)


def test_demo_table_names_the_weights_it_started_from():
    summary = {
        "run_dir": "runs/demo", "backbone": "mobilenet_v1 alpha 0.25 @ 96px", "demo": True,
        "float_keras_test_accuracy": 0.97, "num_test_images": 200, "variants": {}, "gate": None,
        "weights": "ImageNet (embedded copy of Keras' mobilenet_2_5_224_tf_no_top.h5)",
        "edgetpu": "not measured", "total_seconds": 90.0, "stage_seconds": {"train": 20.0},
    }
    table = render_summary(summary)
    assert "Weights: ImageNet (embedded copy of Keras' mobilenet_2_5_224_tf_no_top.h5)." in table
    assert "random initialisation" not in table
    scratch = render_summary({**summary, "weights": "none (random initialisation)"})
    assert "far below what pretrained weights give" in scratch


@pytest.mark.parametrize("name", ["edgeship.progress", "edgeship.quiet", "edgeship.weights"])
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0, f"{result.failed} docstring example(s) failed in {name}"
