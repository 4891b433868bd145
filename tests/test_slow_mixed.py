"""int8-mixed on real photos (minutes): `make test-slow`. MobileNet v1 alpha 0.25 on flowers5,
whose post-training int8 keeps about 91 % of the float model's answers."""

from __future__ import annotations

import logging

import pytest

from conftest import FLOWERS, WEIGHTS, needs_shared

V1_WEIGHTS = WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5"
pytestmark = [pytest.mark.slow, needs_shared(FLOWERS), needs_shared(V1_WEIGHTS)]

logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def flowers_v1_run(tmp_path_factory):
    from edgeship.train import TrainConfig, train

    out = tmp_path_factory.mktemp("flowers") / "v1"
    train(TrainConfig(data_dir=str(FLOWERS), out_dir=str(out), backbone="mobilenet_v1", alpha=0.25, image_size=128,
                      weights=str(V1_WEIGHTS)))
    return out


def test_flowers_int8_mixed_reaches_99_percent_agreement_on_its_search_images(flowers_v1_run):
    from edgeship.export import ExportConfig, export

    report = export(ExportConfig(run_dir=str(flowers_v1_run), formats=("int8", "int8-ptq", "int8-mixed", "float32")))
    mixed, rows = report["int8-mixed"], report["variants"]
    logger.warning(
        "int8-mixed: %d of %d layers in float (%s); search agreement %.4f, val %.4f; test agreement %.4f "
        "(int8 %.4f, int8-ptq %.4f); size %d / %d / %d bytes and latency %.2f / %.2f / %.2f ms "
        "(int8-mixed / int8 / float32)",
        mixed["num_float_layers"], mixed["num_layers"], ", ".join(mixed["float_layers"]), mixed["search_agreement"],
        mixed["val_agreement"],
        rows["int8-mixed"]["agreement"], rows["int8"]["agreement"], rows["int8-ptq"]["agreement"],
        *(rows[k]["size_bytes"] for k in ("int8-mixed", "int8", "float32")),
        *(rows[k]["mean_latency_ms"] for k in ("int8-mixed", "int8", "float32")),
    )
    # The default search: every train and validation image (docs/small-models.md).
    assert mixed["search_images"] == "train+val" and mixed["num_search_images"] > 2000, mixed["num_search_images"]
    assert mixed["reached"] and mixed["search_agreement"] >= 0.99, mixed["search_agreement"]
    assert mixed["num_float_layers"] < mixed["num_layers"]  # not the float model under another name
    # On the untouched test split it keeps more of the float model's answers than post-training
    # int8 (searched on val alone, two trainings measured 0.947 and 0.977 on test, 0.992 on val,
    # 264 images each; searched on train+val, one measured 0.989 on test, 0.990 searched).
    assert rows["int8-mixed"]["agreement"] >= rows["int8-ptq"]["agreement"], rows
