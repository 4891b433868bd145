"""The train stage: a folder of class sub-folders to a fine-tuned MobileNet or EfficientNet-Lite0.

Example (minutes of training; the README's and the train page's snippets run it)::

    from edgeship.train import TrainConfig, train
    result = train(TrainConfig(data_dir="photos", out_dir="runs/flowers"))

Importing this package is light; TensorFlow loads when a function that needs it is first used.
The names below are the stage's public API, which the export stage uses too.
"""

import importlib

from edgeship.train.config import TrainConfig, load_config, load_run_config

__all__ = [
    "DecodedSplit",
    "TrainConfig",
    "TrainResult",
    "load_config",
    "load_data",
    "load_float_model",
    "load_run_config",
    "make_dataset",
    "normalize_tf",
    "predict_probabilities",
    "train",
]

# Public names whose modules import TensorFlow: loaded on first use.
_LAZY = {
    "DecodedSplit": "edgeship.train.data",
    "load_data": "edgeship.train.data",
    "make_dataset": "edgeship.train.tfdata",
    "normalize_tf": "edgeship.train.tfdata",
    "TrainResult": "edgeship.train.trainer",
    "load_float_model": "edgeship.train.trainer",
    "predict_probabilities": "edgeship.train.trainer",
    "train": "edgeship.train.trainer",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeship.train' has no attribute {name!r}")
