"""A restricted pickle reader: the pickles of a PyTorch state dict, as plain data, running nothing.

A checkpoint is data, whoever made it, so it never reaches :mod:`pickle`'s unpickler: that
runs whatever its ``GLOBAL`` opcodes name, sizes its memo by an index read from the file, and
lets ``BUILD`` set attributes on any object. :class:`PickleMachine` runs only the opcodes a
state dict needs (protocols 2 to 5, none that imports, calls a class or parses protocol 0's
text), builds only plain data, and treats the few globals a state dict names (the tensor
rebuild function, torch's storage types, ``collections.OrderedDict``) as names it interprets
itself: a storage becomes a :class:`_StorageRef`, a tensor a :class:`_TensorRef`, and nothing
named in the file is ever called.

Every count the file gives is bounded before it is used, by the bytes left in the file or by
a fixed limit:

- ``_MAX_OPCODES``: opcodes run over all the pickles one machine reads;
- ``_MAX_DEPTH``: how deep containers may nest;
- ``_MAX_NAME_BYTES``: one line of a ``GLOBAL``;
- ``_MAX_DIMS`` and ``MAX_INDEX``: a tensor's number of dimensions, and each size, stride
  and offset;
- memo indices, which never size anything (the memo is a dict) and stay below ``_MAX_OPCODES``.

Example:
    >>> data = pickle.dumps({"w": [1, 2.0]}, protocol=2)
    >>> machine = PickleMachine(data)
    >>> machine.load(), machine.position == len(data)
    ({'w': [1, 2.0]}, True)
    >>> PickleMachine(pickle.dumps(print, protocol=4)).load()
    Traceback (most recent call last):
    ...
    edgeship.weights.restricted_pickle.Refused: refused the global builtins.print: a state dict of tensors never needs it
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass

import numpy as np

__all__ = ["MAX_INDEX", "PickleMachine", "Refused", "Truncated"]

_STORAGE_DTYPES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}

# Bounds on what the pickles can make us build, each far above what a real state dict needs.
_MAX_OPCODES = 1_000_000      # over all its pickles; Lite0's run 11,327. At worst 1.2 s and 160 MB
_MAX_DEPTH = 32               # containers within containers; a state dict nests 3 deep
_MAX_NAME_BYTES = 256         # one line of a GLOBAL (module or name)
_MAX_DIMS = 32                # numpy 1.x's limit; no layer's weight has more than 5
MAX_INDEX = 1 << 62           # sizes, strides and offsets: their products stay within int64


class Truncated(Exception):
    """The file ends, or its counts point, past its last byte."""


class Refused(Exception):
    """The file holds something a plain state dict of tensors never does."""


@dataclass(frozen=True)
class _Global:
    """A global the file named and we allow: a name we interpret, never the object itself."""

    module: str
    name: str


_ORDERED_DICT = _Global("collections", "OrderedDict")
_REBUILD_TENSOR = _Global("torch._utils", "_rebuild_tensor_v2")


# The tokens a storage's persistent id and a tensor's rebuild become. The checkpoint layout
# reads them; their names stay private because BUILD's refusal names the type it was aimed at.
@dataclass(frozen=True)
class _StorageRef:
    """A storage the pickle points at: its key in the file's list of storages, dtype and size."""

    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """A tensor the pickle rebuilds: where in its storage its values lie, not the values."""

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
        raise Refused("it names a global whose name holds control characters")
    raise Refused(f"refused the global {module}.{name}: a state dict of tensors never needs it")


def _is_index(value) -> bool:
    return type(value) is int and 0 <= value < MAX_INDEX  # bool, a subclass of int, is not a size


def _is_shape(value) -> bool:
    return type(value) is tuple and len(value) <= _MAX_DIMS and all(_is_index(v) for v in value)


