"""Seeded damage to real model files: what disks, downloads and careless tools do to them.

Most of a model file is weights, where a flipped bit changes a score and nothing else, so the
mutations aim at the flatbuffer's structure (offsets, lengths, indices, shapes, options), at
small constants that kernels read as indices (axes, shapes, paddings), and at the appended
archive (headers, CRCs, the central directory), where a damaged byte can make a reader, or
the interpreter itself, go wrong.
"""

from __future__ import annotations

import random
import zipfile
import io

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgeship.runtime.manifest import strip_embedded

__all__ = ["KINDS", "mutate", "small_constant_positions", "structure_positions"]

# Values a damaged 32-bit field is likely to hold: zeroed, all ones, sign bits, off by a little.
_WORDS = (0, 1, 2, 3, 0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF, 0x80000000, 0x10000, 255, 1000)


def small_constant_positions(data: bytes) -> np.ndarray:
    """Byte positions of small constant buffers (at most 64 bytes): axes, shapes, paddings,
    permutations; the index-like values that kernels read at run time."""
    flat = strip_embedded(data)
    model = schema.Model.GetRootAs(flat, 0)
    found = []
    for b in range(model.BuffersLength()):
        buffer = model.Buffers(b)
        if 0 < buffer.DataLength() <= 64:
            start = buffer._tab.Vector(buffer._tab.Offset(4))
            found.extend(range(start, start + buffer.DataLength()))
    return np.array(found, dtype=np.int64)


def structure_positions(data: bytes) -> np.ndarray:
    """Byte positions of the flatbuffer outside its constant-data buffers."""
    flat = strip_embedded(data)
    model = schema.Model.GetRootAs(flat, 0)
    is_weight = np.zeros(len(flat), bool)
    for b in range(model.BuffersLength()):
        buffer = model.Buffers(b)
        if buffer.DataLength():
            start = buffer._tab.Vector(buffer._tab.Offset(4))
            is_weight[start : start + buffer.DataLength()] = True
    return np.flatnonzero(~is_weight[: max(len(flat) - 3, 0)])


def _flip_bits(data: bytearray, rng: random.Random, positions: np.ndarray) -> None:
    for _ in range(rng.randint(1, 4)):
        data[int(rng.choice(positions))] ^= 1 << rng.randrange(8)


def _overwrite_word(data: bytearray, rng: random.Random, positions: np.ndarray) -> None:
    at = int(rng.choice(positions)) & ~3
    value = rng.choice(_WORDS + (len(data), len(data) - at, rng.randrange(2**32)))
    data[at : at + 4] = value.to_bytes(4, "little")


def _nudge_word(data: bytearray, rng: random.Random, positions: np.ndarray) -> None:
    # An offset or length off by a few: the damage a bad edit or a shifted copy leaves.
    at = int(rng.choice(positions)) & ~3
    value = (int.from_bytes(data[at : at + 4], "little") + rng.choice((-8, -4, -1, 1, 4, 8, 64))) % 2**32
    data[at : at + 4] = value.to_bytes(4, "little")


def _splat(data: bytearray, rng: random.Random, positions: np.ndarray) -> None:
    at, size = int(rng.choice(positions)), rng.randint(2, 24)
    data[at : at + size] = bytes(rng.choice((0, 0xFF, rng.randrange(256))) for _ in range(size))


def _truncate(data: bytearray, rng: random.Random, positions: np.ndarray) -> None:
    del data[rng.randrange(1, len(data)) :]


def _shift(data: bytearray, rng: random.Random, positions: np.ndarray) -> None:
    # Bytes lost or gained mid-file (a bad transfer): everything after moves.
    at, size = int(rng.choice(positions)), rng.choice((1, 2, 4, 8, 100))
    if rng.random() < 0.5:
        del data[at : at + size]
    else:
        data[at:at] = bytes(rng.randrange(256) for _ in range(size))


def _zero_block(data: bytearray, rng: random.Random, positions: np.ndarray) -> None:
    # A lost disk block: 512 bytes of zeros anywhere, weights included.
    at = rng.randrange(len(data)) & ~511
    data[at : at + 512] = bytes(len(data[at : at + 512]))


def _damage_constant(data: bytearray, rng: random.Random, positions: np.ndarray) -> None:
    small = small_constant_positions(bytes(data))
    if not len(small):
        return _overwrite_word(data, rng, positions)
    at = int(rng.choice(small)) & ~3
    value = rng.choice((-1, -2, 3, 4, 7, 255, 2**31 - 1, -(2**31), 1000, 0))
    data[at : at + 4] = value.to_bytes(4, "little", signed=True)


def _damage_archive(data: bytearray, rng: random.Random, positions: np.ndarray) -> None:
    start = len(strip_embedded(bytes(data)))
    if start >= len(data):  # no archive: damage the tail instead
        start = len(data) * 3 // 4
    what = rng.choice(("byte", "crc", "cut", "eocd", "local"))
    if what == "crc":
        at = data.find(b"PK\x01\x02", start)
        at = at + 16 if at >= 0 else rng.randrange(start, len(data))
    elif what == "cut":
        del data[rng.randrange(start, len(data)) :]
        return
    elif what == "eocd":
        at = data.rfind(b"PK\x05\x06")
        at = at + rng.choice((8, 10, 12, 16)) if at >= 0 else rng.randrange(start, len(data))
    elif what == "local":
        at = start + rng.choice((4, 6, 8, 14, 18, 22, 26, 28, 30))
    else:
        at = rng.randrange(start, len(data))
    at = min(at, len(data) - 1)
    data[at] ^= rng.choice((1, 0x80, 0xFF))


KINDS = {
    "flip": _flip_bits,
    "word": _overwrite_word,
    "nudge": _nudge_word,
    "splat": _splat,
    "truncate": _truncate,
    "shift": _shift,
    "zeros": _zero_block,
    "archive": _damage_archive,
    "constant": _damage_constant,
}


def mutate(data: bytes, seed: int, positions: np.ndarray | None = None) -> tuple[str, bytes]:
    """One seeded mutation of ``data``; returns its kind and the damaged bytes."""
    rng = random.Random(seed)
    if positions is None:
        positions = structure_positions(data)
    kind = rng.choice(sorted(KINDS))
    damaged = bytearray(data)
    KINDS[kind](damaged, rng, positions)
    return kind, bytes(damaged)
