"""EfficientNet-Lite0 end to end: trained a few steps, exported, each file running in LiteRT,
the full-integer ones predicted fully mapped for the Edge TPU and fed raw pixels with the
backbone's own normalization.

Converting this graph takes about 20 s per variant and a minute for the QAT model on two
cores, so the default suite exports int8 alone (QAT, chosen against post-training int8) and
the ``slow`` test the five default variants.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeship.export.config import DEFAULT_FORMATS, FILE_NAMES, FULL_INTEGER, INT8, ExportConfig
from edgeship.train.config import EFFICIENTNET_LITE0, TrainConfig

SIZE = 64


@pytest.fixture(scope="module")
def effnet_run(demo_data, tmp_path_factory) -> Path:
    from edgeship.train import train

    run = tmp_path_factory.mktemp("runs") / "effnet"
    train(TrainConfig.tiny(data_dir=str(demo_data), out_dir=str(run), backbone=EFFICIENTNET_LITE0, alpha=1.0,
                           image_size=SIZE, epochs=1, fine_tune_epochs=0, batch_size=16))
    return run


def _export(run: Path, **overrides) -> Path:
    from edgeship.export import export

    export(ExportConfig.tiny(run_dir=str(run), **overrides))
    return run / "export"


def _check_variant(export_dir: Path, kind: str) -> None:
    from edgeship.edgetpu.mapping import predict_mapping
    from edgeship.runtime.graph import read_graph
    from edgeship.runtime.model import load_model
    from edgeship.runtime.tflite_metadata import read_metadata

    path = export_dir / FILE_NAMES[kind]
    model = load_model(path)
    assert (model.manifest.mean, model.manifest.std) == (127.0, 128.0), kind
    metadata = read_metadata(path.read_bytes())  # what MediaPipe Tasks feeds a float input by
    assert (metadata.mean, metadata.std) == ((127.0,), (128.0,)), kind
    assert model.manifest.backbone == "efficientnet_lite0_1" and model.manifest.quantization == kind
    scores = model.classify(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    assert scores.shape == (4,) and np.isclose(scores.sum(), 1.0, atol=0.02), kind
    if kind in FULL_INTEGER:
        mapping = predict_mapping(path)
        assert mapping.compilable and mapping.on_cpu == {}, mapping.problems
        assert mapping.on_edgetpu == len(read_graph(path).ops)
        image = read_graph(path).input_tensors()[0]
        # (pixel - 127) / 128 in uint8 is scale 1/128, zero point 127: the quantized value is the pixel.
        assert image.dtype == "uint8" and image.zero_point == (127,), kind
        assert np.isclose(image.scale[0], 1 / 128, rtol=1e-6), kind


def test_int8_export_takes_raw_pixels_and_maps_fully_onto_the_edge_tpu(effnet_run):
    export_dir = _export(effnet_run, formats=(INT8,), qat_epochs=0)
    _check_variant(export_dir, INT8)
    report = json.loads((export_dir / "report.json").read_text())
    assert report["variants"][INT8]["edgetpu"]["on_cpu"] == {} and report["int8_source"] in ("qat", "ptq")


@pytest.mark.slow
def test_every_variant_exports_and_runs(effnet_run, tmp_path):
    run = Path(shutil.copytree(effnet_run, tmp_path / "effnet", ignore=shutil.ignore_patterns("export")))
    export_dir = _export(run)
    for kind in DEFAULT_FORMATS:
        _check_variant(export_dir, kind)