def _storage_ref(pid) -> _StorageRef:
    """Stands in for torch's ``persistent_load``: pid is ("storage", storage type, key, location,
    number of elements[, view metadata])."""
    if not (type(pid) is tuple and len(pid) in (5, 6) and type(pid[0]) is str and pid[0] == "storage"):
        raise Refused("a persistent id is not a storage's")
    kind, key, location, numel = pid[1:5]
    if not (isinstance(kind, _Global) and kind.module == "torch" and kind.name in _STORAGE_DTYPES):
        raise Refused("a storage's type is not one of torch's storage types")
    if type(key) is not str or type(location) is not str or not _is_index(numel):
        raise Refused("a storage's key, location or size is not a string, a string and a size")
    if len(pid) == 6 and pid[5] is not None:
        raise Refused(f"storage {key[:40]!r} is a view of another storage, which this reader does not handle")
    return _StorageRef(key, np.dtype(_STORAGE_DTYPES[kind.name]), numel)


def _rebuild_tensor(args) -> _TensorRef:
    """Stands in for ``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
    requires_grad, backward_hooks[, metadata])``: checks every argument, records where the values are."""
    if not (type(args) is tuple and 4 <= len(args) <= 7):
        raise Refused("a tensor is rebuilt from other than 4 to 7 arguments")
    storage, offset, size, stride, *rest = args
    if not (isinstance(storage, _StorageRef) and _is_index(offset) and _is_shape(size) and _is_shape(stride)):
        raise Refused("a tensor's storage, offset, size or stride is not a storage, a size and two tuples of sizes")
    requires_grad, hooks, metadata = (*rest, *(False, {}, None)[len(rest):])
    # Hooks and metadata would be code or attributes to restore; a state dict's tensors have none.
    no_hooks = type(hooks) in (dict, collections.OrderedDict) and not hooks
    no_metadata = metadata is None or (type(metadata) is dict and not metadata)
    if not (type(requires_grad) is bool and no_hooks and no_metadata):
        raise Refused("a tensor carries backward hooks or metadata, which a state dict's tensors never do")
    return _TensorRef(storage, offset, size, stride)


