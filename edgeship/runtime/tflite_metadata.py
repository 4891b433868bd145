"""Standard TFLite Metadata: what phone apps read from a classifier, written and read here.

MediaPipe Tasks' ImageClassifier (and the TFLite Task Library and Android Studio's model
binding before it) read a ``ModelMetadata`` flatbuffer that the model stores as the buffer
named ``TFLITE_METADATA`` in its ``metadata`` list (the schema is ``metadata_schema.fbs`` in
tensorflow/tflite-support, also shipped in the mediapipe wheel). It says how to normalise the
input image and which associated file holds the labels; the files themselves live in the zip
archive appended to the flatbuffer (:mod:`edgeship.runtime.manifest`).

Why our own small code, by field slot, rather than generated code: the runtime must not depend
on mediapipe or tflite-support (neither installs everywhere the runtime runs), and ``flatc`` is
not on a Raspberry Pi. We write and read only the dozen fields below; each table's slot numbers
are listed beside it, in the schema's declaration order (a union field takes two slots: its type,
then its value). The tests read what we write with MediaPipe's generated reader, and run
MediaPipe Tasks on the result, so a wrong slot fails there.

This module holds the schema's slot numbers and the reader; :mod:`edgeship.runtime.metadata_writer`
writes the same tables.

Example:
    >>> from edgeship.runtime.manifest import Manifest
    >>> from edgeship.runtime.metadata_writer import build_metadata
    >>> m = Manifest(labels=("cat", "dog"), image_size=(160, 160))
    >>> meta = parse_metadata(build_metadata(m, input_dtype="uint8"))
    >>> meta.mean, meta.std, meta.labels_file, meta.color_space
    ((128.0,), (128.0,), 'labels.txt', 'RGB')
"""

from __future__ import annotations

import functools
import io
import logging
import math
import struct
import zipfile
from dataclasses import dataclass

import flatbuffers
from flatbuffers import number_types as N
from flatbuffers.table import Table

from edgeship.errors import ModelFormatError
from edgeship.runtime.flatbuffer_bounds import ReadBudget, read_string, vector_length
from edgeship.runtime.graph import Graph, parse_graph
from edgeship.runtime.labels import parse_embedded_labels
from edgeship.runtime.manifest import ARCHIVE_ERRORS, Manifest, read_archive, read_member

__all__ = [
    "METADATA_NAME",
    "MetadataDefaults",
    "MIN_PARSER_VERSION",
    "StandardMetadata",
    "associated_label_text",
    "SelfDescription",
    "find_metadata",
    "metadata_defaults",
    "normalization",
    "parse_metadata",
    "read_metadata",
    "read_metadata_or_warn",
    "read_self_description",
]

logger = logging.getLogger(__name__)

METADATA_NAME = b"TFLITE_METADATA"
_IDENTIFIER = b"M001"
# The oldest metadata parser that understands every field written below: all of them date from
# schema 1.0.0 (the schema's history lists what later versions added: vocabularies 1.0.1, subgraph
# process units 1.1.0, tensor groups 1.2.0, audio 1.3.0, AssociatedFile.version 1.4.1, custom
# metadata 1.5.0; none is used here).
MIN_PARSER_VERSION = "1.0.0"
AUTHOR = "edgeship"

# Slots, in metadata_schema.fbs declaration order.
# ModelMetadata: name, description, version, subgraph_metadata, author, license, associated_files,
#                min_parser_version
_MODEL_NAME, _MODEL_DESCRIPTION, _MODEL_VERSION, _MODEL_SUBGRAPHS, _MODEL_AUTHOR = 0, 1, 2, 3, 4
_MODEL_LICENSE, _MODEL_FILES, _MODEL_MIN_PARSER = 5, 6, 7
# SubGraphMetadata: name, description, input_tensor_metadata, output_tensor_metadata, associated_files
_SUBGRAPH_NAME, _SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS = 0, 2, 3
# TensorMetadata: name, description, dimension_names, content, process_units, stats, associated_files
_TENSOR_NAME, _TENSOR_DESCRIPTION, _TENSOR_CONTENT, _TENSOR_UNITS, _TENSOR_STATS, _TENSOR_FILES = 0, 1, 3, 4, 5, 6
# Content: content_properties (union: type slot 0, value slot 1), range
_CONTENT_TYPE, _CONTENT_VALUE = 0, 1
# union ContentProperties: FeatureProperties = 1, ImageProperties = 2
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2
# ImageProperties: color_space (enum ColorSpaceType: UNKNOWN 0, RGB 1, GRAYSCALE 2), default_size
_IMAGE_COLOR_SPACE, _IMAGE_SIZE = 0, 1
_COLOR_SPACES = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}
# ImageSize: width, height
_SIZE_WIDTH, _SIZE_HEIGHT = 0, 1
# ProcessUnit: options (union: type slot 0, value slot 1); NormalizationOptions = 1 in the union
_UNIT_TYPE, _UNIT_VALUE, _NORMALIZATION = 0, 1, 1
# NormalizationOptions: mean, std. Stats: max, min.
_NORM_MEAN, _NORM_STD, _STATS_MAX, _STATS_MIN = 0, 1, 0, 1
# AssociatedFile: name, description, type (enum: UNKNOWN 0, DESCRIPTIONS 1, TENSOR_AXIS_LABELS 2)
_FILE_NAME, _FILE_DESCRIPTION, _FILE_TYPE = 0, 1, 2
_UNKNOWN_FILE, _TENSOR_AXIS_LABELS = 0, 2


