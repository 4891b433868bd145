"""Evaluation, validation and their statistics, on tiny real models."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from edgeship.errors import ConfigError, DataError
from edgeship.runtime import (
    ValidationGate, evaluate, folder_dataset, load_model, mcnemar_exact_p, paired_difference_ci, run_dataset, validate,
    write_report,
)
from edgeship.runtime.validation import apply_gate
from edgeship.runtime.dataset import match_classes
from edgeship.runtime.evaluation import OTHER_CLASS
from edgeship.runtime.prefetch import prefetch

from conftest import CORAL
from runtime_models import LABELS, write_models


@pytest.fixture()
def setup(runtime_setup):
    return runtime_setup


def test_eval_on_a_folder_skips_and_counts_corrupt_images(setup, tmp_path):
    models, data, _ = setup
    report = evaluate(load_model(models["uint8"]), folder_dataset(data))
    assert report["accuracy"] == 1.0 and report["num_images"] == 12
    assert report["num_skipped"] == 1 and "corrupt.jpg" in next(iter(report["skipped"]))
    assert report["labels"] == ["blue", "green", "red"]  # the folder classes, in folder order
    assert report["per_class"]["red"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 4}
    assert report["confusion_matrix"] == [[4, 0, 0], [0, 4, 0], [0, 0, 4]]
    paths = write_report(report, tmp_path / "out")
    assert "| red | 1.000 | 1.000 | 1.000 | 4 |" in paths["markdown"].read_text()
    assert "1 unreadable image(s) skipped" in paths["markdown"].read_text()
    with Image.open(paths["plot"]) as image:
        assert image.format == "PNG" and image.size[0] > 100


def test_predictions_outside_the_data_classes_get_an_other_column(setup, tmp_path):
    models, data, _ = setup
    for label in ("red", "green"):
        (tmp_path / label).mkdir()
        for path in (data / label).glob("*.png"):
            (tmp_path / label / path.name).write_bytes(path.read_bytes())
    # The "wrong" model calls red green, and green blue (not a class of this data).
    report = evaluate(load_model(models["wrong"]), folder_dataset(tmp_path))
    assert report["labels"] == ["green", "red", OTHER_CLASS]
    assert report["confusion_matrix"] == [[0, 0, 4], [4, 0, 0], [0, 0, 0]]
    assert report["accuracy"] == 0.0


def test_run_dataset_reads_the_recorded_test_split(setup):
    _, data, run = setup
    dataset = run_dataset(run)
    assert dataset.classes == tuple(LABELS) and len(dataset.samples) == 12 and dataset.digest == "0" * 64
    assert all(path.exists() and path.parent.name == LABELS[index] for path, index in dataset.samples)
    with pytest.raises(DataError, match="No split.json"):
        run_dataset(data)


def test_class_folders_match_labels_loosely_and_explain_misses():
    labels = ["background", "tench, Tinca tinca", "Egyptian cat", "tiger cat"]
    assert match_classes(["Egyptian_cat", "tiger-cat", "tench"], labels) == [2, 3, 1]
    with pytest.raises(DataError, match="zebra match no label.*--labels"):
        match_classes(["zebra"], labels)
    with pytest.raises(DataError, match="no labels"):
        match_classes(["cat"], None)


def test_validate_passes_for_an_equivalent_model_and_fails_for_a_worse_one(setup):
    models, _, run = setup
    data, baseline = run_dataset(run), load_model(run / "export" / "model_float32.tflite")
    same = validate(load_model(models["uint8"]), baseline, data)
    assert same["passed"] and same["agreement"] == 1.0 and same["difference_pp"] == 0.0
    low, high = same["ci_pp"]
    assert low < 0 < high  # no discordant pair, still an honest interval
    worse = validate(load_model(models["wrong"]), baseline, data, ValidationGate(max_drop=5.0, min_agreement=0.9))
    assert not worse["passed"] and worse["difference_pp"] == -100.0
    assert len(worse["failures"]) == 2 and "more than the allowed 5 pp" in worse["failures"][0]
    assert worse["discordant"] == {"model_only_correct": 0, "baseline_only_correct": 12}
    assert worse["reports"]["baseline"]["accuracy"] == 1.0


def test_gate_values_are_checked():
    with pytest.raises(ConfigError, match="max_drop"):
        ValidationGate(max_drop=-1)
    with pytest.raises(ConfigError, match="min_agreement"):
        ValidationGate(min_agreement=95)


def table(both: int, only_model: int, only_baseline: int, neither: int):
    model = [1] * both + [1] * only_model + [0] * only_baseline + [0] * neither
    baseline = [1] * both + [0] * only_model + [1] * only_baseline + [0] * neither
    return model, baseline


def test_paired_interval_matches_newcombes_worked_example():
    # Fagerland, Lydersen & Laake's paired example (Cavo et al. 2012): 59, 6, 16, 80.
    low, high = paired_difference_ci(*table(59, 6, 16, 80))
    assert low == pytest.approx(-0.1186, abs=5e-5) and high == pytest.approx(-0.0046, abs=5e-5)


def test_mcnemar_exact_p_matches_published_examples():
    # Fagerland, Lydersen & Laake (2013), BMC Med Res Methodol 13:91, Table 1 (Bentur et al.):
    # 1 and 7 discordant pairs, exact conditional p = 0.070.
    assert mcnemar_exact_p(1, 7) == pytest.approx(0.0703, abs=5e-5)
    # Armitage & Berry (1994, p. 127), two culture media, 12 and 2 discordant specimens:
    # exact two-sided P = 0.0129 (as StatsDirect's manual reproduces it).
    assert mcnemar_exact_p(12, 2) == pytest.approx(0.0129, abs=5e-5)
    assert mcnemar_exact_p(2, 12) == mcnemar_exact_p(12, 2) and mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(5, 5) == 1.0  # doubling the tail never exceeds 1
    assert 0 < mcnemar_exact_p(2000, 2150) < 0.05  # thousands of discordant images: no underflow to 0
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 3)


def test_class_recall_drops_fail_the_gate_naming_the_class():
    targets = np.repeat([0, 1, 2], 10)
    baseline = np.ones(30, bool)
    model = baseline.copy()
    model[10:13] = False  # "dog" loses 3 of 10: 30 pp; overall only 10 pp
    gate = ValidationGate(max_drop=20, max_class_drop=25)
    result = apply_gate(model, baseline, 0.9, gate, targets, ["cat", "dog", "fox", "unseen"])
    assert not result["passed"] and len(result["failures"]) == 1
    assert result["failures"][0].startswith("class 'dog': recall dropped 30.00 pp (100.00 % -> 70.00 % of 10 images)")
    assert set(result["class_recall"]) == {"cat", "dog", "fox"}  # no image of "unseen": no recall
    dog = result["class_recall"]["dog"]
    assert (dog["baseline_recall"], dog["recall"], dog["support"]) == (1.0, 0.7, 10)
    assert dog["drop_pp"] == pytest.approx(30.0) and dog["mcnemar_p"] == pytest.approx(0.25)
    assert [c["name"] for c in result["checks"]] == ["accuracy drop", "recall drop: cat", "recall drop: dog",
                                                     "recall drop: fox"]
    assert apply_gate(model, baseline, 0.9, ValidationGate(max_drop=20, max_class_drop=30), targets,
                      ["cat", "dog", "fox"])["passed"]
    with pytest.raises(ConfigError, match="targets"):
        apply_gate(model, baseline, 0.9, gate)
    with pytest.raises(ConfigError, match="max_class_drop"):
        ValidationGate(max_class_drop=-1)


def test_validate_reports_class_recalls_and_mcnemar(setup):
    models, data, _ = setup
    result = validate(load_model(models["wrong"]), load_model(models["float"]), folder_dataset(data),
                      ValidationGate(max_drop=100, max_class_drop=50))
    assert result["mcnemar_p"] == pytest.approx(2 / 2**12)
    red = result["class_recall"]["red"]
    assert (red["baseline_recall"], red["recall"], red["drop_pp"], red["support"]) == (1.0, 0.0, 100.0, 4)
    assert red["mcnemar_p"] == 0.125 and red["ci_pp"][0] == -100.0 < red["ci_pp"][1] < 0
    assert [f.split(":")[0] for f in result["failures"]] == ["class 'blue'", "class 'green'", "class 'red'"]
    assert result["seconds"] > 0


def test_paired_interval_properties():
    low, high = paired_difference_ci(*table(90, 0, 0, 10))
    assert low < 0 < high and high - low > 0.02
    low, high = paired_difference_ci(*table(0, 0, 50, 0))
    assert low == -1.0 and high < -0.85
    wide = paired_difference_ci(*table(45, 3, 2, 0))
    narrow = paired_difference_ci(*table(450, 30, 20, 0))
    assert wide[1] - wide[0] > narrow[1] - narrow[0]
    assert paired_difference_ci(*table(45, 3, 2, 0), confidence=0.99)[0] < wide[0]


def test_prefetch_keeps_order_passes_data_errors_and_overlaps_work():
    def slow_square(x):
        if x == 3:
            raise DataError("three is unreadable")
        time.sleep(0.02)
        return x * x

    start = time.perf_counter()
    results = list(prefetch(range(8), slow_square, num_workers=4))
    assert time.perf_counter() - start < 8 * 0.02  # the sleeps overlapped
    assert [r for _, r, _ in results] == [0, 1, 4, None, 16, 25, 36, 49]
    assert "unreadable" in str(results[3][2])
    with pytest.raises(ZeroDivisionError):  # a bug is not swallowed
        list(prefetch([1, 0], lambda x: 1 / x))


def test_prefetch_stops_quietly_when_the_consumer_stops():
    started = []
    lock = threading.Lock()

    def work(x):
        with lock:
            started.append(x)
        return x

    iterator = prefetch(range(1000), work, num_workers=2, depth=4)
    assert next(iterator)[1] == 0
    iterator.close()
    assert len(started) < 20


def test_an_unreadable_folder_is_a_data_error(tmp_path):
    (tmp_path / "red").mkdir()
    (tmp_path / "red" / "bad.png").write_bytes(b"nope")
    models = write_models(tmp_path / "m")
    with pytest.raises(DataError, match="None of the 1 images"):
        evaluate(load_model(models["float"]), folder_dataset(tmp_path))
    with pytest.raises(DataError, match="not found"):
        folder_dataset(tmp_path / "absent")
    empty = tmp_path / "empty"
    (empty / "x").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders with images"):
        folder_dataset(empty)


def test_eval_scores_a_coral_model_against_a_named_folder(tmp_path):
    (tmp_path / "Egyptian cat").mkdir()
    (tmp_path / "Egyptian cat" / "cat.bmp").write_bytes((CORAL / "cat.bmp").read_bytes())
    (tmp_path / "tiger_cat").mkdir()
    (tmp_path / "tiger_cat" / "cat.bmp").write_bytes((CORAL / "cat.bmp").read_bytes())
    report = evaluate(load_model(CORAL / "mobilenet_v1_0.5_160_quant.tflite"), folder_dataset(tmp_path))
    assert report["accuracy"] == 0.5 and report["confusion_matrix"] == [[1, 0], [1, 0]]
    assert np.isclose(report["per_class"]["Egyptian cat"]["precision"], 0.5)
