"""Hostile legacy PyTorch checkpoints, built opcode by opcode: each is refused with a ConfigError
that says what to do, runs nothing, changes no module-level state, and costs bounded memory,
measured in a child process (the reader imports numpy only, so the child is light)."""

from __future__ import annotations

import collections
import json
import os
import pickle
import random
import resource
import struct
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest

from edgeship.errors import ConfigError
from edgeship.weights import restricted_pickle, torch_legacy
from edgeship.weights.torch_legacy import read_legacy_checkpoint

PEAK_BOUND_MB = 200          # importing numpy and the reader takes about 35 MB
ADDRESS_SPACE_GUARD = 1 << 30  # a regression dies in the child with MemoryError, not on the machine

# The child reads the file and reports the error and its peak resident memory: VmHWM, which
# starts afresh at exec, where ru_maxrss would keep the parent's peak (pytest's, with TensorFlow).
CHILD = """
import json, sys
from edgeship.errors import ConfigError
from edgeship.weights.torch_legacy import read_legacy_checkpoint
try:
    read_legacy_checkpoint(sys.argv[1])
    message = None
except ConfigError as error:
    message = str(error)
peak_kb = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
print(json.dumps({"message": message, "peak_mb": peak_kb / 1024}))
"""


# Pickles by hand, as torch.save's legacy format writes them (protocol 2).

def _pickle(*parts: bytes) -> bytes:
    return pickle.PROTO + b"\x02" + b"".join(parts) + pickle.STOP


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _str(text: str) -> bytes:
    raw = text.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def _int(value: int) -> bytes:
    if 0 <= value < 1 << 31:
        return pickle.BININT + struct.pack("<i", value)
    raw = value.to_bytes(value.bit_length() // 8 + 1, "little", signed=True)
    return pickle.LONG1 + bytes([len(raw)]) + raw


def _tuple(*parts: bytes) -> bytes:
    return pickle.MARK + b"".join(parts) + pickle.TUPLE


def _put(index: int) -> bytes:
    return pickle.LONG_BINPUT + struct.pack("<I", index)


def _get(index: int) -> bytes:
    return pickle.LONG_BINGET + struct.pack("<I", index)


def _ordered_dict() -> bytes:
    return _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE


def _storage(key: str, numel: int, kind: str = "FloatStorage") -> bytes:
    """A persistent id: ("storage", type, key, location, number of elements, view metadata)."""
    return _tuple(_str("storage"), _global("torch", kind), _str(key), _str("cpu"), _int(numel), pickle.NONE) \
        + pickle.BINPERSID


def _tensor(key: str, numel: int, size: tuple, stride: tuple, offset: int = 0) -> bytes:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)."""
    args = _tuple(_storage(key, numel), _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)),
                  pickle.NEWFALSE, _ordered_dict())
    return _global("torch._utils", "_rebuild_tensor_v2") + args + pickle.REDUCE


def _state_dict(tensors: dict[str, bytes]) -> bytes:
    items = b"".join(_str(name) + tensor for name, tensor in tensors.items())
    return _pickle(_ordered_dict(), pickle.MARK, items, pickle.SETITEMS)


def _header() -> bytes:
    system = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return b"".join(pickle.dumps(value, protocol=2) for value in (0x1950A86A20F9469CFC6C, 1001, system))


def _checkpoint(state: bytes, storages: dict[str, np.ndarray]) -> bytes:
    """Header, state dict, storage keys, then each storage behind its element count."""
    values = b"".join(struct.pack("<q", array.size) + array.astype("<f4").tobytes() for array in storages.values())
    return _header() + state + pickle.dumps(list(storages), protocol=2) + values


def _one_float() -> dict[str, np.ndarray]:
    return {"0": np.ones(1, np.float32)}


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_GUARD, ADDRESS_SPACE_GUARD))


def _read_in_child(path) -> tuple[str, float]:
    """The reader's error message and the child's peak memory in MB; it must not read the file."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # each BLAS thread reserves address space
    result = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=120,
                            preexec_fn=_limit_address_space, env=env, cwd=path.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["message"] is not None, f"{path.name} was read"
    return report["message"], report["peak_mb"]


