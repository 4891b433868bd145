"""int8-mixed: post-training int8 with the fewest layers kept in float that bring the model's top-1
agreement with the float Keras model, on the search images, up to a target.

The search images are the train and validation images by default, or the validation split alone
(``ExportConfig.mixed_search_images``); never the test split. Agreement needs no labels, so the
train images count as much as the validation ones: a float set fitted to the 264 validation
photos of a flowers5 run reached 99 % there and held only 96-98 % on test.

Full-integer post-training quantization loses most of its accuracy in a few layers (typically
the classifier's last dense layer, or a depthwise layer whose channels differ in scale by orders
of magnitude). Keeping those few in float costs little size and latency on a CPU. The steps:

1. **Calibrate once** (the same representative train images as ``int8-ptq``), and measure each
   quantized op's error with TensorFlow's quantization debugger on the search images: the
   float op runs on the same (quantized) input beside the int8 op, so each layer's own error is
   seen, not the error it inherits. The ranking is by the error relative to the signal: the
   RMSE over the float output's standard deviation (``noise_to_signal``). The RMSE in units of
   the op's quantization step (``rmse_per_step``, TensorFlow's suggested measure: pure rounding
   gives 1/sqrt(12) = 0.29) is recorded too, but it misses the layer that decides most often: a
   softmax whose probabilities differ by less than its uint8 step has a small error per step
   and none of its signal left (on a tiny model: 0.12 steps, noise-to-signal 1.0; that one
   layer alone in float brought agreement from 0 to 100 %, while the step ranking put it
   29th of 30).
2. **Bisect on k**, the number of top-ranked layers kept in float. Each step re-quantizes the
   calibrated model with those ops denylisted (no new calibration) and scores the file with
   the LiteRT runtime on the search images. The bisection keeps one measured k that misses
   the target and one that reaches it, so the k it ends on is measured to reach the target and
   k - 1 measured to miss it; k = every layer is the float model, so it ends.
3. **Refine**: each kept layer, least sensitive first, goes back to int8 if the target still
   holds without it. The set that ships is then 1-minimal: returning any one of its layers to
   int8 misses the target (each such set was measured).

The input keeps the type of the full-integer variants (``io``: uint8 raw pixels, or int8), so
the runtime feeds it as it feeds them; the output is float32 probabilities, because a uint8
softmax rounds close calls into ties, the very images this variant exists to keep.

Edge TPU targets never get this variant: a float op in the middle of the graph ends the Edge
TPU's segment there, and everything after it runs on the CPU.

Example (inside export, which supplies the float model, its samples and the scoring)::

    model, notes = build_int8_mixed(float_model, representative, val_inputs, agreement, 0.99)
    notes["float_layers"]  # the layers kept in float, fewest first
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np

from edgeship.export.convert import inference_graph
from edgeship.runtime.native_stderr import filtered_native_stderr
from edgeship.train.tfkeras import keras, tf

__all__ = ["Layer", "SearchResult", "build_int8_mixed", "layer_sensitivity", "quantize_keeping_float",
           "search_float_layers"]

logger = logging.getLogger(__name__)

Inputs = Callable[[], Iterable[list[np.ndarray]]]


@dataclass(frozen=True)
class Layer:
    """One quantized op of the converted model and how much error int8 adds to it."""

    tensor: str              # the op's output tensor: the name the quantizer's denylist takes
    op: str                  # CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED...
    rmse_per_step: float     # RMSE against the float op on the same input, in quantization steps
    noise_to_signal: float   # the same RMSE over the float output's standard deviation

    @property
    def name(self) -> str:
        """The Keras layer the op comes from (``conv_dw_6``), read from its fused tensor name."""
        parts = [piece.split("/") for piece in self.tensor.split(";")]
        layers = [p[1] for p in parts if len(p) > 2]
        if not layers:
            return f"model output ({self.op})"
        # A fused conv names its activation, batch norm and conv: the conv is the shortest.
        return min(layers, key=len)


def _noise_to_signal(float_values: np.ndarray, quantized: np.ndarray, scale: float, zero_point: int) -> float:
    # float64: squares of large float32 activations overflow. The debugger averages with nanmean,
    # so an image whose values are not finite is left out rather than poisoning the layer.
    with np.errstate(over="ignore", invalid="ignore"):
        reference = float_values.astype(np.float64)
        error = reference - (quantized.astype(np.float64) - zero_point) * scale
        value = np.sqrt(np.mean(np.square(error))) / (np.std(reference) + 1e-12)
    return float(value) if np.isfinite(value) else float("nan")


def _finite_or_inf(value: float) -> float:
    """An error that could not be measured on any image ranks first: keeping it float is the safe side."""
    return value if np.isfinite(value) else float("inf")


def layer_sensitivity(float_model: keras.Model, representative: Inputs, val_inputs: Inputs) -> tuple[bytes, list[Layer]]:
    """Calibrates post-training int8 once and ranks its ops by their error on ``val_inputs``.

    Args:
        float_model: the run's float Keras model.
        representative: calibration samples, as for ``int8-ptq``.
        val_inputs: the images to rank on (the search images), normalised, one ``[batch]`` list each.

    Returns:
        The calibrated (not yet quantized) flatbuffer, and every quantized op, most sensitive first.
    """
    options = tf.lite.experimental.QuantizationDebugOptions(
        layer_direct_compare_metrics={"noise_to_signal": _noise_to_signal})
    with inference_graph(float_model) as folder, filtered_native_stderr():  # the quantizer echoes its settings
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=val_inputs,
                                                             debug_options=options)
        debugger.run()
    table = io.StringIO()
    debugger.layer_statistics_dump(table)
    table.seek(0)
    layers = [
        Layer(tensor=row["tensor_name"], op=row["op_name"],
              rmse_per_step=float(np.sqrt(float(row["mean_squared_error"])) / float(row["scale"])),
              noise_to_signal=_finite_or_inf(float(row["noise_to_signal"])))
        for row in csv.DictReader(table)
    ]
    return debugger.calibrated_model, sorted(layers, key=lambda layer: -layer.noise_to_signal)


def quantize_keeping_float(calibrated: bytes, float_tensors: Iterable[str], io: str = "uint8") -> bytes:
    """The calibrated model quantized to int8 except the ops that produce ``float_tensors``.

    This is the converter's own last step (``TFLiteConverter`` calls it with the same
    calibrated model), with a denylist; the quantization debugger's public
    ``get_nondebug_quantized_model`` runs it too, but only with float input.
    """
    from tensorflow.lite.python.convert import mlir_quantize

    try:
        with filtered_native_stderr():
            return mlir_quantize(calibrated, input_data_type=tf.uint8 if io == "uint8" else tf.int8,
                                 output_data_type=tf.float32, denylisted_nodes=list(float_tensors) or None)
    except Exception as e:  # the quantizer raises ConverterError and plain exceptions alike
        raise RuntimeError(f"int8-mixed quantization failed: {e}") from e


@dataclass
class SearchResult:
    """The float set the search settled on, and every set it measured."""

    float_layers: list[Layer]
    agreement: float
    target: float
    prefix_k: int                                     # the bisection's k: the top-k prefix reached the target
    trials: list[dict] = field(default_factory=list)  # {"float_layers": [tensor...], "agreement": x}

    @property
    def reached(self) -> bool:
        return self.agreement >= self.target


def search_float_layers(ranking: list[Layer], agreement: Callable[[list[Layer]], float], target: float) -> SearchResult:
    """The fewest top-ranked layers to keep in float for ``agreement`` >= ``target``, then refined.

    ``agreement`` measures one float set (it converts and scores a model). Each set is measured
    once. See the module docstring for what the result guarantees.
    """
    measured: dict[tuple[str, ...], float] = {}
    trials: list[dict] = []

    def score(layers: list[Layer]) -> float:
        key = tuple(layer.tensor for layer in layers)
        if key not in measured:
            measured[key] = agreement(layers)
            trials.append({"float_layers": list(key), "agreement": measured[key]})
            logger.info("int8-mixed: %d layer(s) in float -> agreement %.4f on the search images", len(key),
                        measured[key])
        return measured[key]

    low, high = 0, len(ranking)  # invariant: k = low misses (once measured), k = high reaches or is every layer
    if score([]) >= target:
        high = 0
    while high - low > 1:
        middle = (low + high) // 2
        if score(ranking[:middle]) >= target:
            high = middle
        else:
            low = middle
    chosen = list(ranking[:high])
    # Below the target here only when even the float graph misses: TFLite's float kernels and
    # Keras' can differ on the closest calls.
    changed = score(chosen) >= target
    while changed:  # until a whole pass returns nothing: each removal is then measured on the final set
        changed = False
        for layer in sorted(chosen, key=lambda l: l.noise_to_signal):
            without = [l for l in chosen if l is not layer]
            if score(without) >= target:
                chosen, changed = without, True
    return SearchResult(chosen, score(chosen), target, high, trials)


def build_int8_mixed(float_model: keras.Model, representative: Inputs, search_inputs: Inputs,
                     agreement: Callable[[bytes], float], target: float, io: str = "uint8") -> tuple[bytes, dict]:
    """The int8-mixed flatbuffer and what the report says about it.

    Args:
        float_model: the run's float Keras model.
        representative: calibration samples (train images), as for ``int8-ptq``.
        search_inputs: the search images, normalised (the sensitivity pass).
        agreement: a candidate flatbuffer's top-1 agreement with the float model on the
            search images, measured as the shipped file would be run.
        target: the agreement to reach (``ExportConfig.min_agreement``).
        io: the input type, ``uint8`` or ``int8``.
    """
    calibrated, ranking = layer_sensitivity(float_model, representative, search_inputs)
    logger.info("int8-mixed: %d quantized ops; most sensitive: %s", len(ranking),
                ", ".join(f"{l.name} {l.noise_to_signal:.3f}" for l in ranking[:5]))
    result = search_float_layers(
        ranking, lambda layers: agreement(quantize_keeping_float(calibrated, [l.tensor for l in layers], io)), target)
    model = quantize_keeping_float(calibrated, [l.tensor for l in result.float_layers], io)
    notes = {
        "float_layers": [l.name for l in result.float_layers],
        "float_tensors": [l.tensor for l in result.float_layers],
        "num_float_layers": len(result.float_layers), "num_layers": len(ranking),
        "search_agreement": result.agreement, "target": target, "reached": result.reached,
        "prefix_k": result.prefix_k, "num_conversions": len(result.trials) + 1,
        # JSON has no infinity: an unmeasurable layer (ranked first) records null
        "ranking": [{**asdict(l), "name": l.name, "noise_to_signal": l.noise_to_signal
                     if np.isfinite(l.noise_to_signal) else None} for l in ranking], "trials": result.trials,
    }
    if not result.reached:
        logger.warning("int8-mixed: even with %d layer(s) in float the agreement on the search images is %.4f, "
                       "below %.4f.",
                       len(result.float_layers), result.agreement, target)
    return model, notes
