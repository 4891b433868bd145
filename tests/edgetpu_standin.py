"""A stand-in for Google's ``edgetpu_compiler`` (which cannot be installed here), for the
compile tests: the only part of the Edge TPU path that is replaced, and only the subprocess.

It accepts the real compiler's options, writes ``<stem>_edgetpu.tflite`` in which the model's
ops become one ``edgetpu-custom-op`` (ops named in ``EDGETPU_STANDIN_CPU_OPS`` stay outside it,
as CPU ops at the end), and prints and writes a log in the compiler's documented layout.
``EDGETPU_STANDIN_FAIL`` makes it refuse the model; ``EDGETPU_STANDIN_ARGS`` names a file
that receives its arguments as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

import flatbuffers
from ai_edge_litert import schema_py_generated as schema

_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _compile(data: bytes, cpu_names: set[str]) -> tuple[bytes, Counter, Counter]:
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    subgraph = model.subgraphs[0]
    names = [_NAMES.get(max(c.builtinCode, c.deprecatedBuiltinCode), "CUSTOM") for c in model.operatorCodes]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode, code.version = "edgetpu-custom-op", 1
    model.operatorCodes.append(code)
    kept = [op for op in subgraph.operators if names[op.opcodeIndex] in cpu_names]
    mapped = [op for op in subgraph.operators if op not in kept]
    segment = schema.OperatorT()
    segment.opcodeIndex = len(model.operatorCodes) - 1
    segment.inputs = list(subgraph.inputs)
    segment.outputs = list(kept[0].inputs[:1]) if kept else list(subgraph.outputs)
    subgraph.operators = [segment] + kept
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return (bytes(builder.Output()), Counter(names[op.opcodeIndex] for op in mapped),
            Counter(names[op.opcodeIndex] for op in kept))


def main() -> int:
    parser = argparse.ArgumentParser(prog="edgetpu_compiler")
    parser.add_argument("-o", "--out_dir", default=".")
    parser.add_argument("-s", "--show_operations", action="store_true")
    parser.add_argument("-m", "--min_runtime_version", type=int)
    parser.add_argument("model")
    args = parser.parse_args()
    if os.environ.get("EDGETPU_STANDIN_ARGS"):
        Path(os.environ["EDGETPU_STANDIN_ARGS"]).write_text(json.dumps(sys.argv[1:]))
    print("Edge TPU Compiler version 16.0.384591198")
    if os.environ.get("EDGETPU_STANDIN_FAIL"):
        print("ERROR: Model not quantized", file=sys.stderr)
        return 1
    cpu_names = set(filter(None, os.environ.get("EDGETPU_STANDIN_CPU_OPS", "").split(",")))
    compiled, mapped, kept = _compile(Path(args.model).read_bytes(), cpu_names)
    stem = Path(args.model).stem
    out = Path(args.out_dir)
    (out / f"{stem}_edgetpu.tflite").write_bytes(compiled)
    rows = [f"{name:<30} {count:<10} Mapped to Edge TPU" for name, count in mapped.items()]
    rows += [f"{name:<30} {count:<10} Operation not supported" for name, count in kept.items()]
    log = "\n".join([f"Edge TPU Compiler version 16.0.384591198", f"Input: {args.model}",
                     f"Output: {out / (stem + '_edgetpu.tflite')}", "", f"{'Operator':<30} {'Count':<10} Status", ""] + rows)
    (out / f"{stem}_edgetpu.log").write_text(log + "\n")
    total = sum(mapped.values()) + sum(kept.values())
    print(f"\nModel compiled successfully in 12 ms.\n\nInput model: {args.model}\nNumber of Edge TPU subgraphs: 1\n"
          f"Total number of operations: {total}\nOperation log: {stem}_edgetpu.log\n")
    print(f"Number of operations that will run on Edge TPU: {sum(mapped.values())}")
    print(f"Number of operations that will run on CPU: {sum(kept.values())}\n")
    if args.show_operations:
        print(log.split("\n\n", 1)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