def _assert_refused(message: str, path, reason: str) -> None:
    assert reason in message, message
    assert str(path) in message and "--weights PATH" in message, message


# What a checkpoint could change for the rest of the process, if BUILD reached it.
def _module_state() -> dict:
    owned = {**vars(restricted_pickle), **vars(torch_legacy), "OrderedDict": collections.OrderedDict}
    return {name: (id(value), dict(getattr(value, "__dict__", {})), getattr(value, "__defaults__", None),
                   getattr(value, "__kwdefaults__", None))
            for name, value in owned.items() if not isinstance(value, types.ModuleType)}


def test_a_checkpoint_built_by_hand_reads_back(tmp_path):
    """The builders above write what the reader expects: a strided view, a 0-d tensor, tied
    weights sharing one storage, an empty tensor."""
    values = np.arange(12, dtype=np.float32)
    state = _state_dict({
        "transposed": _tensor("0", 12, (4, 3), (1, 4)),
        "scalar": _tensor("0", 12, (), (), offset=5),
        "tied": _tensor("0", 12, (12,), (1,)),
        "empty": _tensor("1", 0, (0, 7), (7, 1)),
    })
    tensors = read_legacy_checkpoint(_write(tmp_path, "ok.pth", _checkpoint(state, {"0": values, "1": values[:0]})))
    np.testing.assert_array_equal(tensors["transposed"], values.reshape(3, 4).T)
    assert tensors["scalar"].shape == () and tensors["scalar"] == 5
    np.testing.assert_array_equal(tensors["tied"], values)
    assert tensors["empty"].shape == (0, 7)
    assert all(t.flags.c_contiguous and t.flags.writeable for t in tensors.values())


PAYLOADS = {
    "reduce os.system": lambda cmd: _global("os", "system") + _tuple(_str(cmd)) + pickle.REDUCE,
    "reduce posix.system": lambda cmd: _global("posix", "system") + _tuple(_str(cmd)) + pickle.REDUCE,
    "eval": lambda cmd: _global("builtins", "eval") + _tuple(_str(f"__import__('os').system({cmd!r})")) + pickle.REDUCE,
    "stack global": lambda cmd: _str("os") + _str("system") + pickle.STACK_GLOBAL + _tuple(_str(cmd)) + pickle.REDUCE,
    "inst": lambda cmd: pickle.MARK + _str(cmd) + pickle.INST + b"os\nsystem\n",
    "obj": lambda cmd: pickle.MARK + _global("os", "system") + _str(cmd) + pickle.OBJ,
    "obj of an allowed class": lambda cmd: pickle.MARK + _global("collections", "OrderedDict") + pickle.OBJ,
    "newobj": lambda cmd: _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.NEWOBJ,
    "extension code": lambda cmd: pickle.EXT1 + b"\x01",
    "text persistent id": lambda cmd: pickle.PERSID + cmd.encode() + b"\n",
    "call a storage type": lambda cmd: _global("torch", "FloatStorage") + _tuple(_str(cmd)) + pickle.REDUCE,
    "tensor with hooks": lambda cmd: _global("torch._utils", "_rebuild_tensor_v2") + _tuple(
        _storage("0", 1), _int(0), _tuple(), _tuple(), pickle.NEWFALSE,
        _ordered_dict() + _str("hook") + _int(1) + pickle.SETITEM) + pickle.REDUCE,
}


@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_nothing_in_a_checkpoint_runs(tmp_path, payload):
    marker = tmp_path / "ran"
    path = _write(tmp_path, "code.pth", _header() + _pickle(pickle.EMPTY_DICT, _str("weight"),
                                                            payload(f"touch {marker}"), pickle.SETITEM))
    with pytest.raises(ConfigError) as error:
        read_legacy_checkpoint(path)
    _assert_refused(str(error.value), path, "Nothing in it was run")
    assert not marker.exists()


