"""The train stage: a folder of class sub-folders to a fine-tuned MobileNet.

Example:
    >>> from edgeship.train import TrainConfig, train              # doctest: +SKIP
    >>> result = train(TrainConfig(data_dir="photos", out_dir="runs/flowers"))  # doctest: +SKIP

Importing this package is light; TensorFlow loads when training starts.
"""

from edgeship.train.config import TrainConfig, load_config

__all__ = ["TrainConfig", "load_config", "train"]


def train(config: TrainConfig, **kwargs):
    """Trains per ``config``; see :func:`edgeship.train.trainer.train`."""
    from edgeship.train.trainer import train as _train

    return _train(config, **kwargs)
