"""Quantization-aware training that keeps the float model's accuracy.

Out of the box, tfmot's ``quantize_model`` followed by a couple of epochs of ``fit`` often ends
*below* plain post-training quantization. Four causes, and what this module does about each:

1. **Batch norm keeps training.** The quantized model runs batch norm in training mode, so
   every step normalises with the statistics of one small batch (noisy) and drags the moving
   averages toward them, while fake quantization is on. The converter then folds moving
   statistics that no step was trained with. Here every batch-norm layer is frozen
   (inference mode) for QAT, so the folded graph is the one that was trained. Dropout drops
   nothing during QAT for a like reason (:func:`disable_dropout`).
2. **Activation ranges start at [-6, 6] and move by an EMA with decay 0.999.** After a few
   hundred steps they are still mostly the initial guess: ReLU6 outputs waste half their
   grid on negatives, pooled features that live in [0, 0.1] collapse onto one level, logits
   beyond ±6 are clipped; the freshly quantized model starts near chance. Here the ranges are
   calibrated from the float model's activations before the first step
   (:func:`calibrate_ranges`).
3. **The target is the labels.** Fitting the labels keeps training the classifier, and on
   the images the float model already gets right with confidence its gradient is almost
   zero. What int8 loses is elsewhere: quantization noise moves the logits (by about 0.2,
   one standard deviation, on a MobileNetV2 fine-tuned on flowers) and flips the float
   model's close calls. Here the QAT model learns to reproduce the float model's logits on
   the train images (:func:`logit_distance`, a squared error with a full-size gradient on
   every image and every class), with Adam at a peak rate of 1e-5, cosine decay, and the
   epoch closest to the float model on validation kept (the calibrated model before any step
   included). Adam moves every weight by about the rate per step whatever its scale: at 3e-5
   the converted model ended further from the float one than at 1e-5 (docs/qat.md). The first
   epoch visits every train image; the later ones only the half whose logits were still
   furthest from the float model's (``qat_focus``): the close calls that int8 flips. QAT is
   most of an export's time, and this is what brings export under the training time (docs/qat.md:
   export time).

4. **The simulation is not the converted model.** TFLite computes in fixed point: a fraction of
   a percent of values round one step away from the float simulation, and depthwise channels
   whose batch norm multiplies by tens amplify those steps along the network. During QAT,
   :func:`rounding_noise` adds uniform noise one int8 step wide to every batch-norm output, so
   the trained model does not rely on the simulation's exact rounding.

The input range is set exactly to what ``(pixel - mean) / std`` spans for pixels 0..255 (the
backbone's normalization: 128 and 128 for the MobileNets), so the converted model's uint8
input quantization is scale 1/std, zero point mean, and raw pixels are fed bit-exact.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np

from edgeship.progress import progress
from edgeship.train.config import Normalization
from edgeship.train.tfkeras import keras, tf

__all__ = [
    "calibrate_ranges", "disable_dropout", "fit_qat", "freeze_batch_norm", "logit_distance", "make_qat_model",
    "rounding_noise", "set_input_range",
]

logger = logging.getLogger(__name__)


def _per_channel_scheme():
    """tfmot's default 8-bit scheme with depthwise kernels quantized per channel.

    tfmot quantizes a depthwise kernel "per axis" along its last axis, which is the depth
    multiplier (size 1), so in effect per tensor (tfmot issue #808). Depthwise channels of a
    pretrained MobileNet differ in scale by orders of magnitude, and one shared grid zeroes the
    small ones: the freshly quantized model drops to chance. TFLite's own kernels quantize
    depthwise weights per channel, so training against a per-tensor grid also trains for a
    model that is never run.
    """
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry_module,
        default_8bit_quantize_scheme as scheme_module,
    )

    class DepthwisePerChannelQuantizer(tfmot.quantization.keras.quantizers.Quantizer):
        """Symmetric, narrow-range int8 per input channel of a (kh, kw, C, M) depthwise kernel."""

        def build(self, tensor_shape, name, layer):
            channels = int(tensor_shape[2]) * int(tensor_shape[3])
            kwargs = dict(shape=(channels,), trainable=False)
            return {
                "min_var": layer.add_weight(name + "_min", initializer=keras.initializers.Constant(-6.0), **kwargs),
                "max_var": layer.add_weight(name + "_max", initializer=keras.initializers.Constant(6.0), **kwargs),
            }

        def __call__(self, inputs, training, weights, **kwargs):
            shape = inputs.shape
            # (kh, kw, C, M) -> (kh, kw, 1, C*M): the same memory order, channels last.
            flat = tf.reshape(inputs, [shape[0], shape[1], 1, shape[2] * shape[3]])
            low, high = weights["min_var"], weights["max_var"]
            if training:  # last value, as tfmot's weight quantizers: ranges follow the weights
                bound = tf.reduce_max(tf.abs(flat), axis=[0, 1, 2])
                low.assign(-bound)
                high.assign(bound)
            quantized = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                flat, low, high, num_bits=8, narrow_range=True
            )
            return tf.reshape(quantized, shape)

        def get_config(self):
            return {}

    class DepthwiseConfig(registry_module.Default8BitConvQuantizeConfig):
        def __init__(self):
            super().__init__(["depthwise_kernel"], ["activation"], False)
            self.weight_quantizer = DepthwisePerChannelQuantizer()

    class Registry(registry_module.Default8BitQuantizeRegistry):
        def __init__(self, disable_per_axis=False):
            super().__init__(disable_per_axis)
            self._layer_quantize_map[keras.layers.DepthwiseConv2D] = DepthwiseConfig()

    class Scheme(scheme_module.Default8BitQuantizeScheme):
        def get_quantize_registry(self):
            return Registry()

    return Scheme()


def make_qat_model(float_model: keras.Model) -> keras.Model:
    """tfmot QAT of a flat functional model (weights copied), depthwise kernels per channel."""
    import tensorflow_model_optimization as tfmot

    quantize = tfmot.quantization.keras
    with quantize.quantize_scope():
        annotated = quantize.quantize_annotate_model(float_model)
        return quantize.quantize_apply(annotated, scheme=_per_channel_scheme())


def disable_dropout(model: keras.Model) -> int:
    """Sets every dropout layer (wrapped or not) to drop nothing; returns how many.

    The QAT model learns the float model's logits, which the float model computed without
    dropout. With dropout on, every step compares a randomly thinned network with the whole
    one: on MobileNet v1 0.25 the training loss stayed about 5 times the validation distance,
    so most of each gradient chased the dropout noise instead of the quantization error.
    """
    count = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.Dropout):
            inner.rate = 0.0
            count += 1
    return count


def freeze_batch_norm(model: keras.Model) -> int:
    """Puts every batch-norm layer (wrapped or not) in inference mode; returns how many."""
    count = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.BatchNormalization):
            layer.trainable = False
            inner.trainable = False
            count += 1
    return count


def _state_by_name(layer) -> dict[str, tf.Variable]:
    """A wrapped layer's non-trainable variables by short name (``output_min``, ``kernel_max``...)."""
    return {v.name.split("/")[-1].split(":")[0]: v for v in layer.non_trainable_weights}


def _activation_ranges(model: keras.Model) -> list[tuple[tf.Variable, tf.Variable, str, str]]:
    """(min, max, float layer name, kind) of each moving-average activation quantizer.

    ``kind`` is ``output``, ``post_activation`` or ``pre_activation`` (a Dense or conv whose
    activation the quantizer sits before). Weight quantizers (``kernel_min``...) take the last
    value on every call and need no calibration; the input QuantizeLayer is set by
    :func:`set_input_range`.
    """
    found = []
    for layer in model.layers:
        inner = getattr(layer, "layer", None)
        if inner is None or not hasattr(layer, "quantize_config"):
            continue
        by_name = _state_by_name(layer)
        for name, var in by_name.items():
            if not name.endswith("_min") or "kernel" in name or "bias" in name:
                continue
            partner = by_name.get(name[: -len("_min")] + "_max")
            if partner is not None:
                found.append((var, partner, inner.name, name[: -len("_min")]))
    return found


def _float_ranges(float_model: keras.Model, names: list[str], pre_activation: set[str], batches) -> dict:
    """Average per-batch (min, max) of named float-layer outputs, clamped to include 0 as tfmot does."""
    linear = keras.activations.linear
    saved = {n: float_model.get_layer(n).activation for n in pre_activation}
    probes = []
    plain = [n for n in names if n not in pre_activation]
    if plain:
        probes.append(("", plain, keras.Model(float_model.input, [float_model.get_layer(n).output for n in plain])))
    try:
        if pre_activation:
            for n in pre_activation:  # read when the probe is traced, so the probe sees pre-activations
                float_model.get_layer(n).activation = linear
            pre = sorted(pre_activation)
            probe = keras.Model(float_model.input, [float_model.get_layer(n).output for n in pre])
            probes.append(("pre:", pre, probe))
        sums: dict[str, np.ndarray] = {}
        for prefix, keys, probe in probes:

            @tf.function  # one graph per probe: the per-batch extremes of every output, in one call
            def extremes(x, _probe=probe):
                outputs = _probe(x, training=False)
                outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
                return tf.stack([tf.stack([tf.minimum(tf.reduce_min(out), 0.0), tf.maximum(tf.reduce_max(out), 0.0)])
                                 for out in outputs])

            for x in batches:
                for key, value in zip(keys, extremes(x).numpy().astype(np.float64)):
                    sums[prefix + key] = sums.get(prefix + key, 0) + value
    finally:
        for n, activation in saved.items():
            float_model.get_layer(n).activation = activation
    return {k: v / len(batches) for k, v in sums.items()}  # calibrate_ranges refuses an empty list


def calibrate_ranges(model: keras.Model, float_model: keras.Model, dataset: tf.data.Dataset, num_batches: int) -> int:
    """Sets every activation range of the QAT ``model`` from the float model's activations.

    The ranges are the average per-batch min/max over ``num_batches`` training batches: what
    tfmot's EMA would converge to, but from the first QAT step instead of after thousands.
    They are measured on the float model because measuring on the quantized one would clip
    each layer by its still-uncalibrated upstream ranges. Returns the number of ranges set.
    """
    batches = [x for x, *_ in dataset.take(num_batches)]
    if not batches:
        raise ValueError("Calibration needs at least one batch of training images.")
    model(batches[0], training=True)  # sets the weight quantizers' ranges from the weights
    targets = _activation_ranges(model)
    pre = {name for _, _, name, kind in targets if kind == "pre_activation"}
    names = sorted({name for _, _, name, kind in targets if kind != "pre_activation"})
    ranges = _float_ranges(float_model, names, pre, batches)
    for low, high, name, kind in targets:
        value = ranges["pre:" + name] if kind == "pre_activation" else ranges[name]
        low.assign(tf.fill(low.shape, float(value[0])))
        high.assign(tf.fill(high.shape, float(value[1])))
    logger.info("Calibrated %d activation ranges on %d batches", len(targets), len(batches))
    return len(targets)


def logit_distance(student, teacher, per_image: bool = False):
    """Mean squared difference of the two models' logits, from their softmax outputs.

    A log-probability is the logit minus the log-sum-exp of its row, so centring each row of
    log-probabilities recovers the centred logits exactly; the distance ignores the constant
    offset a softmax cannot see. Unlike cross-entropy on confident predictions, it keeps a
    full-size gradient on every image, and every class's logit counts, so it pulls close
    calls back to the float model's side. ``per_image``: one distance per row instead.
    """
    def centred(probabilities):
        log = tf.math.log(tf.clip_by_value(tf.cast(probabilities, tf.float32), 1e-7, 1.0))
        return log - tf.reduce_mean(log, axis=-1, keepdims=True)

    rows = tf.reduce_mean(tf.square(centred(student) - centred(teacher)), axis=-1)
    return rows if per_image else tf.reduce_mean(rows)


def _output_range(layer) -> tuple[tf.Variable, tf.Variable] | None:
    found = _state_by_name(layer)
    if "output_min" in found and "output_max" in found:
        return found["output_min"], found["output_max"]
    return None


def _fed_range(layer) -> tuple[tf.Variable, tf.Variable] | None:
    """The range of the int8 tensor a wrapped layer feeds: its own output range, or that of
    the one layer right after it."""
    bounds = _output_range(layer)
    if bounds is None:
        after = [node.outbound_layer for node in layer._outbound_nodes]
        bounds = _output_range(after[0]) if len(after) == 1 else None
    return bounds


@contextlib.contextmanager
def rounding_noise(model: keras.Model, amplitude: float, batch_size: int = 32, seed: int | None = None):
    """Within the block, each batch norm of a QAT model adds uniform noise, ``amplitude``
    quantization steps wide, to its output when called in training mode.

    The step is that of the int8 tensor the batch norm feeds (:func:`_fed_range`). TFLite's
    fixed-point kernels round a fraction of a percent of values one step away from the float
    simulation, and depthwise channels whose batch norm multiplies by tens amplify those steps
    along the network: the converted model drifts from the simulated one. Trained under noise
    of that kind, the model stops relying on exact rounding. Yields the number of layers given
    noise; restores them on exit.

    Drawing fresh random numbers for every value made a QAT step 30 % slower than reading
    them (18.0 against 13.8 ms an image on MobileNetV2 at 160, interleaved). So one bank of
    uniform noise, twice the largest batch-norm output of a ``batch_size`` batch, serves every
    layer and step: each call reads a window of it at a random offset, and within a batch every
    value still has its own draw. Calls of up to ``2 * batch_size`` images are served. With a
    ``seed``, the bank and the offsets are the same on every run.
    """
    noisy = []
    for layer in model.layers:
        inner = getattr(layer, "layer", None)
        bounds = _fed_range(layer) if isinstance(inner, keras.layers.BatchNormalization) and amplitude > 0 else None
        if bounds is not None:
            noisy.append((inner, *bounds))
    if noisy:
        largest = max(int(np.prod(inner.output_shape[1:])) for inner, *_ in noisy)
        draws = (tf.random.Generator.from_non_deterministic_state() if seed is None
                 else tf.random.Generator.from_seed(seed))
        bank = tf.Variable(draws.uniform([2 * batch_size * largest], -0.5, 0.5), trainable=False)
    for inner, low, high in noisy:

        def call(inputs, training=None, _call=inner.call, _low=low, _high=high):
            outputs = _call(inputs, training=training)
            if training is None or training is False:
                return outputs
            size = tf.size(outputs)
            tf.debugging.assert_less_equal(size, tf.size(bank), message=(
                f"rounding_noise serves batches of up to {2 * batch_size} images: pass a larger batch_size"))
            offset = draws.uniform([], 0, tf.size(bank) - size + 1, dtype=tf.int32)
            noise = tf.reshape(bank[offset:offset + size], tf.shape(outputs))
            step = (_high - _low) / 255.0
            return outputs + noise * (amplitude * step) * tf.cast(training, outputs.dtype)

        inner.call = call
    try:
        yield len(noisy)
    finally:
        for inner, *_ in noisy:
            del inner.call


def set_input_range(model: keras.Model, normalization: Normalization) -> None:
    """Fixes the input quantizer to exactly the span of ``(pixel - mean) / std``, pixel in 0..255."""
    low, high = (0.0 - normalization.mean) / normalization.std, (255.0 - normalization.mean) / normalization.std
    layer = next(l for l in model.layers if l.__class__.__name__ == "QuantizeLayer")
    for var in layer.non_trainable_weights:
        name = var.name.split("/")[-1]
        if "_min" in name:
            var.assign(np.full(var.shape, low, np.float32))
        elif "_max" in name:
            var.assign(np.full(var.shape, high, np.float32))


# --------------------------------------------------------------------------- the recipe, end to end


def _qat_scores(qat: keras.Model, data, float_val: np.ndarray, batch_size: int) -> dict:
    """Validation accuracy, agreement with the float model and logit distance to it."""
    from edgeship.train import predict_probabilities

    probabilities = predict_probabilities(qat, data, "val", batch_size)
    predicted = np.argmax(probabilities, axis=1)
    return {"accuracy": float(np.mean(predicted == data.labels[data.indices["val"]])),
            "agreement": float(np.mean(predicted == np.argmax(float_val, axis=1))),
            "logit_distance": float(logit_distance(probabilities, float_val))}


def _calibrated_qat_model(float_model: keras.Model, data, config, seed: int) -> keras.Model:
    """Causes 1 and 2: the quantized model with batch norm frozen and ranges from the float model."""
    from edgeship.train import make_dataset

    qat = make_qat_model(float_model)
    frozen = freeze_batch_norm(qat)
    disable_dropout(qat)
    plain = make_dataset(data.pixels, data.labels, data.indices["train"], data.num_classes, config.qat_batch_size,
                         normalization=data.normalization, training=True, seed=seed)
    calibrate_ranges(qat, float_model, plain, config.calibration_batches)
    # The input quantizer is not an activation range: calibration's training-mode call moved it
    # by its moving average, and only the exact pixel span folds the normalisation in losslessly.
    set_input_range(qat, data.normalization)
    logger.info("QAT: %d batch-norm layers frozen, activation ranges calibrated", frozen)
    return qat


def _make_train_step(qat: keras.Model, config, total_steps: int):
    """One optimizer step on a batch; returns each image's logit distance before the step."""
    schedule = keras.optimizers.schedules.CosineDecay(config.qat_learning_rate, total_steps, alpha=0.1)
    optimizer = keras.optimizers.Adam(schedule)

    # One trace for every batch size, the last, shorter batch included.
    @tf.function(input_signature=[tf.TensorSpec([None, *qat.input_shape[1:]], tf.float32),
                                  tf.TensorSpec([None, *qat.output_shape[1:]], tf.float32)])
    def train_step(x, target):
        with tf.GradientTape() as tape:
            distances = logit_distance(qat(x, training=True), target, per_image=True)
            loss = tf.reduce_mean(distances)
        variables = qat.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return distances

    return train_step


def _epoch_pools(num_images: int, config) -> list[int]:
    """How many train images each QAT epoch visits: all in the first, ``qat_focus`` of them after."""
    revisited = max(1, int(np.ceil(config.qat_focus * num_images)))
    return [num_images] + [revisited] * (config.qat_epochs - 1)


def _furthest(distances: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` images furthest from the float model, in index order (ties: the lower index)."""
    return np.sort(np.argsort(-distances, kind="stable")[:count])


def fit_qat(float_model: keras.Model, float_val: np.ndarray, data, config, seed: int):
    """The whole recipe: returns (QAT model, validation scores by epoch, the epoch kept).

    Causes 3 and 4 of the module docstring: the quantized model learns the float model's
    logits on the train images under rounding noise (after the first epoch, on the
    ``qat_focus`` share of them still furthest from float); the epoch kept is the one closest
    to the float model's logits on validation (a smooth measure; agreement on a few hundred
    images moves in whole images), the calibrated model before any step included.

    Args:
        float_model: the run's float Keras model.
        float_val: its class probabilities on the validation split.
        data: the run's decoded split (:func:`edgeship.train.load_data`).
        config: an ``ExportConfig``.
        seed: the run's seed (batch order and rounding noise: a re-export gives the same model).
    """
    from edgeship.train import normalize_tf, predict_probabilities

    qat = _calibrated_qat_model(float_model, data, config, seed)
    history = {0: _qat_scores(qat, data, float_val, config.qat_batch_size)}
    best_epoch, best_weights = 0, qat.get_weights()
    train = data.indices["train"]
    if config.qat_epochs:
        teacher = predict_probabilities(float_model, data, "train", config.qat_batch_size)
        size = config.qat_batch_size
        pools = _epoch_pools(len(train), config)
        train_step = _make_train_step(qat, config, sum(-(-pool // size) for pool in pools))
        rng = np.random.default_rng(seed)
        distances = np.zeros(len(train), np.float32)  # each image's, when last visited
        with rounding_noise(qat, config.qat_noise, size, seed):
            for epoch, pool in enumerate(pools, start=1):
                # Then the images furthest from the float model: the close calls int8 flips.
                visited = _furthest(distances, pool)
                order = rng.permutation(visited)
                batches = [np.sort(order[i:i + size]) for i in range(0, pool, size)]  # sorted: sequential reads
                with progress(len(batches), f"QAT epoch {epoch}/{config.qat_epochs}") as update:
                    for rows in batches:
                        found = train_step(normalize_tf(data.pixels[train[rows]], data.normalization), teacher[rows])
                        distances[rows] = found.numpy()
                        update(note=f"logit distance {float(np.mean(distances[rows])):.4f}")
                history[epoch] = _qat_scores(qat, data, float_val, config.qat_batch_size)
                logger.info("QAT epoch %d/%d: logit distance on val %.4f, accuracy %.4f, agreement %.4f", epoch,
                            config.qat_epochs, *(history[epoch][k] for k in ("logit_distance", "accuracy", "agreement")))
                if history[epoch]["logit_distance"] < history[best_epoch]["logit_distance"]:
                    best_epoch, best_weights = epoch, qat.get_weights()
    qat.set_weights(best_weights)
    set_input_range(qat, data.normalization)  # every training step moved it again (see above)
    return qat, history, best_epoch
