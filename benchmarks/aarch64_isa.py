"""Which instructions beyond Armv8.0 an aarch64 shared library contains, and where.

A Raspberry Pi 4's Cortex-A72 implements Armv8.0-A with NEON and CRC32 only; its /proc/cpuinfo
says ``fp asimd evtstrm crc32 cpuid``. A library may still carry newer instructions safely if it
runs them only after asking the CPU (XNNPACK and KleidiAI pick kernels at run time, and name
them after the extension: ``..._neondot``, ``..._neoni8mm``, ``..._sme_mopa``). So this counts,
per extension, the instructions and the functions that hold them, and lists the functions whose
name does not say which extension they need: those are the ones to suspect of an unguarded use.

Needs ``aarch64-linux-gnu-objdump`` (Debian: ``apt-get install binutils-aarch64-linux-gnu``).

Usage:
    python benchmarks/aarch64_isa.py path/to/libpywrap_litert_common.so [more.so ...]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

OBJDUMP = "aarch64-linux-gnu-objdump"

# Extension -> (mnemonic pattern, words that a function's name carries when it is built for it).
_MNEMONICS = {
    "lse": (r"(ld(add|clr|eor|set|smax|smin|umax|umin)|st(add|clr|eor|set|smax|smin|umax|umin)|swp|casp?)(a|l|al)?[bh]?",
            ("__aarch64_",)),  # GCC's -moutline-atomics routines test for LSE at run time
    "dotprod": (r"[su]dot", ("dot", "sme")),  # KleidiAI's SME packing routines use sdot in streaming mode
    "i8mm": (r"smmla|ummla|usmmla|usdot|sudot", ("i8mm",)),
    "bf16": (r"bf(dot|mmla|mlal[bt]|cvtn?2?)", ("bf16",)),
    # BoringSSL's GHASH routines (gcm_*_v8) run only when the CPU reports PMULL.
    "crypto": (r"aes[ed]|aesi?mc|sha1[chmp]|sha1su[01]|sha256h2?|sha256su[01]|pmull2?",
               ("aes", "sha", "crc", "crypt", "gcm_")),
}
_MNEMONIC_PATTERNS = {name: re.compile(rf"^({pattern})$") for name, (pattern, _) in _MNEMONICS.items()}
# Half-precision arithmetic (not the Armv8.0 conversions fcvtl/fcvtn): a float op on .4h/.8h or h registers.
_FP16_OP = re.compile(r"^(fmla|fmls|fadd|fsub|fmul|fmulx|fdiv|fmax|fmin|fmaxnm|fminnm|fabs|fneg|fsqrt|faddp|fmaxp|fminp"
                      r"|frecpe|frsqrte|fcm\w+|fcvtz[su]|[su]cvtf|frint\w)$")
_FP16_OPERANDS = re.compile(r"\.[48]h\b|^\s*h\d+,")
_SVE_OPERANDS = re.compile(r"\bz\d+\.[bhsdq]\b|\bp\d+/[zm]\b")
HINTS = {**{name: hints for name, (_, hints) in _MNEMONICS.items()},
         "fp16": ("fp16", "f16"), "sve": ("sve", "sme")}
# GCC's outline-atomics routines, where the library strips their names: `ldrb w16, [flag]; cbz w16, <LL/SC>`
# skips the LSE instruction that follows unless the CPU has LSE.
_OUTLINE_ATOMICS = "__aarch64_ outline-atomics routine (name stripped)"
# Labels inside hand-written assembly (KleidiAI's "label_3", "K_Loop"): counted in the function around them.
_LOCAL_LABEL = re.compile(r"^(label_\w+|\.L\w+|[A-Z][A-Za-z]*_Loop\w*)$")
EXTENSIONS = ("lse", "dotprod", "fp16", "i8mm", "bf16", "sve", "crypto")


def _extensions(mnemonic: str, operands: str) -> list[str]:
    found = [name for name, pattern in _MNEMONIC_PATTERNS.items() if pattern.match(mnemonic)]
    if _FP16_OP.match(mnemonic) and _FP16_OPERANDS.search(operands):
        found.append("fp16")
    if _SVE_OPERANDS.search(operands):
        found.append("sve")
    return found


def scan(library: Path) -> dict:
    """Counts each extension's instructions in ``library``.

    Returns:
        ``{extension: {"instructions": n, "functions": n, "unnamed": {function: n}}}`` where
        ``unnamed`` holds the functions whose name carries none of the extension's hint words.
    """
    if shutil.which(OBJDUMP) is None:
        raise SystemExit(f"{OBJDUMP} not found: apt-get install binutils-aarch64-linux-gnu")
    counts = {name: collections.Counter() for name in EXTENSIONS}
    function, previous = "?", ("", "")
    with subprocess.Popen([OBJDUMP, "-d", "--no-show-raw-insn", str(library)], stdout=subprocess.PIPE,
                          text=True, errors="replace") as objdump:
        for line in objdump.stdout:
            if line.endswith(">:\n"):
                name = line.split("<", 1)[1][:-3]
                if not _LOCAL_LABEL.match(name):
                    function = name
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                continue
            mnemonic, operands = fields[1].strip(), fields[2] if len(fields) > 2 else ""
            for extension in _extensions(mnemonic, operands):
                guarded = extension == "lse" and previous[0] == "cbz" and previous[1].startswith("w16,")
                counts[extension][_OUTLINE_ATOMICS if guarded else function] += 1
            previous = (mnemonic, operands)
    report = {}
    for extension, by_function in counts.items():
        unnamed = {f: n for f, n in by_function.most_common()
                   if not any(hint in f.lower() for hint in HINTS[extension])}
        report[extension] = {"instructions": sum(by_function.values()), "functions": len(by_function),
                             "unnamed": unnamed}
    return report


def load_alignment(library: Path) -> int:
    """The smallest alignment of the library's LOAD segments, in bytes.

    A kernel with pages larger than this cannot map the library: the Raspberry Pi 5's Raspberry
    Pi OS kernel uses 16 KiB pages.
    """
    readelf = OBJDUMP.replace("objdump", "readelf")
    headers = subprocess.run([readelf, "-lW", str(library)], capture_output=True, text=True, check=True).stdout
    return min(int(line.split()[-1], 16) for line in headers.splitlines() if line.split()[:1] == ["LOAD"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("libraries", nargs="+", type=Path)
    args = parser.parse_args()
    print(json.dumps({str(path): {"load_alignment": load_alignment(path), **scan(path)} for path in args.libraries},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
