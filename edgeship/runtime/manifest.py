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
import logging
import math
import re
import struct
import zipfile
import zlib
from dataclasses import asdict, dataclass, field, fields

from edgeship.errors import ModelFormatError
from edgeship.runtime.image import RESIZE_BILINEAR, RESIZE_METHODS
from edgeship.runtime.labels import MAX_CLASSES, MAX_LABEL_BYTES, parse_embedded_labels

__all__ = [
    "ARCHIVE_ERRORS",
    "LABELS_NAME",
    "MANIFEST_NAME",
    "MAX_MEMBER_BYTES",
    "MEAN",
    "STD",
    "EmbeddedFiles",
    "Manifest",
    "embed",
    "read_archive",
    "read_embedded",
    "read_member",
    "strip_embedded",
]

logger = logging.getLogger(__name__)

LABELS_NAME = "labels.txt"
MANIFEST_NAME = "edgeship.json"

# What a damaged or hostile appended archive raises from zipfile and zlib (bad CRC, cut central
# directory, negative seeks, unsupported compression, encryption...).
ARCHIVE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError, RuntimeError,
                  ValueError, OSError, EOFError, KeyError, struct.error, OverflowError, UnicodeDecodeError)
# A member larger than this is neither a label file nor a manifest (whose labels make most of it):
# a damaged size field, or a zip bomb.
MAX_MEMBER_BYTES = MAX_LABEL_BYTES
# The compressions whose reader zipfile can stop after a given number of bytes. It decompresses
# bzip2 and LZMA a whole read at a time (a 2 KB member gives gigabytes), and no TFLite Metadata
# writer uses them: phone apps' readers take stored and deflated members only.
_BOUNDED_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)

# MobileNet expects inputs in [-1, 1]. (x - 128) / 128 rather than Keras' x / 127.5 - 1:
# the uint8 input quantization of a full-integer model is then exactly scale 1/128, zero
# point 128, so raw camera pixels are fed as they are, bit-exact (Coral's models do the same).
# These are the defaults; each backbone's own is edgeship.train.config.input_normalization.
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
    quantization: str = "float32"        # int8 | int8-ptq | int8-mixed | int16x8 | float16 | dynamic | float32
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
        """Parses and checks a manifest: every field the runtime uses has its type and range.

        Raises:
            ModelFormatError: not JSON, or a field is missing, of the wrong type or out of range.
        """
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError(f"a JSON object was expected, not a {type(data).__name__}")
            known = {f.name for f in fields(cls)}
            kwargs = {k: v for k, v in data.items() if k in known}
            if not isinstance(kwargs.get("labels", []), list) or not isinstance(kwargs.get("image_size", []), list):
                raise TypeError("labels and image_size must be lists")
            kwargs["labels"] = tuple(kwargs.get("labels", ()))
            kwargs["image_size"] = tuple(int(v) for v in kwargs["image_size"])
            manifest = cls(**kwargs)
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            detail = f"the field {e} is missing" if isinstance(e, KeyError) else str(e)
            raise ModelFormatError(f"The embedded {MANIFEST_NAME} is malformed: {detail}") from e
        problem = manifest._problem()
        if problem:
            raise ModelFormatError(f"The embedded {MANIFEST_NAME} is malformed: {problem}.")
        return manifest

    def _problem(self) -> str | None:
        if not all(isinstance(label, str) for label in self.labels):
            return "labels must be strings"
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            return f"image_size must be two positive sizes, not {list(self.image_size)}"
        if self.resize_method not in RESIZE_METHODS:
            return f"resize_method {self.resize_method!r} is not one of {', '.join(RESIZE_METHODS)}"
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return f"{name} must be a finite number, not {value!r}"
        if self.std <= 0:
            return f"std must be positive, not {self.std}"
        if not isinstance(self.quantization, str) or not isinstance(self.extra, dict):
            return "quantization must be a string and extra an object"
        if len(self.labels) > MAX_CLASSES:
            return f"it lists {len(self.labels):,} labels; a classifier has at most {MAX_CLASSES:,} classes"
        return None


def _zip_start(data: bytes) -> int | None:
    """Offset where an appended zip archive begins, or None when there is none."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            if not infos:
                return None
            # zipfile has already shifted each header offset to the whole file (an appended
            # archive's own offsets may start at 0 or at the file's start): the first local
            # header is where the archive begins.
            start = min(info.header_offset for info in infos)
            return start if 0 < start < len(data) else None
    except ARCHIVE_ERRORS:
        return None


_ARCHIVE_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can record


def strip_embedded(data: bytes) -> bytes:
    """The bare flatbuffer, without an appended archive."""
    start = _zip_start(data)
    return data if start is None else data[:start]


def embed(model: bytes, labels: list[str] | tuple[str, ...], manifest: Manifest | None = None) -> bytes:
    """Returns ``model`` with labels (and the manifest) appended as a zip archive.

    An archive already present is replaced, so embedding twice does not stack archives. The
    members carry a fixed date, so the same model, labels and manifest give the same bytes.
    """
    buffer = io.BytesIO()
    members = [(LABELS_NAME, "\n".join(labels) + "\n")]
    if manifest is not None:
        members.append((MANIFEST_NAME, manifest.to_json()))
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, text in members:
            archive.writestr(zipfile.ZipInfo(name, date_time=_ARCHIVE_DATE), text)
    return strip_embedded(model) + buffer.getvalue()


@dataclass(frozen=True)
class EmbeddedFiles:
    """What the archive appended to a model holds: edgeship's manifest, and the text of its label
    file with that file's name (None where absent or unreadable)."""

    manifest: Manifest | None = None
    label_text: str | None = None
    label_file: str | None = None