BUILDS = {
    # The report's: slot state sets the stand-in rebuild function's defaults for the whole process.
    "defaults of the rebuild function": _global("torch._utils", "_rebuild_tensor_v2")
    + _tuple(pickle.NONE, pickle.EMPTY_DICT + _str("__defaults__") + _tuple(pickle.NEWTRUE) + pickle.SETITEM),
    "attributes of the rebuild function": _global("torch._utils", "_rebuild_tensor_v2")
    + pickle.EMPTY_DICT + _str("marker") + _int(1) + pickle.SETITEM,
    "the OrderedDict class": _global("collections", "OrderedDict")
    + pickle.EMPTY_DICT + _str("fromkeys") + pickle.NONE + pickle.SETITEM,
    "a storage type": _global("torch", "FloatStorage")
    + pickle.EMPTY_DICT + _str("dtype") + _str("V9") + pickle.SETITEM,
    "a tensor's offset": _tensor("0", 1, (1,), (1,)) + pickle.EMPTY_DICT + _str("offset") + _int(-5) + pickle.SETITEM,
    "a fresh OrderedDict by slots": _ordered_dict() + _tuple(pickle.NONE, pickle.EMPTY_DICT),
}


@pytest.mark.parametrize("build", BUILDS.values(), ids=BUILDS.keys())
def test_build_sets_no_state_but_a_state_dicts(tmp_path, build):
    before = _module_state()
    path = _write(tmp_path, "build.pth", _header() + _pickle(build, pickle.BUILD))
    with pytest.raises(ConfigError) as error:
        read_legacy_checkpoint(path)
    _assert_refused(str(error.value), path, "only a state dict's, from a dict, may be set")
    assert _module_state() == before


def test_a_state_dicts_metadata_is_checked_and_dropped(tmp_path):
    """torch.save's own BUILD, {"_metadata": ...} on the state dict, still reads."""
    metadata = pickle.EMPTY_DICT + _str("_metadata") + _ordered_dict() + pickle.SETITEM
    state = _pickle(_ordered_dict(), _str("w"), _tensor("0", 1, (1,), (1,)), pickle.SETITEM, metadata, pickle.BUILD)
    tensors = read_legacy_checkpoint(_write(tmp_path, "meta.pth", _checkpoint(state, _one_float())))
    assert list(tensors) == ["w"] and not hasattr(tensors, "_metadata")


def _nested_shared_lists(levels: int) -> bytes:
    """list[i] = [list[i-1], list[i-1]], written as a pickler would (the inner list inline, then
    recalled): 12 bytes a level, and 2**levels leaves for whatever walks it as a tree."""
    opened = (pickle.EMPTY_LIST + pickle.MARK) * levels
    closed = b"".join(_get(level - 1) + pickle.APPENDS + _put(level) for level in range(1, levels + 1))
    return opened + pickle.EMPTY_LIST + _put(0) + closed


def _deep_tuples(levels: int) -> bytes:
    return pickle.EMPTY_TUPLE + pickle.TUPLE1 * levels


def _hostile_files() -> dict[str, tuple[bytes, str]]:
    """Each hostile file's bytes, and what its refusal must say."""
    # As a storage's key, which the reader before this one turned into a string (2**40 "[]"s).
    pid = _tuple(_str("storage"), _global("torch", "FloatStorage"), _nested_shared_lists(40), _str("cpu"), _int(1),
                 pickle.NONE)
    nested = _state_dict({"w": _global("torch._utils", "_rebuild_tensor_v2") + _tuple(
        pid + pickle.BINPERSID, _int(0), _tuple(_int(1)), _tuple(_int(1))) + pickle.REDUCE})
    many_views = _state_dict({f"view{i}": _tensor("0", 1 << 16, (1 << 16,), (1,)) for i in range(100)})
    return {
        "huge memo index": (_header() + _pickle(pickle.EMPTY_DICT, _put(1 << 26)), "memo entry 67108864"),
        "memo index never stored": (_header() + _pickle(_get(1 << 31)), "never stored"),
        "stride-0 tensor": (_checkpoint(_state_dict({"w": _tensor("0", 1, (1 << 28,), (0,))}), _one_float()),
                            "more elements than its storage"),
        "tensor past its storage": (_checkpoint(_state_dict({"w": _tensor("0", 1, (2, 2), (2, 1))}), _one_float()),
                                    "reaches element 3 of a storage of 1"),
        "many views of one storage": (_checkpoint(many_views, {"0": np.zeros(1 << 16, np.float32)}),
                                      "more than 2 times its storages"),
        "storage count disagrees": (_checkpoint(_state_dict({"w": _tensor("0", 2, (1,), (1,))}), _one_float()),
                                    "holds 1 elements, but its tensors were told 2"),
        "huge string length": (_header() + _pickle(pickle.BINUNICODE + b"\xff\xff\xff\xff"), "the file ends first"),
        "huge frame": (_header() + pickle.PROTO + b"\x04" + pickle.FRAME + struct.pack("<Q", 1 << 60),
                       "frame claims more bytes"),
        "nested shared lists": (_header() + nested, "nests containers more than 32 deep"),
        "deep tuple as a dict key": (_header() + _pickle(pickle.EMPTY_DICT, _deep_tuples(100_000), _int(1),
                                                         pickle.SETITEM), "nests containers more than 32 deep"),
        "a million opcodes": (_header() + _pickle(pickle.EMPTY_LIST, pickle.BINPUT + b"\0",
                                                  (pickle.BINGET + b"\0") * 1_000_000),
                              "more than 1,000,000 opcodes"),
    }


