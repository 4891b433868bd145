"""Reading untrusted flatbuffers in time and memory in proportion to their size.

Flatbuffers' generated Python readers trust every offset and length they read. A length field
can claim 2**31 entries in a 1 KB file; a string can claim to run past the end (the reader
then quietly returns what is there); and every entry of a vector can point at one table, so
that walking the tree visits that table once per entry: a 6.5 KB model whose 800 subgraph
entries share one subgraph of 800 entries sharing one tensor is 640,000 tensors to a reader,
and took 30 seconds to inspect.

So the model reader (:mod:`edgeship.runtime.graph`) and the metadata reader
(:mod:`edgeship.runtime.tflite_metadata`) read every vector and string they walk through
:func:`vector_length` and :func:`read_string`, which check the length against the bytes and
charge what is read to a :class:`ReadBudget` proportional to the buffer's size. Neither reader
recurses: each reads the schema's tables at a fixed depth, so nesting cannot deepen the stack.

Fields are named by their vtable offset, as the generated code names them: 4 + 2 x the field's
id in the schema.

Example:
    >>> budget = ReadBudget(1000)    # the steps reading a 1,000-byte flatbuffer may take
    >>> budget.spend(100, "tensors")
    >>> budget.limit, budget.left
    (4596, 4496)
"""

from __future__ import annotations

from flatbuffers import encode
from flatbuffers import number_types as N
from flatbuffers.table import Table

__all__ = ["DamagedFlatbuffer", "ReadBudget", "read_string", "vector_length"]

# Read once, a flatbuffer yields at most one vector entry (or 4 string bytes) per 4 of its bytes:
# each entry, offset or number, takes 4 bytes or more. The budget allows twice that, plus a fixed
# allowance so that tiny files never come near it; real models use a quarter of it or less.
_BYTES_PER_STEP = 2
_FIXED_STEPS = 4096


class DamagedFlatbuffer(ValueError):
    """A flatbuffer whose lengths do not fit its bytes, or whose reading would take work out of
    proportion to its size (shared offsets)."""


class ReadBudget:
    """The reading steps one flatbuffer may take: one per vector entry and per 4 string bytes.

    Args:
        num_bytes: the size of the buffer being read.
    """

    def __init__(self, num_bytes: int):
        self.limit = num_bytes // _BYTES_PER_STEP + _FIXED_STEPS
        self.num_bytes = num_bytes
        self.left = self.limit

    def spend(self, steps: int, what: str) -> None:
        """Charges ``steps``; raises :class:`DamagedFlatbuffer` once the budget is overdrawn."""
        self.left -= steps
        if self.left < 0:
            raise DamagedFlatbuffer(
                f"reading its {what} takes more than the {self.limit:,} steps a flatbuffer of {self.num_bytes:,} "
                "bytes can need: its entries point at the same data again and again, which no converter writes"
            )


def vector_length(table: Table, field: int, item_bytes: int, what: str, budget: ReadBudget) -> int:
    """The number of entries of a vector field (0 when absent), checked and charged to ``budget``.

    Args:
        table: a generated object's ``_tab``.
        field: the field's vtable offset.
        item_bytes: the size of one entry: 4 for offsets (tables, strings), int32 and float32.
        what: the vector's name in an error message ("tensors").
        budget: charged one step per entry.

    Raises:
        DamagedFlatbuffer: the vector runs past the end of the buffer, or the budget is spent.
    """
    at = table.Offset(field)
    if not at:
        return 0
    start, length = table.Vector(at), table.VectorLen(at)
    if start + length * item_bytes > len(table.Bytes):
        raise DamagedFlatbuffer(f"its {what} claim {length:,} entries, past the end of its {len(table.Bytes):,} bytes")
    budget.spend(length, what)
    return length


def read_string(table: Table, field: int, what: str, budget: ReadBudget) -> bytes | None:
    """A string field's bytes (None when absent), checked to end inside the buffer and charged.

    Raises:
        DamagedFlatbuffer: the string runs past the end of the buffer, or the budget is spent.
    """
    at = table.Offset(field)
    if not at:
        return None
    start = table.Indirect(table.Pos + at)
    length = encode.Get(N.UOffsetTFlags.packer_type, table.Bytes, start)
    start += N.UOffsetTFlags.bytewidth
    if start + length > len(table.Bytes):
        raise DamagedFlatbuffer(f"its {what} claims {length:,} bytes, past the end of its {len(table.Bytes):,} bytes")
    budget.spend(1 + length // 4, what)
    return bytes(table.Bytes[start : start + length])