def read_archive(data: bytes, name: str = "the model") -> EmbeddedFiles:
    """The one reader of a model's appended archive: its manifest, else its label file
    (``labels.txt``, or any single ``*.txt`` as third-party tools name it), every member read
    through :func:`read_member`'s caps. A damaged archive, manifest or member never stops a run:
    what cannot be read is logged as a warning naming ``name`` and left out."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except ARCHIVE_ERRORS as e:
        if not _has_no_archive(data, e):
            _warn_unreadable(name, "the appended archive", e)
        return EmbeddedFiles()
    with archive:
        names = archive.namelist()
        manifest = None
        if MANIFEST_NAME in names:
            try:
                manifest = Manifest.from_json(read_member(archive, MANIFEST_NAME))
            except (ModelFormatError, *ARCHIVE_ERRORS) as e:
                _warn_unreadable(name, f"its {MANIFEST_NAME}", e)
            if manifest is not None and manifest.labels:
                return EmbeddedFiles(manifest)
        texts = [n for n in names if n.lower().endswith(".txt")]
        preferred = [n for n in texts if "label" in n.lower()] or texts
        if not preferred:
            return EmbeddedFiles(manifest)
        try:
            text = read_member(archive, preferred[0]).decode("utf-8", errors="replace")
        except ARCHIVE_ERRORS as e:
            _warn_unreadable(name, f"its {preferred[0]}", e)
            return EmbeddedFiles(manifest)
        return EmbeddedFiles(manifest, text, preferred[0])


def read_embedded(data: bytes, name: str = "the model",
                  num_classes: int | None = None) -> tuple[list[str] | None, Manifest | None]:
    """The labels and edgeship manifest a model file carries, if any (:func:`read_archive`).

    Labels come from the manifest when present, else from the archive's label file, parsed by
    :func:`edgeship.runtime.labels.parse_labels` (either form; indices checked against
    ``num_classes``, the model's outputs, when given); None, with a warning, where that file
    breaks its bounds, so that the flatbuffer still runs with labels shown by index.
    """
    files = read_archive(data, name)
    if files.manifest is not None and files.manifest.labels:
        return list(files.manifest.labels), files.manifest
    if files.label_text is None:
        return None, files.manifest
    return parse_embedded_labels(files.label_text, num_classes, name), files.manifest


# A zip local file header: signature, version needed (1.0-6.3), flags, method (stored, deflate,
# bzip2, lzma), times, CRC and sizes, then a name of 1-255 bytes. Checking the fields as well as
# the signature keeps weights that happen to hold "PK\3\4" from passing for an archive.
_LOCAL_HEADER = re.compile(rb"PK\x03\x04[\x0a-\x3f]\x00..[\x00\x08\x0c\x0e]\x00.{16}[\x01-\xff]\x00", re.DOTALL)


def _has_no_archive(data: bytes, error: Exception) -> bool:
    # zipfile says "File is not a zip file" both for a bare flatbuffer and for an archive whose
    # end record was cut off; a local file header left in the file tells the two apart.
    return isinstance(error, zipfile.BadZipFile) and "not a zip file" in str(error) and not _LOCAL_HEADER.search(data)


def read_member(archive: zipfile.ZipFile, member: str) -> bytes:
    """One member of a model's appended archive, refused beyond :data:`MAX_MEMBER_BYTES`.

    The size the archive claims is checked first, then the bytes actually decompressed: a header
    can claim a few bytes while its data inflates to gigabytes, and zipfile decompresses all of
    a read before cutting it to the claimed size. Both the manifest and the TFLite Metadata's
    label file are read through here, so one rule holds for every associated file.

    Raises:
        KeyError: the archive has no such member.
        ValueError: the member is larger than the cap, or compressed with bzip2 or LZMA.
        zipfile.BadZipFile: its data does not match its CRC (a header that lied about its size).
    """
    info = archive.getinfo(member)
    if info.compress_type not in _BOUNDED_COMPRESSIONS:
        raise ValueError(f"{member} is compressed with zip method {info.compress_type}; associated files are stored "
                         "or deflated")
    if info.file_size > MAX_MEMBER_BYTES:
        raise ValueError(f"{member} claims {info.file_size:,} bytes, more than the {MAX_MEMBER_BYTES >> 20} MB "
                         "a label file or manifest can have")
    with archive.open(info) as stream:
        data = stream.read(MAX_MEMBER_BYTES + 1)  # never more, whatever the header claims
    if len(data) > MAX_MEMBER_BYTES:
        raise ValueError(f"{member} inflates to more than {MAX_MEMBER_BYTES >> 20} MB (a zip bomb?)")
    return data


def _warn_unreadable(name: str, what: str, error: Exception) -> None:
    detail = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    logger.warning(
        "%s: %s appended to the model is damaged (%s); running without it, so labels may show as "
        "numbers. Re-export or copy the model again, or pass --labels FILE.", name, what, detail,
    )
