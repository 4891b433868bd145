"""The model manifest: what a ``.tflite`` needs to describe itself.

An exported file carries a zip archive appended to its flatbuffer, the TFLite Metadata
"associated files" convention (Google's Coral models ship their labels this way, and
third-party readers find them): ``labels.txt``, one class per line, and ``edgeship.json``,
this manifest. The flatbuffer ignores trailing bytes, so the file stays a valid model.

Example:
    >>> m = Manifest(labels=("cat", "dog"), image_size=(160, 160))
    >>> Manifest.from_json(m.to_json()) == m
    True
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict, dataclass, field, fields

from edgeship.errors import ModelFormatError
from edgeship.runtime.image import RESIZE_BILINEAR

__all__ = [
    "LABELS_NAME",
    "MANIFEST_NAME",
    "MEAN",
    "STD",
    "Manifest",
    "embed",
    "read_embedded",
    "strip_embedded",
]

LABELS_NAME = "labels.txt"
MANIFEST_NAME = "edgeship.json"

# MobileNet expects inputs in [-1, 1]. (x - 128) / 128 rather than Keras' x / 127.5 - 1:
# the uint8 input quantization of a full-integer model is then exactly scale 1/128, zero
# point 128, so raw camera pixels are fed as they are, bit-exact (Coral's models do the same).
MEAN = 128.0
STD = 128.0


@dataclass(frozen=True)
class Manifest:
    """What the runtime needs to feed a model and read its output."""

    labels: tuple[str, ...]
    image_size: tuple[int, int]          # (height, width) of the network input
    resize_method: str = RESIZE_BILINEAR
    mean: float = MEAN                   # float input = (pixel - mean) / std
    std: float = STD
    quantization: str = "float32"        # int8 | int8-ptq | float16 | dynamic | float32
    backbone: str | None = None
    float_test_accuracy: float | None = None
    split_digest: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["image_size"] = list(self.image_size)
        data["format"] = "edgeship-manifest/1"
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Manifest":
        try:
            data = json.loads(text)
            known = {f.name for f in fields(cls)}
            kwargs = {k: v for k, v in data.items() if k in known}
            kwargs["labels"] = tuple(kwargs.get("labels", ()))
            kwargs["image_size"] = tuple(int(v) for v in kwargs["image_size"])
            return cls(**kwargs)
        except (ValueError, KeyError, TypeError) as e:
            raise ModelFormatError(f"The embedded {MANIFEST_NAME} is malformed: {e}") from e


def _zip_start(data: bytes) -> int | None:
    """Offset where an appended zip archive begins, or None when there is none."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            if not infos:
                return None
            # The archive begins at its first local header. Writers count the central
            # directory's offsets from the archive's start (edgeship) or from the file's start
            # (tflite-support's populator, Coral's models); zipfile resolves both into
            # positions in the whole file.
            return min(info.header_offset for info in infos)
    except zipfile.BadZipFile:
        return None


def strip_embedded(data: bytes) -> bytes:
    """The bare flatbuffer, without an appended archive."""
    start = _zip_start(data)
    return data if start is None else data[:start]


def embed(model: bytes, labels: list[str] | tuple[str, ...], manifest: Manifest | None = None) -> bytes:
    """Returns ``model`` with labels (and the manifest) appended as a zip archive.

    An archive already present is replaced, so embedding twice does not stack archives.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(LABELS_NAME, "\n".join(labels) + "\n")
        if manifest is not None:
            archive.writestr(MANIFEST_NAME, manifest.to_json())
    return strip_embedded(model) + buffer.getvalue()


def read_embedded(data: bytes) -> tuple[list[str] | None, Manifest | None]:
    """Reads the labels and edgeship manifest a model file carries, if any.

    Labels come from the manifest when present, else from the archive's label file
    (``labels.txt``, or any single ``*.txt`` as third-party tools name it).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return None, None
    with archive:
        names = archive.namelist()
        manifest = None
        if MANIFEST_NAME in names:
            manifest = Manifest.from_json(archive.read(MANIFEST_NAME))
            if manifest.labels:
                return list(manifest.labels), manifest
        texts = [n for n in names if n.lower().endswith(".txt")]
        preferred = [n for n in texts if "label" in n.lower()] or texts
        if not preferred:
            return None, manifest
        text = archive.read(preferred[0]).decode("utf-8", errors="replace")
        labels = [line.strip() for line in text.splitlines()]
        while labels and not labels[-1]:
            labels.pop()
        return labels, manifest
