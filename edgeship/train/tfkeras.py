"""The one place TensorFlow and Keras are imported.

tensorflow-model-optimization 0.8 quantizes Keras 2 models only, so training and export use
``tf_keras`` (Keras 2). ``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is first
imported, which is why every other module imports ``tf`` and ``keras`` from here.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf"]
