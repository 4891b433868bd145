"""Child-process probes of the Edge TPU runtime, run by ``edgeship doctor``.

Loading libedgetpu, or building an interpreter with its delegate, can kill the process: a
libedgetpu built against another TensorFlow Lite ABI segfaults inside ``Interpreter()``. Each
probe therefore runs in its own ``python -m edgeship.edgetpu.probe`` process and prints one JSON
object; the parent reads a crash from the exit status and explains it.

    python -m edgeship.edgetpu.probe library libedgetpu.so.1
    python -m edgeship.edgetpu.probe delegate libedgetpu.so.1 usb:0
"""

from __future__ import annotations

import ctypes
import json
import sys

__all__ = ["library_info", "try_delegate"]

_DEVICE_TYPES = {0: "pci", 1: "usb"}   # enum edgetpu_device_type in libedgetpu's edgetpu_c.h


class _Device(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("path", ctypes.c_char_p)]


def _loaded_path(fragment: str) -> str | None:
    try:
        with open("/proc/self/maps") as maps:  # Linux: where the dynamic loader found it
            for line in maps:
                if fragment in line and "/" in line:
                    return line[line.index("/"):].strip()
    except OSError:
        pass
    return None


def library_info(library: str) -> dict:
    """Loads libedgetpu; returns its path, version string and the Edge TPUs it enumerates."""
    try:
        lib = ctypes.CDLL(library)
    except OSError as e:
        return {"found": False, "error": str(e)}
    info: dict = {"found": True, "path": _loaded_path("libedgetpu"), "version": None, "devices": []}
    if hasattr(lib, "edgetpu_version"):
        lib.edgetpu_version.restype = ctypes.c_char_p
        info["version"] = (lib.edgetpu_version() or b"").decode(errors="replace")
    if hasattr(lib, "edgetpu_list_devices"):
        lib.edgetpu_list_devices.restype = ctypes.POINTER(_Device)
        count = ctypes.c_size_t(0)
        devices = lib.edgetpu_list_devices(ctypes.byref(count))
        info["devices"] = [{"type": _DEVICE_TYPES.get(devices[i].type, str(devices[i].type)),
                            "path": (devices[i].path or b"").decode(errors="replace")} for i in range(count.value)]
        if devices and hasattr(lib, "edgetpu_free_devices"):
            lib.edgetpu_free_devices(devices)
    return info


def _tiny_model() -> bytes:
    """A one-op float model (RELU on 4 values): enough for the delegate to be applied."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    tensors = []
    for name in ("x", "y"):
        tensor = schema.TensorT()
        tensor.name, tensor.shape, tensor.type, tensor.buffer = name, [1, 4], schema.TensorType.FLOAT32, 0
        tensors.append(tensor)
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.RELU
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.inputs, subgraph.outputs = tensors, [op], [0], [1]
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [subgraph], [schema.BufferT()]
    builder = flatbuffers.Builder(256)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def try_delegate(library: str, device: str) -> dict:
    """Loads the Edge TPU delegate for ``device`` and builds an interpreter with it."""
    from ai_edge_litert.interpreter import Interpreter, load_delegate

    try:
        delegate = load_delegate(library, {"device": device} if device else {})
    except (ValueError, OSError, RuntimeError) as e:
        return {"loaded": False, "error": " ".join(str(e).split())}
    interpreter = Interpreter(model_content=_tiny_model(), experimental_delegates=[delegate])
    interpreter.allocate_tensors()
    return {"loaded": True}


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "library":
        result = library_info(argv[1])
    elif len(argv) >= 2 and argv[0] == "delegate":
        result = try_delegate(argv[1], argv[2] if len(argv) > 2 else "")
    else:
        print("usage: python -m edgeship.edgetpu.probe library LIB | delegate LIB [DEVICE]", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