class PickleMachine:
    """Runs the opcodes of pickle protocols 2 to 5 that a state dict uses, over a file's bytes.

    Only plain data comes out: None, bools, numbers, strings, tuples, lists, dicts and
    OrderedDicts, :class:`_StorageRef` and :class:`_TensorRef`. Each opcode builds at most one
    object and reads only bytes the file has, and no more than ``_MAX_OPCODES`` run, so work
    and memory grow with the pickles and stop at that bound. A container is sealed once put
    inside another (a pickler fills each container before using it), so the depth it had then
    stays true and the depth of everything built is known without walking it.

    One machine reads a file's pickles one after another (``load`` each, then ``position`` is
    where the next begins), and ``_MAX_OPCODES`` bounds them all together.
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
                raise Refused(f"its pickles run more than {_MAX_OPCODES:,} opcodes")
            code = self.take(1)
            if code == pickle.STOP:
                break
            handler = _HANDLERS.get(code)
            if handler is None:
                raise Refused(f"its pickle uses the opcode {code!r} (byte {self.position - 1}), "
                               "which a state dict of tensors never needs")
            handler(self)
        if len(self.stack) != 1 or self.marks:
            raise Refused("a pickle ends with other than one object on its stack")
        return self.stack.pop()

    def take(self, size: int) -> bytes:
        """The next ``size`` bytes, checked against the file before anything is allocated."""
        end = self.position + size
        if end > len(self.data):
            raise Truncated(f"a pickle needs {size} bytes at byte {self.position}; the file ends first")
        chunk = self.data[self.position:end]
        self.position = end
        return chunk

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def push(self, value) -> None:
        self.stack.append(value)

    def top(self):
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise Refused("a pickle takes more from its stack than it put there")
        return self.stack[-1]

    def pop(self):
        self.top()
        return self.stack.pop()

    def pop_mark(self) -> list:
        if not self.marks:
            raise Refused("a pickle closes a MARK it never opened")
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
            raise Refused("a pickle changes a container after putting it inside another")
        depth = self.depths[id(container)]
        for item in items:
            inner = self.depths.get(id(item))
            if inner is not None:
                self.sealed.add(id(item))
                depth = max(depth, inner + 1)
        if depth > _MAX_DEPTH:
            raise Refused(f"it nests containers more than {_MAX_DEPTH} deep")
        self.depths[id(container)] = depth

    def memoize(self, index: int) -> None:
        # A pickler numbers its memo from 0, one entry per object, so no index reaches the opcode bound.
        if not 0 <= index < _MAX_OPCODES:
            raise Refused(f"a pickle stores memo entry {index}, past any of at most {_MAX_OPCODES:,} opcodes")
        self.memo[index] = self.top()

    def recall(self, index: int) -> None:
        if index not in self.memo:
            raise Refused(f"a pickle recalls memo entry {index}, which it never stored")
        self.push(self.memo[index])


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8", "surrogatepass")  # as pickle decodes its strings
    except UnicodeDecodeError as e:
        raise Refused("a string in its pickle is not UTF-8") from e


def _pushes_text(fmt: str):
    """A handler for a string opcode whose length is packed as ``fmt``."""
    def handler(machine: PickleMachine) -> None:
        size = machine.unpack(fmt)
        if size < 0:
            raise Refused("a string in its pickle has a negative length")
        machine.push(_text(machine.take(size)))
    return handler


def _global_line(machine: PickleMachine) -> str:
    end = machine.data.find(b"\n", machine.position, machine.position + _MAX_NAME_BYTES + 1)
    if end < 0:
        raise Refused(f"a global's name runs past {_MAX_NAME_BYTES} bytes without ending")
    return _text(machine.take(end + 1 - machine.position)[:-1])


def _stack_global(machine: PickleMachine) -> None:
    name, module = machine.pop(), machine.pop()
    if type(module) is not str or type(name) is not str or len(module) + len(name) > 2 * _MAX_NAME_BYTES:
        raise Refused("a global is named by other than two short strings")
    machine.push(_find_class(module, name))


def _tuple(machine: PickleMachine, items: list) -> None:
    built = machine.new(tuple(items))
    machine.put_inside(built, items)
    machine.push(built)


def _append(machine: PickleMachine, items: list) -> None:
    target = machine.top()
    if type(target) is not list:
        raise Refused("a pickle appends to something other than a list")
    machine.put_inside(target, items)
    target.extend(items)


def _set_items(machine: PickleMachine, items: list) -> None:
    target = machine.top()
    if type(target) not in (dict, collections.OrderedDict) or len(items) % 2:
        raise Refused("a pickle sets items of something other than a dict, or a key without a value")
    keys, values = items[0::2], items[1::2]
    # Only strings and integers: hashing or comparing a nested key would walk it.
    if not all(type(key) in (str, int) for key in keys):
        raise Refused("a dict key in its pickle is neither a string nor an integer")
    machine.put_inside(target, values)
    target.update(zip(keys, values))


def _reduce(machine: PickleMachine) -> None:
    """A call in the pickle: interpreted for the two callables a state dict uses, never made."""
    args, function = machine.pop(), machine.pop()
    if function == _ORDERED_DICT and type(args) is tuple and not args:
        machine.push(machine.new(collections.OrderedDict()))
    elif function == _REBUILD_TENSOR:
        machine.push(_rebuild_tensor(args))
    else:
        raise Refused("a pickle calls something other than OrderedDict() or the tensor rebuild function")


def _build(machine: PickleMachine) -> None:
    """torch.save pickles a state dict's ``_metadata`` (its modules' versions) as attributes of its
    OrderedDict. We have no use for them, and setting attributes named by a file is how ``BUILD``
    can change a class or a module-level function for the rest of the process: checked, dropped."""
    state, target = machine.pop(), machine.top()
    if type(target) is not collections.OrderedDict or type(state) is not dict:
        raise Refused(f"a pickle sets the state of a {type(target).__name__} from a {type(state).__name__}; "
                       "only a state dict's, from a dict, may be set")


def _frame(machine: PickleMachine) -> None:
    # A frame only tells a reader how much to buffer; its length still has to fit the file.
    if machine.unpack("<Q") > len(machine.data) - machine.position:
        raise Truncated("a pickle frame claims more bytes than the file has left")


def _protocol(machine: PickleMachine) -> None:
    if machine.take(1)[0] > 5:
        raise Refused("its pickle protocol is newer than 5")


def _memoize_next(machine: PickleMachine) -> None:
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