HOSTILE = _hostile_files()


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_file_is_refused_in_bounded_memory(tmp_path, name):
    data, reason = HOSTILE[name]
    path = _write(tmp_path, "hostile.pth", data)
    message, peak_mb = _read_in_child(path)
    _assert_refused(message, path, reason)
    assert peak_mb < PEAK_BOUND_MB, f"{name}: {peak_mb:.0f} MB"


def test_growth_is_refused_at_a_fixed_depth(tmp_path):
    """Doubling per level costs nothing until the bound: 30 levels (32 deep inside the dict)
    are built, 32 levels and 300 refused alike."""
    def read(levels: int) -> str:
        data = _header() + _pickle(pickle.EMPTY_DICT, _str("w"), _nested_shared_lists(levels), pickle.SETITEM)
        with pytest.raises(ConfigError) as error:
            read_legacy_checkpoint(_write(tmp_path, f"{levels}.pth", data))
        return str(error.value)

    assert "not a state dict of tensors" in read(30)
    assert "nests containers more than 32 deep" in read(32) and "more than 32 deep" in read(300)


def test_an_oversized_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.pth"
    with open(path, "wb") as stream:
        stream.truncate(torch_legacy._MAX_FILE_BYTES + 1)  # sparse: no disk is used
    message, peak_mb = _read_in_child(path)
    _assert_refused(message, path, "this reader accepts")
    assert peak_mb < PEAK_BOUND_MB


def test_the_zip_format_is_refused_without_opening_a_member(tmp_path):
    """A zip checkpoint whose member inflates to 256 MB is named, never inflated."""
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("archive/data/0", "w", force_zip64=True) as member:
            for _ in range(256):
                member.write(bytes(1 << 20))
    message, peak_mb = _read_in_child(path)
    _assert_refused(message, path, "zip format")
    assert peak_mb < PEAK_BOUND_MB


def test_random_damage_gives_a_checkpoint_or_a_config_error(tmp_path):
    """Seeded byte flips, cuts and insertions: the reader answers each with tensors or its own
    error, never another exception (which would be a bug)."""
    state = _state_dict({"a": _tensor("0", 12, (4, 3), (1, 4)), "b": _tensor("0", 12, (), (), offset=5)})
    original = _checkpoint(state, {"0": np.arange(12, dtype=np.float32)})
    generator = random.Random(0)
    for attempt in range(2000):
        data = bytearray(original)
        for _ in range(generator.randint(1, 4)):
            where = generator.randrange(len(data))
            kind = generator.choice(("flip", "cut", "insert"))
            if kind == "flip":
                data[where] = generator.randrange(256)
            elif kind == "cut":
                del data[where:where + generator.randint(1, 8)]
            else:
                data[where:where] = bytes(generator.randrange(256) for _ in range(generator.randint(1, 4)))
        path = _write(tmp_path, f"{attempt}.pth", bytes(data))  # a new file: rewriting one in place waits on ext4
        try:
            read_legacy_checkpoint(path)
        except ConfigError as error:
            assert "--weights PATH" in str(error)
