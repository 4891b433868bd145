"""What ``pi_emulation.py`` runs inside the emulated aarch64 Python (or on a real Pi).

Prints one JSON object per line, flushed at once, so that the parent still learns how far a
run got when LiteRT kills the process with a signal:

    {"stage": "hwcap", "features": [...]}            what the kernel (here: qemu) says the CPU has
    {"stage": "known_problems", "problems": [...]}     edgeship's check, before LiteRT is loaded
    {"stage": "one_op", "output": [...], "ok": true}  an ADD model built here, run by the bare interpreter
    {"stage": "classify", "classes": [...]}           edgeship.runtime.load_model + predict on one image

Usage (any aarch64 Python with ai-edge-litert, numpy, Pillow and flatbuffers; edgeship on
PYTHONPATH for ``--model``):
    python pi_emulated_run.py [--model M.tflite --image I.bmp]
    python pi_emulated_run.py --probe dotprod       # execute one instruction; SIGILL if the CPU lacks it
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import platform
import sys

# Linux's arm64 hardware capability bits, in the kernel's order (arch/arm64/include/uapi/asm/hwcap.h);
# these are also the names /proc/cpuinfo prints on its "Features" line.
HWCAP_NAMES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc "
               "dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2_NAMES = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm "
                "svebf16 i8mm bf16 dgh rng bti mte").split()
_AT_HWCAP, _AT_HWCAP2 = 16, 26

# One instruction from each extension that a Raspberry Pi 4's Cortex-A72 lacks (aese: the A72 has
# it as an option, the Pi 4's BCM2711 was built without it), then `ret`. Encodings from GNU as.
PROBES = {
    "dotprod": 0x4E829420,  # sdot v0.4s, v1.16b, v2.16b    (Armv8.2 option, "asimddp")
    "fp16": 0x4E421420,     # fadd v0.8h, v1.8h, v2.8h      (Armv8.2 option, "asimdhp")
    "lse": 0xB8E10002,      # ldaddal w1, w2, [x0]          (Armv8.1 atomics, "atomics")
    "i8mm": 0x4E82A420,     # smmla v0.4s, v1.16b, v2.16b   (Armv8.6, "i8mm")
    "sve": 0x0420E3E0,      # cntb x0                       ("sve")
    "crypto": 0x4E284820,   # aese v0.16b, v1.16b           ("aes")
}
_RET = 0xD65F03C0


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def cpu_features() -> list[str]:
    getauxval = ctypes.CDLL(None).getauxval
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    features = []
    for names, key in ((HWCAP_NAMES, _AT_HWCAP), (HWCAP2_NAMES, _AT_HWCAP2)):
        bits = getauxval(key)
        features += [name for i, name in enumerate(names) if bits >> i & 1]
    return features


def proc_cpuinfo_features() -> str | None:
    """The "Features" line of /proc/cpuinfo, or None when it has none (an x86 file, as qemu-user 7.2 shows)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("Features"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def probe(name: str) -> None:
    """Executes one instruction of the named extension; the process dies of SIGILL if the CPU lacks it."""
    code = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    code.write(PROBES[name].to_bytes(4, "little") + _RET.to_bytes(4, "little"))
    function = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p)(ctypes.addressof(ctypes.c_char.from_buffer(code)))
    scratch = ctypes.c_int32(0)  # the atomic add's memory operand
    function(ctypes.addressof(scratch))
    emit(stage="probe", probe=name, ok=True)


def one_op_model() -> bytes:
    """A single ADD of two float32 [1, 4] tensors, written with LiteRT's own flatbuffer schema."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
    code.version = 1
    tensors = []
    for name in ("a", "b", "sum"):
        tensor = schema.TensorT()
        tensor.name, tensor.shape, tensor.type, tensor.buffer = name, [1, 4], schema.TensorType.FLOAT32, 0
        tensors.append(tensor)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.AddOptions, schema.AddOptionsT()
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.inputs, subgraph.outputs = tensors, [op], [0, 1], [2]
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [subgraph], [schema.BufferT()]
    builder = flatbuffers.Builder(256)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def run_one_op() -> None:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=one_op_model())
    emit(stage="created")
    interpreter.allocate_tensors()  # where LiteRT >= 2.2 builds XNNPACK and reads /proc/cpuinfo
    emit(stage="allocated")
    a, b = interpreter.get_input_details()
    interpreter.set_tensor(a["index"], np.array([[1, 2, 3, 4]], np.float32))
    interpreter.set_tensor(b["index"], np.full((1, 4), 0.5, np.float32))
    interpreter.invoke()
    output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    emit(stage="one_op", output=output.ravel().tolist(), ok=bool(np.allclose(output, [[1.5, 2.5, 3.5, 4.5]])))


def run_classify(model_path: str, image_path: str) -> None:
    from edgeship.runtime import load_model, predict

    model = load_model(model_path)
    (prediction,) = predict(model, [image_path], top_k=3, num_workers=1)
    emit(stage="classify", error=prediction.error,
         classes=[{"id": c.id, "label": c.label, "score": round(float(c.score), 4)} for c in prediction.classes])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probe", choices=sorted(PROBES), help="Execute one instruction and stop.")
    parser.add_argument("--features-only", action="store_true", help="Report the CPU's features and stop.")
    parser.add_argument("--model", help="A .tflite classifier for edgeship's runtime.")
    parser.add_argument("--image", help="The image to classify with --model.")
    args = parser.parse_args()
    emit(stage="hwcap", features=cpu_features(), proc_cpuinfo_features=proc_cpuinfo_features())
    if args.features_only:
        return 0
    if args.probe:
        probe(args.probe)
        return 0
    if args.model:  # edgeship is on the path
        from importlib.metadata import version

        from edgeship.runtime.platform_check import known_problems

        emit(stage="known_problems", problems=known_problems(platform.machine(), version("ai-edge-litert"), None))
    import ai_edge_litert

    emit(stage="imported", litert=ai_edge_litert.__version__ if hasattr(ai_edge_litert, "__version__") else None)
    run_one_op()
    if args.model:
        run_classify(args.model, args.image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
