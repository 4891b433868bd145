"""Which Edge TPU runtime (libedgetpu) goes with which LiteRT, and the combinations known to
fail: data only, in one place, so that it can be updated as builds and reports come in.

libedgetpu calls into the TensorFlow Lite C++ API of the interpreter that loads it, and that API
has no ABI promise: a libedgetpu built against one TensorFlow Lite version can crash (a
segfault inside ``Interpreter()``) under another. Coral's own Debian/macOS packages (runtime
16.0, 2021) are built against the TensorFlow Lite of that time (tflite_runtime 2.5); current
``ai-edge-litert`` wheels are years newer. Community builds made against a named TensorFlow
release close the gap, e.g. github.com/feranick/libedgetpu, whose release notes state for each
build the tflite_runtime range it works with.

Problems of the CPU side alone (32-bit ARM, emulated aarch64) are
:func:`edgeship.runtime.platform_check.known_problems`'s; ``edgeship doctor`` reports both.

Example:
    >>> [bad.summary for bad in known_bad("2.3.0", "x86_64", libedgetpu_found=True)][0]  # doctest: +ELLIPSIS
    "Coral's stock libedgetpu 16.0 is built against the TensorFlow Lite ABI of 2021..."
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["KNOWN_BAD", "PAIRINGS", "KnownBad", "Pairing", "known_bad", "parse_version"]


@dataclass(frozen=True)
class Pairing:
    """A libedgetpu build and the LiteRT / tflite_runtime versions it is stated to work with."""

    libedgetpu: str
    runtimes: str
    source: str


PAIRINGS: tuple[Pairing, ...] = (
    Pairing("Coral libedgetpu1-std/-max 16.0 (Debian package, 2021)", "tflite_runtime 2.5.x only (pycoral 2.0's pairing)",
            "https://coral.ai/software/#debian-packages"),
    Pairing("feranick/libedgetpu 16.0TF2.15.1", "tflite_runtime 2.11.1 - 2.15.1",
            "https://github.com/feranick/libedgetpu/releases"),
    Pairing("feranick/libedgetpu 16.0TF2.16.1", "tflite_runtime 2.11.1 - 2.16.1",
            "https://github.com/feranick/libedgetpu/releases"),
    Pairing("a libedgetpu built from source against ai-edge-litert's own TensorFlow commit",
            "that ai-edge-litert release (the only pairing with an ABI match by construction)",
            "https://github.com/google-coral/libedgetpu (build with TENSORFLOW_COMMIT set)"),
)


@dataclass(frozen=True)
class KnownBad:
    """An (ai-edge-litert version range, CPU architecture) combination that is known to fail."""

    min_version: tuple[int, ...]
    max_version: tuple[int, ...]     # inclusive
    machines: tuple[str, ...]        # platform.machine() values; empty: every architecture
    summary: str                     # one line: what happens and what to do
    needs_libedgetpu: bool = False   # applies only where a libedgetpu is installed

    def applies(self, version: tuple[int, ...], machine: str) -> bool:
        in_range = self.min_version <= version[: len(self.max_version)] <= self.max_version
        return in_range and (not self.machines or machine.lower() in self.machines)


KNOWN_BAD: tuple[KnownBad, ...] = (
    KnownBad((1, 2), (99,), (),
               "Coral's stock libedgetpu 16.0 is built against the TensorFlow Lite ABI of 2021 and crashes inside "
               "Interpreter() with current ai-edge-litert releases: install a libedgetpu built for this "
               "ai-edge-litert's TensorFlow version (see `edgeship doctor` pairings).", needs_libedgetpu=True),
)


def parse_version(text: str) -> tuple[int, ...]:
    """``"2.3.0"`` -> ``(2, 3, 0)``; tails such as ``rc1`` or ``.post1`` are dropped.

    Example:
        >>> parse_version("2.1.6.post1"), parse_version("1.4.0rc2"), parse_version("unknown")
        ((2, 1, 6), (1, 4, 0), ())
    """
    match = re.match(r"\d+(?:\.\d+)*", text.strip())
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def known_bad(litert_version: str, machine: str, libedgetpu_found: bool = False) -> list[KnownBad]:
    """The known-bad combinations that apply to this ai-edge-litert version on this architecture."""
    version = parse_version(litert_version)
    return [bad for bad in KNOWN_BAD if version and bad.applies(version, machine)
            and (libedgetpu_found or not bad.needs_libedgetpu)]