@dataclass(frozen=True)
class StandardMetadata:
    """The parts of a model's TFLite Metadata the runtime uses or shows."""

    name: str = ""
    description: str = ""
    version: str = ""
    author: str = ""
    min_parser_version: str = ""
    color_space: str | None = None             # RGB | GRAYSCALE | UNKNOWN, None when not an image
    image_size: tuple[int, int] | None = None  # (height, width), the input's default size
    mean: tuple[float, ...] = ()               # float input = (pixel - mean) / std, per channel or one
    std: tuple[float, ...] = ()
    input_range: tuple[float, float] | None = None   # the input tensor's stats (min, max)
    labels_file: str | None = None             # the output's TENSOR_AXIS_LABELS file
    associated_files: tuple[str, ...] = ()     # every file the metadata names

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


# Reading ----------------------------------------------------------------------------------


class _Reader:
    """One table of a flatbuffer, read by slot. Vectors and strings are checked against the bytes and
    charged to the budget of the whole read (so entries that share one table cannot multiply the
    work); other offsets are trusted, so callers catch errors."""

    def __init__(self, buf: bytes, pos: int, budget: ReadBudget):
        self._table = Table(buf, pos)
        self._budget = budget

    def _field(self, slot: int) -> int:
        return self._table.Offset(4 + 2 * slot)

    def string(self, slot: int) -> str:
        raw = read_string(self._table, 4 + 2 * slot, "strings", self._budget)
        return "" if raw is None else raw.decode("utf-8")

    def byte(self, slot: int) -> int:
        at = self._field(slot)
        return self._table.Get(N.Int8Flags, at + self._table.Pos) if at else 0

    def uint(self, slot: int) -> int:
        at = self._field(slot)
        return self._table.Get(N.Uint32Flags, at + self._table.Pos) if at else 0

    def table(self, slot: int) -> "_Reader | None":
        at = self._field(slot)
        return _Reader(self._table.Bytes, self._table.Indirect(at + self._table.Pos), self._budget) if at else None

    def tables(self, slot: int) -> list["_Reader"]:
        count = vector_length(self._table, 4 + 2 * slot, 4, "tables", self._budget)
        if not count:
            return []
        start = self._table.Vector(self._field(slot))
        return [_Reader(self._table.Bytes, self._table.Indirect(start + 4 * i), self._budget) for i in range(count)]

    def floats(self, slot: int) -> tuple[float, ...]:
        count = vector_length(self._table, 4 + 2 * slot, 4, "numbers", self._budget)
        if not count:
            return ()
        return struct.unpack_from(f"<{count}f", self._table.Bytes, self._table.Vector(self._field(slot)))


def find_metadata(model: bytes | Graph) -> bytes | None:
    """The ``TFLITE_METADATA`` buffer of a TFLite model, or None when it has none.

    ``model`` is the file's bytes or its parsed :class:`~edgeship.runtime.graph.Graph`: the graph
    reader is the one reader of the model flatbuffer, metadata entries included.

    Raises:
        ModelFormatError: the model does not parse, or its metadata list points at a buffer it
            does not have.
    """
    graph = model if isinstance(model, Graph) else parse_graph(model)
    return graph.metadata_buffer(METADATA_NAME.decode())


