"""Writing standard TFLite Metadata into a model: the tables phone apps read, by field slot.

The slot numbers and the reader are in :mod:`edgeship.runtime.tflite_metadata`; the tests read
what is written here with MediaPipe's generated reader and run MediaPipe Tasks on the result.

Example:
    >>> from edgeship.runtime.manifest import Manifest
    >>> from edgeship.runtime.tflite_metadata import parse_metadata
    >>> m = Manifest(labels=("cat", "dog"), image_size=(160, 160))
    >>> parse_metadata(build_metadata(m, input_dtype="float32")).std
    (128.0,)
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

import edgeship
from edgeship.runtime.graph import parse_graph
from edgeship.runtime.manifest import LABELS_NAME, MANIFEST_NAME, Manifest, embed, strip_embedded
from edgeship.runtime.tflite_metadata import (  # the schema's slot numbers, shared with the reader
    _CONTENT_TYPE, _CONTENT_VALUE, _FEATURE_PROPERTIES, _FILE_DESCRIPTION, _FILE_NAME, _FILE_TYPE, _IDENTIFIER,
    _IMAGE_COLOR_SPACE, _IMAGE_PROPERTIES, _IMAGE_SIZE, _MODEL_AUTHOR, _MODEL_DESCRIPTION, _MODEL_FILES,
    _MODEL_MIN_PARSER, _MODEL_NAME, _MODEL_SUBGRAPHS, _MODEL_VERSION, _NORMALIZATION, _NORM_MEAN, _NORM_STD,
    _SIZE_HEIGHT, _SIZE_WIDTH, _STATS_MAX, _STATS_MIN, _SUBGRAPH_INPUTS, _SUBGRAPH_NAME, _SUBGRAPH_OUTPUTS,
    _TENSOR_AXIS_LABELS, _TENSOR_CONTENT, _TENSOR_DESCRIPTION, _TENSOR_FILES, _TENSOR_NAME, _TENSOR_STATS,
    _TENSOR_UNITS, _UNIT_TYPE, _UNIT_VALUE, _UNKNOWN_FILE, AUTHOR, METADATA_NAME, MIN_PARSER_VERSION,
)

__all__ = ["build_metadata", "embed_with_metadata", "with_metadata"]


def _table(builder: flatbuffers.Builder, num_slots: int, fields: list[tuple[int, str, object]]) -> int:
    """Ends a table whose ``fields`` are (slot, kind, value): kind ``offset``, ``byte``, ``uint`` or ``int``.

    Children (strings, vectors, tables) must be built before this is called.
    """
    builder.StartObject(num_slots)
    prepend = {"offset": builder.PrependUOffsetTRelativeSlot, "byte": builder.PrependInt8Slot,
               "uint": builder.PrependUint32Slot, "int": builder.PrependInt32Slot}
    for slot, kind, value in fields:
        if value is not None:
            prepend[kind](slot, value, 0)
    return builder.EndObject()


def _offsets(builder: flatbuffers.Builder, items: list[int]) -> int:
    builder.StartVector(4, len(items), 4)
    for item in reversed(items):
        builder.PrependUOffsetTRelative(item)
    return builder.EndVector()


def _floats(builder: flatbuffers.Builder, values) -> int:
    return builder.CreateNumpyVector(np.asarray(values, dtype="<f4"))


def _associated_file(builder: flatbuffers.Builder, name: str, description: str, kind: int) -> int:
    name_at, description_at = builder.CreateString(name), builder.CreateString(description)
    return _table(builder, 5, [(_FILE_NAME, "offset", name_at), (_FILE_DESCRIPTION, "offset", description_at),
                               (_FILE_TYPE, "byte", kind)])


def _tensor(builder: flatbuffers.Builder, name: str, description: str, content: int, stats: tuple[float, float],
            units: tuple[int, ...] = (), files: tuple[int, ...] = ()) -> int:
    name_at, description_at = builder.CreateString(name), builder.CreateString(description)
    max_at, min_at = _floats(builder, [stats[1]]), _floats(builder, [stats[0]])
    stats_at = _table(builder, 2, [(_STATS_MAX, "offset", max_at), (_STATS_MIN, "offset", min_at)])
    units_at = _offsets(builder, list(units)) if units else None
    files_at = _offsets(builder, list(files)) if files else None
    return _table(builder, 7, [
        (_TENSOR_NAME, "offset", name_at), (_TENSOR_DESCRIPTION, "offset", description_at),
        (_TENSOR_CONTENT, "offset", content), (_TENSOR_UNITS, "offset", units_at),
        (_TENSOR_STATS, "offset", stats_at), (_TENSOR_FILES, "offset", files_at),
    ])


def _input_tensor(builder: flatbuffers.Builder, manifest: Manifest, input_dtype: str) -> int:
    height, width = manifest.image_size
    size_at = _table(builder, 2, [(_SIZE_WIDTH, "uint", width), (_SIZE_HEIGHT, "uint", height)])
    image_at = _table(builder, 2, [(_IMAGE_COLOR_SPACE, "byte", 1), (_IMAGE_SIZE, "offset", size_at)])
    content_at = _table(builder, 3, [(_CONTENT_TYPE, "byte", _IMAGE_PROPERTIES), (_CONTENT_VALUE, "offset", image_at)])
    mean_at, std_at = _floats(builder, [manifest.mean]), _floats(builder, [manifest.std])
    norm_at = _table(builder, 2, [(_NORM_MEAN, "offset", mean_at), (_NORM_STD, "offset", std_at)])
    unit_at = _table(builder, 2, [(_UNIT_TYPE, "byte", _NORMALIZATION), (_UNIT_VALUE, "offset", norm_at)])
    # The stats give the tensor's own range: pixels for an integer input, normalised values for a
    # float one (what MediaPipe's writer records too). The normalisation applies to the float
    # model either way; a quantized input folds it into its scale and zero point.
    if input_dtype in ("uint8", "int8"):
        stats = (0.0, 255.0) if input_dtype == "uint8" else (-128.0, 127.0)
    else:
        stats = ((0.0 - manifest.mean) / manifest.std, (255.0 - manifest.mean) / manifest.std)
    description = (f"RGB image, {height}x{width}; a float input takes (pixel - {manifest.mean:g}) / "
                   f"{manifest.std:g}, a quantized one takes raw pixels.")
    return _tensor(builder, "image", description, content_at, stats, units=(unit_at,))


def _output_tensor(builder: flatbuffers.Builder, manifest: Manifest) -> int:
    feature_at = _table(builder, 0, [])
    content_at = _table(builder, 3, [(_CONTENT_TYPE, "byte", _FEATURE_PROPERTIES),
                                     (_CONTENT_VALUE, "offset", feature_at)])
    labels_at = _associated_file(builder, LABELS_NAME, "Class names, one a line, in output order.", _TENSOR_AXIS_LABELS)
    description = f"Probabilities of the {len(manifest.labels)} classes."
    return _tensor(builder, "probability", description, content_at, (0.0, 1.0), files=(labels_at,))


def build_metadata(manifest: Manifest, input_dtype: str, version: str | None = None) -> bytes:
    """The ``TFLITE_METADATA`` flatbuffer of an image classifier described by ``manifest``.

    Args:
        manifest: labels, input size and normalisation of the model.
        input_dtype: the input tensor's type (``uint8``, ``int8``, ``float32``), for its stats.
        version: the model's version string; defaults to the backbone, quantization and split digest.
    """
    builder = flatbuffers.Builder(1024)
    inputs_at = _offsets(builder, [_input_tensor(builder, manifest, input_dtype)])
    outputs_at = _offsets(builder, [_output_tensor(builder, manifest)])
    subgraph_name = builder.CreateString("image_classifier")
    subgraph_at = _table(builder, 5, [(_SUBGRAPH_NAME, "offset", subgraph_name), (_SUBGRAPH_INPUTS, "offset", inputs_at),
                                      (_SUBGRAPH_OUTPUTS, "offset", outputs_at)])
    manifest_file = _associated_file(builder, MANIFEST_NAME, "edgeship manifest: preprocessing, quantization, "
                                     "float test accuracy and split digest (JSON).", _UNKNOWN_FILE)
    classes = ", ".join(manifest.labels[:10]) + (", ..." if len(manifest.labels) > 10 else "")
    strings = {
        _MODEL_NAME: f"{manifest.backbone or 'image'} classifier ({manifest.quantization})",
        _MODEL_DESCRIPTION: f"Classifies an image into {len(manifest.labels)} classes: {classes}. "
                            f"Exported by edgeship {edgeship.__version__}.",
        _MODEL_VERSION: version or _default_version(manifest),
        _MODEL_AUTHOR: AUTHOR,
        _MODEL_MIN_PARSER: MIN_PARSER_VERSION,
    }
    fields = [(slot, "offset", builder.CreateString(text)) for slot, text in strings.items()]
    fields += [(_MODEL_SUBGRAPHS, "offset", _offsets(builder, [subgraph_at])),
               (_MODEL_FILES, "offset", _offsets(builder, [manifest_file]))]
    model_at = _table(builder, 8, fields)
    builder.Finish(model_at, file_identifier=_IDENTIFIER)
    return bytes(builder.Output())


def embed_with_metadata(model: bytes, manifest: Manifest, version: str | None = None) -> bytes:
    """``model`` made self-describing: TFLite Metadata inside, labels and manifest appended.

    The metadata names ``labels.txt`` (the output's ``TENSOR_AXIS_LABELS``) and ``edgeship.json``,
    which :func:`edgeship.runtime.manifest.embed` appends as the zip archive of associated files.

    Example:
        >>> from edgeship.runtime.tflite_metadata import read_metadata
        >>> manifest = Manifest(labels=("cat", "dog"), image_size=(128, 128))
        >>> data = embed_with_metadata(open("mobilenet_v1_0.25_128_quant.tflite", "rb").read(), manifest)
        >>> read_metadata(data).labels_file
        'labels.txt'
    """
    flatbuffer = strip_embedded(model)
    input_dtype = parse_graph(flatbuffer).input_tensors()[0].dtype
    metadata = build_metadata(manifest, input_dtype, version)
    return embed(with_metadata(flatbuffer, metadata), list(manifest.labels), manifest)


def _default_version(manifest: Manifest) -> str:
    parts = [manifest.backbone or "model", manifest.quantization]
    if manifest.split_digest:
        parts.append(f"split-{manifest.split_digest[:12]}")
    return "-".join(parts)


def _aligned_bytes(builder: flatbuffers.Builder, payload: bytes, alignment: int = 16) -> int:
    """A ``[ubyte]`` vector aligned as the TFLite schema asks of buffer data (``force_align: 16``).

    The generated ``BufferT.Pack`` aligns to 1 byte only, which would leave weights misaligned.
    """
    builder.StartVector(1, len(payload), alignment)
    builder.head = builder.head - len(payload)
    builder.Bytes[builder.head : builder.head + len(payload)] = payload
    builder.vectorNumElems = len(payload)
    return builder.EndVector()


class _AlignedBuffer(schema.BufferT):
    def Pack(self, builder: flatbuffers.Builder) -> int:
        data = None
        if self.data is not None and len(self.data):
            data = _aligned_bytes(builder, np.asarray(self.data, dtype=np.uint8).tobytes())
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        schema.BufferAddOffset(builder, self.offset)
        schema.BufferAddSize(builder, self.size)
        return schema.BufferEnd(builder)


def with_metadata(flatbuffer: bytes, metadata: bytes) -> bytes:
    """``flatbuffer`` (a bare TFLite model) with ``metadata`` stored as its ``TFLITE_METADATA``.

    An existing ``TFLITE_METADATA`` entry is replaced; other metadata entries (the converter's
    ``min_runtime_version``, ...) and everything else in the model are kept.
    """
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    model.buffers = [_rebuffer(b) for b in model.buffers or []]
    model.metadata = model.metadata or []
    names = [m.name.decode() if isinstance(m.name, bytes) else m.name for m in model.metadata]
    if METADATA_NAME.decode() in names:
        # Rewrite the old entry's buffer in place, so re-writing does not leave orphans.
        index = model.metadata[names.index(METADATA_NAME.decode())].buffer
        model.buffers[index] = _rebuffer(model.buffers[index], metadata)
    else:
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME.decode(), len(model.buffers)
        model.buffers.append(_rebuffer(schema.BufferT(), metadata))
        model.metadata.append(entry)
    builder = flatbuffers.Builder(len(flatbuffer) + len(metadata) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _rebuffer(buffer: schema.BufferT, data: bytes | None = None) -> _AlignedBuffer:
    aligned = _AlignedBuffer()
    aligned.data, aligned.offset, aligned.size = buffer.data, buffer.offset, buffer.size
    if data is not None:
        aligned.data, aligned.offset, aligned.size = np.frombuffer(data, np.uint8), 0, 0
    return aligned


