"""ExportConfig: every option of the export stage, with its default and why.

Example:
    >>> ExportConfig(formats=("int8", "float16")).formats
    ('int8', 'float16')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from edgeship.config import option
from edgeship.errors import ConfigError

__all__ = ["DEFAULT_FORMATS", "EDGETPU", "FILE_NAMES", "FORMATS", "FULL_INTEGER", "INT16X8", "INT16X8_MANIFEST",
           "IO_TYPES", "MIXED_SEARCH_IMAGES", "ExportConfig", "load_export_config"]

INT8 = "int8"            # quantization-aware trained, full integer (Edge TPU ready)
INT8_PTQ = "int8-ptq"    # post-training full integer, calibrated on the train split
FLOAT16 = "float16"      # float16 weights, float compute
DYNAMIC = "dynamic"      # int8 weights, float activations (dynamic-range)
FLOAT32 = "float32"      # the float model as it is
INT8_MIXED = "int8-mixed"  # post-training int8 with the fewest layers kept in float that reach --min-agreement (CPU)
INT16X8 = "int16x8"      # post-training int16 activations, int8 weights; float input and output (CPU, not Edge TPU)
FORMATS = (INT8, INT8_PTQ, FLOAT16, DYNAMIC, FLOAT32, INT8_MIXED, INT16X8)
# int8-mixed is opt-in: its search costs a conversion and a validation pass per step. int16x8
# too: LiteRT runs it without XNNPACK, tens of times slower than float32 on x86-64 (docs/small-models.md).
DEFAULT_FORMATS = (INT8, INT8_PTQ, FLOAT16, DYNAMIC, FLOAT32)
EDGETPU = "edgetpu"      # not a conversion: model_int8.tflite compiled by edgetpu_compiler, on request only
FULL_INTEGER = (INT8, INT8_PTQ)
IO_TYPES = ("uint8", "int8")
# The images int8-mixed's layer search scores agreement on. Agreement with the float model needs
# no labels, so the search may use the train images too; the test split is never searched.
SEARCH_VAL = "val"
SEARCH_TRAIN_VAL = "train+val"
MIXED_SEARCH_IMAGES = (SEARCH_VAL, SEARCH_TRAIN_VAL)
FILE_NAMES = {
    INT8: "model_int8.tflite",
    INT8_PTQ: "model_int8_ptq.tflite",
    FLOAT16: "model_fp16.tflite",
    DYNAMIC: "model_dynamic.tflite",
    FLOAT32: "model_float32.tflite",
    INT8_MIXED: "model_int8_mixed.tflite",
    INT16X8: "model_int16x8.tflite",
}
# What the 16x8 variant's file records about itself (its manifest's extra fields): the input
# and output stay float32, so the runtime and MediaPipe Tasks feed it normalised float pixels.
INT16X8_MANIFEST = {"activations": "int16", "weights": "int8", "input_type": "float32", "output_type": "float32",
                    "edgetpu_compatible": False}


@dataclass(frozen=True)
class ExportConfig:
    run_dir: str = option("", "A run directory written by `edgeship train`.")
    formats: tuple[str, ...] = option(DEFAULT_FORMATS, f"Comma-separated variants: {', '.join(FORMATS)}; add "
                                                         f"{EDGETPU} to compile int8 for the Edge TPU (needs "
                                                         f"edgetpu_compiler).")
    io: str = option("uint8", "Input/output type of full-integer models: uint8 (raw pixels) | int8 (int8-mixed: "
                              "its input; its output is float).")
    # Short: QAT adapts the weights to the int8 grid, it does not retrain.
    qat_epochs: int = option(3, "Quantization-aware training epochs (0: calibration only).")
    # Adam moves every weight ~lr per step, about one int8 step of a depthwise kernel over an
    # epoch (docs/qat.md: the measured choice).
    qat_learning_rate: float = option(1e-5, "QAT peak learning rate (Adam, cosine decay).")
    # Robustness to TFLite rounding differently from the simulation (docs/qat.md: measured).
    qat_noise: float = option(1.0, "Uniform noise on batch-norm outputs during QAT, in int8 steps (0: off).")
    # A third less QAT work: export under training time; on 3 seeds of 4 backbones a little
    # further from float by probability distance, no worse by accuracy (docs/qat.md: export time).
    qat_focus: float = option(0.5, "Share of the train images that QAT epochs after the first revisit: those "
                                   "whose logits were furthest from the float model's (1: every image).")
    qat_batch_size: int = option(32, "QAT batch size.")
    calibration_batches: int = option(16, "Batches that set the activation ranges before QAT starts.")
    representative_samples: int = option(256, "Train images that calibrate post-training int8.")
    # Agreement moves in whole images: on a validation split of ~260, 0.99 allows two flips.
    min_agreement: float = option(0.99, "int8-mixed: the top-1 agreement with the float model on the search "
                                        "images (--mixed-search-images) that its search must reach (0 < x <= 1).")
    # A float set fitted to a few hundred validation images held 96-98 % on test where it
    # reached 99 % on val (docs/small-models.md).
    mixed_search_images: str = option(SEARCH_TRAIN_VAL, "int8-mixed: the images its layer search ranks and "
                                      "scores agreement on: val (the validation split) | train+val (every train "
                                      "and validation image; the test split never).")

    def __post_init__(self) -> None:
        formats = tuple(self.formats)
        unknown = [f for f in formats if f not in FORMATS + (EDGETPU,)]
        if unknown or not formats:
            raise ConfigError(
                f"`formats` must be a non-empty subset of {', '.join(FORMATS + (EDGETPU,))}; received {', '.join(formats) or 'none'}."
            )
        if EDGETPU in formats and INT8 not in formats:
            raise ConfigError("The edgetpu format compiles model_int8.tflite: add int8 to `formats` (e.g. int8,edgetpu).")
        object.__setattr__(self, "formats", formats)
        if self.mixed_search_images not in MIXED_SEARCH_IMAGES:
            raise ConfigError(f"`mixed_search_images` must be one of {', '.join(MIXED_SEARCH_IMAGES)}; received "
                              f"mixed_search_images={self.mixed_search_images!r}.")
        if self.io not in IO_TYPES:
            raise ConfigError(f"`io` must be one of {', '.join(IO_TYPES)}; received io={self.io!r}.")
        if self.qat_epochs < 0:
            raise ConfigError(f"`qat_epochs` must be >= 0; received {self.qat_epochs}.")
        if self.qat_noise < 0:
            raise ConfigError(f"`qat_noise` must be >= 0 (0 turns it off); received {self.qat_noise}.")
        if not 0 < self.qat_focus <= 1:
            raise ConfigError(f"`qat_focus` must be in (0, 1], a share of the train images; received {self.qat_focus}.")
        if self.qat_learning_rate <= 0:
            raise ConfigError(f"`qat_learning_rate` must be positive; received {self.qat_learning_rate}.")
        if not 0 < self.min_agreement <= 1:
            raise ConfigError(f"`min_agreement` must be in (0, 1], a share of validation images (0.99 = 99 %); "
                              f"received {self.min_agreement}.")
        for name in ("calibration_batches", "representative_samples", "qat_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"`{name}` must be at least 1; received {getattr(self, name)}.")

    @classmethod
    def tiny(cls, **overrides: Any) -> "ExportConfig":
        """A seconds-long variant for smoke tests."""
        values = dict(qat_epochs=1, calibration_batches=2, representative_samples=16, qat_batch_size=8)
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["formats"] = list(self.formats)
        return data


def load_export_config(path=None, **overrides: Any) -> ExportConfig:
    """An ExportConfig from an optional config file's ``[export]`` table, then ``overrides``
    (flags win; None means "not given").

    Example:
        >>> load_export_config(None, run_dir="runs/x", formats="int8,float16").formats
        ('int8', 'float16')
    """
    from edgeship.config import from_values, read_config_file

    values = dict(read_config_file(path).get("export", {}))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return from_values(ExportConfig, values, f"{path} [export]" if path else "the export options")
