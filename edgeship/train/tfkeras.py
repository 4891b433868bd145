"""The one place TensorFlow and Keras are imported.

tensorflow-model-optimization 0.8 quantizes Keras 2 models only, so training and export use
``tf_keras`` (Keras 2). ``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is first
imported, which is why every other module imports ``tf`` and ``keras`` from here.

TensorFlow's import and its first look at the devices print absl INFO lines (oneDNN, CUDA
probing) from C++ before ``TF_CPP_MIN_LOG_LEVEL`` takes effect; both happen here, with that
chatter filtered out of stderr (``edgeship -v`` shows it).
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from edgeship.runtime.native_stderr import filtered_native_stderr  # noqa: E402

with filtered_native_stderr():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

    tf.config.list_physical_devices()  # the CUDA probe, now rather than at the first op

__all__ = ["keras", "tf"]