def parse_metadata(metadata: bytes) -> StandardMetadata:
    """Reads a ``ModelMetadata`` flatbuffer (the first subgraph's first input and output).

    Raises:
        ModelFormatError: the bytes are not TFLite Metadata, or are cut or corrupt.
    """
    if len(metadata) < 8 or not flatbuffers.util.BufferHasIdentifier(metadata, 0, _IDENTIFIER):
        raise ModelFormatError(f"{METADATA_NAME.decode()} is not TFLite Metadata (its identifier is not "
                               f"{_IDENTIFIER.decode()}).")
    try:
        budget = ReadBudget(len(metadata))
        root = _Reader(metadata, flatbuffers.encode.Get(N.UOffsetTFlags.packer_type, metadata, 0), budget)
        fields = {"name": root.string(_MODEL_NAME), "description": root.string(_MODEL_DESCRIPTION),
                  "version": root.string(_MODEL_VERSION), "author": root.string(_MODEL_AUTHOR),
                  "min_parser_version": root.string(_MODEL_MIN_PARSER)}
        files = [f.string(_FILE_NAME) for f in root.tables(_MODEL_FILES)]
        subgraphs = root.tables(_MODEL_SUBGRAPHS)
        if subgraphs:
            inputs, outputs = subgraphs[0].tables(_SUBGRAPH_INPUTS), subgraphs[0].tables(_SUBGRAPH_OUTPUTS)
            if inputs:
                fields.update(_read_input(inputs[0]))
            for tensor in outputs[:1]:
                labels = [(f.string(_FILE_NAME), f.byte(_FILE_TYPE)) for f in tensor.tables(_TENSOR_FILES)]
                files += [name for name, _ in labels]
                fields["labels_file"] = next((n for n, kind in labels if kind == _TENSOR_AXIS_LABELS), None)
        return StandardMetadata(associated_files=tuple(dict.fromkeys(files)), **fields)
    except (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{METADATA_NAME.decode()} is cut or corrupt: {e}") from e


def _read_input(tensor: _Reader) -> dict:
    fields: dict = {}
    content = tensor.table(_TENSOR_CONTENT)
    if content is not None and content.byte(_CONTENT_TYPE) == _IMAGE_PROPERTIES:
        image = content.table(_CONTENT_VALUE)
        if image is not None:
            fields["color_space"] = _COLOR_SPACES.get(image.byte(_IMAGE_COLOR_SPACE), "UNKNOWN")
            size = image.table(_IMAGE_SIZE)
            if size is not None and size.uint(_SIZE_WIDTH) and size.uint(_SIZE_HEIGHT):
                fields["image_size"] = (size.uint(_SIZE_HEIGHT), size.uint(_SIZE_WIDTH))
    for unit in tensor.tables(_TENSOR_UNITS):
        options = unit.table(_UNIT_VALUE)
        if unit.byte(_UNIT_TYPE) == _NORMALIZATION and options is not None:
            fields["mean"], fields["std"] = options.floats(_NORM_MEAN), options.floats(_NORM_STD)
            break
    stats = tensor.table(_TENSOR_STATS)
    if stats is not None and stats.floats(_STATS_MIN) and stats.floats(_STATS_MAX):
        fields["input_range"] = (stats.floats(_STATS_MIN)[0], stats.floats(_STATS_MAX)[0])
    return fields


def read_metadata(model: bytes | Graph) -> StandardMetadata | None:
    """The model's standard metadata, or None when it has none. See :func:`parse_metadata`."""
    metadata = find_metadata(model)
    return None if metadata is None else parse_metadata(metadata)


# Using what third-party models state -------------------------------------------------------


def read_metadata_or_warn(graph: Graph, name: str) -> StandardMetadata | None:
    """:func:`read_metadata`, except that malformed metadata logs a warning and gives None,
    so that the model still loads with the runtime's defaults."""
    try:
        return read_metadata(graph)
    except ModelFormatError as e:
        logger.warning("%s: ignoring its TFLite Metadata (%s); using the defaults instead.", name, e)
        return None


def associated_label_text(data: bytes, metadata: StandardMetadata, name: str = "the model") -> str | None:
    """The text of the label file the metadata names (the output's ``TENSOR_AXIS_LABELS``), read
    from the archive appended to the model within the archive's caps (see
    :func:`edgeship.runtime.manifest.read_member`); None when absent or unreadable."""
    if not metadata.labels_file:
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return read_member(archive, metadata.labels_file).decode("utf-8", errors="replace")
    except ARCHIVE_ERRORS as e:
        logger.warning("%s: its TFLite Metadata names %s as the label file, but it cannot be read from the model "
                       "(%s). Labels may show as numbers; pass --labels FILE.", name, metadata.labels_file, e)
        return None


def normalization(metadata: StandardMetadata) -> tuple[float, float] | None:
    """``(mean, std)`` for a float input: ``float input = (pixel - mean) / std``.

    From the NormalizationOptions, else from the input's stats (its range, when it states one
    but no normalization); None when the metadata gives neither or gives one we cannot apply.

    Example:
        >>> normalization(StandardMetadata(mean=(0.0,), std=(255.0,)))   # inputs in [0, 1]
        (0.0, 255.0)
        >>> normalization(StandardMetadata(input_range=(-1.0, 1.0)))
        (127.5, 127.5)
    """
    if metadata.mean or metadata.std:
        if len(set(metadata.mean)) != 1 or len(set(metadata.std)) != 1:
            logger.warning("The metadata's normalization has per-channel or missing values (mean %s, std %s); "
                           "one value for all channels is supported, so the defaults apply. Pass --mean and "
                           "--std to override.", list(metadata.mean), list(metadata.std))
            return None
        mean, std = metadata.mean[0], metadata.std[0]
    elif metadata.input_range is not None:
        low, high = metadata.input_range
        if not high > low:
            return None
        std = 255.0 / (high - low)
        mean = -low * std
    else:
        return None
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        logger.warning("The metadata's normalization (mean %s, std %s) is unusable; the defaults apply.", mean, std)
        return None
    return float(mean), float(std)


@dataclass(frozen=True)
class MetadataDefaults:
    """What a model's standard metadata tells the runtime: defaults below a manifest and arguments."""

    metadata: StandardMetadata | None = None
    mean: float | None = None          # set for a float input only
    std: float | None = None


def metadata_defaults(graph: Graph, name: str) -> MetadataDefaults:
    """Reads the standard metadata of a model (parsed as ``graph``) for
    :func:`edgeship.runtime.model.load_model`.

    A quantized input gets no mean/std: it takes raw pixels (its scale and zero point fold the
    normalisation in), which is how MediaPipe Tasks and pycoral feed it.
    """
    metadata = read_metadata_or_warn(graph, name)
    if metadata is None:
        return MetadataDefaults()
    mean, std = None, None
    inputs = graph.input_tensors()
    if inputs and inputs[0].dtype in ("float32", "float16"):
        mean, std = normalization(metadata) or (None, None)
    return MetadataDefaults(metadata, mean, std)


@dataclass(frozen=True)
class SelfDescription:
    """What a model file says about itself: edgeship's manifest, its standard metadata, and the
    label file it carries (the manifest's labels, else the one its metadata names, else the
    archive's). :attr:`labels` parses that file the first time it is read, so a file that
    is not used (``--labels`` given) is never parsed or warned about."""

    name: str
    num_classes: int | None
    manifest: Manifest | None
    standard: MetadataDefaults
    label_text: str | None

    @property
    def label_source(self) -> str | None:
        """``manifest``, ``embedded``, or None when the file carries no labels."""
        if self.manifest is not None and self.manifest.labels:
            return "manifest"
        return None if self.label_text is None or self.labels is None else "embedded"

    @functools.cached_property
    def labels(self) -> list[str] | None:
        """The labels the file carries, by output index; None without usable ones."""
        if self.manifest is not None and self.manifest.labels:
            return list(self.manifest.labels)
        if self.label_text is None:
            return None
        return parse_embedded_labels(self.label_text, self.num_classes, self.name)


def read_self_description(data: bytes, graph: Graph, name: str) -> SelfDescription:
    """The manifest, standard metadata and label file of the model file ``data`` (parsed as
    ``graph``): the flatbuffer read by the graph reader, the appended archive by
    :func:`edgeship.runtime.manifest.read_archive`, and the label file the metadata names only
    when the manifest brings no labels (third-party files)."""
    files = read_archive(data, name)
    standard = metadata_defaults(graph, name)
    text = None
    if not (files.manifest is not None and files.manifest.labels):
        named = associated_label_text(data, standard.metadata, name) if standard.metadata is not None else None
        text = files.label_text if named is None else named
    return SelfDescription(name, graph.num_classes, files.manifest, standard, text)
