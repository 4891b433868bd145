"""Known-bad combinations of machine, ai-edge-litert version and CPU, explained in one line each.

What is known, and how it was measured (``benchmarks/pi_emulation.py``, docs/raspberry-pi.md):

- ai-edge-litert 2.2.0 and 2.3.0 crash with SIGSEGV in ``allocate_tensors`` on aarch64 when
  ``/proc/cpuinfo`` lists no ARM processor: XNNPACK's CPU detection (the cpuinfo library,
  ``cpuinfo_arm_linux_init``) then stores through a null pointer. A real Pi's kernel always lists its
  cores; qemu-user 7.2, and so ``docker --platform linux/arm64`` on an x86 host, passes the
  host's x86 file through instead. 1.4.0 to 2.1.6 run there.
- The same 2.2.0 and 2.3.0 wheels run and classify correctly on an emulated Cortex-A72 (a Pi 4,
  Armv8.0: no dot product, half-precision, LSE atomics or SVE) once ``/proc/cpuinfo`` describes
  it: their Armv8.2+ kernels are chosen at run time, as in 2.1.6.
- ai-edge-litert publishes no wheels for 32-bit ARM, so ``pip install edgeship`` cannot
  resolve on a 32-bit Raspberry Pi OS.

Example:
    >>> known_problems("aarch64", "2.3.0", {"fp", "asimd", "evtstrm", "crc32", "cpuid"})  # a Pi 4
    []
    >>> known_problems("aarch64", "2.3.0", set())  # doctest: +ELLIPSIS
    ['ai-edge-litert 2.3.0 crashes (SIGSEGV) ... /proc/cpuinfo lists no ARM processor ...']
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["CPUINFO", "known_problems", "read_cpu_features"]

CPUINFO = Path("/proc/cpuinfo")
# The first release that crashes when /proc/cpuinfo lists no ARM processor (2.1.6 does not).
_CPUINFO_CRASH_SINCE = (2, 2)
_ARM64 = frozenset({"aarch64", "arm64"})
_ARM32 = re.compile(r"^(armv[5-8]\w*|arm|armhf)$")


def read_cpu_features(path: str | Path | None = None) -> set[str] | None:
    """The CPU features named on the ``Features`` line of an arm64 Linux ``/proc/cpuinfo``.

    Args:
        path: the file to read; :data:`CPUINFO` when None.

    Returns:
        The feature names (``asimddp`` is the dot product, ``atomics`` the LSE atomics); an
        empty set when the file has no ``Features`` line (an x86 file, as qemu-user 7.2 shows
        emulated programs); None when the file cannot be read (not Linux).

    Example:
        >>> sorted(read_cpu_features("/nonexistent") or [])
        []
    """
    try:
        text = Path(CPUINFO if path is None else path).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Features":
            return set(value.split())
    return set()


def _release(version: str) -> tuple[int, ...]:
    """The leading numbers of a version string: ``"2.2.0rc1"`` gives ``(2, 2, 0)``."""
    numbers = re.match(r"^\s*v?(\d+(?:\.\d+)*)", version)
    return tuple(int(part) for part in numbers.group(1).split(".")) if numbers else ()


def known_problems(machine: str, litert_version: str, cpu_features: set[str] | None) -> list[str]:
    """One-line explanations of what is known to fail for this machine, LiteRT version and CPU.

    Args:
        machine: ``platform.machine()``: ``aarch64`` (64-bit Raspberry Pi OS), ``armv7l``
            (32-bit), ``x86_64``, ``arm64`` (macOS).
        litert_version: the installed ai-edge-litert, e.g. ``importlib.metadata.version("ai-edge-litert")``.
        cpu_features: the ``Features`` of ``/proc/cpuinfo`` (an empty set when it names none);
            None to read them from this machine's ``/proc/cpuinfo`` on aarch64.

    Returns:
        One line per problem, saying what fails and what to do; empty when nothing is known.

    Example:
        >>> known_problems("x86_64", "2.3.0", None)
        []
    """
    machine = machine.strip().lower()
    problems = []
    if _ARM32.match(machine):
        problems.append(
            f"{machine} is 32-bit ARM, for which ai-edge-litert publishes no wheels: install the 64-bit "
            "Raspberry Pi OS (aarch64), where pip finds them.")
    if machine == "aarch64":
        features = read_cpu_features() if cpu_features is None else cpu_features
        if features is not None and not features and _release(litert_version) >= _CPUINFO_CRASH_SINCE:
            problems.append(
                f"ai-edge-litert {litert_version} crashes (SIGSEGV) when it builds an interpreter here, because "
                "/proc/cpuinfo lists no ARM processor (an emulator such as qemu-user 7.2 or docker --platform "
                "linux/arm64 on an x86 host); install ai-edge-litert<2.2 for emulated runs; a real Pi is unaffected.")
    return problems
