"""How ``uint8`` pixels become a model's input tensor.

A quantized input gets ``round((pixel - mean) / std / scale + zero_point)``, computed as an
exact integer shift of the pixels when ``1 / (std * scale) == 1`` (edgeship's int8 models and
Coral's: raw pixels, bit-exact), in float otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeship.errors import ConfigError, ModelFormatError
from edgeship.runtime.graph import TensorInfo

__all__ = ["DEFAULT_FLOAT_MEAN", "DEFAULT_FLOAT_STD", "InputFeed", "make_input_feed"]

# Float inputs of third-party models: the common MobileNet/Inception range [-1, 1].
DEFAULT_FLOAT_MEAN = 127.5
DEFAULT_FLOAT_STD = 127.5

_QUANTIZED_DTYPES = {"uint8": np.uint8, "int8": np.int8, "int16": np.int16}


@dataclass(frozen=True)
class InputFeed:
    """How ``uint8`` pixels become the input tensor: ``q = (pixel - mean) / std / scale + zero_point``.

    ``offset`` is set when that is an exact integer shift of the pixels (0: raw pixels).
    """

    dtype: str
    mean: float
    std: float
    scale: float | None = None
    zero_point: int | None = None
    offset: int | None = None

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """The input tensor's values (without the batch axis) for ``(H, W, 3)`` uint8 pixels."""
        if self.offset == 0 and self.dtype == "uint8":
            return np.asarray(pixels, dtype=np.uint8)
        if self.offset is not None:
            info = np.iinfo(_QUANTIZED_DTYPES[self.dtype])
            shifted = pixels.astype(np.int32) + self.offset
            return np.clip(shifted, info.min, info.max).astype(_QUANTIZED_DTYPES[self.dtype])
        values = (pixels.astype(np.float32) - np.float32(self.mean)) / np.float32(self.std)
        if self.scale is None:
            return values.astype(np.float16 if self.dtype == "float16" else np.float32)
        info = np.iinfo(_QUANTIZED_DTYPES[self.dtype])
        quantized = np.rint(values / np.float32(self.scale) + np.float32(self.zero_point))
        return np.clip(quantized, info.min, info.max).astype(_QUANTIZED_DTYPES[self.dtype])

    def describe(self) -> str:
        if self.offset == 0:
            return "raw uint8 pixels"
        if self.offset is not None:
            return f"pixels {self.offset:+d} as {self.dtype} (exact)"
        text = f"(pixel - {self.mean:g}) / {self.std:g}"
        if self.scale is not None:
            text += f", quantized to {self.dtype} (scale {self.scale:g}, zero point {self.zero_point})"
        return text

    def to_dict(self) -> dict:
        return {**self.__dict__, "description": self.describe()}


def make_input_feed(tensor: TensorInfo, mean: float | None = None, std: float | None = None) -> InputFeed:
    """The :class:`InputFeed` for an input tensor; None mean/std take the third-party defaults.

    Example:
        >>> from edgeship.runtime.graph import TensorInfo
        >>> t = TensorInfo(0, "input", "uint8", (1, 160, 160, 3), (1 / 128,), (128,))
        >>> make_input_feed(t, mean=128, std=128).describe()
        'raw uint8 pixels'
        >>> make_input_feed(t, mean=127.5, std=127.5).describe()
        '(pixel - 127.5) / 127.5, quantized to uint8 (scale 0.0078125, zero point 128)'
    """
    dtype = tensor.dtype
    if dtype not in _QUANTIZED_DTYPES:
        if dtype not in ("float32", "float16"):
            raise ModelFormatError(f"Unsupported input tensor type {dtype}; expected uint8, int8 or float32.")
        mean = DEFAULT_FLOAT_MEAN if mean is None else mean
        std = DEFAULT_FLOAT_STD if std is None else std
        return InputFeed(dtype, float(mean), _check_std(std))
    # Raw pixels for uint8 (pycoral's convention), pixels - 128 for int8.
    natural_offset = -128 if dtype == "int8" else 0
    if len(tensor.scale) != 1 or tensor.scale[0] <= 0:
        if mean is None and std is None:
            return InputFeed(dtype, 0.0, 1.0, offset=natural_offset)
        raise ModelFormatError(f"The {dtype} input has no single quantization scale; cannot apply mean/std.")
    scale, zero_point = float(tensor.scale[0]), int(tensor.zero_point[0] if tensor.zero_point else 0)
    if mean is None and std is None:
        # The normalisation the quantization itself implies: q == pixel + natural_offset.
        mean, std = float(zero_point - natural_offset), 1.0 / scale
    mean = DEFAULT_FLOAT_MEAN if mean is None else float(mean)
    std = DEFAULT_FLOAT_STD if std is None else _check_std(std)
    gain = 1.0 / (std * scale)
    shift = zero_point - mean * gain
    offset = int(round(shift)) if abs(gain - 1.0) < 1e-6 and abs(shift - round(shift)) < 1e-6 else None
    return InputFeed(dtype, mean, std, scale, zero_point, offset)


def _check_std(std: float) -> float:
    if not std > 0:
        raise ConfigError(f"std must be positive; received {std}.")
    return float(std)


