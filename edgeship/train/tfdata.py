"""The tf.data input pipeline over the decode-once pixel cache.

Per epoch: shuffle indices, batch them, gather the batch's ``uint8`` pixels from the cache
(an in-memory array or a memory map, so data sets larger than RAM work too), augment on the
batch, normalise, prefetch. Nothing is decoded again after the first pass.
"""

from __future__ import annotations

import numpy as np

from edgeship.train.config import Normalization
from edgeship.train.tfkeras import tf

__all__ = ["class_weights", "make_dataset", "normalize_tf"]


def normalize_tf(pixels, normalization: Normalization):
    """The runtime's :func:`edgeship.runtime.image.normalize` in TensorFlow: (x - mean) / std,
    with the backbone's :func:`edgeship.train.config.input_normalization`."""
    return (tf.cast(pixels, tf.float32) - normalization.mean) / normalization.std


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights, mean 1 over the samples, so the loss scale stays the same."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)


def make_dataset(
    pixels: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    num_classes: int,
    batch_size: int,
    *,
    normalization: Normalization,
    training: bool = False,
    augmenter=None,
    weights: np.ndarray | None = None,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of ``(normalised float pixels, one-hot labels[, sample weights])``.

    Args:
        pixels: (N, H, W, 3) uint8 cache; read only at ``indices``.
        labels: (N,) class indices.
        indices: which rows this data set covers.
        normalization: the backbone's input normalization (``DecodedSplit.normalization``).
        training: shuffle each epoch and apply ``augmenter``.
        augmenter: a Keras model of random layers (``augment.make_augmenter``) or None.
        weights: per-class loss weights; adds a sample-weight element when given.
    """
    height, width = pixels.shape[1:3]
    onehot = np.eye(num_classes, dtype=np.float32)[labels]
    sample_weight = None if weights is None else weights[labels]

    def gather(batch_indices):
        batch_indices = np.asarray(batch_indices)
        out = [np.asarray(pixels[batch_indices]), onehot[batch_indices]]
        if sample_weight is not None:
            out.append(sample_weight[batch_indices])
        return out

    types = [tf.uint8, tf.float32] + ([tf.float32] if sample_weight is not None else [])

    def load(batch_indices):
        out = tf.numpy_function(gather, [batch_indices], types, stateful=False)
        out[0].set_shape([None, height, width, 3])
        out[1].set_shape([None, num_classes])
        if len(out) == 3:
            out[2].set_shape([None])
        return tuple(out)

    def transform(x, *rest):
        x = tf.cast(x, tf.float32)
        if augmenter is not None:
            x = tf.clip_by_value(augmenter(x, training=True), 0.0, 255.0)
        return (normalize_tf(x, normalization), *rest)

    ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, dtype=np.int64))
    if training:
        ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    if tf.distribute.has_strategy() or (tf.distribute.in_cross_replica_context() and _distributed()):
        # Index batches carry no file names to shard by: split the batches between workers.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)


def _distributed() -> bool:
    return tf.distribute.get_strategy().num_replicas_in_sync > 1
