"""TrainConfig: every option of the train stage, with its default and why.

Example:
    >>> cfg = TrainConfig(data_dir="photos", image_size=160)
    >>> cfg.backbone, cfg.alpha
    ('mobilenet_v2', 1.0)
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeship.errors import ConfigError
from edgeship.runtime.image import RESIZE_BILINEAR, RESIZE_METHODS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "AUGMENT_PRESETS",
    "BACKBONES",
    "CLASS_WEIGHTS",
    "STRATEGIES",
    "WEIGHTS_IMAGENET",
    "WEIGHTS_NONE",
    "TrainConfig",
    "load_config",
    "read_toml",
]

MOBILENET_V1 = "mobilenet_v1"
MOBILENET_V2 = "mobilenet_v2"
BACKBONES = (MOBILENET_V1, MOBILENET_V2)
# Width multipliers Keras publishes ImageNet weights for.
IMAGENET_ALPHAS = {MOBILENET_V1: (0.25, 0.5, 0.75, 1.0), MOBILENET_V2: (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)}

AUGMENT_PRESETS = ("none", "light", "medium", "heavy")
STRATEGIES = ("default", "mirrored", "multi-worker")
CLASS_WEIGHTS = ("balanced", "none")
WEIGHTS_IMAGENET = "imagenet"
WEIGHTS_NONE = "none"


@dataclass(frozen=True)
class TrainConfig:
    data_dir: str = ""                  # class sub-folders of images
    out_dir: str = ""                   # run directory; default runs/<data folder name>
    val_dir: str = ""                   # optional ready-made validation folder (same classes)
    test_dir: str = ""                  # optional ready-made test folder (same classes)
    backbone: str = MOBILENET_V2
    alpha: float = 1.0                  # width multiplier; 0.35 / 0.25 for microcontroller-class targets
    image_size: int = 224               # square input; 96-224 have ImageNet weights
    weights: str = WEIGHTS_IMAGENET     # imagenet | none | path to a no-top .h5 weights file
    resize_method: str = RESIZE_BILINEAR  # part of the model contract, recorded in the manifest
    augment: str = "light"              # none | light | medium | heavy (see augment.py)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 42                      # fixes the split, the shuffling and the head's init
    batch_size: int = 32
    epochs: int = 5                     # phase 1: head only, backbone frozen
    learning_rate: float = 1e-3
    fine_tune_epochs: int = 8           # phase 2: top of the backbone unfrozen; 0 skips it
    fine_tune_learning_rate: float = 1e-4  # 10x lower, so pretrained features are nudged, not erased
    fine_tune_fraction: float = 0.25    # share of backbone layers (from the top) that phase 2 trains
    dropout: float = 0.2
    label_smoothing: float = 0.1
    patience: int = 3                   # early stopping on validation loss, per phase
    class_weights: str = "balanced"     # balanced | none: weights losses by inverse class frequency
    strategy: str = "default"           # default | mirrored | multi-worker (tf.distribute)

    def __post_init__(self) -> None:
        _choice("backbone", self.backbone, BACKBONES)
        _choice("augment", self.augment, AUGMENT_PRESETS)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("class_weights", self.class_weights, CLASS_WEIGHTS)
        _choice("resize_method", self.resize_method, RESIZE_METHODS)
        if not 0 < self.alpha <= 2:
            raise ConfigError(f"`alpha` must be in (0, 2]; received alpha={self.alpha}.")
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


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"`{name}` must be one of {', '.join(allowed)}; received {name}={value!r}.")


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict, with errors that name the file."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"Config file not found: {path}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"Config file {path} is not valid TOML: {e}") from e


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Builds a TrainConfig from an optional TOML file, then ``overrides`` (flags win).

    The TOML file holds fields at top level or under a ``[train]`` table. ``None`` values in
    ``overrides`` mean "not given" and leave the file's (or the default) value.
    """
    values: dict[str, Any] = {}
    if path:
        data = read_toml(path)
        values.update(data.get("train", data))
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"Unknown TrainConfig field(s): {', '.join(unknown)}. Known fields: {', '.join(sorted(known))}.")
    return TrainConfig(**values)
